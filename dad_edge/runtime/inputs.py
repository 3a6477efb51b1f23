"""What a Detector can be given: a path, a folder, a glob, an array, or a list of them.

Everything is expanded up front into `Item`s, one per image, so that a bad file becomes
one failed item with its reason and the rest of a folder or batch goes on.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from dad_edge.errors import DataError, InputError
from dad_edge.data.imageio import IMAGE_EXTENSIONS

_GLOB_CHARS = set("*?[")
# What the stream reads and a Detector call does not (dad_edge/stream/capture.py opens them):
# named here so that a video or URL handed to det(...) or `predict` gets pointed to the stream.
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")


def _use_stream(source, what: str) -> str:
    """The message for a camera, URL or video given where images are expected (without a URL's credentials)."""
    from dad_edge.runtime.redact import redact_url

    shown = source if isinstance(source, int) else redact_url(str(source))  # det.stream(0), not ('0')
    return (f"{shown!s} is {what}: a Detector call and `dad-edge predict` score images; run frames from it with "
            f"det.stream({shown!r}) or `dad-edge stream MODEL --source {shown}`")


@dataclass(frozen=True)
class Item:
    """One image to run: a file or an array, or the reason it cannot be run."""

    name: str  # the file path, or "array" / "array[i]"
    path: Optional[Path] = None
    array: Optional[np.ndarray] = None
    error: Optional[str] = None  # set when the item is known bad before reading it


def _file_item(path: Path) -> Item:
    """One file given by name; a video becomes a failed item that points to the stream."""
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return Item(str(path), path=path, error=_use_stream(str(path), "a video"))
    return Item(str(path), path=path)


def _folder_items(folder: Path) -> List[Item]:
    """Every non-hidden file in `folder`, sorted; non-image files become failed items."""
    items = []
    for p in sorted(q for q in folder.iterdir() if q.is_file() and not q.name.startswith(".")):
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            items.append(Item(str(p), path=p))
        else:
            items.append(Item(str(p), path=p, error=f"{p}: not an image file (extension {p.suffix or 'none'!r}); "
                                                   f"images are {', '.join(IMAGE_EXTENSIONS)}"))
    return items


def _path_items(source: str) -> Tuple[List[Item], bool]:
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme == "csi" or scheme in URL_SCHEMES:
        raise InputError(_use_stream(source, "a camera or network stream"))
    path = Path(source)
    if path.is_dir():
        items = _folder_items(path)
        if not items:
            raise DataError(f"{path}: the folder has no files; put images ({', '.join(IMAGE_EXTENSIONS)}) there")
        return items, False
    if path.is_file():
        return [_file_item(path)], True
    if _GLOB_CHARS & set(str(source)):
        files = sorted(Path(p) for p in glob.glob(str(source), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"{source}: no files match this pattern")
        return [_file_item(p) for p in files], False
    raise DataError(f"{source}: no such file or folder")


def expand(source) -> Tuple[List[Item], bool]:
    """-> (items, single): single is True when `source` names exactly one image."""
    if isinstance(source, int) and not isinstance(source, bool):
        raise InputError(_use_stream(source, "a camera index"))
    if isinstance(source, np.ndarray):
        return [Item("array", array=source)], True
    if isinstance(source, (str, Path)):
        return _path_items(str(source))
    if isinstance(source, (list, tuple)):
        items: List[Item] = []
        for i, element in enumerate(source):
            if isinstance(element, np.ndarray):
                items.append(Item(f"array[{i}]", array=element))
            elif isinstance(element, (str, Path)):
                try:
                    items += _path_items(str(element))[0]
                except (DataError, InputError) as exc:
                    items.append(Item(str(element), error=str(exc)))
            else:
                items.append(Item(f"[{i}]", error=f"item {i}: expected a path or a numpy array, "
                                                  f"got {type(element).__name__}"))
        return items, False
    raise InputError(f"expected a path, folder, glob, numpy array or a list of them, got {type(source).__name__}")
