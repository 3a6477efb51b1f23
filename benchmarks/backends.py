"""The backends this machine has, each one a Target with the reason it is missing when it is.

    torch-cpu-fp32                        torch backend on the CPU (plain graph)
    torch-cpu-fp32-fused                  + the fused stages in their CPU forms (C extension)
    torch-cuda-fp32, torch-cuda-fp16      torch backend on the GPU, without and with half=True
    torch-cuda-fp16-fused                 + the fused kernels (a Detector option, when it exists)
    torch-cuda-fp16-fused-graphs          + CUDA graphs (a Detector option, when it exists)
    ort-cpu-fp32, ort-cuda-fp32           ONNX Runtime, CPU and CUDA execution providers
    trt-fp16, trt-int8                    TensorRT engines built here from the ONNX file

Nothing is installed or moved: a target whose runtime, provider, GPU or option is missing
is kept in the list with `skip` set to why, and the tests skip it with that reason.
The fused-kernel and CUDA-graph options are found by name in Detector's signature
(FUSED_OPTIONS, GRAPH_OPTIONS), so this file needs no change when they land or are
renamed. Where the fused option exists, the targets without "fused" in their name pass it
as False: its default (None) picks the fused path by itself on a GPU with Triton.
"""
from __future__ import annotations

import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

FUSED_OPTIONS = ("fused", "fused_kernels", "kernels", "use_kernels")
GRAPH_OPTIONS = ("cuda_graphs", "cuda_graph", "graphs", "use_cuda_graphs")


@dataclass(frozen=True)
class Target:
    id: str  # test id and table row
    runtime: str  # the Detector backend: "torch", "onnxruntime" or "tensorrt"
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32", "fp16" or "int8"
    artifact: str  # what the Detector opens: "checkpoint", "onnx", "engine"
    options: Dict[str, Any] = field(default_factory=dict)  # extra Detector keyword arguments
    skip: Optional[str] = None  # why this machine lacks it; None = available

    @property
    def fused(self) -> bool:
        return any(self.options.get(k) for k in FUSED_OPTIONS)

    def detector_kwargs(self) -> Dict[str, Any]:
        kw: Dict[str, Any] = {"backend": self.runtime, **self.options}
        if self.runtime != "tensorrt":
            kw["device"] = self.device
        if self.runtime == "torch" and self.precision == "fp16":
            kw["half"] = True
        return kw


def _torch_cuda() -> Optional[str]:
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA GPU"
    return None


def _ort_providers() -> List[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    return onnxruntime.get_available_providers()


def _tensorrt() -> Optional[str]:
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (import tensorrt fails)"
    from dad_edge.runtime.backends.cuda_runtime import Cuda
    from dad_edge.errors import BackendError

    try:
        Cuda(0)
    except BackendError as exc:
        return f"TensorRT is installed but no GPU is usable: {exc}"
    return None


def _detector_option(names) -> Optional[str]:
    from dad_edge import Detector

    params = inspect.signature(Detector.__init__).parameters
    return next((n for n in names if n in params), None)


def discover() -> List[Target]:
    """Every target, in table order, with `skip` set where this machine lacks it."""
    cuda = _torch_cuda()
    fused = _detector_option(FUSED_OPTIONS)
    graphs = _detector_option(GRAPH_OPTIONS)
    no_fused = f"Detector has no fused-kernel option (looked for {', '.join(FUSED_OPTIONS)})"
    no_graphs = (f"Detector has no CUDA-graph option (looked for {', '.join(GRAPH_OPTIONS)}); "
                 "benchmarks/gpu_pipeline.py times CUDA graphs of the torch pipeline, inputs on the GPU")
    providers = _ort_providers()
    no_ort = "onnxruntime is not installed" if not providers else None
    no_ort_cuda = no_ort or (None if "CUDAExecutionProvider" in providers else
                             f"onnxruntime has no CUDAExecutionProvider (it has {providers}; "
                             "pip install onnxruntime-gpu)")
    trt = _tensorrt()
    plain = {fused: False} if fused else {}
    fused_opts = {fused: True} if fused else {}
    graph_opts = {**fused_opts, graphs: True} if fused and graphs else {}
    return [
        Target("torch-cpu-fp32", "torch", "cpu", "fp32", "checkpoint", plain),
        Target("torch-cpu-fp32-fused", "torch", "cpu", "fp32", "checkpoint", fused_opts,
               skip=None if fused else no_fused),
        Target("torch-cuda-fp32", "torch", "cuda", "fp32", "checkpoint", plain, skip=cuda),
        Target("torch-cuda-fp16", "torch", "cuda", "fp16", "checkpoint", plain, skip=cuda),
        Target("torch-cuda-fp16-fused", "torch", "cuda", "fp16", "checkpoint", fused_opts,
               skip=cuda or (None if fused else no_fused)),
        Target("torch-cuda-fp16-fused-graphs", "torch", "cuda", "fp16", "checkpoint", graph_opts,
               skip=cuda or (None if fused else no_fused) or (None if graphs else no_graphs)),
        Target("ort-cpu-fp32", "onnxruntime", "cpu", "fp32", "onnx", skip=no_ort),
        Target("ort-cuda-fp32", "onnxruntime", "cuda", "fp32", "onnx", skip=no_ort_cuda),
        Target("trt-fp16", "tensorrt", "cuda", "fp16", "engine", skip=trt),
        Target("trt-int8", "tensorrt", "cuda", "int8", "engine", skip=trt),
    ]


def reference(targets: List[Target]) -> Target:
    """torch fp32 on the CPU: the reference every other backend is compared with."""
    return next(t for t in targets if t.id == "torch-cpu-fp32")
