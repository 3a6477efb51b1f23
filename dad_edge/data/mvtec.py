"""A reader for one category in the MVTec AD folder layout (also MPDD, BTAD, magnetic_tile).

    <root>/train/good/*.png                      normal images for training
    <root>/test/good/*.png                       normal test images
    <root>/test/<defect>/**/<stem>.png           anomalous test images, any nesting
    <root>/ground_truth/<defect>/**/<stem>_mask.png   their masks (also <stem>.png)
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np

from dad_edge.errors import ConfigError, DataError
from dad_edge.data.category import GOOD, Category, Sample
from dad_edge.data.imageio import IMAGE_EXTENSIONS, is_grayscale, list_images, read_image, resize_mask
from dad_edge.data.preprocess import resize_bilinear, to_channels

__all__ = ["GOOD", "LAYOUT_HINT", "MVTecCategory", "Sample", "detect_channels", "has_masks", "load_images",
           "load_masks"]
LAYOUT_HINT = ("expected the MVTec AD layout: <category>/train/good/ (normal images), "
               "<category>/test/good/ and <category>/test/<defect>/ (test images), "
               "<category>/ground_truth/<defect>/<stem>_mask.png (masks)")


def _subfolders(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class MVTecCategory(Category):
    """The train and test samples of one category folder."""

    def __init__(self, root: Union[str, Path]):
        super().__init__(root)
        if not self.root.exists():
            raise DataError(f"{self.root}: no such folder; {LAYOUT_HINT}")
        if not self.root.is_dir():
            raise DataError(f"{self.root}: not a folder; {LAYOUT_HINT}")
        good = self.root / "train" / GOOD
        if not good.is_dir():
            # A common mistake is passing the dataset folder instead of one category in it.
            categories = [p.name for p in _subfolders(self.root) if (p / "train" / GOOD).is_dir()]
            hint = f" It holds categories {', '.join(categories)}: pass one of them." if categories else ""
            raise DataError(f"{self.root}: no train/good/ folder; {LAYOUT_HINT}.{hint}")
        if not list_images(good, recursive=True):
            raise DataError(f"{good}: has no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                            "put the normal training images there")

    def train_samples(self) -> List[Sample]:
        """The normal training images, sorted."""
        return [Sample(p, GOOD, None) for p in list_images(self.root / "train" / GOOD, recursive=True)]

    def _test_dir(self) -> Path:
        test = self.root / "test"
        if not test.is_dir():
            raise DataError(f"{self.root}: no test/ folder; {LAYOUT_HINT}")
        return test

    def defect_types(self) -> List[str]:
        """Names of the test sub-folders other than good, sorted."""
        return [p.name for p in _subfolders(self._test_dir()) if p.name != GOOD]

    def test_samples(self) -> List[Sample]:
        """Every test image: good first if present, then each defect folder, sorted within."""
        test = self._test_dir()
        folders = _subfolders(test)
        if not folders:
            raise DataError(f"{test}: has no sub-folders; {LAYOUT_HINT}")
        folders.sort(key=lambda p: (p.name != GOOD, p.name))
        samples: List[Sample] = []
        for folder in folders:
            images = list_images(folder, recursive=True)
            if not images:
                raise DataError(f"{folder}: has no image files; add the test images or remove the folder")
            if folder.name == GOOD:
                samples += [Sample(p, GOOD, None) for p in images]
            else:
                samples += self._defect_samples(folder, images)
        return samples

    def _defect_samples(self, folder: Path, images: Sequence[Path]) -> List[Sample]:
        gt = self.root / "ground_truth" / folder.name
        if not gt.is_dir():
            # Image-level labels only (no pixel ground truth for this defect type).
            return [Sample(p, folder.name, None) for p in images]
        masks: Dict[str, Path] = {}
        for m in list_images(gt, recursive=True):
            masks[m.relative_to(gt).with_suffix("").as_posix()] = m
        samples = []
        for p in images:
            key = p.relative_to(folder).with_suffix("").as_posix()
            mask = masks.get(key + "_mask") or masks.get(key)
            if mask is None:
                expected = gt / (key + "_mask.png")
                raise DataError(f"{p}: defect image without a mask; expected {expected} "
                                "(or the same name without _mask); add it, or move the image out of test/")
            samples.append(Sample(p, folder.name, mask))
        return samples


def has_masks(samples: Sequence[Sample]) -> bool:
    """True when every defect sample has a mask file, i.e. pixel metrics can be computed."""
    return all(s.mask_path is not None for s in samples if s.label == 1)


def load_images(samples: Sequence[Sample], size: int, channels: int) -> np.ndarray:
    """(N, size, size, channels) float32 pixel values 0..255, RGB or gray, resized with the shared
    bilinear resize and not rounded: exactly what the Detector's pre-processing feeds the model, so
    training and inference see the same numbers (`to_pixels` / `ops.preprocess`)."""
    if channels not in (1, 3):
        raise ConfigError(f"channels={channels} must be 1 or 3")
    if size < 1:
        raise ConfigError(f"size={size} must be a positive number of pixels")
    out = np.empty((len(samples), size, size, channels), np.float32)
    for i, s in enumerate(samples):
        out[i] = resize_bilinear(to_channels(read_image(s.path), channels, color_order="RGB"), size)
    return out


def load_masks(samples: Sequence[Sample], size: int) -> np.ndarray:
    """(N, size, size) bool ground truth: all False for good images."""
    out = np.zeros((len(samples), size, size), bool)
    for i, s in enumerate(samples):
        if s.mask_path is not None:
            out[i] = resize_mask(s.read_mask(), size)
        elif s.label == 1:
            raise DataError(f"{s.path}: defect image has no ground-truth mask (no folder "
                            f"ground_truth/{s.defect_type}/); add the masks, or skip pixel metrics "
                            "when has_masks(samples) is False")
    return out


def detect_channels(samples: Sequence[Sample], max_check: int = 16) -> int:
    """3 if any of the first `max_check` images has colour, else 1."""
    for s in samples[:max_check]:
        if not is_grayscale(read_image(s.path)):
            return 3
    return 1
