"""Build a TensorRT engine from the exported ONNX file, with the TensorRT Python API.

Precision fp32, fp16 (--half) or INT8 (--int8, entropy calibration over good images,
with fp16 allowed for the layers that have no INT8 kernel); a workspace limit; one
optimisation profile over the batch range; an optional DLA core (Jetson); an optional
timing cache that makes rebuilds fast. The engine goes into the dad_edge container
(dad_edge/artifacts/engine_file.py) with the ONNX metadata plus the TensorRT version and GPU it was built on.
Runs on the target device; nothing here works without TensorRT and a GPU but the
option checks and the calibration data, which are plain numpy.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.atomic import write_bytes_atomic
from dad_edge.runtime.backends.base import INPUT_NAME
from dad_edge.errors import BackendError, ConfigError, DadEdgeError, DataError
from dad_edge.data.imageio import list_images, read_image
from dad_edge.data.preprocess import to_pixels

from dad_edge.artifacts.engine_file import write_engine_file

MIN_CALIBRATION_IMAGES = 300  # below this INT8 ranges are often poor (the usual advice)


@dataclass(frozen=True)
class EngineOptions:
    half: bool = False  # fp16 kernels
    int8: bool = False  # INT8 kernels, calibrated on `calib`
    calib: Optional[Path] = None  # folder of good images (searched recursively) for INT8 calibration
    calib_max_images: int = 1000  # the first N images of `calib` are used
    workspace_gb: float = 4.0  # scratch memory TensorRT may use for tactics
    min_batch: int = 1
    opt_batch: int = 1  # the batch the kernels are tuned for (and INT8 calibration runs at)
    max_batch: int = 8
    dla_core: Optional[int] = None  # Jetson DLA core; layers it cannot run fall back to the GPU
    timing_cache: Optional[Path] = None  # read if present, written after the build

    def validate(self) -> "EngineOptions":
        checks = [
            (1 <= self.min_batch <= self.opt_batch <= self.max_batch,
             f"batch range min={self.min_batch}, opt={self.opt_batch}, max={self.max_batch} needs 1 <= min <= opt <= max"),
            (self.workspace_gb > 0, f"workspace_gb={self.workspace_gb} must be > 0"),
            (not self.int8 or self.calib is not None, "--int8 needs --calib DIR: a folder of good images"),
            (self.calib is None or self.int8, "--calib is only used with --int8"),
            (self.calib_max_images >= 1, f"calib_max_images={self.calib_max_images} must be >= 1"),
            (self.dla_core is None or self.dla_core >= 0, f"dla_core={self.dla_core} must be >= 0"),
            (self.dla_core is None or self.half or self.int8, "a DLA core runs fp16 or int8 only: add --half or --int8"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.half else "fp32"


class CalibrationBatches:
    """Good images as the engine's input, (B, C, S, S) float32 0..255, full batches only.

    Unreadable images are skipped with a warning; fewer than MIN_CALIBRATION_IMAGES warn.
    """

    def __init__(self, folder, batch_size: int, image_size: int, channels: int, max_images: int = 1000):
        files = list_images(folder, recursive=True)[:max_images]
        if len(files) < batch_size:
            raise DataError(f"{folder}: {len(files)} images for INT8 calibration, fewer than one batch "
                            f"({batch_size}); add good images or lower --opt-batch")
        if len(files) < MIN_CALIBRATION_IMAGES:
            warnings.warn(f"{folder}: only {len(files)} images for INT8 calibration; {MIN_CALIBRATION_IMAGES} or "
                          "more give more reliable INT8 ranges", stacklevel=2)
        self.files = files
        self.batch_size = batch_size
        self.used = 0  # images handed out so far
        self.shape = (batch_size, channels, image_size, image_size)

    def __len__(self) -> int:
        return len(self.files) // self.batch_size

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4

    def __iter__(self) -> Iterator[np.ndarray]:
        batch: List[np.ndarray] = []
        _, channels, size, _ = self.shape
        for path in self.files:
            try:
                batch.append(to_pixels(read_image(path), size, channels, color_order="RGB"))
            except DadEdgeError as exc:
                warnings.warn(f"calibration: skipped {exc}", stacklevel=2)
                continue
            if len(batch) == self.batch_size:
                self.used += self.batch_size
                yield np.stack(batch)
                batch = []


def _entropy_calibrator(trt, batches: CalibrationBatches, cuda):
    """An IInt8EntropyCalibrator2 feeding `batches` through one device buffer.

    Defined in a function because its base class lives in tensorrt, imported lazily.
    """
    from dad_edge.runtime.backends.cuda_runtime import DeviceBuffer

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(batches)
            self.buffer = DeviceBuffer(cuda, batches.nbytes)
            self.stream = cuda.stream()
            self.cache: Optional[bytes] = None

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names):
            batch = next(self.batches, None)
            if batch is None:
                return None  # tells TensorRT that calibration is done
            cuda.to_device(self.buffer, np.ascontiguousarray(batch, np.float32), self.stream)
            cuda.synchronize(self.stream)
            return [self.buffer.ptr]

        # Kept in memory only: a cache file would silently outlive a change of images.
        def read_calibration_cache(self):
            return self.cache

        def write_calibration_cache(self, cache) -> None:
            self.cache = bytes(cache)

        def close(self) -> None:
            self.buffer.close()
            cuda.destroy_stream(self.stream)

    return EntropyCalibrator()


def _parse(trt, builder, logger, onnx_path: Path):
    # Explicit batch is a creation flag in TensorRT 8.x and the only mode (flag deprecated) in 10.
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # GroupNorm arrives as InstanceNormalization: build it from native layers (TensorRT 8.6+),
    # not the InstanceNormalization plugin, so the engine needs no plugin library at run time.
    parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i).desc()) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT {trt.__version__} could not parse {onnx_path}: {errors}")
    return network, parser


def _onnx_metadata(onnx_path: Path) -> Dict[str, Any]:
    """The metadata of a dad_edge ONNX file: the only source an engine is built from."""
    from .metadata_io import read_metadata

    onnx_meta = read_metadata(onnx_path)
    if onnx_meta["kind"] != "onnx":
        raise ConfigError(f"{onnx_path}: an engine is built from an ONNX file, not a {onnx_meta['kind']}")
    return onnx_meta


def _set_precision(trt, config, options: EngineOptions) -> None:
    if options.half or options.int8:
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        # TensorRT runs "fp32" convolutions in TF32 on Ampere and later by default (10-bit
        # mantissa); a fp32 engine is meant to match ONNX Runtime to 1e-4.
        config.clear_flag(trt.BuilderFlag.TF32)


def _builder_config(trt, builder, options: EngineOptions, cfg, batches: Optional[CalibrationBatches], cuda):
    """-> (IBuilderConfig, the INT8 calibrator or None): workspace, the batch profile, precision,
    INT8 calibration, DLA and the timing cache, as `options` say."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    sample = (cfg.channels, cfg.image_size, cfg.image_size)
    profile.set_shape(INPUT_NAME, (options.min_batch, *sample), (options.opt_batch, *sample),
                      (options.max_batch, *sample))
    config.add_optimization_profile(profile)
    _set_precision(trt, config, options)
    calibrator = None
    if options.int8:
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _entropy_calibrator(trt, batches, cuda)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)  # calibration runs at the profile's opt shape
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if options.timing_cache is not None:
        previous = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        config.set_timing_cache(config.create_timing_cache(previous), False)
    return config, calibrator


