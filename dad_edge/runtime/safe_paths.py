"""File names made from names that come from outside (image stems, stream URLs, camera and
class names), kept inside the output folder.

    out / safe_filename(stem, ".png")          # never ../, never absolute, never NUL
    path_inside(out, "overlays", defect, name)  # every part sanitised, the result checked

A name is reduced to one path component: separators (/ and \\), NUL and other control
characters become "_", leading dots are dropped (no "..", no hidden files), the length is capped
below the file-system limit, and an empty result becomes "unnamed".
"""
from __future__ import annotations

import re
from pathlib import Path

MAX_NAME_BYTES = 200  # file systems allow 255 bytes a name; room for a suffix and a "_N" counter
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")  # separators, NUL and controls; Windows' reserved too


def safe_filename(name: str, suffix: str = "") -> str:
    """`name` as one harmless file name, with `suffix` (e.g. ".png") appended."""
    text = _UNSAFE.sub("_", str(name)).lstrip(". ").rstrip(" ")
    while len(text.encode("utf-8")) > MAX_NAME_BYTES:
        text = text[:-1]
    return (text or "unnamed") + suffix


def path_inside(folder, *names: str, suffix: str = "") -> Path:
    """folder / safe(name1) / safe(name2) ... (the suffix goes on the last); asserts it stays in `folder`."""
    if not names:
        raise ValueError("path_inside needs at least one name")
    folder = Path(folder)
    parts = [safe_filename(n) for n in names[:-1]] + [safe_filename(names[-1], suffix)]
    # A safe name is one component that is not "." or ".." (checked lexically: a symlinked sub-folder the
    # user made is theirs to make).
    if any(Path(part).name != part or part in (".", "..") for part in parts):
        raise ValueError(f"{parts} would leave {folder}")
    return folder.joinpath(*parts)
