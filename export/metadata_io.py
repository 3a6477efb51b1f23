"""Read and rewrite the metadata inside any dad_edge artifact, without running it.

checkpoint (.safetensors): the safetensors header; ONNX: metadata_props; OpenVINO IR (.xml):
its rt_info; engine: the container header, or the .json sidecar of a raw engine. Rewrites are
atomic and keep the weights / graph / engine bytes as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.atomic import write_bytes_atomic
from dad_edge.runtime.backends import KINDS, backend_name
from dad_edge.errors import CheckpointError

from dad_edge.artifacts.engine_file import read_engine_file, rewrite_engine_metadata


def _load_onnx(path: Path):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise CheckpointError(f"{path} is not a readable ONNX model ({exc}); it may be cut short: copy it again "
                              "or re-run `dad-edge export`") from None


def read_metadata(path) -> Dict[str, Any]:
    """The validated metadata of a checkpoint, ONNX file or engine (by suffix)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    kind = KINDS[backend_name(path)]
    if path.suffix.lower() == ".xml":  # OpenVINO IR: the metadata is in the .xml's rt_info
        from dad_edge.export.openvino_export import read_ir_metadata

        return read_ir_metadata(path)
    if kind == "checkpoint":
        from dad_edge.artifacts.checkpoint import read_tensors

        return read_tensors(path)[1]
    if kind == "onnx":
        props = {p.key: p.value for p in _load_onnx(path).metadata_props}
        if md.META_KEY not in props:
            raise CheckpointError(f"{path} is an ONNX model but not a dad_edge one (no dad_edge metadata); "
                                  "export it with `dad-edge export model.safetensors --format onnx`")
        return md.loads(props[md.META_KEY], str(path))
    return read_engine_file(path, with_plan=False)[0]


def write_metadata(path, meta: Dict[str, Any]) -> None:
    """Replace the metadata of an artifact in place, atomically; `meta` must keep its kind."""
    path = Path(path)
    kind = KINDS[backend_name(path)]
    meta = md.validate_metadata(meta, str(path))
    if meta["kind"] != kind:
        raise CheckpointError(f"{path}: cannot write {meta['kind']} metadata into a {kind} file")
    if path.suffix.lower() == ".xml":
        from dad_edge.export.openvino_export import write_ir_metadata

        write_ir_metadata(path, meta)
    elif kind == "checkpoint":
        from dad_edge.artifacts.checkpoint import read_tensors, save_tensors

        tensors, _ = read_tensors(path)
        save_tensors(path, tensors, meta)
    elif kind == "onnx":
        import onnx

        proto = _load_onnx(path)
        onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                            md.META_KEY: md.dumps(meta)})
        write_bytes_atomic(path, proto.SerializeToString())
    else:
        rewrite_engine_metadata(path, meta)
