"""Host wrappers of the C extension dad_edge._C (kernels/csrc/dad_edge_C.c): numpy in, numpy out.

Each wrapper validates and allocates like its Triton twin, then calls one C function that
runs the fused loop on the extension's thread pool with the GIL released. The references
are in the *_ref modules; `C_ERROR` says why the extension is missing when it is.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from dad_edge.data.preprocess import check_frame

from .score_ref import ScoreResult, gaussian_taps

try:
    from dad_edge import _C
    C_ERROR: Optional[str] = None
except ImportError as exc:  # not built: no compiler at install time
    _C = None
    C_ERROR = f"dad_edge._C is not built ({exc}); reinstall with a C compiler (pip install -e .)"


def _require() -> None:
    if _C is None:
        raise RuntimeError(C_ERROR)


def num_threads() -> int:
    """Threads a C kernel call may use (DAD_EDGE_NUM_THREADS, else the online cores)."""
    _require()
    return _C.num_threads()


def set_num_threads(n: int) -> None:
    """Threads per C kernel call; 0 restores the default."""
    _require()
    _C.set_num_threads(n)


def as_frames(frames) -> list:
    """A (B, H, W[, C]) uint8 array or a sequence of (H, W[, C]) frames -> list of contiguous (H, W, C)."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = list(frames)
    return [np.ascontiguousarray(check_frame(f, f"frame {i}")) for i, f in enumerate(frames)]


def preprocess_noise_c(frames: Sequence[np.ndarray], size: int, channels: int, color_order: str,
                       noise: Optional[np.ndarray], coefs, scale: float, offset: float,
                       x_out: Optional[np.ndarray] = None,
                       unet_out: Optional[np.ndarray] = None,
                       two_pass: bool = True) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """As preprocess_noise_triton on numpy: -> (unet_in (2B, C, S, S) or None, x (B, C, S, S)).

    x_out may be a view with contiguous samples, e.g. seg_in[:, :C] of a (B, 2C, S, S) array.
    """
    _require()
    if color_order not in ("BGR", "RGB"):
        raise ValueError(f"color_order={color_order!r} must be 'BGR' or 'RGB'")
    frames = as_frames(frames)
    nb = len(frames)
    x = x_out if x_out is not None else np.empty((nb, channels, size, size), np.float32)
    unet = None
    if noise is not None:
        noise = np.ascontiguousarray(noise, dtype=np.float32)
        shape = ((2 if two_pass else 1) * nb, channels, size, size)
        unet = unet_out if unet_out is not None else np.empty(shape, np.float32)
        if unet.shape != shape:
            raise ValueError(f"unet_out: expected {shape}, got {unet.shape}")
    _C.preprocess(frames, x, unet, noise, size, color_order == "BGR", scale, offset,
                  tuple(float(c) for c in coefs) if noise is not None else None)
    return unet, x


def combine_c(x: np.ndarray, eps: np.ndarray, noise: np.ndarray, coefs, w: float,
              out: Optional[np.ndarray] = None) -> np.ndarray:
    """As combine_triton on numpy: -> seg_in (B, 2C, S, S); x is not copied if it is out[:, :C]."""
    _require()
    b, c, h, w_ = x.shape
    if out is None:
        out = np.empty((b, 2 * c, h, w_), np.float32)
    copy_x = not (x.__array_interface__["data"][0] == out.__array_interface__["data"][0]
                  and x.strides[0] == out.strides[0])
    _C.combine(x, np.ascontiguousarray(eps), np.ascontiguousarray(noise), out,
               tuple(float(v) for v in coefs), float(w), copy_x)
    return out


def score_c(maps: np.ndarray, top_k: int, sigma: float = 0.0, image_threshold: Optional[float] = None,
            pixel_threshold: Optional[float] = None) -> ScoreResult:
    """As score_ref: maps (B, H, W) or (B, 1, H, W) float32 -> ScoreResult."""
    _require()
    shape = maps.shape
    if maps.ndim not in (3, 4) or (maps.ndim == 4 and shape[1] != 1):
        raise ValueError(f"maps: expected (B, H, W) or (B, 1, H, W), got {shape}")
    b, h, w = shape[0], shape[-2], shape[-1]
    if not 1 <= top_k <= h * w:
        raise ValueError(f"top_k={top_k} must be in [1, {h * w}]")
    m = np.ascontiguousarray(maps, dtype=np.float32).reshape(b, h, w)
    if sigma > 0:
        smoothed = np.empty_like(m)
        _C.smooth(m, smoothed, gaussian_taps(sigma))
        m = smoothed
    scores, normalized = np.empty(b, np.float32), np.empty(b, np.float32)
    masks = np.empty((b, h * w), np.uint8) if pixel_threshold is not None else None
    _C.topk_score(m.reshape(b, h * w), top_k, image_threshold, pixel_threshold, scores, normalized, masks)
    return ScoreResult(scores, normalized, None if masks is None else masks.view(bool).reshape(shape),
                       m.reshape(shape))
