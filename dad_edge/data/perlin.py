"""2-D Perlin noise and the thresholded Perlin masks of DRAEM-style synthetic anomalies."""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

from dad_edge.errors import ConfigError


def _fade(t: np.ndarray) -> np.ndarray:
    return ((6 * t - 15) * t + 10) * t * t * t  # 6t^5 - 15t^4 + 10t^3


def perlin_noise(shape: Tuple[int, int], res: Tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gradient noise of `shape` with `res` lattice cells per axis, float32 in about [-1, 1].

    A shape not divisible by `res` is generated at the next multiple and cropped, so that
    every lattice cell covers a whole number of pixels.
    """
    h, w = int(shape[0]), int(shape[1])
    ry, rx = int(res[0]), int(res[1])
    if h < 1 or w < 1 or ry < 1 or rx < 1:
        raise ConfigError(f"perlin_noise: shape {shape} and res {res} must be positive")
    dy, dx = -(-h // ry), -(-w // rx)  # pixels per cell, rounded up
    angles = 2 * np.pi * rng.random((ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)

    ys, xs = np.arange(ry * dy), np.arange(rx * dx)
    cy, cx = (ys // dy)[:, None], (xs // dx)[None, :]  # lattice cell of each pixel
    fy, fx = ((ys % dy) / dy)[:, None], ((xs % dx) / dx)[None, :]  # position inside the cell

    def corner(oy: int, ox: int) -> np.ndarray:
        g = grads[cy + oy, cx + ox]
        return g[..., 0] * (fy - oy) + g[..., 1] * (fx - ox)

    ty, tx = _fade(fy), _fade(fx)
    left = corner(0, 0) + ty * (corner(1, 0) - corner(0, 0))  # along y, at the cell's left edge
    right = corner(0, 1) + ty * (corner(1, 1) - corner(0, 1))
    noise = np.sqrt(2) * (left + tx * (right - left))
    return noise[:h, :w].astype(np.float32)


def perlin_mask(size: int, rng: np.random.Generator, min_scale: int = 0, max_scale: int = 6,
                threshold: float = 0.5) -> np.ndarray:
    """float32 (size, size) of 0/1: rotated Perlin noise above `threshold`.

    The lattice resolution per axis is 2**k, k drawn from [min_scale, max_scale) as in
    DRAEM (scales 1..32 by default); the rotation is uniform in [-90, 90] degrees.
    """
    if not 0 <= min_scale < max_scale:
        raise ConfigError(f"perlin_mask: need 0 <= min_scale < max_scale, got {min_scale}, {max_scale}")
    sy = 2 ** int(rng.integers(min_scale, max_scale))
    sx = 2 ** int(rng.integers(min_scale, max_scale))
    noise = perlin_noise((size, size), (sy, sx), rng)
    angle = float(rng.uniform(-90.0, 90.0))
    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    rot = cv2.getRotationMatrix2D(centre, angle, 1.0)
    # Corners rotated in from outside are 0, below threshold: no anomaly there (as in DRAEM).
    noise = cv2.warpAffine(noise, rot, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return (noise > threshold).astype(np.float32)
