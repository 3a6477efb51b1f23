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
TORCH_ONLY = ("resident",)  # options only the torch backend has (runtime/resident.py)
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
    `resident` (TORCH_ONLY) goes to the torch backend only: asked of another, it is an error."""
    torch_only = {k: options.pop(k) for k in TORCH_ONLY if k in options}
    asked = sorted(k for k, v in torch_only.items() if v)
    if is_remote(path):
        if backend not in (None, "triton"):
            raise BackendError(f"{path} is a served model; backend={backend!r} applies to model files")
        from dad_edge.runtime.backends.triton_remote_backend import TritonRemoteBackend
        _torch_only(asked, path)
        return TritonRemoteBackend(path, **options)
    name = backend_name(path, backend)
    if name == "torch":
        options.update(torch_only)
    else:
        _torch_only(asked, path)
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such model file; give the path of a model.safetensors, "
                              ".onnx or .plan/.engine file")
    module_name, class_name = BACKENDS[name]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)(Path(path), **options)


def _torch_only(asked, path) -> None:
    if asked:
        raise ConfigError(f"{asked[0]}=True applies to the torch backend (a .safetensors checkpoint); {path} runs on "
                          "another runtime")
