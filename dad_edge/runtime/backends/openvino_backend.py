"""OpenVINO backend: the exported graph (.onnx, fp32 or INT8 QDQ) or an OpenVINO IR (.xml + .bin)
on OpenVINO's CPU plugin, the runtime of Intel industrial PCs.

OpenVINO reads the .onnx file directly (its ONNX frontend keeps the file's metadata_props in
the model's rt_info under "framework"); `dad-edge export --format openvino` writes an IR with
the metadata in the same rt_info entry (export/openvino_export.py). A QDQ (INT8) graph runs
with OpenVINO's integer kernels. Floating-point layers run in f32 (INFERENCE_PRECISION_HINT):
the plugin's default on CPUs with bf16/AMX is bf16, which would change the numbers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from dad_edge.artifacts import metadata as md
from dad_edge.errors import BackendError, CheckpointError
from dad_edge.runtime.backends.base import INPUT_NAME, OUTPUT_NAMES, Backend

META_PATH = ["framework", md.META_KEY]  # rt_info path of the metadata JSON (ONNX metadata_props land there)
DEVICE = "CPU"
COMPILE_CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise BackendError("the OpenVINO backend needs openvino: pip install 'dad_edge[openvino]' "
                           "(or pip install openvino)") from None
    return openvino


def read_model(path: Path):
    """-> (openvino.Model, its validated dad_edge metadata) from an .onnx or .xml file."""
    ov = import_openvino()
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line messages
        raise CheckpointError(f"{path} is not a readable ONNX or OpenVINO IR model ({str(exc).splitlines()[0]}); "
                              "copy it again or re-run `dad-edge export`") from None
    if not model.has_rt_info(META_PATH):
        raise CheckpointError(f"{path} is a model but not a dad_edge one (no dad_edge metadata); export it with "
                              "`dad-edge export model.safetensors --format onnx` (or --format openvino)")
    return model, md.loads(model.get_rt_info(META_PATH).astype(str), str(path))


class OpenVINOBackend(Backend):
    name = "openvino"

    def __init__(self, path: Path, device: Optional[str] = None, half: bool = False,
                 fused: Optional[bool] = None, cuda_graphs: bool = False,
                 config: Optional[Dict[str, Any]] = None):
        """`config`: OpenVINO compile properties over COMPILE_CONFIG (e.g. INFERENCE_NUM_THREADS)."""
        self.reject_torch_options(fused, cuda_graphs)
        if device not in (None, "cpu"):
            raise BackendError(f"device={device!r}: the OpenVINO backend runs on the CPU plugin; use device='cpu' "
                               "(or another backend for a GPU)")
        if half:
            raise BackendError("half=True applies to the torch backend only; an ONNX file runs at the precision it "
                               "was exported with (export an INT8 one with --int8 --calib DIR)")
        ov = import_openvino()
        model, self.meta = read_model(path)
        if self.meta["kind"] != "onnx":
            raise CheckpointError(f"{path}: metadata says kind {self.meta['kind']!r}, expected 'onnx'")
        names_in = [i.get_any_name() for i in model.inputs]
        names_out = [o.get_any_name() for o in model.outputs]
        if names_in != [INPUT_NAME] or not set(OUTPUT_NAMES) <= set(names_out):
            raise CheckpointError(f"{path}: graph has inputs {names_in} and outputs {names_out}, expected "
                                  f"[{INPUT_NAME!r}] and {list(OUTPUT_NAMES)}; re-run `dad-edge export`")
        try:
            self.compiled = ov.Core().compile_model(model, DEVICE, {**COMPILE_CONFIG, **(config or {})})
        except Exception as exc:
            raise BackendError(f"{path}: OpenVINO's CPU plugin refused the model ({str(exc).splitlines()[0]})") from None
        # One request, reused: its output tensors are overwritten by the next call, so infer copies.
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(n) for n in OUTPUT_NAMES]
        self.device = DEVICE

    def infer(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.request is None:
            raise BackendError("this OpenVINO backend is closed (its Detector was closed); open the model again")
        results = self.request.infer({INPUT_NAME: np.ascontiguousarray(x, np.float32)})
        maps, scores = (np.array(results[o], np.float32) for o in self.outputs)
        return maps[:, 0], scores

    def close(self) -> None:
        """Release the compiled model and its request now rather than at garbage collection."""
        self.request = None
        self.compiled = None
