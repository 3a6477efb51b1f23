"""TensorRTBackend(resident=True): uint8 frames in, pre-processing on the GPU, one CUDA graph per batch shape.

For a batch of frames of one shape and colour order:

    frames --one host copy--> pinned uint8 buffer --one cudaMemcpyAsync--> device uint8 buffer
           --kernels/preprocess_noise.cu (resize, colour order, pixel values 0..255: the engine's input)-->
           engine input --execute_async_v3--> engine outputs --one cudaMemcpyAsync each--> pinned host buffers

all on the backend's one stream, with one stream synchronize per batch. The copy in, the kernel, the engine
and the copies out are captured once per batch shape into a CUDA graph and replayed with cudaGraphLaunch,
following TensorRT's developer guide ("CUDA Graphs"): the input shape is set and the engine enqueued once
outside the capture (TensorRT updates its internal state on a shape change), then one enqueue is captured
between cudaStreamBeginCapture and cudaStreamEndCapture. An engine whose enqueue cannot be captured runs the
same calls without a graph. The graph holds the engine's buffer addresses: when the backend grows its
buffers for a larger batch, the graphs captured before are dropped and captured again.

Nothing here runs without an NVIDIA GPU, TensorRT and cuda-python; the kernel launch (launch_preprocess)
is tested on the CPU through the CUDA C emulation of the kernels (tests/cuda_emu).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from dad_edge.errors import BackendError
from dad_edge.runtime.backends.base import INPUT_NAME, OUTPUT_NAMES
from dad_edge.runtime.backends.cuda_runtime import DeviceBuffer, PinnedBuffer

PIXEL_SCALE, PIXEL_OFFSET = 1.0, 0.0  # the engine takes pixel values 0..255 (backends/base.py INPUT_NAME)


def launch_preprocess(kernels, frames_ptr: int, batch: int, frame_shape: Tuple[int, int, int], input_ptr: int,
                      size: int, channels: int, color_order: str, stream=0) -> None:
    """(batch, H, W, C_in) uint8 frames at `frames_ptr` -> the engine input (batch, channels, size, size)
    float32 at `input_ptr`, as ops.preprocess(normalize=False) computes it on the host: one launch."""
    h, w, cin = frame_shape
    kernels.preprocess_noise(frames_ptr, batch, h, w, cin, input_ptr, channels * size * size, batch, 0, size,
                             channels, color_order == "BGR", PIXEL_SCALE, PIXEL_OFFSET, stream=stream)


class _Shape:
    """One batch shape's pinned and device buffers and its graph."""

    def __init__(self, backend, key: Tuple):
        b, h, w, c = key[:4]
        cuda = backend.cuda
        self.key, self.batch = key, b
        self.host_in = PinnedBuffer(cuda, b * h * w * c)
        self.frames = self.host_in.array(np.uint8, (b, h, w, c))
        self.dev_in = DeviceBuffer(cuda, b * h * w * c)
        self.host_out: Dict[str, PinnedBuffer] = {}
        self.outputs: Dict[str, np.ndarray] = {}
        for name in OUTPUT_NAMES:
            dtype = backend.dtypes[name]
            shape = (b,) + tuple(backend.engine.get_tensor_shape(name))[1:]
            self.host_out[name] = PinnedBuffer(cuda, int(np.prod(shape)) * dtype.itemsize)
            self.outputs[name] = self.host_out[name].array(dtype, shape)
        self.graph: Optional[Any] = None
        self.capacity = -1  # the backend's buffer capacity the graph was captured with
        self.capturable = True

    def close(self, cuda) -> None:
        if self.graph is not None:
            cuda.destroy_graph_exec(self.graph)
            self.graph = None
        for buf in (self.host_in, self.dev_in, *self.host_out.values()):
            buf.close()


