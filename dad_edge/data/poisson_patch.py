"""Natural synthetic anomalies: a patch of another good image, Poisson-blended (as NSA does).

Schlüter et al., "Natural Synthetic Anomalies for Self-Supervised Anomaly Detection and
Localization" (ECCV 2022): a rectangle cut from a normal image of the same product, rescaled,
optionally changed in brightness and contrast, and pasted elsewhere with Poisson image editing
(OpenCV's seamlessClone), so that its border carries no seam the network could learn instead of
the content. The patch is the product's own surface out of place (another finish, a shifted
structure), closer to real subtle defects than foreign textures are.

The label is where the paste changed the image by more than CHANGE_THRESHOLD grey levels (smoothed
over LABEL_SIGMA pixels, holes closed): Poisson blending takes the patch's gradients and the target's border, so a
patch of the same finish changes almost nothing and must not be labelled an anomaly.
"""
from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

SIDE_RANGE = (0.1, 0.5)  # patch side as a share of the image side, per axis
SCALE_RANGE = (0.7, 1.3)  # the donor region is this many times the pasted patch (resized to it)
GAIN_RANGE = (1.3, 2.0)  # contrast of the patch times this or divided by it
CHANGE_THRESHOLD = 4.0  # grey levels (0..255), after smoothing: a smaller mean change is no anomaly
LABEL_SIGMA = 1.5  # pixels
MIN_PIXELS = 12  # a label smaller than this is dropped (the caller draws another kind of anomaly)


def _three_channels(x: np.ndarray) -> np.ndarray:
    return x if x.shape[2] == 3 else np.repeat(x, 3, axis=2)


def _side(s: int, rng: np.random.Generator) -> int:
    side = int(rng.integers(max(2, int(SIDE_RANGE[0] * s)), max(3, int(SIDE_RANGE[1] * s)) + 1))
    return min(side, s - 4)  # seamlessClone needs the patch inside the target's border


def poisson_patch(image: np.ndarray, donor: np.ndarray, rng: np.random.Generator
                  ) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(augmented float32 (S, S, C) 0..255, mask float32 (S, S) in {0, 1}), or None when the paste
    changed fewer than MIN_PIXELS pixels. `image` and `donor`: uint8 (S, S, C), C in (1, 3)."""
    s, _, c = image.shape
    h, w = _side(s, rng), _side(s, rng)
    scale = float(rng.uniform(*SCALE_RANGE))
    sh, sw = min(s, max(2, int(round(h * scale)))), min(s, max(2, int(round(w * scale))))
    sy, sx = int(rng.integers(0, s - sh + 1)), int(rng.integers(0, s - sw + 1))
    patch = donor[sy:sy + sh, sx:sx + sw]
    patch = cv2.resize(patch, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, c)
    # Another finish: Poisson blending keeps the patch's gradients and drops its mean level, so
    # the change that survives is one of contrast (gain away from 1) and of texture (the donor's).
    gain = float(rng.uniform(*GAIN_RANGE)) ** (1 if rng.random() < 0.5 else -1)
    patch = np.clip((patch.astype(np.float32) - patch.mean()) * gain + patch.mean(), 0, 255).astype(np.uint8)
    ty = int(rng.integers(2, s - h - 1))
    tx = int(rng.integers(2, s - w - 1))
    centre = (tx + w // 2, ty + h // 2)
    # The mask's inner rectangle only: a full-patch mask touching the patch edge is undefined there.
    inner = np.zeros((h, w), np.uint8)
    inner[1:-1, 1:-1] = 255
    # NORMAL_CLONE: MIXED_CLONE keeps the target's stronger gradients, undoing a lowered contrast.
    cloned = cv2.seamlessClone(_three_channels(patch), np.ascontiguousarray(_three_channels(image)), inner, centre,
                               cv2.NORMAL_CLONE)
    cloned = cloned if c == 3 else cloned[:, :, :1]
    change = np.abs(cloned.astype(np.float32) - image.astype(np.float32)).mean(axis=2)
    ys, xs = np.nonzero(change)
    if len(ys) == 0:
        return None
    # A region, not speckle: the change smoothed over a few pixels, holes closed; and nothing
    # outside the rectangle that the paste changed (where OpenCV put it, to the pixel).
    smooth = cv2.GaussianBlur(change, (0, 0), LABEL_SIGMA)
    mask = cv2.morphologyEx((smooth > CHANGE_THRESHOLD).astype(np.uint8), cv2.MORPH_CLOSE,
                            np.ones((5, 5), np.uint8)).astype(np.float32)
    box = np.zeros_like(mask)
    box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = 1
    mask *= box
    if mask.sum() < MIN_PIXELS:
        return None
    return cloned.astype(np.float32), mask
