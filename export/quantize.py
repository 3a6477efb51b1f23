"""INT8 ONNX for CPUs: ONNX Runtime static quantisation of the networks, everything else in float.

ONNX Runtime's documented recipe (onnxruntime.ai/docs/performance/model-optimizations/quantization.html):

1. quant_pre_process: ONNX Runtime's basic graph optimisations
   (constant folding, Conv+Add fusions) and ONNX shape inference, so that the quantiser sees
   the graph the runtime will run.
2. quantize_static in QDQ format: QuantizeLinear/DequantizeLinear pairs around each chosen
   layer, which ONNX Runtime's CPU provider fuses into integer kernels (QLinearConv, ...).
   Weights int8, symmetric, one scale per output channel; activations uint8 with MinMax
   ranges collected over good images pre-processed exactly as the Detector does
   (ops.preprocess, pixel values 0..255: the graph normalises inside).
3. Only the networks' convolutions are quantised (nodes_to_quantize), and not the
   layers at the networks' edges: the float region is every node reachable from the graph's
   input (normalisation, fixed noise, combine) or reaching its outputs (sigmoid, smoothing,
   top-k score) without passing through a Conv/MatMul; the layers that read or write that
   region (U-Net in and out, the segmentation net's first layer and head) stay float, so no
   quantisation step touches the image-space tensors: the noised inputs, the predicted noise,
   the combine's output and the map's logits. The attention products (MatMul) stay float too:
   ONNX Runtime turns the Softmax between two quantised products into a QLinearSoftmax that ran
   3.5x slower than the float one, and the quantise / dequantise steps around them cost more than
   the integer products save (measured: compact at batch 1, INT8 over fp32 1.02-1.05x with them
   quantised, 1.08-1.17x without; benchmarks/README.md, "CPU INT8 and OpenVINO").
   Between quantised convolutions the data stays integer: a Relu, MaxPool, Concat or Resize all of
   whose data inputs come from quantised nodes is quantised too (integer_path_nodes). ONNX Runtime
   then folds each Relu into its convolution's output range and runs MaxPool and Concat on uint8
   (NhwcMaxPool, QLinearConcat); left float, every convolution of the segmentation net
   (conv-BN-ReLU) paid a DequantizeLinear, a float Relu and a QuantizeLinear, and INT8 ran slower
   than fp32 (the seg net alone, 0.89-0.96x at batch 1; 1.34-1.40x with this; benchmarks/README.md,
   session 27). ONNX Runtime 1.32 still runs the bilinear up-sampling (Resize) in float between a
   dequantise and a quantise: it drops the pair around a Resize in "nearest" mode only (checked on a
   five-node graph, benchmarks/results/cpu-2026-12-06-s27/resize_qdq.py); quantising it costs nothing
   and lets a runtime that can fuse it do so.
4. The fp32 file's metadata travels into the INT8 file (metadata_props, as export_onnx writes
   it) with export.precision "int8", export.int8 true, the number of calibration images and a
   "quantization" section saying how.

The result is a plain .onnx: the Detector (and OpenVINO, which reads QDQ graphs as INT8)
opens it like the fp32 one.
"""
from __future__ import annotations

import tempfile
import warnings
from collections import deque
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Union

import numpy as np

from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.atomic import write_bytes_atomic
from dad_edge.data.imageio import list_images, read_image
from dad_edge.data.layouts import detect_layout, open_category
from dad_edge.data.preprocess import check_frame
from dad_edge.errors import BackendError, ConfigError, DadEdgeError, DataError
from dad_edge.runtime import ops
from dad_edge.runtime.backends.base import INPUT_NAME

LAYER_OPS = ("Conv", "MatMul")  # the networks' layers: where the float pre- and post-processing ends
QUANTISED_OPS = ("Conv",)  # what is quantised among them (module doc, point 3)
INTEGER_PATH_OPS = ("Relu", "MaxPool", "Concat", "Resize")  # quantised between quantised layers (point 3)
SHAPE_OPS = ("Shape", "Size")  # they read a tensor's shape, not its values: no data flows through them
CALIBRATION_BATCH = 8  # images per calibration run: ranges are the same, fewer session calls
# No CalibMaxIntermediateOutputs: onnxruntime's MinMax calibrator (1.32 here) drops the held batches when it reaches
# that count without merging their ranges (onnxruntime issue 18893), so ranges came from the last few batches only,
# and a count of batches divisible by it failed with "No data is collected". What it holds per batch is the min and
# max of each tensor (the ReduceMin / ReduceMax outputs it adds), a few numbers: all batches fit in memory.


