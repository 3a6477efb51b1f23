"""Detector: one class for every artifact; the backend follows the file suffix.

    det = Detector("model.onnx")          # or model.safetensors, engine.plan
    r = det(frame)                        # path, HxW / HxWx3 uint8 array (BGR by default)
    rs = det("images/")                   # folder, glob or list -> list of Results
    r.score, r.label, r.anomaly_map, r.mask, r.speed

Frames of any size are resized once to the model size here, one call of the operator seam
per batch (dad_edge.runtime.ops.preprocess: the C extension when built, else the numpy reference,
the same numbers as preprocess.to_pixels) inside Backend.run; a backend that pre-processes on
its device (the fused torch path, see backends/torch_backend.py) overrides run instead. The map
comes back at each frame's own size. Thresholds come from the artifact's metadata, unless given
at run time (image_threshold=, pixel_threshold=, sensitivity=: dad_edge/runtime/thresholds.py);
the file is never changed here.

Detector.infer_batch is the one way into the backend for everything that scores: predict and
the stream (run_items), `dad-edge eval` (training/evaluate.py), `dad-edge calibrate` and
training's thresholds (training/thresholds.py, on a model in memory: Detector.from_module).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from dad_edge.artifacts import metadata as md
from dad_edge.runtime.backends import is_remote, load_backend
from dad_edge.runtime.double_buffer import collected, double_buffered
from dad_edge.artifacts.metadata import normalize_score
from dad_edge.errors import ConfigError, DadEdgeError, DataError
from dad_edge.data.imageio import read_image
from dad_edge.data.preprocess import check_frame
from dad_edge.runtime.result import Result
from dad_edge.runtime.inputs import Item, expand
from dad_edge.runtime.thresholds import runtime_thresholds

COLOR_ORDERS = ("BGR", "RGB")


def _check_options(color_order: str, batch_size: int) -> None:
    if color_order not in COLOR_ORDERS:
        raise ConfigError(f"color_order={color_order!r} must be one of {COLOR_ORDERS}")
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")


def map_at_frame_size(amap: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """A map at model size -> float32 (H, W) for a frame of `shape` (H, W[, C]): bilinear (cv2),
    how every Result's map and mask, and every threshold, is taken at the frame's own size."""
    h, w = shape[:2]
    amap = np.ascontiguousarray(amap, np.float32)
    return cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR) if amap.shape != (h, w) else amap.copy()


def _display_image(frame: np.ndarray, color_order: str) -> np.ndarray:
    """The frame as RGB (or gray) uint8 for plots, copied: camera loops reuse their buffers."""
    if frame.shape[2] == 1:
        return frame.copy()
    if color_order == "BGR":
        return cv2.cvtColor(frame[:, :, :3], cv2.COLOR_BGR2RGB)  # about 40x faster than a reversed-stride copy
    return frame[:, :, :3].copy()  # C-contiguous


class Detector:
    def __init__(self, model: Union[str, Path], backend: Optional[str] = None, device: Optional[str] = None,
                 half: bool = False, color_order: str = "BGR", batch_size: int = 8,
                 fused: Optional[bool] = None, cuda_graphs: bool = False,
                 image_threshold: Optional[float] = None, pixel_threshold: Optional[float] = None,
                 sensitivity: Optional[float] = None, pipeline: Optional[bool] = None, resident: bool = False,
                 session: Optional[Dict[str, Any]] = None):
        """`model`: .safetensors (torch), .onnx (ONNX Runtime), .plan / .engine (TensorRT).

            Detector("model.onnx")                        # the thresholds stored by calibrate / train
            Detector("model.onnx", sensitivity=0.7)       # flag more: 0.5 = calibrated, 1 = everything
            Detector("model.onnx", image_threshold=0.3)   # a raw score value; the file is not changed

        backend: force one ("torch", "onnxruntime", "tensorrt"); device: "cpu", "cuda",
        "cuda:N" (default: the GPU where the backend has one); half: fp16 (torch on CUDA);
        color_order: of numpy frames (files are decoded as RGB); batch_size: frames per call;
        fused (torch backend): None = automatic, the fused kernels (Triton) on a CUDA device
        where Triton is installed and the plain graph elsewhere (so on the CPU); True forces
        the fused stages (on the CPU: C extension / numpy forms, same numbers); False never.
        cuda_graphs (torch backend on CUDA): replay the network part of each call from a CUDA
        graph captured once per batch size (several times faster at small batches; the first
        call of each batch size pays the capture).
        image_threshold, pixel_threshold (raw values in [0, 1]) and sensitivity (in [0, 1], moves both
        along the calibrated scale as anomalib's post-processor does) decide instead of the file's
        thresholds: see set_thresholds. `calibrate` stays the way to store new defaults.
        pipeline: over more than one batch, read and resize the next batch on a worker thread while
        the backend runs this one (runtime/double_buffer.py); False runs the stages in turn. None
        (default): on where the backend computes off the host CPU (a GPU), off on a CPU backend,
        whose threads already fill the cores (2-core Xeon: 0.93-1.05x, benchmarks/README.md, session 27).
        resident (torch and TensorRT backends): frames of one shape go to the device as uint8 through
        fixed pinned buffers, one copy each way per batch, pre-processing on the device. torch: the
        networks and score in the same call (one CUDA graph with cuda_graphs=True), two batches in
        flight on two CUDA streams (runtime/resident.py; on the CPU the same path without pinning,
        streams or graphs); TensorRT: the CUDA C resize kernel into the engine's input and the whole
        call in one CUDA graph per batch shape (backends/tensorrt_resident.py).
        session (ONNX Runtime): settings over the backend's SESSION, e.g. {"allow_spinning": True}
        (6-10 % faster on an idle 2-core Xeon, slower on a shared CPU: benchmarks/README.md, session 28).
        """
        _check_options(color_order, batch_size)
        # Checked before the backend loads: a wrong value fails fast, naming itself.
        runtime_thresholds(md.Thresholds(0.5, 0.5), image_threshold, pixel_threshold, sensitivity)
        model = model if is_remote(model) else Path(model)  # a served model's URL (grpc://, http://) stays a string
        self._attach(model, load_backend(model, backend, device=device, half=half, fused=fused,
                                         cuda_graphs=cuda_graphs, resident=resident, session=session),
                     color_order, batch_size)
        if pipeline is not None:
            self.pipeline = bool(pipeline)
        try:
            self.set_thresholds(image_threshold, pixel_threshold, sensitivity)
        except ConfigError:
            self.close()
            raise

    @classmethod
    def from_module(cls, model, meta: Optional[Dict[str, Any]] = None, device: Optional[str] = None,
                    color_order: str = "BGR", batch_size: int = 8) -> "Detector":
        """A Detector over an in-memory DiffusionAD module, no file written: training's threshold step.

            with Detector.from_module(model, build_metadata(model.cfg), color_order="RGB") as det:
                thresholds = detector_thresholds(det, held_out_frames, 0.99)   # dad_edge.training.thresholds

        The module is shared, not copied (TorchBackend.from_module): it runs where it is (a
        `device` other than the module's is an error), fp32, the plain graph, under no_grad; it
        is in eval mode while the Detector is open and back in training mode after close() if it
        was training. `meta` (default build_metadata(model.cfg)) gives the thresholds, if any."""
        from dad_edge.runtime.backends.torch_backend import TorchBackend

        _check_options(color_order, batch_size)
        det = cls.__new__(cls)
        det._attach(None, TorchBackend.from_module(model, meta, device=device), color_order, batch_size)
        return det

    def _attach(self, path: Optional[Path], backend, color_order: str, batch_size: int) -> None:
        self.path = path  # None for an in-memory module
        self.backend = backend
        self.closed = False
        self.meta = backend.meta
        self.config = md.model_config(self.meta)
        self.calibrated_thresholds = md.thresholds(self.meta)  # the file's
        self.thresholds = self.calibrated_thresholds  # what results are decided with (set_thresholds)
        self.color_order = color_order
        self.batch_size = min(batch_size, backend.max_batch or batch_size)
        # Double buffering across batches (runtime/double_buffer.py) where the backend is not on the host CPU:
        # "cpu", "CPUExecutionProvider", OpenVINO's "CPU".
        self.pipeline = "cpu" not in str(backend.device).lower()

    def __repr__(self) -> str:
        c, t = self.config, self.thresholds
        where = "<in-memory module>" if self.path is None else repr(str(self.path))
        return (f"Detector({where}, backend={self.backend.name} on {self.backend.device}, "
                f"{c.image_size}x{c.image_size}x{c.channels}, thresholds image={t.image} pixel={t.pixel})")

    def set_thresholds(self, image_threshold: Optional[float] = None, pixel_threshold: Optional[float] = None,
                       sensitivity: Optional[float] = None) -> md.Thresholds:
        """Decide the next results with other thresholds than the file's; returns them (self.thresholds).

        image_threshold / pixel_threshold: raw score / map values in [0, 1]. sensitivity in [0, 1]:
        0.5 is the calibrated threshold, higher flags more; it moves each calibrated threshold
        along its own normalised scale (the one normalized_score reports), and a value given
        for a level wins over it. No argument: back to the file's. ConfigError for a value out of
        [0, 1], or a sensitivity on an uncalibrated model. The model file is not changed."""
        self.thresholds = runtime_thresholds(self.calibrated_thresholds, image_threshold, pixel_threshold,
                                             sensitivity)
        return self.thresholds

    # -- public entry points -----------------------------------------------------------

    def __call__(self, source, color_order: Optional[str] = None) -> Union[Result, List[Result]]:
        """One image -> Result (a bad image raises); folder, glob or list -> list of Results,
        where a bad item is a Result with `error` set and the rest go on."""
        items, single = expand(source)
        if single:
            return next(self.run_items(items, color_order, strict=True))
        return list(self.run_items(items, color_order, strict=False))

    def predict(self, source, color_order: Optional[str] = None) -> List[Result]:
        """Always a list; bad items are Results with `error` set."""
        items, _ = expand(source)
        return list(self.run_items(items, color_order, strict=False))

    def stream(self, source, batch: int = 1, color_order: Optional[str] = None, **options) -> Iterator[Result]:
        """Results one by one, memory bounded.

        A camera index, "csi://N", an RTSP/HTTP URL, a video file, a folder or a glob runs through
        dad_edge.stream.runner.Stream: capture on its own thread, `batch` frames per backend call, bad
        frames skipped and counted, a dropped source reopened; results are StreamResults (a Result
        plus frame, time, latency_ms). `options`: queue_size, max_frames, reconnect, log_every_s.
        A list of paths or arrays, or one array, runs as images batch_size at a time, a bad item
        coming back as a Result with `error` set.
        """
        if isinstance(source, (list, tuple, np.ndarray)):
            items, _ = expand(source)
            return self.run_items(items, color_order, strict=False)
        from dad_edge.stream.runner import Stream

        return iter(Stream(self, source, batch=batch, color_order=color_order, **options))

    def warmup(self, batch: int = 1) -> None:
        """One pass on a blank batch: allocations and kernel selection happen here, not on frame 1."""
        c = self.config
        n = min(batch, self.batch_size)
        self._open_backend().run([np.zeros((c.image_size, c.image_size, c.channels), np.uint8)] * n,
                                 self.color_order)

    def close(self) -> None:
        """Release the backend (device memory, sessions, engines); a second close does nothing."""
        if not self.closed:
            self.closed = True
            self.backend.close()

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the three stages ----------------------------------------------------------------

    def _prepare(self, item: Item, color_order: str) -> Tuple[np.ndarray, str, np.ndarray]:
        """-> (the frame (H, W, C) uint8, validated, its colour order, the frame for display).

        Per item, so that a bad one is reported alone; the resize is batched (_pixels)."""
        if item.error is not None:
            raise DataError(item.error)
        if item.path is not None:
            frame, order = read_image(item.path), "RGB"
        else:
            frame, order = item.array, color_order
        frame = check_frame(frame, item.name)
        return frame, order, _display_image(frame, order)

    def infer_batch(self, frames: Sequence[np.ndarray], color_order: Union[None, str, Sequence[str]] = None,
                    frame_size: bool = False) -> Tuple[Union[np.ndarray, List[np.ndarray]], np.ndarray]:
        """Validated uint8 frames (H, W, C) of any sizes -> (maps, scores float32 (B,)).

        maps: float32 (B, S, S) at model size (evaluation compares them with masks there), or with
        `frame_size` a list of (H, W) maps, each at its frame's own size as in Result.anomaly_map
        (the convention of every threshold: calibrate and training's thresholds use this).
        The one way from the Detector into its backend (Backend.run), public so that evaluation,
        calibration, the stream and training's thresholds all score exactly as predict() does.
        `color_order`: one for all frames, or one per frame (files decode as "RGB")."""
        backend = self._open_backend()
        if color_order is None or isinstance(color_order, str):
            orders = [color_order or self.color_order] * len(frames)
        else:
            orders = list(color_order)
            if len(orders) != len(frames):
                raise ConfigError(f"color_order: {len(orders)} orders for {len(frames)} frames")
        bad = sorted(set(orders) - set(COLOR_ORDERS))
        if bad:
            raise ConfigError(f"color_order={bad[0]!r} must be one of {COLOR_ORDERS}")
        chunks = [(list(frames[start:start + self.batch_size]), orders[start:start + self.batch_size])
                  for start in range(0, len(frames), self.batch_size)]
        maps, scores = [], []
        # The worker thread has work only where the backend prepares batches on the host.
        submitted = double_buffered(chunks, lambda c: self._host_stage(backend, *c), self._backend_stage,
                                    enabled=self.pipeline and backend.prepares_on_host)
        for m, s in collected(submitted, backend.collect, backend.in_flight):
            maps.append(m)
            scores.append(s)
        c = self.config
        if not maps:
            empty = np.empty((0, c.image_size, c.image_size), np.float32)
            return ([] if frame_size else empty), np.empty(0, np.float32)
        maps, scores = np.concatenate(maps), np.concatenate(scores)
        if frame_size:
            return [map_at_frame_size(m, f.shape) for m, f in zip(maps, frames)], scores
        return maps, scores

    @staticmethod
    def _host_stage(backend, frames: List[np.ndarray], orders: List[str]) -> Tuple[Any, ...]:
        """Backend.run's host half (the batch's pixels) where the backend has one, else its inputs as they are."""
        if backend.prepares_on_host:
            return backend, backend.prepare(frames, orders)
        return backend, frames, orders

    @staticmethod
    def _backend_stage(prepared: Tuple[Any, ...]) -> Any:
        """The rest of Backend.run on what _host_stage returned, submitted: backend.collect(it) ->
        (maps (B, S, S), scores (B,)). Up to backend.in_flight batches are submitted before the first
        is collected (double_buffer.collected)."""
        backend, *rest = prepared
        return backend.infer(*rest) if backend.prepares_on_host else backend.submit(*rest)

    def _open_backend(self):
        if self.closed:
            raise ConfigError(f"{self!r} is closed; open the model again")
        return self.backend

    def _finish(self, item: Item, amap: np.ndarray, score: float, image: np.ndarray) -> Result:
        """Map back to the frame's size, then the thresholds."""
        amap = map_at_frame_size(amap, image.shape)
        t = self.thresholds
        return Result(
            source=item.name,
            score=score,
            normalized_score=None if t.image is None else float(normalize_score(score, t.image)),
            label=None if t.image is None else bool(score >= t.image),
            anomaly_map=amap,
            mask=None if t.pixel is None else amap >= t.pixel,
            image=image,
            thresholds=t,
        )

    def run_items(self, items: Sequence[Item], color_order: Optional[str] = None,
                  strict: bool = False) -> Iterator[Result]:
        """Items (dad_edge.runtime.inputs.Item) -> Results, in batches; the stream's entry point.
        strict: raise on the first bad item instead of reporting it in its Result. The next batch is
        read and resized while the backend runs this one (self.pipeline; runtime/double_buffer.py)."""
        chunks = [items[start:start + self.batch_size] for start in range(0, len(items), self.batch_size)]
        for slots in self.run_batches(chunks, color_order, strict):
            yield from slots

    def run_batches(self, batches: Iterable[Sequence[Item]], color_order: Optional[str] = None,
                    strict: bool = False, ahead: bool = True) -> Iterator[List[Result]]:
        """Batches of items (each one backend call) -> each batch's Results, in order. With `ahead`,
        batch n+1 is taken from `batches` and read (self.pipeline) or submitted (backend.in_flight)
        before batch n's results are yielded; a live camera passes ahead=False, so that no result
        waits for the next frame to arrive."""
        order = color_order or self.color_order
        if order not in COLOR_ORDERS:
            raise ConfigError(f"color_order={order!r} must be one of {COLOR_ORDERS}")
        backend = self._open_backend()
        submitted = double_buffered(batches, lambda chunk: self._read_chunk(backend, chunk, order, strict),
                                    self._submit_chunk, enabled=self.pipeline and ahead)
        yield from collected(submitted, lambda s: self._score_chunk(backend, s), backend.in_flight if ahead else 1)

    def _read_chunk(self, backend, chunk: Sequence[Item], order: str, strict: bool) -> Tuple[Any, ...]:
        """The host stage of one batch of items: read and check each (a bad one gets its error Result),
        then the batch's pixels (_host_stage)."""
        slots: List[Optional[Result]] = [None] * len(chunk)
        ready = []  # (slot, display image, read + check seconds)
        frames, orders = [], []
        for i, item in enumerate(chunk):
            t0 = time.perf_counter()
            try:
                frame, frame_order, image = self._prepare(item, order)
            except DadEdgeError as exc:
                if strict:
                    raise
                slots[i] = Result(item.name, error=str(exc))
                continue
            ready.append((i, image, time.perf_counter() - t0))
            frames.append(frame)
            orders.append(frame_order)
        t0 = time.perf_counter()
        prepared = self._host_stage(backend, frames, orders) if ready else None
        resize_s = (time.perf_counter() - t0) / max(len(ready), 1)
        return chunk, slots, ready, prepared, resize_s

    def _submit_chunk(self, read: Tuple[Any, ...]) -> Tuple[Any, ...]:
        """The backend stage of one batch from _read_chunk, submitted (one backend call: the chunk is one batch)."""
        ready, prepared = read[2:4]
        t0 = time.perf_counter()
        return read, (self._backend_stage(prepared) if ready else None), t0

    def _score_chunk(self, backend, submitted: Tuple[Any, ...]) -> List[Optional[Result]]:
        """A submitted batch's results collected, then each frame's map and thresholds."""
        (chunk, slots, ready, prepared, resize_s), handle, t0 = submitted
        if ready:
            maps, scores = backend.collect(handle)
            # Submit to collected (with two batches in flight, the wait behind the other one too),
            # shared out equally: per-image figures.
            infer_s = (time.perf_counter() - t0) / len(ready)
            for (i, image, own_s), amap, score in zip(ready, maps, scores):
                t0 = time.perf_counter()
                result = self._finish(chunk[i], amap, float(score), image)
                result.speed = {"preprocess": (own_s + resize_s) * 1e3, "inference": infer_s * 1e3,
                                "postprocess": (time.perf_counter() - t0) * 1e3}
                slots[i] = result
        return slots
