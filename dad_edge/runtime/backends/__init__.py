"""Runtimes behind the Detector, chosen by file suffix: one file per runtime.

Only the module of the chosen backend is imported, and only it imports its runtime
(torch, onnxruntime, tensorrt + cuda-python, openvino): `Detector("model.onnx")` never loads torch.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Optional

from dad_edge.errors import BackendError, CheckpointError, ConfigError
from dad_edge.runtime.backends.base import Backend

# File suffix -> backend; backend -> (module, class) and the artifact kind it reads.
SUFFIXES = {".safetensors": "torch", ".onnx": "onnxruntime", ".plan": "tensorrt", ".engine": "tensorrt",
            ".xml": "openvino"}
BACKENDS = {
    "torch": ("torch_backend", "TorchBackend"),
    "onnxruntime": ("onnxruntime_backend", "OnnxRuntimeBackend"),
    "tensorrt": ("tensorrt_backend", "TensorRTBackend"),
    "openvino": ("openvino_backend", "OpenVINOBackend"),  # an .onnx file or an OpenVINO IR (.xml + .bin)
}
KINDS = {"torch": "checkpoint", "onnxruntime": "onnx", "tensorrt": "tensorrt", "openvino": "onnx"}
# Options only some backends have -> those backends (runtime/resident.py, backends/tensorrt_resident.py).
OPTION_BACKENDS = {"resident": ("torch", "tensorrt"), "session": ("onnxruntime",)}
# A model served by `dad-edge serve` (Triton): a URL, not a file; triton_remote_backend.py.
REMOTE_SCHEMES = ("grpc://", "http://")


def is_remote(model) -> bool:
    """True for grpc://HOST:PORT/NAME and http://HOST:PORT/NAME: a model on a Triton server."""
    return isinstance(model, str) and model.lower().startswith(REMOTE_SCHEMES)


def backend_name(path, backend: Optional[str] = None) -> str:
    """The backend for `path`: `backend` if given, else the one its suffix names."""
    if backend is not None:
        if backend not in BACKENDS:
            raise BackendError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
        return backend
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise BackendError(f"{path}: cannot tell the model type from the suffix {suffix!r}; expected one of "
                           f"{sorted(SUFFIXES)} (checkpoint, ONNX, TensorRT engine, OpenVINO IR), or pass backend=")
    return SUFFIXES[suffix]


def load_backend(path, backend: Optional[str] = None, **options: Any) -> Backend:
    """Open `path` with its backend; `options` (device, half) go to the backend's constructor.
    An option of OPTION_BACKENDS goes to the backends that have it: asked of another, it is an error."""
    limited = {k: options.pop(k) for k in OPTION_BACKENDS if k in options}
    if is_remote(path):
        if backend not in (None, "triton"):
            raise BackendError(f"{path} is a served model; backend={backend!r} applies to model files")
        from dad_edge.runtime.backends.triton_remote_backend import TritonRemoteBackend
        _check_limited(limited, "triton", path)
        return TritonRemoteBackend(path, **options)
    name = backend_name(path, backend)
    _check_limited(limited, name, path)
    options.update({k: v for k, v in limited.items() if name in OPTION_BACKENDS[k]})
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such model file; give the path of a model.safetensors, "
                              ".onnx or .plan/.engine file")
    module_name, class_name = BACKENDS[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)(Path(path), **options)


def _check_limited(limited, name: str, path) -> None:
    for option, value in sorted(limited.items()):
        if value and name not in OPTION_BACKENDS[option]:
            raise ConfigError(f"{option}={value!r} applies to the {' and '.join(OPTION_BACKENDS[option])} "
                              f"backend{'s' if len(OPTION_BACKENDS[option]) > 1 else ''}; {path} runs on {name}")
