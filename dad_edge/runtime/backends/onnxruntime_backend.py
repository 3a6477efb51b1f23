"""ONNX Runtime backend: the exported graph (fp32, or INT8 QDQ from export/quantize.py) on the
CPU, or on the CUDA provider where present.

Session settings: SESSION below, each measured against its alternatives side by side in one run
(benchmarks/test_latency.py::test_ort_session_settings; figures in benchmarks/README.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from dad_edge.artifacts import metadata as md
from dad_edge.errors import BackendError, CheckpointError, ConfigError
from dad_edge.runtime.backends.base import INPUT_NAME, OUTPUT_NAMES, Backend

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# The session as the backend opens it; `session=` overrides any of these (benchmarks compare them).
SESSION: Dict[str, Any] = {
    "graph_optimization_level": "all",  # "disabled", "basic", "extended", "all": "all" fuses QDQ into QLinearConv
    "intra_op_num_threads": 0,  # 0: one per physical core (ORT's choice)
    "enable_cpu_mem_arena": True,  # reuse activation buffers between calls
    "execution_mode": "sequential",  # "parallel" runs independent branches at once (inter-op threads)
    # Idle intra-op threads sleep instead of spinning (ORT's default): on a CPU shared with other
    # work (camera capture, the stream's threads, other jobs) spinning threads burn the time slices
    # the model needs. Spinning cost 1.12x (INT8) and 1.06x (fp32) at batch 1 on the shared 2-core
    # VM (benchmarks/README.md, "CPU INT8 and OpenVINO").
    "allow_spinning": False,
}
OPTIMIZATION_LEVELS = {"disabled": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
                       "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
EXECUTION_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}


def session_options(ort, settings: Dict[str, Any]):
    """An ort.SessionOptions from SESSION-style `settings` (unknown keys or values: ConfigError)."""
    unknown = sorted(set(settings) - set(SESSION))
    if unknown:
        raise ConfigError(f"ONNX Runtime session setting(s) {unknown}: choose from {sorted(SESSION)}")
    level, mode = settings["graph_optimization_level"], settings["execution_mode"]
    if level not in OPTIMIZATION_LEVELS or mode not in EXECUTION_MODES:
        raise ConfigError(f"graph_optimization_level={level!r} must be one of {sorted(OPTIMIZATION_LEVELS)} and "
                          f"execution_mode={mode!r} one of {sorted(EXECUTION_MODES)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[level])
    options.execution_mode = getattr(ort.ExecutionMode, EXECUTION_MODES[mode])
    options.intra_op_num_threads = int(settings["intra_op_num_threads"])
    options.enable_cpu_mem_arena = bool(settings["enable_cpu_mem_arena"])
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings["allow_spinning"] else "0")
    options.log_severity_level = 3  # errors only: the session's own warnings are not the user's problem
    return options


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: Path, device: Optional[str] = None, half: bool = False,
                 fused: Optional[bool] = None, cuda_graphs: bool = False,
                 session: Optional[Dict[str, Any]] = None):
        """`session`: settings over SESSION (graph_optimization_level, intra_op_num_threads, ...)."""
        self.reject_torch_options(fused, cuda_graphs)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("onnxruntime is not installed: pip install onnxruntime "
                               "(or onnxruntime-gpu for the CUDA provider)") from None
        if half:
            raise BackendError("half=True applies to the torch backend only; an ONNX file runs at the precision "
                               "it was exported with (use a TensorRT engine exported with --half for fp16)")
        providers = self._providers(ort.get_available_providers(), device)
        self.settings = {**SESSION, **(session or {})}
        options = session_options(ort, self.settings)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for bad protobufs and graphs
            raise CheckpointError(f"{path} is not a readable ONNX model ({str(exc).splitlines()[0]}); it may be "
                                  "cut short or not a model file: copy it again or re-run `dad-edge export`") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if md.META_KEY not in props:
            raise CheckpointError(f"{path} is an ONNX model but not a dad_edge one (no dad_edge metadata); "
                                  "export it with `dad-edge export model.safetensors --format onnx`")
        self.meta = md.loads(props[md.META_KEY], str(path))
        if self.meta["kind"] != "onnx":
            raise CheckpointError(f"{path}: metadata says kind {self.meta['kind']!r}, expected 'onnx'")
        names_in = [i.name for i in self.session.get_inputs()]
        names_out = [o.name for o in self.session.get_outputs()]
        if names_in != [INPUT_NAME] or not set(OUTPUT_NAMES) <= set(names_out):
            raise CheckpointError(f"{path}: graph has inputs {names_in} and outputs {names_out}, expected "
                                  f"[{INPUT_NAME!r}] and {list(OUTPUT_NAMES)}; re-run `dad-edge export`")
        # The provider that actually runs the graph (ORT drops unusable ones silently).
        self.device = self.session.get_providers()[0]

    @staticmethod
    def _providers(available, device: Optional[str]):
        if device is None:
            return [CUDA, CPU] if CUDA in available else [CPU]
        if device == "cpu":
            return [CPU]
        if device.startswith("cuda"):
            if CUDA not in available:
                raise BackendError(f"device={device!r} but this onnxruntime has no CUDA provider (it has "
                                   f"{available}); install onnxruntime-gpu or use device='cpu'")
            index = int(device.split(":")[1]) if ":" in device else 0
            return [(CUDA, {"device_id": index}), CPU]
        raise BackendError(f"device={device!r} must be 'cpu', 'cuda' or 'cuda:N'")

    def infer(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.session is None:
            raise BackendError("this ONNX Runtime backend is closed (its Detector was closed); open the model again")
        maps, scores = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(x, np.float32)})
        return maps[:, 0], scores

    def close(self) -> None:
        """Release the session (its memory on the device) now rather than at garbage collection."""
        self.session = None
