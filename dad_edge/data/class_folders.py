"""A reader for any class-per-folder tree (Mini-ImageNet style, the PNG form of CIFAR-10, ...).

    <root>/<class>/**/*.png|jpg|...                one folder per class, no partition: the protocol
                                                   holds out part of the normal class
    <root>/train/<class>/..., <root>/test/<class>/...   with the data set's own partition (the same
                                                   class folders on both sides)
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Union

import numpy as np

from dad_edge.data.imageio import IMAGE_EXTENSIONS, list_images
from dad_edge.data.oneclass import FileImages, OneClassDataset
from dad_edge.errors import DataError

PARTS = ("train", "test")


def _class_dirs(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_partitioned(root: Path) -> bool:
    """root/train/ and root/test/, each holding class folders, and nothing else but files."""
    return all((root / part).is_dir() and _class_dirs(root / part) for part in PARTS) and \
        {p.name for p in _class_dirs(root)} == set(PARTS)


def read_class_folders(root: Union[str, Path]) -> OneClassDataset:
    """One class per sub-folder of `root` (or of root/train and root/test), images found recursively."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; pass a folder with one sub-folder of images per class")
    parts = [root / p for p in PARTS] if _is_partitioned(root) else [root]
    names = [p.name for p in _class_dirs(parts[0])]
    if len(parts) == 2 and [p.name for p in _class_dirs(parts[1])] != names:
        raise DataError(f"{root}: train/ holds the classes {', '.join(names)} but test/ holds "
                        f"{', '.join(p.name for p in _class_dirs(parts[1]))}; both need the same class folders")
    if len(names) < 2:
        raise DataError(f"{parts[0]}: {len(names)} class folder ({', '.join(names) or 'none'}); the one-class "
                        "protocol needs at least 2 classes: one sub-folder of images per class")
    paths, labels, is_test = [], [], []
    for part in parts:
        for k, name in enumerate(names):
            files = list_images(part / name, recursive=True)
            if not files:
                raise DataError(f"{part / name}: no image files ({', '.join(IMAGE_EXTENSIONS)}); add the class's "
                                "images or remove the folder")
            paths += files
            labels += [k] * len(files)
            is_test += [part.name == "test" and len(parts) == 2] * len(files)
    partition = np.array(is_test) if len(parts) == 2 else None
    return OneClassDataset(str(root), FileImages(paths), np.array(labels), names, partition)
