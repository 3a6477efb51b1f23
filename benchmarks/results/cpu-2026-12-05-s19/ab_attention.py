"""Training images/s of the U-Net attention before (strided q/k/v) and after (dense), side by side (session 19)."""
import sys, types, statistics
from pathlib import Path
import torch.nn.functional as F
REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "benchmarks"))
from profile_train_step import build_trainer, interleaved
from dad_edge.model.unet import AttentionBlock
def old_forward(self, x):
    b, c, h, w = x.shape
    qkv = self.qkv(self.norm(x).reshape(b, c, h * w))
    q, k, v = qkv.reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)
    out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
    out = out.transpose(-1, -2).reshape(b, c, h * w)
    return x + self.proj(out).reshape(b, c, h, w)
data = str(REPO.parent / "shared" / "data" / "magnetic_tile")
a = build_trainer(data, 0, "/tmp/s19/abA"); b = build_trainer(data, 0, "/tmp/s19/abB")
n = 0
for m in a.model.modules():
    if isinstance(m, AttentionBlock): m.forward = types.MethodType(old_forward, m); n += 1
print("patched", n, "attention blocks in the 'before' trainer")
rates = interleaved({"before (strided q/k/v: math attention)": (a, None), "after (contiguous: flash attention)": (b, None)}, rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 4)
base = None
for k, r in rates.items():
    med = statistics.median(r); base = base or med
    print(f"{k}: median {med:.2f} train images/s (min {min(r):.2f}, max {max(r):.2f}), x{med/base:.2f}")
