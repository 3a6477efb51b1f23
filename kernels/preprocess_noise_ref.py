"""Reference of the fused pre-processing + forward noising: frames -> U-Net input and clean x.

The truth is `dad_edge.data.preprocess` (colour, bilinear half-pixel resize with edge clamp,
x = v * 2/255 - 1) followed by step 1 of the norm-guided recipe with the model's fixed noise:

    x_s = sqrt(abar_s) x + sqrt(1 - abar_s) noise[0]      -> unet_in[0:B]
    x_l = sqrt(abar_l) x + sqrt(1 - abar_l) noise[1]      -> unet_in[B:2B]  (two-pass models only)

The fused forms read each frame once (uint8) and write x, x_s and x_l once each:
bytes moved per sample = H*W*C_in (frame) + 2*C*S*S*4 (noise, shared by the batch, so
cached) + 3*C*S*S*4 (outputs), against 4 passes of float32 temporaries for this reference.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from dad_edge.data.preprocess import OFFSET, SCALE, preprocess_batch, to_pixels
from dad_edge.model.schedule import add_noise, eval_coefficients

# (sqrt(abar_s), sqrt(1 - abar_s), sqrt(abar_l), sqrt(1 - abar_l)), float64: schedule.EvalCoefficients
# or any 4-tuple.
NoiseCoefficients = Tuple[float, float, float, float]

# The four scalars of step 1 at the config's t_s and t_l: derived in one place, the schedule.
noise_coefficients = eval_coefficients


def preprocess_ref(frames: Sequence[np.ndarray], size: int, channels: int, color_order: str = "BGR",
                   normalize: bool = True) -> np.ndarray:
    """Frames (any sizes) -> (B, C, S, S) float32: in [-1, 1], or pixel values 0..255 if not normalize."""
    if normalize:
        return preprocess_batch(frames, size, channels, color_order)
    return np.stack([to_pixels(f, size, channels, color_order) for f in frames]).astype(np.float32, copy=False)


def preprocess_noise_ref(frames: Sequence[np.ndarray], size: int, channels: int, color_order: str,
                         noise: np.ndarray, coefs: NoiseCoefficients,
                         two_pass: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """Frames -> (unet_in (2B, C, S, S), x (B, C, S, S)), float32; noise is (2, C, S, S).

    A single-pass model (two_pass=False) runs the U-Net at t_s only: unet_in is x_s, (B, C, S, S).
    """
    x = preprocess_batch(frames, size, channels, color_order)  # (B, C, S, S)
    # Python-float scalars times float32 arrays compute in float32, as DiffusionAD.prepare does.
    x_s = add_noise(x, coefs[:2], noise[0])
    if not two_pass:
        return x_s, x
    unet_in = np.concatenate([x_s, add_noise(x, coefs[2:], noise[1])])  # (2B, C, S, S)
    return unet_in, x


__all__ = ["SCALE", "OFFSET", "noise_coefficients", "preprocess_ref", "preprocess_noise_ref"]
