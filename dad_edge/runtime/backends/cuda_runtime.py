"""The few CUDA runtime calls the TensorRT path needs, through NVIDIA's cuda-python.

Device memory, page-locked host memory, an explicit stream, host<->device copies, stream
capture into CUDA graphs and the GPU's compute capability, without torch or pycuda. cuda-python 12.6+ names the module
cuda.bindings.runtime; older releases (those of JetPack 5) name it cuda.cudart. Every
call returns (error, *values); `_check` turns an error into a BackendError.
"""
from __future__ import annotations

import ctypes
from typing import Any, Optional, Tuple

import numpy as np

from dad_edge.errors import BackendError


def _import_runtime():
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise BackendError("cuda-python is not installed: pip install cuda-python (the TensorRT backend moves "
                               "its buffers with it); use the .onnx file where there is no NVIDIA GPU") from None
    return runtime


def device_index(device: Optional[str]) -> int:
    """None, "cuda" -> 0; "cuda:N" -> N."""
    if device in (None, "cuda"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise BackendError(f"device={device!r}: the TensorRT backend runs on a GPU; use 'cuda' or 'cuda:N'")


class DeviceBuffer:
    """Device memory of a fixed size, freed by close()."""

    def __init__(self, cuda: "Cuda", nbytes: int):
        self.cuda = cuda
        self.nbytes = nbytes
        self.ptr = int(cuda.call("cudaMalloc", nbytes))

    def close(self) -> None:
        if self.ptr:
            self.cuda.call("cudaFree", self.ptr)
            self.ptr = 0


class PinnedBuffer:
    """Page-locked host memory of a fixed size (cudaMallocHost), freed by close(): copies from and to it
    run asynchronously, and a CUDA graph can capture them (copies of pageable memory cannot be captured)."""

    def __init__(self, cuda: "Cuda", nbytes: int):
        self.cuda = cuda
        self.nbytes = nbytes
        self.ptr = int(cuda.call("cudaMallocHost", nbytes))

    def array(self, dtype, shape: Tuple[int, ...]) -> np.ndarray:
        """A numpy view of the buffer's first bytes as `shape` of `dtype` (valid until close())."""
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = count * np.dtype(dtype).itemsize
        if nbytes > self.nbytes:
            raise BackendError(f"{shape} {np.dtype(dtype)} ({nbytes} bytes) does not fit a {self.nbytes}-byte "
                               "pinned buffer")
        raw = (ctypes.c_uint8 * nbytes).from_address(self.ptr)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            self.cuda.call("cudaFreeHost", self.ptr)
            self.ptr = 0


class Cuda:
    """One GPU: its properties, memory, a stream and copies."""

    def __init__(self, index: int = 0):
        self.rt = _import_runtime()
        self.index = index
        count = self.call("cudaGetDeviceCount")
        if index >= count:
            raise BackendError(f"cuda:{index} does not exist: this machine has {count} CUDA device(s)")
        self.call("cudaSetDevice", index)

    def call(self, name: str, *args: Any) -> Any:
        """Run cudart.<name>(*args); raise BackendError on an error; return its value(s)."""
        err, *values = getattr(self.rt, name)(*args)
        if err != self.rt.cudaError_t.cudaSuccess:
            _, text = self.rt.cudaGetErrorString(err)
            text = text.decode() if isinstance(text, bytes) else text
            raise BackendError(f"CUDA {name} failed on cuda:{self.index}: {text}")
        return values[0] if len(values) == 1 else tuple(values) or None

    def compute_capability(self) -> str:
        attr = self.rt.cudaDeviceAttr
        major = self.call("cudaDeviceGetAttribute", attr.cudaDevAttrComputeCapabilityMajor, self.index)
        minor = self.call("cudaDeviceGetAttribute", attr.cudaDevAttrComputeCapabilityMinor, self.index)
        return f"{major}.{minor}"

    def name(self) -> str:
        raw = self.call("cudaGetDeviceProperties", self.index).name
        return (raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)).rstrip("\x00")

    def stream(self) -> Any:
        return self.call("cudaStreamCreate")

    def destroy_stream(self, stream: Any) -> None:
        self.call("cudaStreamDestroy", stream)

    def synchronize(self, stream: Any) -> None:
        self.call("cudaStreamSynchronize", stream)

    def to_device(self, dst: DeviceBuffer, src: np.ndarray, stream: Any) -> None:
        """Async copy of a C-contiguous host array; `src` must stay alive until synchronize()."""
        if src.nbytes > dst.nbytes:
            raise BackendError(f"{src.nbytes} bytes do not fit a {dst.nbytes}-byte device buffer")
        self.call("cudaMemcpyAsync", dst.ptr, src.ctypes.data, src.nbytes,
                  self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)

    def to_host(self, dst: np.ndarray, src: DeviceBuffer, stream: Any) -> None:
        self.call("cudaMemcpyAsync", dst.ctypes.data, src.ptr, dst.nbytes,
                  self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)

    def copy_async(self, dst: int, src: int, nbytes: int, to_device: bool, stream: Any) -> None:
        """cudaMemcpyAsync between two addresses (device and pinned host memory) on `stream`."""
        kind = self.rt.cudaMemcpyKind
        self.call("cudaMemcpyAsync", dst, src, nbytes,
                  kind.cudaMemcpyHostToDevice if to_device else kind.cudaMemcpyDeviceToHost, stream)

    # -- CUDA graphs: stream capture, as TensorRT's developer guide shows it for enqueueV3 -------------

    def begin_capture(self, stream: Any) -> None:
        """Work enqueued on `stream` from this thread is recorded, not run, until end_capture."""
        self.call("cudaStreamBeginCapture", stream, self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)

    def end_capture(self, stream: Any) -> Any:
        """-> the executable graph of what was recorded (the recorded graph itself is released)."""
        graph = self.call("cudaStreamEndCapture", stream)
        try:
            # cudaGraphInstantiateWithFlags: the same signature in cuda-python 11.x (JetPack 5) and 12+.
            return self.call("cudaGraphInstantiateWithFlags", graph, 0)
        finally:
            self.call("cudaGraphDestroy", graph)

    def launch_graph(self, graph_exec: Any, stream: Any) -> None:
        self.call("cudaGraphLaunch", graph_exec, stream)

    def destroy_graph_exec(self, graph_exec: Any) -> None:
        self.call("cudaGraphExecDestroy", graph_exec)
