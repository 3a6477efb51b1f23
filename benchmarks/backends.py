"""The backends this machine has, each one a Target with the reason it is missing when it is.

    torch-cpu-fp32                        torch backend on the CPU (plain graph)
    torch-cpu-fp32-fused                  + the fused stages in their CPU forms (C extension)
    torch-cuda-fp32, torch-cuda-fp16      torch backend on the GPU, without and with half=True
    torch-cuda-fp16-fused                 + the fused kernels (Detector(fused=True))
    torch-cuda-fp16-fused-graphs          + CUDA graphs (Detector(cuda_graphs=True))
    torch-cpu-fp32-resident               the resident path (Detector(resident=True), runtime/resident.py) on the CPU
    torch-cuda-fp16-resident[-graphs]     on the GPU: pinned uint8 in, one copy each way, two streams; + one CUDA
                                          graph per batch shape for pre-processing, networks and score
    ort-cpu-fp32, ort-cuda-fp32           ONNX Runtime, CPU and CUDA execution providers
    ort-cpu-int8                          ONNX Runtime on the CPU, the INT8 (QDQ) ONNX file (export/quantize.py)
    openvino-cpu-fp32, openvino-cpu-int8  OpenVINO's CPU plugin on the same two ONNX files
    trt-fp16, trt-int8                    TensorRT engines built here from the ONNX file
    trt-fp16-resident                     + uint8 in, the CUDA C resize kernel, one CUDA graph per batch shape

Nothing is installed or moved: a target whose runtime, provider or GPU is missing is kept in
the list with `skip` set to why, and the tests skip it with that reason. The torch targets
without "fused" in their name pass fused=False: the default (None) picks the fused path by
itself on a GPU with Triton. The backends check their own options (fused and cuda_graphs
are torch-only, cuda_graphs needs CUDA).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


@dataclass(frozen=True)
class Target:
    id: str  # test id and table row
    runtime: str  # the Detector backend: "torch", "onnxruntime", "openvino" or "tensorrt"
    device: str  # "cpu" or "cuda"
    precision: str  # "fp32", "fp16" or "int8"
    artifact: str  # what the Detector opens: "checkpoint", "onnx", "onnx-int8" (quantised), "engine"
    options: Dict[str, Any] = field(default_factory=dict)  # extra Detector keyword arguments
    skip: Optional[str] = None  # why this machine lacks it; None = available

    @property
    def fused(self) -> bool:
        return bool(self.options.get("fused"))

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


def _openvino() -> Optional[str]:
    if importlib.util.find_spec("openvino") is None:
        return "OpenVINO is not installed (pip install 'dad_edge[openvino]')"
    return None


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


def discover() -> List[Target]:
    """Every target, in table order, with `skip` set where this machine lacks it."""
    cuda = _torch_cuda()
    providers = _ort_providers()
    no_ort = "onnxruntime is not installed" if not providers else None
    no_ort_cuda = no_ort or (None if "CUDAExecutionProvider" in providers else
                             f"onnxruntime has no CUDAExecutionProvider (it has {providers}; "
                             "pip install onnxruntime-gpu)")
    trt = _tensorrt()
    plain, fused_opts = {"fused": False}, {"fused": True}
    graph_opts = {**fused_opts, "cuda_graphs": True}
    resident = {"resident": True}  # fused left automatic: DiffusionAD's fused stages on a GPU, the plain graph else
    return [
        Target("torch-cpu-fp32", "torch", "cpu", "fp32", "checkpoint", plain),
        Target("torch-cpu-fp32-fused", "torch", "cpu", "fp32", "checkpoint", fused_opts),
        Target("torch-cuda-fp32", "torch", "cuda", "fp32", "checkpoint", plain, skip=cuda),
        Target("torch-cuda-fp16", "torch", "cuda", "fp16", "checkpoint", plain, skip=cuda),
        Target("torch-cuda-fp16-fused", "torch", "cuda", "fp16", "checkpoint", fused_opts, skip=cuda),
        Target("torch-cuda-fp16-fused-graphs", "torch", "cuda", "fp16", "checkpoint", graph_opts, skip=cuda),
        Target("torch-cpu-fp32-resident", "torch", "cpu", "fp32", "checkpoint", resident),
        Target("torch-cuda-fp16-resident", "torch", "cuda", "fp16", "checkpoint", resident, skip=cuda),
        Target("torch-cuda-fp16-resident-graphs", "torch", "cuda", "fp16", "checkpoint",
               {**resident, "cuda_graphs": True}, skip=cuda),
        Target("ort-cpu-fp32", "onnxruntime", "cpu", "fp32", "onnx", skip=no_ort),
        Target("ort-cpu-int8", "onnxruntime", "cpu", "int8", "onnx-int8", skip=no_ort),
        Target("openvino-cpu-fp32", "openvino", "cpu", "fp32", "onnx", skip=_openvino()),
        Target("openvino-cpu-int8", "openvino", "cpu", "int8", "onnx-int8", skip=_openvino() or no_ort),
        Target("ort-cuda-fp32", "onnxruntime", "cuda", "fp32", "onnx", skip=no_ort_cuda),
        Target("trt-fp16", "tensorrt", "cuda", "fp16", "engine", skip=trt),
        Target("trt-int8", "tensorrt", "cuda", "int8", "engine", skip=trt),
        Target("trt-fp16-resident", "tensorrt", "cuda", "fp16", "engine", resident, skip=trt),
    ]


def reference(targets: List[Target]) -> Target:
    """torch fp32 on the CPU: the reference every other backend is compared with."""
    return next(t for t in targets if t.id == "torch-cpu-fp32")
