"""The TensorRT engine container: the serialized engine with its metadata in front.

Layout of a .plan / .engine file written by `dad-edge export --format engine`:

    offset 0   4 bytes   magic b"DADE"
    offset 4   uint32    little-endian length N of the JSON header
    offset 8   N bytes   UTF-8 JSON metadata (see dad_edge/artifacts/metadata.py; kind "tensorrt")
    offset 8+N ...       the serialized engine exactly as TensorRT wrote it

A raw engine (starting with TensorRT's own bytes) is accepted when a JSON sidecar with
the same metadata sits beside it: engine.plan -> engine.json.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, Dict, Tuple

from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.atomic import atomic_path
from dad_edge.errors import CheckpointError

MAGIC = b"DADE"
PREFIX = struct.Struct("<4sI")  # magic, JSON length
MAX_HEADER = 1 << 24  # a header is a few kB; anything larger means a damaged or foreign file


def sidecar_path(path) -> Path:
    return Path(path).with_suffix(".json")


def write_engine_file(path, plan: bytes, meta: Dict[str, Any]) -> None:
    """Atomically write header + engine; `meta` is validated first.

    The engine's size goes into the header, so that a file cut short is caught at load.
    """
    meta = md.validate_metadata(meta, str(path))
    meta = {**meta, "tensorrt": {**meta["tensorrt"], "engine_bytes": len(plan)}}
    header = md.dumps(meta).encode("utf-8")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(PREFIX.pack(MAGIC, len(header)))
        f.write(header)
        f.write(plan)


def _read_prefix(path: Path, f) -> int:
    """The JSON length after the magic; 0 when the file has no header (raw engine)."""
    prefix = f.read(PREFIX.size)
    if len(prefix) < PREFIX.size or prefix[:4] != MAGIC:
        return 0
    _, length = PREFIX.unpack(prefix)
    if not 0 < length <= MAX_HEADER:
        raise CheckpointError(f"{path}: engine header length {length} is impossible; the file is damaged: "
                              "re-export it with `dad-edge export ... --format engine`")
    return length


def _no_metadata(path: Path) -> CheckpointError:
    return CheckpointError(f"{path}: no dad_edge header and no sidecar {sidecar_path(path).name}; export the engine "
                           "with `dad-edge export model.onnx --format engine`, or put its metadata JSON beside it")


def read_engine_file(path, with_plan: bool = True) -> Tuple[Dict[str, Any], bytes]:
    """-> (validated metadata, serialized engine); the engine is b"" when `with_plan` is False."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such engine file")
    with open(path, "rb") as f:
        length = _read_prefix(path, f)
        if length:
            # Checked against the file's size before reading: a damaged length field allocates nothing.
            available = os.fstat(f.fileno()).st_size - PREFIX.size
            text = f.read(length) if length <= available else f.read(max(available, 0))
            if len(text) < length:
                raise CheckpointError(f"{path}: the file ends inside its header ({len(text)} of {length} bytes); it "
                                      "was cut short: copy it again or re-export it")
            meta = md.loads(text.decode("utf-8", errors="replace"), str(path))
        else:
            f.seek(0)
            sidecar = sidecar_path(path)
            if not sidecar.is_file():
                raise _no_metadata(path)
            meta = md.loads(sidecar.read_text(encoding="utf-8", errors="replace"), str(sidecar))
        plan = f.read() if with_plan else b""
    if meta["kind"] != "tensorrt":
        raise CheckpointError(f"{path}: metadata says kind {meta['kind']!r}, expected 'tensorrt'")
    expected = meta["tensorrt"].get("engine_bytes")
    if with_plan and (not plan or (expected is not None and len(plan) != expected)):
        raise CheckpointError(f"{path}: the engine has {len(plan)} bytes, the header says {expected}; the file "
                              "was cut short or altered: copy it again or re-export it")
    return meta, plan


def rewrite_engine_metadata(path, meta: Dict[str, Any]) -> None:
    """Replace the metadata (header, or sidecar for a raw engine) and keep the engine bytes."""
    path = Path(path)
    with open(path, "rb") as f:
        has_header = _read_prefix(path, f) > 0
    if has_header:
        _, plan = read_engine_file(path)
        write_engine_file(path, plan, meta)
    else:
        text = md.dumps(md.validate_metadata(meta, str(path)))
        with atomic_path(sidecar_path(path)) as tmp:
            tmp.write_text(text, encoding="utf-8")
