"""Triton: norm-guided combine (spec steps 2-5) written straight into the segmentation input.

Fused: recomputing x_s, x_l from x and the fixed noise, the large-scale x0 with its clamp,
re-noising, the guided noise, the small-scale x0 with its clamp, and the channel concat.
One program handles BLOCK elements of one sample's (C, S, S) block.
Bytes per element: reads x, eps_s, eps_l (12) + noise (8, shared by the batch, cached);
writes x0_ng and x (8), or x0_ng only (4) when x already lies in seg_in[:, :C].
Reference: combine_ref.py.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

BLOCK = 1024


@triton.jit
def _combine_kernel(
    x_ptr,  # float32 x: (C, S, S) per sample, x_batch_stride elements apart
    eps_ptr,  # float32 (2B, C, S, S): U-Net output [eps_s; eps_l]
    noise_ptr,  # float32 (2, C, S, S) fixed noise
    out_ptr,  # float32 (B, 2C, S, S): cat(x, x0_ng)
    x_batch_stride,
    B, n,  # batch size; n = C * S * S elements per sample
    sa_s, sb_s, sa_l, sb_l,  # sqrt(abar), sqrt(1 - abar) at t_s and t_l
    sbw,  # sqrt(1 - abar_s) * w
    COPY_X: tl.constexpr, BLOCK: tl.constexpr,
):
    b = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + b.to(tl.int64) * x_batch_stride + offs, mask=mask, other=0.0)
    eps_s = tl.load(eps_ptr + b.to(tl.int64) * n + offs, mask=mask, other=0.0)
    eps_l = tl.load(eps_ptr + (B + b).to(tl.int64) * n + offs, mask=mask, other=0.0)
    x_s = sa_s * x + sb_s * tl.load(noise_ptr + offs, mask=mask, other=0.0)
    x_l = sa_l * x + sb_l * tl.load(noise_ptr + n + offs, mask=mask, other=0.0)
    x0_l = tl.minimum(tl.maximum((x_l - sb_l * eps_l) / sa_l, -1.0), 1.0)  # (2)
    guide = sa_s * x0_l + sb_s * eps_s  # (3)
    eps_g = eps_s - sbw * (guide - x_s)  # (4)
    x0_ng = tl.minimum(tl.maximum((x_s - sb_s * eps_g) / sa_s, -1.0), 1.0)  # (5)
    out = out_ptr + b.to(tl.int64) * 2 * n
    tl.store(out + n + offs, x0_ng, mask=mask)
    if COPY_X:
        tl.store(out + offs, x, mask=mask)


def combine_triton(x: torch.Tensor, eps: torch.Tensor, noise: torch.Tensor, coefs, w: float,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """x (B, C, S, S), eps (2B, C, S, S), noise (2, C, S, S) -> seg_in (B, 2C, S, S), float32.

    When `out` is given and x is its first C channels (out[:, :C]), x is not copied again.
    """
    b, c, h, w_ = x.shape
    n = c * h * w_
    for name, t, shape in (("eps", eps, (2 * b, c, h, w_)), ("noise", noise, (2, c, h, w_))):
        if t.dtype != torch.float32 or tuple(t.shape) != shape or not t.is_contiguous():
            raise ValueError(f"{name}: expected contiguous float32 {shape}, got {t.dtype} {tuple(t.shape)}")
    if x.dtype != torch.float32 or x.stride()[1:] != (h * w_, w_, 1):
        raise ValueError("x: expected float32 (B, C, S, S) with each sample contiguous")
    if out is None:
        out = torch.empty((b, 2 * c, h, w_), device=x.device)
    if out.dtype != torch.float32 or tuple(out.shape) != (b, 2 * c, h, w_) or not out.is_contiguous():
        raise ValueError(f"out: expected contiguous float32 {(b, 2 * c, h, w_)}")
    copy_x = not (x.data_ptr() == out.data_ptr() and x.stride(0) == out.stride(0))
    sa_s, sb_s, sa_l, sb_l = coefs
    _combine_kernel[(triton.cdiv(n, BLOCK), b)](
        x, eps, noise, out, x.stride(0), b, n, sa_s, sb_s, sa_l, sb_l, sb_s * w, COPY_X=copy_x, BLOCK=BLOCK)
    return out
