"""Reading and writing image files: RGB order in memory, clear errors for bad files.

Files are read as bytes and decoded with `cv2.imdecode`, so that paths with non-ASCII
characters work on every platform (cv2.imread fails on them under Windows).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Union

import cv2
import numpy as np

from dad_edge.errors import DataError

PathLike = Union[str, Path]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_JPEG_SOI = b"\xff\xd8"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IEND is always empty, so its chunk type is always followed by the same CRC.
_PNG_IEND = b"IEND\xaeB`\x82"


def is_image_file(path: Path) -> bool:
    """A regular, non-hidden file with one of IMAGE_EXTENSIONS (any case)."""
    # Hidden files include macOS "._name.png" resource forks, which are not images.
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".") and path.is_file()


def list_images(folder: PathLike, recursive: bool = False) -> List[Path]:
    """Image files in `folder` (and its sub-folders if `recursive`), sorted by relative path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder; pass a folder that contains image files "
                        f"({', '.join(IMAGE_EXTENSIONS)})")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    files = [p for p in candidates if is_image_file(p)]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _check_complete(path: Path, data: bytes) -> None:
    """Raise DataError for a JPEG or PNG cut short: OpenCV decodes those silently, grey-filled."""
    truncated = False
    if data.startswith(_JPEG_SOI):
        # The end marker cannot occur inside entropy-coded data (0xFF is byte-stuffed there),
        # so a complete file has one after its last start-of-scan; an EXIF thumbnail's end
        # marker comes before the main image's scans and does not count.
        last_scan = data.rfind(_JPEG_SOS)
        truncated = data.find(_JPEG_EOI, max(last_scan, 0)) == -1
    elif data.startswith(_PNG_SIGNATURE):
        truncated = data.find(_PNG_IEND) == -1
    if truncated:
        raise DataError(f"{path}: the file is truncated (cut short, e.g. by an interrupted copy "
                        "or download); copy it again or delete it")


def read_image(path: PathLike) -> np.ndarray:
    """An image file -> uint8 (H, W, 3) RGB, or (H, W, 1) for a grayscale file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path")
    data = path.read_bytes()
    if not data:
        raise DataError(f"{path}: the file is empty (0 bytes); copy it again or delete it")
    _check_complete(path, data)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{path}: not a readable image; use PNG, JPEG, BMP, TIFF or WebP "
                        "files, or remove this file from the folder")
    if img.size == 0:
        raise DataError(f"{path}: the image has zero size {img.shape}; delete it")
    if img.dtype == np.uint16:
        img = np.rint(img / 257.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(f"{path}: pixel type {img.dtype} is not supported; save it as 8- or 16-bit")
    if img.ndim == 2:
        return img[:, :, None]
    if img.shape[2] == 1:
        return img
    if img.shape[2] == 2:  # gray + alpha
        return np.ascontiguousarray(img[:, :, :1])
    return np.ascontiguousarray(img[:, :, 2::-1])  # BGR(A) -> RGB, alpha dropped


def read_mask(path: PathLike, threshold: int = 127) -> np.ndarray:
    """A mask file -> bool (H, W): True where the gray value is above `threshold` (127 for 0 / 255
    masks; 0 for label images that store a small class index, as VisA's)."""
    img = read_image(path)
    if img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None]
    return img[:, :, 0] > threshold


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """bool (H, W) -> bool (size, size), nearest neighbour so that no new values appear."""
    out = cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
    return out.astype(bool)


def is_grayscale(img: np.ndarray) -> bool:
    """True for one channel, or three equal channels (a gray picture saved as colour)."""
    if img.ndim == 2 or img.shape[2] == 1:
        return True
    return bool(np.array_equal(img[:, :, 0], img[:, :, 1]) and np.array_equal(img[:, :, 1], img[:, :, 2]))


def write_image(path: PathLike, img: np.ndarray) -> None:
    """Write uint8 (H, W), (H, W, 1) or RGB (H, W, 3); the extension picks the format."""
    path = Path(path)
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim not in (2, 3) \
            or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise DataError(f"{path}: can only write uint8 (H, W), (H, W, 1) or (H, W, 3) images, got "
                        f"{getattr(img, 'dtype', type(img).__name__)} {getattr(img, 'shape', '')}")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DataError(f"{path}: unknown image extension {path.suffix!r}; "
                        f"use one of {', '.join(IMAGE_EXTENSIONS)}")
    if img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]  # OpenCV encodes BGR
    ok, buf = cv2.imencode(path.suffix.lower(), np.ascontiguousarray(img))
    if not ok:
        raise DataError(f"{path}: OpenCV could not encode this image as {path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
