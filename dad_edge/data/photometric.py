"""Photometric augmentations of uint8 (S, S, C) images, C in (1, 3), as DRAEM applies to its anomaly sources.

random_photometric changes an anomaly source's look (several of them at once, as DRAEM does);
finish_change is the milder set that keeps an image's own texture (a changed surface finish).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

NUM_AUGMENTATIONS = 3


def per_channel(x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    # OpenCV drops a trailing axis of length 1 and some functions take one channel only.
    return np.stack([fn(np.ascontiguousarray(x[:, :, c])) for c in range(x.shape[2])], axis=2)


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _brightness_contrast(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f = x.astype(np.float32)
    mean = f.mean()
    return to_uint8((f - mean) * rng.uniform(0.6, 1.4) + mean + rng.uniform(-30, 30))


def _gamma(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    levels = np.arange(256) / 255.0
    luts = [to_uint8(255 * levels ** rng.uniform(0.5, 2.0)) for _ in range(x.shape[2])]
    return np.stack([luts[c][x[:, :, c]] for c in range(x.shape[2])], axis=2)


def _hue_saturation(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV).astype(np.int32)
    hsv[:, :, 0] = (hsv[:, :, 0] + int(rng.integers(-25, 26))) % 180  # OpenCV hue unit = 2 degrees
    hsv[:, :, 1] = np.clip(hsv[:, :, 1] * rng.uniform(0.5, 1.5), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


def _invert(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 255 - x


def _posterize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    bits = int(rng.integers(2, 6))
    return x & np.uint8((0xFF << (8 - bits)) & 0xFF)


def _solarize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.where(x >= int(rng.integers(32, 129)), 255 - x, x).astype(np.uint8)


def _sharpen(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f = x.astype(np.float32)
    blur = per_channel(f, lambda c: cv2.GaussianBlur(c, (0, 0), rng.uniform(1.0, 2.0)))
    return to_uint8(f + rng.uniform(0.5, 2.0) * (f - blur))


def _equalize(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return per_channel(x, cv2.equalizeHist)


def _autocontrast(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    f = x.astype(np.float32)
    lo, hi = f.min(axis=(0, 1)), f.max(axis=(0, 1))
    return to_uint8((f - lo) * (255.0 / np.maximum(hi - lo, 1.0)))


_GRAY_AUGMENTATIONS = (_brightness_contrast, _gamma, _invert, _posterize, _solarize, _sharpen,
                       _equalize, _autocontrast)
_COLOR_AUGMENTATIONS = _GRAY_AUGMENTATIONS + (_hue_saturation,)


def _blur(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return to_uint8(per_channel(x.astype(np.float32), lambda c: cv2.GaussianBlur(c, (0, 0), rng.uniform(1.0, 3.0))))


# A changed surface finish: the part's own texture, brighter or darker, flatter or rougher.
_FINISH_CHANGES = (_brightness_contrast, _gamma, _sharpen, _blur)


def finish_change(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One or two mild photometric changes that keep the image's own texture (no shuffle)."""
    for i in rng.choice(len(_FINISH_CHANGES), size=int(rng.integers(1, 3)), replace=False):
        x = _FINISH_CHANGES[i](x, rng)
    return x


def random_photometric(x: np.ndarray, rng: np.random.Generator, n: int = NUM_AUGMENTATIONS) -> np.ndarray:
    """Apply `n` distinct random photometric augmentations in random order."""
    ops = _COLOR_AUGMENTATIONS if x.shape[2] == 3 else _GRAY_AUGMENTATIONS
    for i in rng.choice(len(ops), size=n, replace=False):
        x = ops[i](x, rng)
    return x
