"""Thin synthetic anomalies: a crack or scratch drawn as a wandering line (after CutPaste's "scar").

DRAEM's Perlin masks are blobs a few pixels across at the least; a crack is a line one or two
pixels wide and tens long. A network that has only seen blobs lets such lines through: on magnetic
tile the maps peak lower inside real cracks than on good tiles (benchmarks/README.md, session 18).
Li et al., "CutPaste" (CVPR 2021), found thin "scar" pastes the stronger signal for thin defects.
Here the line is drawn, not pasted: a curve that turns a little at every step, a few pixels wide,
darkening the surface under it (a crack's shadow) or, less often, brightening it (a scratch
catching the light), anti-aliased so that its edges carry no jagged marks that good images lack.

The label is the stroke where it changed the image by at least LABEL_ALPHA of its full change; its
anti-aliased rim, covering less of a pixel, changes the image by less outside the label.
"""
from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

LENGTH_RANGE = (0.1, 0.6)  # as a share of the image side
WIDTH_RANGE = (0.75, 2.0)  # pixels at REFERENCE_SIZE; scaled with the image
REFERENCE_SIZE = 128
TURN_SIGMA = 0.15  # radians of random turn per step of STEP pixels
STEP = 2.0  # pixels between the curve's vertices at REFERENCE_SIZE
DARKEN_RANGE = (0.25, 0.7)  # a dark line multiplies the image by 1 - this
BRIGHTEN_RANGE = (25.0, 90.0)  # grey levels a bright line adds
DARK_PROB = 0.8  # cracks, which are dark, are the usual case
LABEL_ALPHA = 0.3
SUPERSAMPLE = 4  # the stroke is drawn this many times finer and averaged down: sub-pixel widths
MIN_PIXELS = 4  # a label smaller than this is dropped (the caller draws another kind of anomaly)


def line_stroke(size: int, rng: np.random.Generator) -> np.ndarray:
    """float32 (size, size) in [0, 1]: how much of the line covers each pixel."""
    scale = size / REFERENCE_SIZE
    length = rng.uniform(*LENGTH_RANGE) * size
    width = rng.uniform(*WIDTH_RANGE) * scale
    step = STEP * scale
    n = max(2, int(np.ceil(length / step)) + 1)
    angle = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, TURN_SIGMA, size=n - 1))
    start = rng.uniform(0.1 * size, 0.9 * size, size=2)
    points = np.vstack([start, start + np.cumsum(np.stack([np.cos(angle), np.sin(angle)], 1) * step, 0)])
    fine = size * SUPERSAMPLE
    canvas = np.zeros((fine, fine), np.uint8)
    pts = np.round(points * SUPERSAMPLE * 16).astype(np.int32).reshape(-1, 1, 2)  # 4 fractional bits (shift=4)
    cv2.polylines(canvas, [pts], False, 255, thickness=max(1, int(round(width * SUPERSAMPLE))),
                  lineType=cv2.LINE_AA, shift=4)
    return cv2.resize(canvas.astype(np.float32) / 255.0, (size, size), interpolation=cv2.INTER_AREA)


def line_anomaly(image: np.ndarray, rng: np.random.Generator, foreground: Optional[np.ndarray] = None
                 ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(augmented float32 (S, S, C) 0..255, mask float32 (S, S) in {0, 1}), or None when the line
    fell off the foreground. `image`: uint8 or float32 (S, S, C) pixel values 0..255."""
    size = image.shape[0]
    alpha = line_stroke(size, rng)
    if foreground is not None:
        alpha *= foreground
    mask = (alpha >= LABEL_ALPHA).astype(np.float32)
    if mask.sum() < MIN_PIXELS:
        return None
    x = image.astype(np.float32)
    a = alpha[:, :, None]
    if rng.random() < DARK_PROB:
        out = x * (1 - a * np.float32(rng.uniform(*DARKEN_RANGE)))
    else:
        out = np.minimum(x + a * np.float32(rng.uniform(*BRIGHTEN_RANGE)), 255.0)
    return out.astype(np.float32, copy=False), mask  # already float32: x is, and the factors are
