"""The U-Net's self-attention: the textbook function, computed by torch's fused attention kernel."""
import math

import torch
from torch.profiler import ProfilerActivity, profile

from dad_edge.model.unet import AttentionBlock


def _block(channels=64, heads=4):
    torch.manual_seed(0)
    block = AttentionBlock(channels, heads, groups=8)
    torch.nn.init.normal_(block.proj.weight, std=0.1)  # zero-initialised: the attention would not show
    return block


def test_attention_block_is_softmax_attention_over_positions():
    block = _block()
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        got = block(x)
        b, c, h, w = x.shape
        qkv = block.qkv(block.norm(x).reshape(b, c, h * w)).reshape(b, 3, 4, c // 4, h * w)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # (B, heads, d, L)
        weights = torch.softmax(q.transpose(-1, -2) @ k / math.sqrt(c // 4), dim=-1)  # (B, heads, L, L)
        out = (v @ weights.transpose(-1, -2)).reshape(b, c, h * w)
        want = x + block.proj(out).reshape(b, c, h, w)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_attention_runs_the_fused_kernel_forward_and_backward():
    """With q, k, v strided along the head dimension torch falls back to its unfused math path,
    which made attention a fifth of a CPU training step (benchmarks/README.md, session 19)."""
    block = _block()
    x = torch.randn(4, 64, 16, 16, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        block(x).sum().backward()
    names = {e.key for e in prof.key_averages()}
    assert any("flash_attention" in n for n in names), sorted(n for n in names if "attention" in n)
    assert not any("_scaled_dot_product_attention_math" in n for n in names)
    assert x.grad is not None and torch.isfinite(x.grad).all()
