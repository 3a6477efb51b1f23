"""Readers for MNIST in its idx files (also Fashion-MNIST) and for MNIST-C in its .npy files.

    <mnist>/train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]     (or train-images.idx3-ubyte)
    <mnist>/t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]
    <mnist_c>/<corruption>/{train,test}_{images,labels}.npy                MNIST-C (Mu & Gilmer, 2019)

idx (LeCun's format): a big-endian magic number 0x000008DD (0x08: unsigned bytes, DD: the number
of dimensions), DD big-endian uint32 sizes, then the bytes. Every header is checked against the
file's length before any data is read, so a damaged header cannot ask for a huge allocation.
.npy files are read without pickle (`allow_pickle=False`), after the same check of their header.
Both keep the data set's own train / test partition.
"""
from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import List, Tuple, Union

import numpy as np

from dad_edge.data.oneclass import ArrayImages, OneClassDataset
from dad_edge.errors import DataError

IDX_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions: (N, rows, cols)
IDX_LABELS = 0x00000801  # unsigned bytes, 1 dimension: (N,)
MAX_IDX_BYTES = 1 << 32  # 4 GiB: above every MNIST-like set (EMNIST ByClass is 0.55 GB)
CHUNK = 1 << 20
PARTS = {"train": "train", "test": "t10k"}
HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def read_idx(path: Union[str, Path], magic: int) -> np.ndarray:
    """An idx file (optionally .gz) with the magic number `magic` -> its uint8 array."""
    path = Path(path)
    kind = {IDX_IMAGES: "images (0x00000803)", IDX_LABELS: "labels (0x00000801)"}[magic]
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or int.from_bytes(head, "big") != magic:
                found = f"0x{int.from_bytes(head, 'big'):08x}" if len(head) == 4 else f"{len(head)} bytes"
                raise DataError(f"{path}: magic number {found}; an idx file of {kind} starts with it. Pass the "
                                "matching MNIST file (a *-images-idx3-ubyte or *-labels-idx1-ubyte)")
            ndim = magic & 0xFF
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{path}: cut short inside its header; copy the file again")
            dims = struct.unpack(f">{ndim}I", dims_raw)
            count = int(np.prod(dims, dtype=np.int64))
            if count > MAX_IDX_BYTES:
                raise DataError(f"{path}: the header declares {dims} = {count} bytes, more than any MNIST-like "
                                "file; the file is damaged")
            if opener is open:  # the length is known before reading: check it first
                held = path.stat().st_size - 4 - 4 * ndim
                if held != count:
                    raise DataError(f"{path}: the header declares {dims} = {count} bytes of data, the file holds "
                                    f"{held}; the file is damaged or cut short: copy it again")
            # Chunks: memory grows with the data actually present, not with the header's claim.
            chunks: List[bytes] = []
            size = 0
            while size <= count:
                chunk = f.read(min(CHUNK, count + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot be read ({e}); copy the file again") from e
    if size != count:
        raise DataError(f"{path}: the header declares {dims} = {count} bytes of data, the file holds "
                        f"{'more' if size > count else size}; the file is damaged or cut short: copy it again")
    return np.frombuffer(b"".join(chunks), np.uint8).reshape(dims)


def _find(folder: Path, prefix: str, kind: str) -> Path:
    """<prefix>-<kind>-idx?-ubyte with '-' or '.' before idx, optionally .gz."""
    ndim = "3" if kind == "images" else "1"
    for sep in ("-", "."):
        for suffix in ("", ".gz"):
            p = folder / f"{prefix}-{kind}{sep}idx{ndim}-ubyte{suffix}"
            if p.is_file():
                return p
    raise DataError(f"{folder}: no {prefix}-{kind}-idx{ndim}-ubyte[.gz]; expected the four MNIST idx files there")


def _combine(name: str, parts: List[Tuple[np.ndarray, np.ndarray, bool]]) -> OneClassDataset:
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    is_test = np.concatenate([np.full(len(p[1]), p[2]) for p in parts])
    names = [str(c) for c in range(int(labels.max()) + 1)] if len(labels) else []
    return OneClassDataset(name, ArrayImages(images), labels, names, is_test)


def read_mnist(folder: Union[str, Path]) -> OneClassDataset:
    """MNIST (or Fashion-MNIST) from its four idx files: classes "0".."9", train / test kept."""
    folder = Path(folder)
    parts = []
    for part, prefix in PARTS.items():
        images_path, labels_path = _find(folder, prefix, "images"), _find(folder, prefix, "labels")
        images, labels = read_idx(images_path, IDX_IMAGES), read_idx(labels_path, IDX_LABELS)
        if len(images) != len(labels):
            raise DataError(f"{images_path}: {len(images)} images but {labels_path} has {len(labels)} labels; "
                            "use the files of one release")
        parts.append((images[:, :, :, None], labels, part == "test"))
    return _combine(str(folder), parts)


def read_npy(path: Path) -> np.ndarray:
    """A .npy file without pickle, its header checked against the file's length before reading."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in HEADER_READERS:
                raise ValueError(f"format version {version}; np.save writes 1.0 or 2.0 for numeric arrays")
            shape, _, dtype = HEADER_READERS[version](f)
            held = path.stat().st_size - f.tell()
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a .npy file ({e}); pass the file np.save wrote") from e
    if dtype.hasobject:
        raise DataError(f"{path}: holds Python objects ({dtype}); only plain numeric arrays are read (no pickle)")
    count = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if count != held:
        raise DataError(f"{path}: the header declares {shape} {dtype} = {count} bytes, the file holds {held}; "
                        "the file is damaged or cut short: copy it again")
    return np.load(path, allow_pickle=False)


def _mnist_c_part(folder: Path, part: str) -> Tuple[np.ndarray, np.ndarray, bool]:
    images_path, labels_path = folder / f"{part}_images.npy", folder / f"{part}_labels.npy"
    for p in (images_path, labels_path):
        if not p.is_file():
            raise DataError(f"{p}: no such file; an MNIST-C corruption folder holds "
                            "{train,test}_{images,labels}.npy")
    images, labels = read_npy(images_path), read_npy(labels_path)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 1):
        raise DataError(f"{images_path}: {images.dtype} {images.shape}; expected uint8 (N, 28, 28) or (N, 28, 28, 1)")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) != len(images):
        raise DataError(f"{labels_path}: {labels.dtype} {labels.shape}; expected {len(images)} integer labels")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{labels_path}: negative label {labels.min()}; labels are class numbers 0, 1, ...")
    return images.reshape(images.shape[:3] + (1,)), labels, part == "test"


def read_mnist_c(folder: Union[str, Path]) -> OneClassDataset:
    """One MNIST-C corruption folder (e.g. mnist_c/fog): classes "0".."9", train / test kept."""
    folder = Path(folder)
    return _combine(str(folder), [_mnist_c_part(folder, part) for part in PARTS])
