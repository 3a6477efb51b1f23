"""What every data layout reads into: the samples of one category (product), split as training expects.

A layout reader (MVTec AD, VisA, DAGM 2007) lists the normal training images and the test images
with their masks; `Category` adds what is the same for all of them: the seeded validation split of
the normal training images and the list of defect types. Training, evaluation and the baselines see
only this interface, so they take any layout that `open_category` (layouts.py) recognises.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from dad_edge.data.imageio import read_mask
from dad_edge.errors import ConfigError, DataError

GOOD = "good"
# Mask pixels brighter than this are defect. MVTec-style masks are 0 / 255, often anti-aliased or
# saved as JPEG, so mid-grey splits them; label images that store a small class index (VisA: 1, 2, ...)
# or 0 / 1 use 0 instead.
MASK_THRESHOLD = 127


@dataclass(frozen=True)
class Sample:
    """One image of a category and where its mask is."""

    path: Path
    defect_type: str  # "good" or the name of the defect type (MVTec: the test sub-folder)
    mask_path: Optional[Path]  # None for good images and for defects without ground truth
    mask_threshold: int = MASK_THRESHOLD  # mask pixels above this grey value are defect

    @property
    def label(self) -> int:
        """0 for a normal image, 1 for any defect, even when its mask is empty."""
        return 0 if self.defect_type == GOOD else 1

    def read_mask(self) -> np.ndarray:
        """The ground truth as bool (H, W); DataError (from read_image) for a missing or broken file."""
        if self.mask_path is None:
            raise DataError(f"{self.path}: has no mask file; pixel metrics need one for every defect image")
        return read_mask(self.mask_path, self.mask_threshold)


class Category:
    """The normal training images and the test images of one category, in some folder layout."""

    def __init__(self, root: Union[str, Path]):
        self.root = Path(root)

    def train_samples(self) -> List[Sample]:
        """The normal training images, sorted."""
        raise NotImplementedError

    def test_samples(self) -> List[Sample]:
        """Every test image: good ones first, then each defect type."""
        raise NotImplementedError

    def train_val_split(self, val_fraction: float = 0.1, seed: int = 0) -> Tuple[List[Sample], List[Sample]]:
        """Hold out a seeded random part of the normal training images for validation; both parts stay sorted."""
        if not 0.0 <= val_fraction < 1.0:
            raise ConfigError(f"val_fraction={val_fraction} must be in [0, 1)")
        samples = self.train_samples()
        n = len(samples)
        n_val = 0 if val_fraction == 0 or n < 2 else min(n - 1, max(1, round(n * val_fraction)))
        val_idx = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
        train = [s for i, s in enumerate(samples) if i not in val_idx]
        val = [s for i, s in enumerate(samples) if i in val_idx]
        return train, val

    def defect_types(self) -> List[str]:
        """Names of the defect types in the test set, sorted."""
        return sorted({s.defect_type for s in self.test_samples() if s.label == 1})
