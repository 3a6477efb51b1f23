"""A reader for CIFAR-10 (Krizhevsky, 2009) as a one-class data set, in either form a user holds.

    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch    the python version: pickled dicts,
        b"data": uint8 (10000, 3072), each row the 32x32 red plane, then green, then blue;
        b"labels": 10000 ints 0..9
    cifar-10-batches-py/batches.meta                                b"label_names": the 10 class names
    <cifar>/train/<class>/*.png, <cifar>/test/<class>/*.png         the PNG-folder form

The batches are read with the restricted unpickler of cifar_pickle.py: a file that holds anything
but these arrays and lists is refused, and nothing in it is run. The PNG form goes through the
class-folder reader. Both keep CIFAR's own train / test partition.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple, Union

import numpy as np

from dad_edge.data.cifar_pickle import load_cifar_pickle
from dad_edge.data.class_folders import read_class_folders
from dad_edge.data.oneclass import ArrayImages, OneClassDataset
from dad_edge.errors import DataError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
SIDE = 32
PIXELS = 3 * SIDE * SIDE


def is_cifar_batches(folder: Path) -> bool:
    """True for a folder holding the python version's batches."""
    return (folder / TRAIN_BATCHES[0]).is_file() and (folder / TEST_BATCH).is_file()


def read_cifar_batch(path: Union[str, Path]) -> Tuple[np.ndarray, np.ndarray]:
    """One python batch -> (uint8 (N, 32, 32, 3) RGB images, int64 (N,) labels 0..9)."""
    batch = load_cifar_pickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == PIXELS):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' is {got}; a CIFAR-10 batch holds uint8 (N, {PIXELS}) rows of pixels")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not (isinstance(labels, list) and len(labels) == len(data)
            and all(isinstance(v, int) and 0 <= v < len(CLASSES) for v in labels)):
        raise DataError(f"{path}: 'labels' must be {len(data)} class numbers 0..{len(CLASSES) - 1} (one per "
                        "image); this is not a CIFAR-10 batch (CIFAR-100 has fine_labels: not supported)")
    images = data.reshape(len(data), 3, SIDE, SIDE).transpose(0, 2, 3, 1)  # colour planes -> (N, 32, 32, RGB)
    return np.ascontiguousarray(images), np.array(labels, np.int64)


def _class_names(folder: Path) -> List[str]:
    """batches.meta's label_names where present, else the published CIFAR-10 names."""
    meta_path = folder / META
    if not meta_path.is_file():
        return list(CLASSES)
    names = load_cifar_pickle(meta_path).get("label_names")
    if not (isinstance(names, list) and len(names) == len(CLASSES) and all(isinstance(n, (bytes, str)) for n in names)):
        raise DataError(f"{meta_path}: 'label_names' must be {len(CLASSES)} names; restore the file from the "
                        "CIFAR-10 release or delete it (the published names are used then)")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def read_cifar10(folder: Union[str, Path]) -> OneClassDataset:
    """CIFAR-10 from the python batches in `folder`, or from its PNG-folder form (train/, test/)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; pass cifar-10-batches-py or a train/ + test/ class-folder tree")
    if not is_cifar_batches(folder):
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return read_class_folders(folder)
        raise DataError(f"{folder}: neither the CIFAR-10 python batches ({', '.join(TRAIN_BATCHES)}, {TEST_BATCH}) "
                        "nor train/<class>/ and test/<class>/ image folders")
    parts = [(name, name == TEST_BATCH) for name in TRAIN_BATCHES + (TEST_BATCH,) if (folder / name).is_file()]
    images, labels, is_test = [], [], []
    for name, test in parts:
        x, y = read_cifar_batch(folder / name)
        images.append(x)
        labels.append(y)
        is_test.append(np.full(len(y), test))
    return OneClassDataset(str(folder), ArrayImages(np.concatenate(images)), np.concatenate(labels),
                           _class_names(folder), np.concatenate(is_test))