def _serialize(trt, builder, network, config, calibrator, options: EngineOptions, onnx_path: Path) -> bytes:
    """Build the serialized engine (the calibrator's device memory freed either way); save the timing cache."""
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.close()
    if plan is None:
        raise BackendError(f"TensorRT {trt.__version__} failed to build an engine from {onnx_path} (see its log above)")
    if options.timing_cache is not None:
        write_bytes_atomic(options.timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(plan)


def _engine_metadata(onnx_meta: Dict[str, Any], onnx_path: Path, options: EngineOptions, trt, cuda,
                     batches: Optional[CalibrationBatches]) -> Dict[str, Any]:
    """The ONNX file's metadata plus what the engine was built with and on (checked at load)."""
    export = {**onnx_meta["export"], "precision": options.precision}
    tensorrt = {
        "version": trt.__version__,
        "compute_capability": cuda.compute_capability(),
        "gpu_name": cuda.name(),
        "precision": options.precision,
        "source": onnx_path.name,
        "batch": {"min": options.min_batch, "opt": options.opt_batch, "max": options.max_batch},
        "workspace_gb": options.workspace_gb,
        "dla_core": options.dla_core,
        "calibration_images": None if batches is None else batches.used,
    }
    return md.derive_metadata(onnx_meta, "tensorrt", export=export, tensorrt=tensorrt)


def build_engine(onnx_path, out, options: EngineOptions = EngineOptions()) -> Dict[str, Any]:
    """Build `out` (.plan / .engine) from a dad_edge ONNX file on this device; return its metadata."""
    from dad_edge.runtime.backends.cuda_runtime import Cuda
    from dad_edge.runtime.backends.tensorrt_backend import import_tensorrt

    options.validate()
    onnx_path = Path(onnx_path)
    onnx_meta = _onnx_metadata(onnx_path)
    cfg = md.model_config(onnx_meta)
    batches = (CalibrationBatches(options.calib, options.opt_batch, cfg.image_size, cfg.channels,
                                  options.calib_max_images) if options.int8 else None)
    trt = import_tensorrt()
    cuda = Cuda(0)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, logger, onnx_path)  # the parser must outlive the network's use
    config, calibrator = _builder_config(trt, builder, options, cfg, batches, cuda)
    plan = _serialize(trt, builder, network, config, calibrator, options, onnx_path)
    meta = _engine_metadata(onnx_meta, onnx_path, options, trt, cuda, batches)
    write_engine_file(out, plan, meta)
    return meta
