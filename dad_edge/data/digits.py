"""The built-in one-class data set: the handwritten digits that scikit-learn ships, no download.

1797 real handwritten digits (the UCI optical-recognition set: 8x8 blocks counting the ink pixels of
a 32x32 bitmap, 0..16), about 180 per class. The counts are scaled to grey levels 0..255 and
upsampled with the project's bilinear resize to `size` (32 by default: the bitmap size they were
counted from, and the smallest input of the tiny presets), ink bright on black as in MNIST.
"""
from __future__ import annotations

import numpy as np

from dad_edge.data.oneclass import ArrayImages, OneClassDataset
from dad_edge.data.preprocess import resize_bilinear
from dad_edge.errors import ConfigError, DataError

DIGITS_MAX = 16.0  # the largest ink count of an 8x8 block
DEFAULT_SIZE = 32


def load_digits_dataset(size: int = DEFAULT_SIZE) -> OneClassDataset:
    """The ten digit classes "0".."9" as uint8 (1797, size, size, 1), no train / test partition."""
    if size < 8:
        raise ConfigError(f"size={size} must be at least 8 (the digits are 8x8)")
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError("the digits data set comes with scikit-learn: pip install scikit-learn") from e
    digits = load_digits()
    grey = digits.images.astype(np.float32) * (255.0 / DIGITS_MAX)  # (N, 8, 8)
    images = np.empty((len(grey), size, size, 1), np.uint8)
    for i, g in enumerate(grey):
        images[i] = np.clip(np.rint(resize_bilinear(g[:, :, None], size)), 0, 255).astype(np.uint8)
    names = [str(int(t)) for t in digits.target_names]
    return OneClassDataset("digits", ArrayImages(images), digits.target, names)
