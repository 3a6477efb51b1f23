"""One class of N as the normal class: the one-class protocol on classification data sets.

    dataset = open_oneclass_dataset("digits")          # oneclass_formats.py; or a CIFAR-10 / MNIST / folder path
    for name in dataset.class_names:
        split = dataset.split(name, seed=0)
        split.train_frames()                           # uint8 (H, W, C) images of the normal class
        split.test_frames(), split.test_labels         # 0: the normal class's held-out images, 1: the rest
        split.write_category("runs/digits/0")          # MVTec layout: dad-edge train / eval / baseline take it

Training sees images of the normal class only; the test set is that class's held-out images
(label 0) against the images of every other class (label 1). A data set with its own
train / test partition (CIFAR-10, MNIST) keeps it: training takes the normal class from the
training part, the test set is the whole test part (Ruff et al., Deep SVDD, ICML 2018). One
without (digits, a class-folder tree) holds out a seeded `test_fraction` of the normal class.
The result is reported per class and as the mean over classes (`mean_over_classes`).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from dad_edge.data.category import GOOD
from dad_edge.data.imageio import read_image, write_image
from dad_edge.errors import ConfigError, DataError

MARKER = ".dad_edge_oneclass"  # in a category folder written by write_category: its split, as JSON


class ImageSource:
    """N images, read one at a time: arrays in memory or files on disk."""

    def __len__(self) -> int:
        raise NotImplementedError

    def image(self, i: int) -> np.ndarray:
        """Image i as uint8 (H, W, C), C 1 (gray) or 3 (RGB)."""
        raise NotImplementedError

    def write(self, i: int, path_without_suffix: Path) -> None:
        """Write image i as a file (its own format for a file, PNG for an array)."""
        raise NotImplementedError


class ArrayImages(ImageSource):
    """Images held as one uint8 (N, H, W, C) array."""

    def __init__(self, array: np.ndarray):
        if array.dtype != np.uint8 or array.ndim != 4 or array.shape[3] not in (1, 3):
            raise DataError(f"images must be uint8 (N, H, W, 1 or 3), got {array.dtype} {array.shape}")
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def image(self, i: int) -> np.ndarray:
        return self.array[i]

    def write(self, i: int, path_without_suffix: Path) -> None:
        write_image(path_without_suffix.with_suffix(".png"), np.ascontiguousarray(self.array[i]))


class FileImages(ImageSource):
    """Images held as files, decoded when read."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> np.ndarray:
        return read_image(self.paths[i])

    def write(self, i: int, path_without_suffix: Path) -> None:
        # A copy, not a re-encode: the model sees the bytes the user has.
        path_without_suffix.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.paths[i], path_without_suffix.with_suffix(self.paths[i].suffix.lower()))


def mean_over_classes(per_class: Mapping[str, float]) -> Dict[str, object]:
    """The protocol's report: {"per_class": {class: value}, "mean": mean over classes}."""
    values = [float(v) for v in per_class.values()]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"per-class values must be finite numbers, got {dict(per_class)}")
    return {"per_class": {k: float(v) for k, v in per_class.items()}, "mean": float(np.mean(values))}


def _folder_names(class_names: Sequence[str]) -> List[str]:
    """A test sub-folder name per class: the class name made file-safe, unique and never 'good'."""
    out: List[str] = []
    for i, name in enumerate(class_names):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"
        if safe == GOOD or safe in out:
            safe = f"{i:03d}_{safe}"
        out.append(safe)
    return out


@dataclass(frozen=True, eq=False)  # arrays inside: compare the index arrays, not the objects
class OneClassSplit:
    """Training and test images of one run of the protocol, as indices into the data set."""

    dataset: "OneClassDataset"
    normal_class: str
    seed: int
    train_index: np.ndarray  # (n_train,) images of the normal class
    test_index: np.ndarray  # (n_test,) normal images first, then the other classes in class order
    test_labels: np.ndarray  # (n_test,) int64: 0 the normal class, 1 any other class

    @property
    def test_classes(self) -> List[str]:
        """The class name of each test image."""
        return [self.dataset.class_names[k] for k in self.dataset.labels[self.test_index]]

    def train_frames(self) -> List[np.ndarray]:
        return [self.dataset.images.image(int(i)) for i in self.train_index]

    def test_frames(self) -> List[np.ndarray]:
        return [self.dataset.images.image(int(i)) for i in self.test_index]

    def describe(self) -> Dict[str, object]:
        """What identifies this split: stored in a written folder, compared before it is reused."""
        return {"dataset": self.dataset.name, "normal_class": self.normal_class, "seed": self.seed,
                "train": self.train_index.tolist(), "test": self.test_index.tolist()}

    def write_category(self, root: Union[str, Path]) -> Path:
        """Write the split as an MVTec-layout category and return its path: train/good/ (the normal
        class), test/good/ (its held-out images), test/<class>/ (every other class, no masks: image
        metrics only). File names are the images' indices in the data set. Written into a temporary
        folder and renamed, so `root` is complete or absent; a folder this function wrote for the
        same split is reused as it is, one it wrote for another split is replaced, any other refused."""
        root = Path(root)
        marker = json.dumps(self.describe(), sort_keys=True)
        if root.exists():
            if (root / MARKER).is_file() and (root / MARKER).read_text() == marker:
                return root
            if not (root / MARKER).is_file():
                raise DataError(f"{root}: exists and was not written by write_category; choose another folder "
                                "or remove it")
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            folders = _folder_names(self.dataset.class_names)
            for i in self.train_index:
                self.dataset.images.write(int(i), tmp / "train" / GOOD / f"{int(i):06d}")
            for i, label in zip(self.test_index, self.test_labels):
                sub = GOOD if label == 0 else folders[self.dataset.labels[i]]
                self.dataset.images.write(int(i), tmp / "test" / sub / f"{int(i):06d}")
            (tmp / MARKER).write_text(marker)
            if root.exists():
                shutil.rmtree(root)  # ours (checked above), for another split
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return root


