"""Export a dad_edge ONNX file (fp32 or INT8 QDQ) to an OpenVINO IR: model.xml + model.bin.

openvino.save_model on the graph the ONNX frontend reads, weights kept at their precision
(compress_to_fp16=False: its default halves fp32 weights, which would change the numbers).
The metadata travels inside the .xml, in the rt_info entry framework/dad_edge where OpenVINO
puts an ONNX file's metadata_props (openvino_backend.META_PATH), with an "openvino" section
saying which OpenVINO wrote the IR from which file. The kind stays "onnx": the IR is the
exported graph in another container, with the same interface and export section.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, Union

from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.atomic import write_bytes_atomic
from dad_edge.errors import ConfigError
from dad_edge.runtime.backends.openvino_backend import META_PATH, import_openvino, read_model


def _save(model, out: Path, meta: Dict[str, Any]) -> None:
    """Write `model` with `meta` to out (.xml) and its .bin, each file atomically, .bin first
    (a reader between the two renames finds the old .xml with weights of the same layout)."""
    ov = import_openvino()
    model.set_rt_info(md.dumps(meta), META_PATH)
    with tempfile.TemporaryDirectory(prefix="dad_edge_ir_") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=False)
        write_bytes_atomic(out.with_suffix(".bin"), xml.with_suffix(".bin").read_bytes())
        write_bytes_atomic(out, xml.read_bytes())


def export_openvino(model_path: Union[str, Path], out: Union[str, Path], **onnx_options: Any) -> Dict[str, Any]:
    """Write `out` (.xml, with its .bin beside it) from a dad_edge .onnx file (fp32 or INT8), or from a
    checkpoint exported to ONNX first (export_onnx with `onnx_options`); return its metadata."""
    ov = import_openvino()
    model_path, out = Path(model_path), Path(out)
    if out.suffix.lower() != ".xml":
        raise ConfigError(f"--out {out}: an OpenVINO IR is an .xml file (its weights go to the .bin beside it)")
    if model_path.suffix.lower() == ".safetensors":
        from dad_edge.export.onnx_export import export_onnx

        with tempfile.TemporaryDirectory(prefix="dad_edge_fp32_") as tmp:
            onnx_path = Path(tmp) / f"{model_path.stem}.onnx"
            export_onnx(model_path, onnx_path, **onnx_options)
            return export_openvino(onnx_path, out)
    if model_path.suffix.lower() != ".onnx":
        raise ConfigError(f"{model_path}: an OpenVINO IR is written from a checkpoint (.safetensors) or a dad_edge "
                          ".onnx file")
    onnx_path = model_path
    model, meta = read_model(onnx_path)
    meta = md.derive_metadata(meta, "onnx", openvino={"version": ov.get_version(), "format": "IR",
                                                      "source": onnx_path.name})
    _save(model, out, meta)
    return meta


def read_ir_metadata(path: Union[str, Path]) -> Dict[str, Any]:
    return read_model(Path(path))[1]


def write_ir_metadata(path: Union[str, Path], meta: Dict[str, Any]) -> None:
    """Replace the metadata of an IR in place (its weights re-written unchanged)."""
    model, _ = read_model(Path(path))
    _save(model, Path(path), md.validate_metadata(meta, str(path)))
