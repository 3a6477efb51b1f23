"""Forward+backward+Adam step time of the seg net at several widths, batch 16, 1x128x128, strides 2 and 1."""
import time, sys, torch
from dad_edge.model.segnet import SegNet
from dad_edge.model.seg_config import SegConfig
torch.set_num_threads(2)
variants = {
    "default (16,32,48,64,64,64)": (16, 32, 48, 64, 64, 64),
    "deep x2 (16,32,64,128,128,128)": (16, 32, 64, 128, 128, 128),
    "deep x4 (16,32,64,128,256,256)": (16, 32, 64, 128, 256, 256),
    "all x1.5 (24,48,72,96,96,96)": (24, 48, 72, 96, 96, 96),
    "all x2 (32,64,96,128,128,128)": (32, 64, 96, 128, 128, 128),
}
x = torch.randn(16, 1, 128, 128).contiguous(memory_format=torch.channels_last)
y = (torch.rand(16, 1, 128, 128) > 0.9).float()
for stride in (2, 1):
    for name, w in variants.items():
        net = SegNet(SegConfig(widths=w, stride=stride), 1, images=1).to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        n = sum(p.numel() for p in net.parameters())
        ts = []
        for i in range(12 if stride == 2 else 5):
            t = time.perf_counter()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            ts.append(time.perf_counter() - t)
        ts = sorted(ts[2:])
        print(f"stride {stride} {name:34s} {n/1e6:.2f} M params  {ts[len(ts)//2]*1000:7.1f} ms/step  {16/ts[len(ts)//2]:6.1f} img/s", flush=True)
