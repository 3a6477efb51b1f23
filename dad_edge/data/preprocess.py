"""The one pre-processing every path shares: training, evaluation and every backend.

frame (H, W) or (H, W, C) uint8, BGR or RGB  ->  float32 (C, S, S) in [-1, 1], RGB or gray.

Resizing is bilinear with half-pixel centres and edge clamping (OpenCV INTER_LINEAR,
torch `interpolate(bilinear, align_corners=False, antialias=False)`), written out here in
float arithmetic so that the fused kernels can match it to float precision. Colour is
converted before resizing; gray uses the ITU-R BT.601 weights OpenCV uses.
"""
from __future__ import annotations

import numpy as np

from dad_edge.errors import InputError

# x = v * SCALE + OFFSET maps uint8 [0, 255] onto the diffusion range [-1, 1].
SCALE = 2.0 / 255.0
OFFSET = -1.0
GRAY_WEIGHTS_RGB = (0.299, 0.587, 0.114)


def check_frame(frame, where: str = "image") -> np.ndarray:
    """Validate a frame and return it as (H, W, C) with C in {1, 3, 4}."""
    if not isinstance(frame, np.ndarray):
        raise InputError(f"{where}: expected a numpy array, got {type(frame).__name__}")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise InputError(f"{where}: expected shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {frame.shape}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise InputError(f"{where}: image has zero size {frame.shape}")
    if frame.dtype != np.uint8:
        if np.issubdtype(frame.dtype, np.floating):
            if not np.isfinite(frame).all():
                raise InputError(f"{where}: float image contains NaN or inf")
            raise InputError(f"{where}: got dtype {frame.dtype}; pass uint8 0..255 "
                             "(e.g. (img * 255).round().astype(np.uint8) for a [0, 1] float image)")
        if frame.dtype == np.uint16:
            raise InputError(f"{where}: got uint16; convert to uint8 first (e.g. (img >> 8).astype(np.uint8))")
        raise InputError(f"{where}: got dtype {frame.dtype}; pass a uint8 image")
    return frame


def to_channels(frame: np.ndarray, channels: int, color_order: str = "BGR") -> np.ndarray:
    """(H, W, C) uint8 -> (H, W, channels) float32 in model colour order (RGB or gray)."""
    if color_order not in ("BGR", "RGB"):
        raise InputError(f"color_order={color_order!r} must be 'BGR' or 'RGB'")
    f = frame.astype(np.float32)
    if f.shape[2] == 4:
        f = f[:, :, :3]
    if f.shape[2] == 3 and color_order == "BGR":
        f = f[:, :, ::-1]
    if channels == 3:
        return np.ascontiguousarray(np.repeat(f, 3, axis=2) if f.shape[2] == 1 else f)
    if f.shape[2] == 1:
        return f
    r, g, b = GRAY_WEIGHTS_RGB
    return (r * f[:, :, 0] + g * f[:, :, 1] + b * f[:, :, 2])[:, :, None]


def bilinear_taps(src: int, dst: int):
    """Source indices and weights of a half-pixel-centred bilinear resize along one axis."""
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0.0, src - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, src - 1)
    w1 = (pos - i0).astype(np.float32)
    return i0, i1, w1


def resize_bilinear(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) float32 -> (size, size, C) float32, bilinear as documented above."""
    h, w = img.shape[:2]
    y0, y1, wy = bilinear_taps(h, size)
    x0, x1, wx = bilinear_taps(w, size)
    wy = wy[:, None, None]
    wx = wx[None, :, None]
    top = img[y0][:, x0] * (1 - wx) + img[y0][:, x1] * wx
    bottom = img[y1][:, x0] * (1 - wx) + img[y1][:, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def to_pixels(frame: np.ndarray, size: int, channels: int, color_order: str = "BGR") -> np.ndarray:
    """One frame -> (channels, size, size) float32 pixel values in [0, 255].

    Everything but the normalisation: exported graphs take this and normalise inside.
    """
    frame = check_frame(frame)
    x = resize_bilinear(to_channels(frame, channels, color_order), size)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(frame: np.ndarray, size: int, channels: int, color_order: str = "BGR") -> np.ndarray:
    """One frame -> (channels, size, size) float32 in [-1, 1]."""
    return to_pixels(frame, size, channels, color_order) * SCALE + OFFSET


def preprocess_batch(frames, size: int, channels: int, color_order: str = "BGR") -> np.ndarray:
    """A list of frames (any sizes) -> (B, channels, size, size) float32."""
    out = np.empty((len(frames), channels, size, size), np.float32)
    for i, frame in enumerate(frames):
        out[i] = preprocess(frame, size, channels, color_order)
    return out
