"""Triton: smoothing, top-k mean score, normalised score and pixel mask of anomaly maps.

Three kernels: a row pass and a column pass of the separable Gaussian (edge replication,
taps summed in order, as score_ref.smooth_ref), then one program per map that finds the
k-th largest value by radix select (4 passes of 8-bit digits over a monotonic integer key
of the float bits, each a masked 256-bin histogram: no sort), and in a last pass sums the
values above it, adds the ties needed to make k, and writes the mask.
Bytes per map pixel: blur 2 x (4 read + 4 write); select 5 x 4 read (from L2 after the
first) + 1 mask byte written. Reference: score_ref.py.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .score_ref import ScoreResult, gaussian_taps

BLOCK = 1024

# Gaussian taps on each device, uploaded once: no host-to-device copy per call, so that a
# warmed-up call can be captured in a CUDA graph.
_TAPS = {}


def _device_taps(sigma: float, device: torch.device) -> torch.Tensor:
    key = (float(sigma), str(device))
    if key not in _TAPS:
        _TAPS[key] = torch.from_numpy(gaussian_taps(sigma)).to(device)
    return _TAPS[key]


@triton.jit
def _smooth_rows_kernel(
    src_ptr, dst_ptr,  # float32 (B, H, W) contiguous
    taps_ptr,  # float32 (2R + 1,) normalised Gaussian
    H, W, R,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < H * W
    x = offs % W
    base = tl.program_id(1).to(tl.int64) * H * W + offs - x  # start of each element's row
    acc = tl.zeros([BLOCK], tl.float32)
    for j in range(0, 2 * R + 1):
        xx = tl.minimum(tl.maximum(x + j - R, 0), W - 1)
        acc += tl.load(taps_ptr + j) * tl.load(src_ptr + base + xx, mask=mask, other=0.0)
    tl.store(dst_ptr + base + x, acc, mask=mask)


@triton.jit
def _smooth_cols_kernel(
    src_ptr, dst_ptr,  # float32 (B, H, W) contiguous
    taps_ptr,  # float32 (2R + 1,)
    H, W, R,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < H * W
    y, x = offs // W, offs % W
    base = tl.program_id(1).to(tl.int64) * H * W
    acc = tl.zeros([BLOCK], tl.float32)
    for j in range(0, 2 * R + 1):
        yy = tl.minimum(tl.maximum(y + j - R, 0), H - 1)
        acc += tl.load(taps_ptr + j) * tl.load(src_ptr + base + yy * W + x, mask=mask, other=0.0)
    tl.store(dst_ptr + base + offs, acc, mask=mask)


@triton.jit
def _key(v):
    """Float32 -> int32 with the same order (negative floats: flip the magnitude bits)."""
    bits = v.to(tl.int32, bitcast=True)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


@triton.jit
def _radix_pass(map_ptr, row, N, hi, krem, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    """One radix-select digit: among values whose key >> (SHIFT + 8) equals `hi`, the 8-bit
    digit at SHIFT of the krem-th largest. Returns (key >> SHIFT of it, values still needed there)."""
    bins = tl.arange(0, 256)
    hist = tl.zeros([256], tl.int32)
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = offs < N
        key = _key(tl.load(map_ptr + row + offs, mask=valid, other=0.0))
        if SHIFT == 24:
            digit = ((key >> 24) & 255) ^ 128  # sign byte in unsigned order
        else:
            digit = (key >> SHIFT) & 255
            valid = valid & ((key >> (SHIFT + 8)) == hi)
        hist += tl.histogram(digit, 256, mask=valid)
    at_least = tl.cumsum(hist, 0, reverse=True)  # values whose digit is >= d
    d = tl.max(tl.where(at_least >= krem, bins, 0), 0)
    above = tl.sum(tl.where(bins > d, hist, 0), 0)
    if SHIFT == 24:
        new_hi = d - 128  # = key >> 24, arithmetic
    else:
        new_hi = hi * 256 + d
    return new_hi, krem - above


@triton.jit
def _topk_score_kernel(
    map_ptr,  # float32 (B, N) contiguous
    mask_ptr,  # uint8 (B, N): map >= pixel threshold (unused without HAS_PIXEL)
    score_ptr, norm_ptr,  # float32 (B,) outputs
    N, k,
    pixel_thr,  # float32 threshold of the mask
    t, half_inv_t, half_inv_1mt,  # image threshold t (clamped), 0.5 / t, 0.5 / (1 - t)
    HAS_IMAGE: tl.constexpr, HAS_PIXEL: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64) * N
    # Radix select, most significant byte first: `hi` is the key prefix of the k-th largest
    # value found so far, `krem` how many values with that prefix are still needed.
    hi, krem = _radix_pass(map_ptr, row, N, 0, k, 24, BLOCK)
    hi, krem = _radix_pass(map_ptr, row, N, hi, krem, 16, BLOCK)
    hi, krem = _radix_pass(map_ptr, row, N, hi, krem, 8, BLOCK)
    hi, krem = _radix_pass(map_ptr, row, N, hi, krem, 0, BLOCK)
    # hi is now the key of the k-th largest value; sum what lies above it, add krem ties.
    kth = (hi ^ ((hi >> 31) & 0x7FFFFFFF)).to(tl.float32, bitcast=True)
    acc = tl.zeros([BLOCK], tl.float32)
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = offs < N
        v = tl.load(map_ptr + row + offs, mask=valid, other=0.0)
        acc += tl.where(valid & (_key(v) > hi), v, 0.0)
        if HAS_PIXEL:
            tl.store(mask_ptr + row + offs, (v >= pixel_thr).to(tl.uint8), mask=valid)
    score = (tl.sum(acc, 0) + krem.to(tl.float32) * kth) / k
    tl.store(score_ptr + tl.program_id(0), score)
    if HAS_IMAGE:
        norm = tl.where(score < t, score * half_inv_t, 0.5 + (score - t) * half_inv_1mt)
    else:
        norm = score
    tl.store(norm_ptr + tl.program_id(0), norm)


def score_triton(maps: torch.Tensor, top_k: int, sigma: float = 0.0, image_threshold: Optional[float] = None,
                 pixel_threshold: Optional[float] = None) -> ScoreResult:
    """maps (B, H, W) or (B, 1, H, W) float32 contiguous -> ScoreResult of tensors on its device."""
    if maps.dtype != torch.float32 or maps.dim() not in (3, 4) or (maps.dim() == 4 and maps.shape[1] != 1):
        raise ValueError(f"maps: expected float32 (B, H, W) or (B, 1, H, W), got {maps.dtype} {tuple(maps.shape)}")
    if not maps.is_contiguous():
        raise ValueError("maps: must be contiguous")
    shape = maps.shape
    b, h, w = shape[0], shape[-2], shape[-1]
    if not 1 <= top_k <= h * w:
        raise ValueError(f"top_k={top_k} must be in [1, {h * w}]")
    m = maps.reshape(b, h, w)
    if sigma > 0:
        taps = _device_taps(sigma, maps.device)
        r = (taps.numel() - 1) // 2
        grid = (triton.cdiv(h * w, BLOCK), b)
        tmp, out = torch.empty_like(m), torch.empty_like(m)
        _smooth_rows_kernel[grid](m, tmp, taps, h, w, r, BLOCK=BLOCK)
        _smooth_cols_kernel[grid](tmp, out, taps, h, w, r, BLOCK=BLOCK)
        m = out
    scores = torch.empty(b, device=maps.device)
    normalized = torch.empty(b, device=maps.device)
    masks = torch.empty((b, h, w), dtype=torch.uint8, device=maps.device) if pixel_threshold is not None else m
    t = min(max(image_threshold, 1e-12), 1 - 1e-12) if image_threshold is not None else 0.5
    _topk_score_kernel[(b,)](
        m, masks, scores, normalized, h * w, top_k,
        pixel_threshold if pixel_threshold is not None else 0.0, t, 0.5 / t, 0.5 / (1 - t),
        HAS_IMAGE=image_threshold is not None, HAS_PIXEL=pixel_threshold is not None, BLOCK=BLOCK)
    mask_out = masks.view(torch.bool).reshape(shape) if pixel_threshold is not None else None
    return ScoreResult(scores, normalized, mask_out, m.reshape(shape))
