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


def band_mask(size: int, rng: np.random.Generator, min_fraction: float = 0.1,
              max_fraction: float = 0.5) -> np.ndarray:
    """float32 (size, size) of 0/1: the part of the image beyond a wavy line across it.

    Large-area defects (an uneven finish, a stain over one end of a part) are regions bounded by
    a long edge rather than blobs; Perlin masks rarely take that shape. The line runs across the
    image (horizontal or vertical), at a depth that leaves `min_fraction`..`max_fraction` of the
    image on the anomalous side, with a low-frequency wiggle of a few percent of the side.
    """
    if not 0 < min_fraction <= max_fraction < 1:
        raise ConfigError(f"band_mask: need 0 < min_fraction <= max_fraction < 1, got {min_fraction}, {max_fraction}")
    depth = rng.uniform(min_fraction, max_fraction) * size
    wiggle = perlin_noise((1, size), (1, int(rng.integers(1, 5))), rng)[0] * rng.uniform(0.0, 0.06) * size
    edge = depth + wiggle  # (size,) boundary position along the line
    pos = np.arange(size, dtype=np.float32)[:, None]  # distance into the image from the chosen side
    mask = (pos < edge[None, :]).astype(np.float32)  # rows 0..edge: a band along the top
    mask = np.rot90(mask, int(rng.integers(4)))  # from any of the four sides
    return np.ascontiguousarray(mask)