class OneClassDataset:
    """N labelled images of K >= 2 classes, optionally with the data set's own train / test partition."""

    def __init__(self, name: str, images: ImageSource, labels: np.ndarray, class_names: Sequence[str],
                 is_test: Optional[np.ndarray] = None):
        self.name = name
        self.images = images
        self.labels = np.asarray(labels, np.int64)
        self.class_names = list(class_names)
        self.is_test = None if is_test is None else np.asarray(is_test, bool)
        if self.labels.shape != (len(images),):
            raise DataError(f"{name}: {len(images)} images but labels of shape {self.labels.shape}")
        if self.is_test is not None and self.is_test.shape != self.labels.shape:
            raise DataError(f"{name}: {len(images)} images but a train/test flag of shape {self.is_test.shape}")
        if len(self.class_names) < 2:
            raise DataError(f"{name}: {len(self.class_names)} class ({', '.join(self.class_names) or 'none'}); "
                            "the one-class protocol needs at least 2 classes (one normal, the others anomalous)")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DataError(f"{name}: labels from {self.labels.min()} to {self.labels.max()}, but only "
                            f"{len(self.class_names)} class names")

    def __len__(self) -> int:
        return len(self.labels)

    def class_index(self, normal_class: Union[str, int]) -> int:
        if isinstance(normal_class, str) and normal_class in self.class_names:
            return self.class_names.index(normal_class)
        if isinstance(normal_class, (int, np.integer)) and 0 <= normal_class < len(self.class_names):
            return int(normal_class)
        raise ConfigError(f"{self.name}: no class {normal_class!r}; the classes are {', '.join(self.class_names)}")

    def split(self, normal_class: Union[str, int], seed: int = 0, test_fraction: float = 0.2,
              max_train: Optional[int] = None, max_test_anomalies: Optional[int] = None) -> OneClassSplit:
        """The protocol's split for `normal_class`, a function of the seed and the class alone.

        test_fraction: share of the normal class held out for the test, where the data set has no own
        partition. max_train: at most this many training images (a seeded subset). max_test_anomalies:
        at most this many images of the other classes, an equal share of each (for speed)."""
        k = self.class_index(normal_class)
        if not 0.0 < test_fraction < 1.0:
            raise ConfigError(f"test_fraction={test_fraction} must be in (0, 1)")
        for option, value in (("max_train", max_train), ("max_test_anomalies", max_test_anomalies)):
            if value is not None and value < 1:
                raise ConfigError(f"{option}={value} must be at least 1 (or None for no limit)")
        # Each class gets its own stream: the split of one class does not depend on which others ran.
        rng = np.random.default_rng([seed, k])
        is_normal = self.labels == k
        name = f"{self.name}: class {self.class_names[k]!r}"
        if self.is_test is not None:
            train = np.flatnonzero(is_normal & ~self.is_test)
            test_normal = np.flatnonzero(is_normal & self.is_test)
            if len(train) < 1 or len(test_normal) < 1:
                raise DataError(f"{name} has {len(train)} images in the training part and {len(test_normal)} in "
                                "the test part; the protocol needs at least one in each")
        else:
            members = rng.permutation(np.flatnonzero(is_normal))
            if len(members) < 2:
                raise DataError(f"{name} has {len(members)} image; the protocol needs at least 2 (one to train "
                                "on, one held out for the test)")
            n_test = min(max(int(round(len(members) * test_fraction)), 1), len(members) - 1)
            train, test_normal = np.sort(members[n_test:]), np.sort(members[:n_test])
        if max_train is not None and len(train) > max_train:
            train = np.sort(rng.choice(train, max_train, replace=False))
        anomalies = self._anomalies(k, rng, max_test_anomalies)
        test = np.concatenate([test_normal, anomalies])
        labels = np.concatenate([np.zeros(len(test_normal), np.int64), np.ones(len(anomalies), np.int64)])
        return OneClassSplit(self, self.class_names[k], seed, train, test, labels)

    def _anomalies(self, k: int, rng: np.random.Generator, cap: Optional[int]) -> np.ndarray:
        """Test images of every class but k, in class order; with `cap`, an equal share of each class."""
        pool = ~(self.labels == k) if self.is_test is None else (self.labels != k) & self.is_test
        others = [c for c in range(len(self.class_names)) if c != k]
        per_class = [np.flatnonzero(pool & (self.labels == c)) for c in others]
        if cap is not None:
            quota = [cap // len(others) + (j < cap % len(others)) for j in range(len(others))]
            per_class = [np.sort(rng.choice(idx, min(q, len(idx)), replace=False)) for idx, q in zip(per_class, quota)]
        out = np.concatenate(per_class)
        if len(out) == 0:
            raise DataError(f"{self.name}: no test images of any class but {self.class_names[k]!r}")
        return out
