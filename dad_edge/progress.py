"""A progress bar for the long loops of `eval` and `calibrate`: tqdm on stderr, or nothing.

    with progress_bar(len(samples), "eval", enabled=not quiet) as bar:
        for chunk in chunks:
            ...
            bar.update(len(chunk))

The bar shows only when asked for, stderr is a terminal (a log file or a pipe gets no carriage
returns) and tqdm is installed (the `train` extra has it; an edge box running `calibrate` on an
ONNX file may not: it then runs without one). stdout stays for results.
"""
from __future__ import annotations

import sys
from typing import Any


class _NoBar:
    """What progress_bar returns when no bar is shown: the same calls, doing nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "img") -> Any:
    """A tqdm bar over `total` items on stderr, or a do-nothing stand-in (see the module docstring)."""
    if not enabled or not sys.stderr.isatty():
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
