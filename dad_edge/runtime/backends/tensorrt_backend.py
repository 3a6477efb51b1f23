"""TensorRT backend: a .plan / .engine file run with the name-based tensor API.

Follows NVIDIA's samples (common_runtime.py): device buffers allocated once per engine
(grown when a larger batch comes), an explicit stream, set_input_shape /
set_tensor_address / execute_async_v3. That API exists since TensorRT 8.5, so the same
code serves TensorRT 10 and TensorRT 8.6 of JetPack 5. An engine only runs with the
TensorRT release and GPU architecture it was built for: both are checked against the
header before deserialising, with a message that says how to rebuild.

resident=True: uint8 frames of one shape go to the GPU through pinned buffers, are resized there by
the CUDA C pre-processing kernel straight into the engine's input, and the whole call replays from one
CUDA graph per batch shape (tensorrt_resident.py); other batches take the host path below.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from dad_edge.errors import BackendError
from dad_edge.runtime.backends.base import INPUT_NAME, OUTPUT_NAMES, Backend, as_orders
from dad_edge.runtime.backends.cuda_runtime import Cuda, DeviceBuffer, device_index


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise BackendError("TensorRT is not installed: engines run where TensorRT is (a Jetson with JetPack, or an "
                           "NVIDIA GPU machine with the tensorrt package); elsewhere run the .onnx file") from None
    return tensorrt


def _release(version: str) -> str:
    """major.minor.patch: engines are tied to the TensorRT release."""
    return ".".join(version.split(".")[:3])


def rebuild_command(meta: Dict[str, Any], path) -> str:
    trt = meta["tensorrt"]
    flags = {"fp32": "", "fp16": " --half", "int8": " --int8 --calib <good images>"}[trt["precision"]]
    return f"dad-edge export {trt.get('source', 'model.onnx')} --format engine --out {path}{flags}"


def check_compatible(meta: Dict[str, Any], path, trt_version: str, compute_capability: str,
                     gpu_name: str = "this GPU") -> None:
    """Refuse an engine built with another TensorRT release or for another GPU architecture."""
    built = meta["tensorrt"]
    problems = []
    if _release(built["version"]) != _release(trt_version):
        problems.append(f"TensorRT {built['version']} (this device has TensorRT {trt_version})")
    if built["compute_capability"] != compute_capability:
        problems.append(f"a GPU of compute capability {built['compute_capability']} "
                        f"({built.get('gpu_name', '?')}; this device has {compute_capability}, {gpu_name})")
    if problems:
        raise BackendError(f"{path} was built for {' and '.join(problems)}: "
                           f"rebuild it on this device: {rebuild_command(meta, path)}")


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, path: Path, device: Optional[str] = None, half: bool = False,
                 fused: Optional[bool] = None, cuda_graphs: bool = False, resident: bool = False):
        self.reject_torch_options(fused, cuda_graphs)
        from dad_edge.artifacts.engine_file import read_engine_file

        if half:
            raise BackendError("half=True applies to the torch backend; an engine's precision is fixed when it is "
                               "built: dad-edge export ... --format engine --half")
        self.meta, plan = read_engine_file(path)
        trt = import_tensorrt()
        self.cuda = Cuda(device_index(device))
        gpu = self.cuda.name()
        check_compatible(self.meta, path, trt.__version__, self.cuda.compute_capability(), gpu)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        dla_core = self.meta["tensorrt"].get("dla_core")
        if dla_core is not None:
            self.runtime.DLA_core = dla_core
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendError(f"TensorRT could not load {path} (see its log above): "
                               f"rebuild it on this device: {rebuild_command(self.meta, path)}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        if self.inputs != [INPUT_NAME] or not set(OUTPUT_NAMES) <= set(self.outputs):
            raise BackendError(f"{path}: engine has inputs {self.inputs} and outputs {self.outputs}, expected "
                               f"[{INPUT_NAME!r}] and {list(OUTPUT_NAMES)}; re-export it")
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        # Elements per image of each tensor: every shape is (batch, ...) with a dynamic batch.
        self.per_image = {n: int(np.prod(tuple(self.engine.get_tensor_shape(n))[1:], dtype=np.int64)) for n in names}
        low, _, high = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.min_batch, self.max_batch = int(low[0]), int(high[0])
        self.stream = self.cuda.stream()
        self.buffers: Dict[str, DeviceBuffer] = {}
        self.capacity = 0  # images the current buffers hold
        self.device = f"cuda:{self.cuda.index} ({gpu})"
        self.input_shape = tuple(int(d) for d in self.engine.get_tensor_shape(INPUT_NAME))[1:]  # (C, S, S)
        self.resident = None
        if resident:
            from dad_edge.runtime.backends.tensorrt_resident import TensorRTResident
            self.resident = TensorRTResident(self)

    @property
    def prepares_on_host(self) -> bool:
        """The resident path pre-processes on the GPU (run below); the plain one on the host."""
        return self.resident is None

    def run(self, frames, color_order) -> Tuple[np.ndarray, np.ndarray]:
        """Backend.run; a batch the resident path takes (one frame shape and colour order) goes through it."""
        frames = list(frames)
        orders = as_orders(color_order, len(frames))
        if self.resident is not None and self.resident.accepts(frames, orders):
            return self.resident.run(frames, orders[0])
        return self.infer(self.prepare(frames, color_order))

    def _reserve(self, batch: int) -> None:
        """Allocate once; re-allocate only when a larger batch than ever before comes."""
        if batch <= self.capacity:
            return
        for buf in self.buffers.values():
            buf.close()
        self.buffers = {n: DeviceBuffer(self.cuda, batch * self.per_image[n] * self.dtypes[n].itemsize)
                        for n in self.per_image}
        for name, buf in self.buffers.items():
            self.context.set_tensor_address(name, buf.ptr)
        self.capacity = batch

    def infer(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        b = x.shape[0]
        if b > self.max_batch:
            raise BackendError(f"batch {b} is above the engine's maximum {self.max_batch}; "
                               "re-export with a larger --batch or send smaller batches")
        if b < self.min_batch:
            # The profile starts above b: pad with blank images, drop their results.
            x = np.concatenate([x, np.zeros((self.min_batch - b, *x.shape[1:]), x.dtype)])
        image = np.ascontiguousarray(x, self.dtypes[INPUT_NAME])
        self._reserve(image.shape[0])
        self.context.set_input_shape(INPUT_NAME, image.shape)
        host = {n: np.empty(tuple(self.context.get_tensor_shape(n)), self.dtypes[n]) for n in OUTPUT_NAMES}
        self.cuda.to_device(self.buffers[INPUT_NAME], image, self.stream)
        if not self.context.execute_async_v3(int(self.stream)):
            raise BackendError("TensorRT execute_async_v3 failed (see its log above)")
        for name, out in host.items():
            self.cuda.to_host(out, self.buffers[name], self.stream)
        self.cuda.synchronize(self.stream)
        maps, scores = host[OUTPUT_NAMES[0]], host[OUTPUT_NAMES[1]]
        return maps[:b, 0].astype(np.float32), scores[:b].astype(np.float32)

    def close(self) -> None:
        if getattr(self, "resident", None) is not None:
            self.resident.close()
            self.resident = None
        for buf in self.buffers.values():
            buf.close()
        self.buffers, self.capacity = {}, 0
        if getattr(self, "stream", None) is not None:
            self.cuda.destroy_stream(self.stream)
            self.stream = None
        # Context before engine before runtime, as TensorRT requires.
        for attr in ("context", "engine", "runtime"):
            if hasattr(self, attr):
                delattr(self, attr)
