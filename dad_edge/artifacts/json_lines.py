"""JSON lines: the events file of `dad-edge stream` and the results.jsonl of `dad-edge predict`.

One JSON object per line, one write and one flush per line, so that a process killed at any
moment leaves every earlier line whole and at most the last one cut short. The reader gives
back the whole lines and says whether a cut last line was left out; a line that is damaged
anywhere else is a DataError naming the file and line. Appending to a file whose last line
was cut first removes that fragment, so it never ends up glued to the next record.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List

from dad_edge.errors import DataError, OutputError

MAX_LINE_BYTES = 1 << 20  # our records are a few hundred bytes; longer is a damaged or foreign file


class JsonLinesWriter:
    """Append (mode "a", the default) or rewrite (mode "w") a JSON-lines file, one flush per record."""

    def __init__(self, path, mode: str = "a"):
        if mode not in ("a", "w"):
            raise ValueError(f"mode={mode!r}: 'a' (append) or 'w' (rewrite)")
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if mode == "a":
                _drop_cut_tail(self.path)
            self.file = open(self.path, mode, encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror or exc}; check the folder is writable") \
                from None
        self.lines = 0

    def write(self, record: Dict[str, Any]) -> None:
        # ensure_ascii (the default): one line whatever the strings hold, and no multi-byte character
        # for a kill to split.
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        self.lines += 1

    def close(self, sync: bool = True) -> None:
        if not self.file.closed:
            self.file.flush()
            if sync:
                os.fsync(self.file.fileno())
            self.file.close()

    def __enter__(self) -> "JsonLinesWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _drop_cut_tail(path: Path) -> None:
    """End the file with a newline: a last line that is a whole record (written without its newline) is
    kept, as the reader keeps it; a cut fragment is removed."""
    try:
        f = open(path, "r+b")
    except FileNotFoundError:
        return
    with f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        start = _last_line_start(f, end)
        f.seek(start)
        tail = f.read(end - start) if end - start <= MAX_LINE_BYTES else b""
        if _record(tail) is not None:
            f.seek(end)
            f.write(b"\n")
        else:
            f.truncate(start)


def _last_line_start(f, end: int) -> int:
    """Offset just after the last newline before `end` (0 when there is none), read back a block at a time."""
    pos = end
    while pos > 0:
        step = min(pos, 1 << 16)
        f.seek(pos - step)
        nl = f.read(step).rfind(b"\n")
        if nl >= 0:
            return pos - step + nl + 1
        pos -= step
    return 0


def _record(line: bytes):
    """The JSON object on `line`, or None."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


@dataclass
class JsonLines:
    records: List[Dict[str, Any]]
    cut_tail: bool  # the last line was cut short (a killed writer) and is left out


def iter_json_lines(path, tail: List[bool] = None) -> Iterator[Dict[str, Any]]:
    """Records of a JSON-lines file one by one (the file can be larger than memory). A cut last line is
    left out (and True appended to `tail` when given); any other bad line raises DataError."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with f:
        number = 0
        while True:
            line = f.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            number += 1
            whole = line.endswith(b"\n")
            if whole and not line.strip():
                continue  # a blank line (an edited file): nothing to read
            if not whole and len(line) > MAX_LINE_BYTES:
                raise DataError(f"{path}, line {number}: longer than {MAX_LINE_BYTES} bytes; this is not a "
                                "dad_edge events or results file, or it is damaged")
            record = _record(line)
            if record is not None:
                yield record
                continue
            if not whole:  # the last line, cut short by a killed writer
                if tail is not None:
                    tail.append(True)
                return
            raise DataError(f"{path}, line {number}: not a JSON object ({line[:60]!r}...); the file is damaged "
                            "or not a dad_edge events / results file")


def read_json_lines(path) -> JsonLines:
    """All records of a JSON-lines file, and whether a cut last line was left out."""
    tail: List[bool] = []
    records = list(iter_json_lines(path, tail))
    return JsonLines(records, bool(tail))
