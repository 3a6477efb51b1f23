"""`open_oneclass_dataset(spec)`: "digits", or a folder in any one-class format the readers know.

    digits                                  scikit-learn's handwritten digits (built in, no download)
    <dir>/data_batch_1 ... test_batch       CIFAR-10, python version
    <dir>/train-images-idx3-ubyte[.gz] ...  MNIST / Fashion-MNIST idx files
    <dir>/train_images.npy ...              one MNIST-C corruption
    <dir>/<class>/ or <dir>/{train,test}/<class>/   any class-per-folder tree (also CIFAR-10 as PNGs)

Each format is recognised by the files only it has; any other folder is read as class folders,
whose reader says what it expected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Tuple, Union

from dad_edge.data.cifar import is_cifar_batches, read_cifar10
from dad_edge.data.class_folders import read_class_folders
from dad_edge.data.digits import load_digits_dataset
from dad_edge.data.mnist import read_mnist, read_mnist_c
from dad_edge.data.oneclass import OneClassDataset

DIGITS = "digits"


def _is_mnist(folder: Path) -> bool:
    return any(folder.glob("train-images[-.]idx3-ubyte*"))


def _is_mnist_c(folder: Path) -> bool:
    return (folder / "train_images.npy").is_file()


# name -> (recognises a folder, reads it); checked in this order, class folders last.
FORMATS: Dict[str, Tuple[Callable[[Path], bool], Callable[[Path], OneClassDataset]]] = {
    "cifar10": (is_cifar_batches, read_cifar10),
    "mnist": (_is_mnist, read_mnist),
    "mnist-c": (_is_mnist_c, read_mnist_c),
    "class-folders": (lambda folder: True, read_class_folders),
}


def detect_format(folder: Union[str, Path]) -> str:
    """The name of the format of `folder` (a key of FORMATS)."""
    folder = Path(folder)
    if folder.is_dir():
        for name, (recognises, _) in FORMATS.items():
            if recognises(folder):
                return name
    return "class-folders"  # whose reader says what it expected


def open_oneclass_dataset(spec: Union[str, Path]) -> OneClassDataset:
    """The data set `spec` names: "digits" (built in) or a folder in one of FORMATS."""
    if str(spec) == DIGITS and not Path(spec).exists():
        return load_digits_dataset()
    return FORMATS[detect_format(spec)][1](Path(spec))