def calibration_files(folder: Union[str, Path], max_images: int) -> List[Path]:
    """The good images of `folder`: a category folder's training images (any layout
    open_category reads: MVTec train/good, VisA, DAGM), else every image under `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--calib {folder}: no such folder; give a folder of good images, or a category folder "
                        "(its train/good images are used)")
    if detect_layout(folder):
        files = [s.path for s in open_category(folder).train_samples() if s.label == 0]
    else:
        files = list_images(folder, recursive=True)
    if not files:
        raise DataError(f"--calib {folder}: no images found (looked for .png, .jpg, .bmp, .tif, .webp, recursively); "
                        "give a folder of good images, e.g. a category's train/good")
    return files[:max_images]


class GoodImageReader:
    """A CalibrationDataReader over good images: {"image": (B, C, S, S) float32 0..255} per call.

    Decoded lazily, CALIBRATION_BATCH at a time, through ops.preprocess as Backend.run does
    (files decode as RGB). Unreadable images are skipped with a warning; the first batch is
    read at construction, so a folder with nothing usable fails before calibration starts.
    Subclasses onnxruntime's CalibrationDataReader at first use (it is imported lazily).
    """

    def __init__(self, files: List[Path], image_size: int, channels: int, folder: Path):
        self.files, self.size, self.channels, self.folder = files, image_size, channels, folder
        self.position = 0  # next file to read
        self.used = 0  # images handed out so far
        self.skipped: List[str] = []
        self._first = self._read_batch()
        if self._first is None:
            raise DataError(f"--calib {folder}: none of its {len(files)} images could be read "
                            f"(first: {self.skipped[0]}); give a folder of readable good images")

    def _read_batch(self) -> Optional[np.ndarray]:
        frames = []
        while len(frames) < CALIBRATION_BATCH and self.position < len(self.files):
            path = self.files[self.position]
            self.position += 1
            try:
                frames.append(check_frame(read_image(path), str(path)))
            except DadEdgeError as exc:
                self.skipped.append(str(exc))
                warnings.warn(f"INT8 calibration: skipped {exc}", stacklevel=2)
        if not frames:
            return None
        self.used += len(frames)
        return ops.preprocess(frames, self.size, self.channels, "RGB", normalize=False)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        batch, self._first = (self._first, None) if self._first is not None else (self._read_batch(), None)
        return None if batch is None else {INPUT_NAME: batch}


def _reader(files: List[Path], cfg, folder: Path):
    """A GoodImageReader that is also an onnxruntime CalibrationDataReader (its abstract base)."""
    from onnxruntime.quantization import CalibrationDataReader

    reader_class = type("GoodImageCalibrationReader", (GoodImageReader, CalibrationDataReader), {})
    return reader_class(files, cfg.image_size, cfg.channels, folder)


# -- which nodes -------------------------------------------------------------------------------

def float_region(graph) -> Set[str]:
    """Names of the nodes that compute the pre- and post-processing, which stays float: those
    reachable from the graph's input without passing through a Conv/MatMul (normalisation,
    fixed noise, combine, the segmentation net's input), and every node that feeds one of them
    or an output without passing through one (the slices of the predicted noise the combine
    reads; sigmoid, smoothing and top-k score). Constant nodes are data, not computation."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers: Dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    stop = set(LAYER_OPS + SHAPE_OPS + ("Constant",))
    region: Set[str] = set()
    forward = deque(i.name for i in graph.input)
    while forward:
        for node in consumers.get(forward.popleft(), []):
            if node.op_type not in stop and node.name not in region:
                region.add(node.name)
                forward.extend(node.output)
    by_name = {node.name: node for node in graph.node}
    backward = deque([o.name for o in graph.output] + [t for name in region for t in by_name[name].input])
    while backward:
        node = producer.get(backward.popleft())
        if node is not None and node.op_type not in stop and node.name not in region:
            region.add(node.name)
            backward.extend(node.input)
    return region


def layers_to_quantize(graph) -> List[str]:
    """Conv nodes that neither read nor write a tensor of float_region (see the module doc)."""
    region = float_region(graph)
    by_name = {node.name: node for node in graph.node}
    region_outputs = {t for name in region for t in by_name[name].output}
    region_inputs = {t for name in region for t in by_name[name].input}
    return [node.name for node in graph.node if node.op_type in QUANTISED_OPS
            and not region_outputs.intersection(node.input) and not region_inputs.intersection(node.output)]


def integer_path_nodes(graph, layers: List[str]) -> List[str]:
    """The INTEGER_PATH_OPS nodes whose data inputs (a Concat's every input, the others' first) all come
    from a quantised layer or from another such node: the steps between two integer convolutions."""
    chosen = set(layers)
    producer = {out: node for node in graph.node for out in node.output}
    path: List[str] = []
    for node in graph.node:  # ONNX graphs are in topological order: producers come first
        if node.op_type not in INTEGER_PATH_OPS:
            continue
        data = list(node.input) if node.op_type == "Concat" else node.input[:1]
        if all(t in producer and producer[t].name in chosen for t in data):
            chosen.add(node.name)
            path.append(node.name)
    return path