class TensorRTResident:
    """The resident call of one TensorRTBackend (its engine, context, stream and buffers)."""

    def __init__(self, backend, max_shapes: int = 4):
        from dad_edge.kernels.cuda_loader import CudaKernels

        if backend.dtypes[INPUT_NAME] != np.float32:
            raise BackendError(f"resident=True fills the engine's input with float32 pixels; this engine's input is "
                               f"{backend.dtypes[INPUT_NAME]}: rebuild it from the .onnx file, or run resident=False")
        self.backend = backend
        self.kernels = CudaKernels(backend.cuda.index)
        self.max_shapes = max_shapes
        self._shapes: "OrderedDict[Tuple, _Shape]" = OrderedDict()
        self.captures = 0

    def accepts(self, frames: Sequence[np.ndarray], orders: Sequence[str]) -> bool:
        """Frames of one (H, W, C) shape and one colour order, a batch the engine's profile takes unpadded."""
        b = self.backend
        return (bool(frames) and len({f.shape for f in frames}) == 1 and frames[0].ndim == 3
                and len(set(orders)) == 1 and b.min_batch <= len(frames) <= b.max_batch)

    def run(self, frames: Sequence[np.ndarray], color_order: str) -> Tuple[np.ndarray, np.ndarray]:
        backend, cuda = self.backend, self.backend.cuda
        entry = self._entry((len(frames),) + tuple(frames[0].shape) + (color_order,))
        np.stack(frames, out=entry.frames)  # the one host copy
        if entry.graph is not None and entry.capacity != backend.capacity:
            cuda.destroy_graph_exec(entry.graph)  # the backend's buffers moved since the capture
            entry.graph = None
        if entry.graph is None and entry.capturable:
            self._capture(entry)
        if entry.graph is not None:
            cuda.launch_graph(entry.graph, backend.stream)
        else:
            self._set_shape(entry)
            self._enqueue(entry)
        cuda.synchronize(backend.stream)  # the one wait
        maps, scores = (entry.outputs[n] for n in OUTPUT_NAMES)
        return maps[:, 0].astype(np.float32), scores.astype(np.float32)

    def close(self) -> None:
        for entry in self._shapes.values():
            entry.close(self.backend.cuda)
        self._shapes.clear()
        self.kernels.close()

    # -- internals ----------------------------------------------------------------------------

    def _entry(self, key: Tuple) -> _Shape:
        entry = self._shapes.pop(key, None)
        if entry is None:
            while len(self._shapes) >= self.max_shapes:
                _, old = self._shapes.popitem(last=False)
                old.close(self.backend.cuda)
            entry = _Shape(self.backend, key)
        self._shapes[key] = entry
        return entry

    def _set_shape(self, entry: _Shape) -> None:
        backend = self.backend
        backend._reserve(entry.batch)
        backend.context.set_input_shape(INPUT_NAME, (entry.batch, *backend.input_shape))

    def _enqueue(self, entry: _Shape) -> None:
        """Copy in, pre-process, run the engine, copy out: the work one graph holds."""
        backend, cuda = self.backend, self.backend.cuda
        b, h, w, c, order = entry.key
        stream = backend.stream
        cuda.copy_async(entry.dev_in.ptr, entry.host_in.ptr, b * h * w * c, True, stream)
        cfg = backend.config
        launch_preprocess(self.kernels, entry.dev_in.ptr, b, (h, w, c), backend.buffers[INPUT_NAME].ptr,
                          cfg.image_size, cfg.channels, order, stream=int(stream))
        if not backend.context.execute_async_v3(int(stream)):
            raise BackendError("TensorRT execute_async_v3 failed (see its log above)")
        for name in OUTPUT_NAMES:
            cuda.copy_async(entry.host_out[name].ptr, backend.buffers[name].ptr, entry.outputs[name].nbytes, False,
                            stream)

    def _capture(self, entry: _Shape) -> None:
        """TensorRT's recipe: shape set and one plain enqueue, then one enqueue captured into a graph."""
        backend, cuda = self.backend, self.backend.cuda
        self._set_shape(entry)
        self._enqueue(entry)
        cuda.synchronize(backend.stream)
        cuda.begin_capture(backend.stream)
        try:
            self._enqueue(entry)
        except BackendError:
            try:
                cuda.end_capture(backend.stream)
            except BackendError:
                pass
            entry.capturable = False  # this engine's enqueue is not capturable: plain calls from now on
            return
        try:
            entry.graph = cuda.end_capture(backend.stream)
        except BackendError:
            entry.capturable = False
            return
        entry.capacity = backend.capacity
        self.captures += 1
