"""Per-image gain normalisation of the model input (ModelConfig.input_gain).

    x' = clamp(p * reference / mean(p), 0, 1) * 2 - 1,   p = (x + 1) / 2 (the pixels in [0, 1]),
                                                          mean over the image's pixels and channels

Why: where the good parts themselves come in several exposures (magnetic tile: six lighting
conditions one gain apart, mean grey 66 to 151 with the spread rising in proportion), the networks
respond to contrast, and a brighter good part outranks a darker defective one (benchmarks/README.md,
session 13: the image score's correlation with the mean grey was 0.43-0.62 on held-out good images).
The score's exposure correction (model/exposure_term.py) takes a fitted slope out of the score
after the fact; this step removes the cause: every frame is scaled to one mean brightness before
the networks see it, in training and at inference alike, so the six conditions become one.

The gain is the frame's own, measured on the whole frame (defect included) at inference and on the
whole training sample (synthetic anomaly included) in training, so both see the same arithmetic; the
clean target of an anomalous sample takes the sample's gain, so the two differ only where the anomaly
is. A part whose defects change its overall brightness cannot be told apart by brightness once this
is on: the training recipe turns it on only where the good images' brightness varies
(training/recipe.py, input_gain_for), where brightness tells nothing about defects.

`reference` is a constant of the config (the training images' mean brightness), so an exported graph
computes the same: ReduceMean, Div, Mul, Clip in ONNX, before the noising.
"""
from __future__ import annotations

from typing import Optional

import torch

# The smallest mean brightness a gain is computed from: an all-black frame is scaled by at most
# reference / MIN_MEAN instead of dividing by zero.
MIN_MEAN = 1e-3


def image_gain(x: torch.Tensor, reference: float) -> Optional[torch.Tensor]:
    """x (B, C, S, S) in [-1, 1] -> (B, 1, 1, 1) float32 gain that brings each image's mean brightness to
    `reference` (in [0, 1] of the pixel range); None when reference is 0 (off)."""
    if reference <= 0:
        return None
    mean = ((x.float() + 1.0) * 0.5).mean(dim=(1, 2, 3), keepdim=True)
    return reference / mean.clamp_min(MIN_MEAN)


def apply_gain(x: torch.Tensor, gain: Optional[torch.Tensor]) -> torch.Tensor:
    """x (B, C, S, S) in [-1, 1] scaled by `gain` (B, 1, 1, 1) in pixel terms, clipped to the pixel range,
    back in [-1, 1] at x's dtype; x itself when gain is None (off)."""
    if gain is None:
        return x
    return ((x.float() + 1.0) * (0.5 * gain)).clamp(0.0, 1.0).mul(2.0).sub(1.0).to(x.dtype)


def normalise_gain(x: torch.Tensor, reference: float) -> torch.Tensor:
    """x with each image's own gain applied (reference > 0); x itself when reference is 0 (off)."""
    return apply_gain(x, image_gain(x, reference))
