"""Downsampled pixels: the one feature extraction of every baseline, shared by fitting and scoring.

    frame (H, W, C) uint8 -> gray or RGB -> (S, S) area-averaged -> standardised (S*S*C,) float64

As in the classical baselines of the diffusion study (IForest, OCSVM and COPOD on raw pixels,
arXiv 2412.07539), each image becomes one vector of its downsampled pixels. S = 32 by default:
1024 gray features are few enough for an exact One-Class SVM over a few hundred images and for
COPOD's per-feature ranks, and enough that a defect a thirtieth of the image across still moves
a feature (at 16 a pixel of feature covers 1/256 of the part). Standardised with the per-feature
mean and standard deviation of the training images, what OCSVM's RBF kernel needs (IForest and
COPOD do not care: a per-feature affine change keeps their splits and ranks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from dad_edge.data.preprocess import check_frame, to_channels
from dad_edge.errors import ConfigError

DEFAULT_SIZE = 32
# Floor on a feature's standard deviation, in grey levels: a pixel that never changed in
# training (a black border) would otherwise turn one grey level of sensor noise into an
# unbounded z-score.
STD_FLOOR = 1.0
RESIZE = "area"


def downsample(frames: Sequence[np.ndarray], size: int, channels: int, color_order: str = "RGB") -> np.ndarray:
    """Frames (H, W, C) uint8 of any sizes -> (N, size * size * channels) float64 grey levels 0..255.

    Area averaging, not the Detector's bilinear resize: from a 500-pixel image to 32, a bilinear
    reads about 4 source pixels of every 256, so a small defect between its taps would vanish;
    the area average lets every source pixel count.
    """
    out = np.empty((len(frames), size * size * channels), np.float64)
    for i, frame in enumerate(frames):
        pixels = to_channels(check_frame(frame), channels, color_order)  # (H, W, channels) float32
        small = cv2.resize(pixels, (size, size), interpolation=cv2.INTER_AREA)  # (S, S[, C]): cv2 drops C=1
        out[i] = small.reshape(-1)
    return out


@dataclass(frozen=True)
class PixelFeatures:
    """How to turn frames into the vectors a baseline was fitted on; stored in its artifact."""

    image_size: int  # S: frames are downsampled to S x S (also the side eval compares masks at)
    channels: int  # 1 (gray) or 3 (RGB)
    mean: np.ndarray  # (S*S*C,) float64 of the training images
    std: np.ndarray  # (S*S*C,) float64, at least STD_FLOOR

    @property
    def dim(self) -> int:
        return self.image_size * self.image_size * self.channels

    @classmethod
    def fit(cls, frames: Sequence[np.ndarray], image_size: int = DEFAULT_SIZE, channels: int = 1,
            color_order: str = "RGB") -> "PixelFeatures":
        """Statistics of the training frames."""
        check_shape(image_size, channels)
        raw = downsample(frames, image_size, channels, color_order)
        return cls.from_raw(raw, image_size, channels)

    @classmethod
    def from_raw(cls, raw: np.ndarray, image_size: int, channels: int) -> "PixelFeatures":
        """Statistics of already downsampled training vectors (N, S*S*C)."""
        return cls(image_size, channels, raw.mean(axis=0), np.maximum(raw.std(axis=0), STD_FLOOR))

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        """(N, D) downsampled grey levels -> (N, D) z-scores."""
        return (raw - self.mean) / self.std

    def __call__(self, frames: Sequence[np.ndarray], color_order: str = "RGB") -> np.ndarray:
        """Frames -> (N, D) standardised features."""
        return self.standardise(downsample(frames, self.image_size, self.channels, color_order))


def check_shape(image_size: int, channels: int) -> None:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 2:
        raise ConfigError(f"feature size {image_size!r} must be an integer >= 2 (pixels per side; default "
                          f"{DEFAULT_SIZE})")
    if channels not in (1, 3):
        raise ConfigError(f"channels={channels!r} must be 1 (gray) or 3 (RGB)")