# -- the whole step ---------------------------------------------------------------------------

def _check_source(meta: Dict[str, Any], onnx_path: Path) -> None:
    if meta["kind"] != "onnx":
        raise ConfigError(f"{onnx_path}: quantisation takes a dad_edge ONNX file, not a {meta['kind']}")
    if meta["export"].get("precision") != "fp32":
        raise ConfigError(f"{onnx_path} is already {meta['export'].get('precision')}; quantise the fp32 export "
                          "(`dad-edge export model.safetensors --format onnx --int8 --calib DIR`)")


def quantize_onnx(onnx_path: Union[str, Path], out: Union[str, Path], calib: Union[str, Path], *,
                  max_images: int = 1000) -> Dict[str, Any]:
    """Write `out`, the INT8 (QDQ) form of the fp32 dad_edge ONNX file `onnx_path`, calibrated on
    at most `max_images` good images of `calib`; return its metadata."""
    import onnx

    try:
        import onnxruntime
        from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static
    except ImportError:
        raise BackendError("INT8 export needs onnxruntime: pip install onnxruntime") from None
    from dad_edge.export.metadata_io import read_metadata

    if max_images < 1:
        raise ConfigError(f"--calib-count {max_images} must be >= 1")
    onnx_path, out, calib = Path(onnx_path), Path(out), Path(calib)
    meta = read_metadata(onnx_path)
    _check_source(meta, onnx_path)
    files = calibration_files(calib, max_images)
    reader = _reader(files, md.model_config(meta), calib)
    with tempfile.TemporaryDirectory(prefix="dad_edge_int8_") as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        # ONNX Runtime's symbolic shape inference (written for transformer graphs) stops at the
        # dynamic batch of the step embeddings' Expand; ONNX's own shape inference, kept, types
        # every tensor the quantiser needs.
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        layers = layers_to_quantize(graph)
        path = integer_path_nodes(graph, layers)
        quantize_static(
            str(prepared), str(quantized), reader, quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_quantize=layers + path, op_types_to_quantize=list(QUANTISED_OPS + INTEGER_PATH_OPS),
        )
        proto = onnx.load(str(quantized))
    export = {**meta["export"], "precision": "int8", "int8": True, "calibration_images": reader.used}
    quantization = {
        "tool": f"onnxruntime {onnxruntime.__version__} quantize_static",
        "format": "QDQ", "weights": "int8, symmetric, per output channel", "activations": "uint8, MinMax",
        "calibration_images": reader.used, "calibration_skipped": len(reader.skipped),
        "calibration_source": calib.name,
        "quantized_layers": len(layers),
        "quantised_ops": list(QUANTISED_OPS),
        "integer_path_ops": list(INTEGER_PATH_OPS), "integer_path_nodes": len(path),
        "float_layers": sorted(n.name for n in graph.node if n.op_type in QUANTISED_OPS and n.name not in layers),
    }
    new_meta = md.derive_metadata(meta, "onnx", export=export, quantization=quantization)
    proto.producer_name = "dad_edge"
    del proto.metadata_props[:]  # the pre-processing pass keeps the fp32 file's; replaced whole
    onnx.helper.set_model_props(proto, {md.META_KEY: md.dumps(new_meta)})
    onnx.checker.check_model(proto)
    write_bytes_atomic(out, proto.SerializeToString())
    return new_meta


def export_int8(model: Union[str, Path], out: Union[str, Path], calib: Union[str, Path], *,
                max_images: int = 1000, **onnx_options: Any) -> Dict[str, Any]:
    """`dad-edge export --format onnx --int8`: a checkpoint (exported to fp32 ONNX in a temporary
    folder first, with `onnx_options` for export_onnx) or an fp32 .onnx -> the INT8 .onnx `out`."""
    model = Path(model)
    calibration_files(calib, max_images)  # a bad folder fails now, not after the fp32 export
    if model.suffix.lower() == ".onnx":
        return quantize_onnx(model, out, calib, max_images=max_images)
    if model.suffix.lower() != ".safetensors":
        raise ConfigError(f"{model}: --int8 quantises a checkpoint (.safetensors) or an fp32 .onnx file")
    from dad_edge.export.onnx_export import export_onnx

    with tempfile.TemporaryDirectory(prefix="dad_edge_fp32_") as tmp:
        fp32 = Path(tmp) / f"{model.stem}.onnx"
        export_onnx(model, fp32, **onnx_options)
        return quantize_onnx(fp32, out, calib, max_images=max_images)
