"""Triton: frames (uint8) -> x, and the noised U-Net input x_s, x_l, in one pass.

Fused: colour conversion (BGR/RGB/BGRA -> RGB or gray), bilinear half-pixel resize with
edge clamp, x = v * scale + offset, and x_s = sqrt(abar_s) x + sqrt(1 - abar_s) noise[0],
x_l alike. One program writes BLOCK output pixels of one frame, every channel.
Bytes per output pixel: reads 4 taps * C_in uint8 (neighbours share cache lines; the frame
is read once from DRAM) + 2C noise floats (shared by the batch, cached); writes C floats of
x and 2C of the U-Net input. Reference: preprocess_noise_ref.py.

Resize taps use exact integer arithmetic, pos = ((2o + 1) src - dst) / (2 dst), so the
weights equal the float64 reference's to float32 rounding for any frame size.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .preprocess_noise_ref import NoiseCoefficients

BLOCK = 1024


@triton.jit
def _taps(o, src, dst):
    """Half-pixel bilinear taps of output coordinates `o` on a source axis of `src` pixels."""
    num = tl.maximum((2 * o + 1) * src - dst, 0)  # 2 * dst * pos, clamped at the left edge
    i0 = num // (2 * dst)
    frac = (num - i0 * (2 * dst)).to(tl.float32) / (2 * dst).to(tl.float32)
    last = i0 >= src - 1  # clamped at the right edge: weight 0 on the (absent) right tap
    i0 = tl.minimum(i0, src - 1)
    i1 = tl.minimum(i0 + 1, src - 1)
    return i0, i1, tl.where(last, 0.0, frac)


@triton.jit
def _channel(ptr, c: tl.constexpr, CIN: tl.constexpr, C: tl.constexpr, BGR: tl.constexpr, mask):
    """Model channel `c` of the source pixels at `ptr` (float32), as preprocess.to_channels."""
    if CIN == 1:
        v = tl.load(ptr, mask=mask, other=0).to(tl.float32)
    else:
        r = tl.load(ptr + (2 if BGR else 0), mask=mask, other=0).to(tl.float32)
        g = tl.load(ptr + 1, mask=mask, other=0).to(tl.float32)
        b = tl.load(ptr + (0 if BGR else 2), mask=mask, other=0).to(tl.float32)
        if C == 1:
            v = (0.299 * r + 0.587 * g) + 0.114 * b  # BT.601, in the reference's order
        else:
            v = r if c == 0 else (g if c == 1 else b)
    return v


@triton.jit
def _preprocess_noise_kernel(
    frame_ptr,  # uint8 (n, H, W, CIN): the frames of this launch, all H x W
    noise_ptr,  # float32 (2, C, S, S) fixed noise (unused without noise)
    unet_ptr,  # float32 (2B, C, S, S): x_s in [0, B), x_l in [B, 2B); (B, ...) x_s only if not WITH_LARGE
    x_ptr,  # float32 x: (C, S, S) per sample, samples x_batch_stride elements apart
    frame_batch_stride,  # elements between frames (H * W * CIN when stacked)
    x_batch_stride,  # elements between samples of x (C*S*S, or 2C*S*S inside the seg input)
    b0,  # batch index of this launch's first frame
    B,  # full batch size (offset of x_l in the U-Net input)
    H, W, S,  # source and output sides
    scale, offset,  # x = v * scale + offset
    sa_s, sb_s, sa_l, sb_l,  # sqrt(abar), sqrt(1 - abar) at t_s and t_l
    CIN: tl.constexpr, C: tl.constexpr, BGR: tl.constexpr, WITH_NOISE: tl.constexpr, WITH_LARGE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)
    b = b0 + tl.program_id(1)
    offs = pid * BLOCK + tl.arange(0, BLOCK)  # flat output pixel y * S + x
    mask = offs < S * S
    oy, ox = offs // S, offs % S
    y0, y1, wy = _taps(oy, H, S)
    x0, x1, wx = _taps(ox, W, S)
    frame = frame_ptr + tl.program_id(1).to(tl.int64) * frame_batch_stride
    p00 = frame + (y0 * W + x0) * CIN
    p01 = frame + (y0 * W + x1) * CIN
    p10 = frame + (y1 * W + x0) * CIN
    p11 = frame + (y1 * W + x1) * CIN
    plane = S * S
    for c in tl.static_range(C):
        top = _channel(p00, c, CIN, C, BGR, mask) * (1 - wx) + _channel(p01, c, CIN, C, BGR, mask) * wx
        bot = _channel(p10, c, CIN, C, BGR, mask) * (1 - wx) + _channel(p11, c, CIN, C, BGR, mask) * wx
        x = (top * (1 - wy) + bot * wy) * scale + offset
        tl.store(x_ptr + b.to(tl.int64) * x_batch_stride + c * plane + offs, x, mask=mask)
        if WITH_NOISE:
            n1 = tl.load(noise_ptr + c * plane + offs, mask=mask, other=0.0)
            tl.store(unet_ptr + (b * C + c).to(tl.int64) * plane + offs, sa_s * x + sb_s * n1, mask=mask)
            if WITH_LARGE:
                n2 = tl.load(noise_ptr + (C + c) * plane + offs, mask=mask, other=0.0)
                tl.store(unet_ptr + ((B + b) * C + c).to(tl.int64) * plane + offs, sa_l * x + sb_l * n2, mask=mask)


def _check_x_out(x_out: torch.Tensor, b: int, c: int, s: int) -> None:
    """x_out: float32 (B, C, S, S), each sample contiguous (it may be seg_in[:, :C])."""
    if x_out.dtype != torch.float32 or tuple(x_out.shape) != (b, c, s, s):
        raise ValueError(f"x_out: expected float32 {(b, c, s, s)}, got {x_out.dtype} {tuple(x_out.shape)}")
    if x_out.stride()[1:] != (s * s, s, 1):
        raise ValueError("x_out: each sample (C, S, S) must be contiguous")


def preprocess_noise_triton(frames, size: int, channels: int, color_order: str,
                            noise: Optional[torch.Tensor], coefs: Optional[NoiseCoefficients],
                            scale: float, offset: float, x_out: Optional[torch.Tensor] = None,
                            unet_out: Optional[torch.Tensor] = None,
                            two_pass: bool = True) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
    """Frames -> (unet_in (2B, C, S, S) or None without noise, x (B, C, S, S)), float32.

    two_pass=False (single-pass models): unet_in is x_s alone, (B, C, S, S).

    `frames` is one (B, H, W, C_in) uint8 tensor (one launch) or a sequence of (H, W, C_in)
    uint8 tensors of any sizes (one launch each, no copy), all on one device.
    """
    if color_order not in ("BGR", "RGB"):
        raise ValueError(f"color_order={color_order!r} must be 'BGR' or 'RGB'")
    stacked = isinstance(frames, torch.Tensor)
    if stacked and frames.dim() != 4:
        raise ValueError(f"frames: expected a (B, H, W, C) tensor or a list of (H, W, C) tensors, "
                         f"got {tuple(frames.shape)}")
    groups = [frames] if stacked else [f[None] for f in frames]  # each (n, H, W, C_in)
    nb = frames.shape[0] if stacked else len(groups)
    device = groups[0].device if groups else torch.device("cpu")
    for i, g in enumerate(groups):
        if g.dtype != torch.uint8 or g.dim() != 4 or g.shape[3] not in (1, 3, 4) or not g.is_contiguous():
            raise ValueError(f"frames[{i}]: expected contiguous uint8 (H, W, 1|3|4), "
                             f"got {g.dtype} {tuple(g.shape[1:])}")
        if g.device != device:
            raise ValueError(f"frames[{i}]: on {g.device}, frames[0] on {device}")
    x = x_out if x_out is not None else torch.empty((nb, channels, size, size), device=device)
    _check_x_out(x, nb, channels, size)
    with_noise = noise is not None
    if with_noise:
        if noise.dtype != torch.float32 or tuple(noise.shape) != (2, channels, size, size) or not noise.is_contiguous():
            raise ValueError(f"noise: expected contiguous float32 {(2, channels, size, size)}, "
                             f"got {tuple(noise.shape)}")
        shape = ((2 if two_pass else 1) * nb, channels, size, size)
        unet = unet_out if unet_out is not None else torch.empty(shape, device=device)
        if unet.dtype != torch.float32 or tuple(unet.shape) != shape or not unet.is_contiguous():
            raise ValueError(f"unet_out: expected contiguous float32 {shape}")
        sa_s, sb_s, sa_l, sb_l = coefs
    else:
        unet, noise, (sa_s, sb_s, sa_l, sb_l) = x, x, (0.0, 0.0, 0.0, 0.0)  # placeholders, never touched
    start = 0
    for g in groups:
        n, h, w, cin = g.shape
        grid = (triton.cdiv(size * size, BLOCK), n)
        _preprocess_noise_kernel[grid](
            g, noise, unet, x, h * w * cin, x.stride(0), start, nb, h, w, size,
            scale, offset, sa_s, sb_s, sa_l, sb_l,
            CIN=cin, C=channels, BGR=color_order == "BGR", WITH_NOISE=with_noise, WITH_LARGE=two_pass,
            BLOCK=BLOCK)
        start += n
    return (unet if with_noise else None), x
