"""A Triton Inference Server model repository from an exported model, for an existing Triton deployment.

    write_triton_repository("model.onnx", "model_repository/", name="dad_edge", max_batch=32, instances=1)

writes

    model_repository/dad_edge/config.pbtxt
    model_repository/dad_edge/1/model.onnx     (backend onnxruntime)   or
    model_repository/dad_edge/1/model.plan     (platform tensorrt_plan: the raw engine, without our header)

The config names the graph's real inputs and outputs, read from the ONNX file with `onnx` (for an
engine, which only TensorRT can open, from the metadata the engine was built with: the same graph);
a dynamic batch dimension becomes Triton's implicit batch (max_batch_size + dynamic_batching), a
fixed one stays in the dims (max_batch_size 0, no batching). Our metadata JSON (input size, timesteps,
thresholds, ...) travels in the config's `parameters` under "dad_edge_metadata".

The served model takes what the graph takes: float32 (B, C, S, S) pixels 0..255 at the model's size,
so the caller resizes first. `dad-edge serve` takes raw uint8 frames of any size instead.
The config is built as the protobuf message Triton itself parses (tritonclient's model_config_pb2)
and written with protobuf's text_format, so its syntax and escaping are Triton's own.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.atomic import atomic_path, write_bytes_atomic
from dad_edge.errors import ConfigError
from dad_edge.runtime.backends import KINDS, backend_name

METADATA_PARAMETER = "dad_edge_metadata"
MODEL_FILES = {"onnx": "model.onnx", "tensorrt": "model.plan"}
# ONNX TensorProto element type -> Triton data type (the types an exported graph can carry).
ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 11: "TYPE_FP64", 2: "TYPE_UINT8", 3: "TYPE_INT8",
                  6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL", 16: "TYPE_BF16"}
NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # what Triton accepts as a model (and folder) name

# (name, Triton data type, dims with -1 for a dynamic size), batch dimension included.
TensorSpec = Tuple[str, str, List[int]]


def _model_config_pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise ConfigError("--format triton writes config.pbtxt with the model-config protobuf that tritonclient "
                          "ships: pip install 'tritonclient[grpc]' (or dad_edge[serve])") from None
    return model_config_pb2


def onnx_io(path: Path) -> Tuple[List[TensorSpec], List[TensorSpec]]:
    """The graph's (inputs, outputs) as TensorSpecs, read from the ONNX file (initializers excluded)."""
    from dad_edge.export.metadata_io import _load_onnx

    graph = _load_onnx(path).graph
    initializers = {i.name for i in graph.initializer}

    def spec(value) -> TensorSpec:
        t = value.type.tensor_type
        if t.elem_type not in ONNX_TO_TRITON:
            raise ConfigError(f"{path}: tensor {value.name!r} has ONNX element type {t.elem_type}, which this "
                              "exporter does not map to a Triton type; re-export with `dad-edge export`")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return value.name, ONNX_TO_TRITON[t.elem_type], dims

    return ([spec(v) for v in graph.input if v.name not in initializers], [spec(v) for v in graph.output])


def engine_io(meta: Dict[str, Any]) -> Tuple[List[TensorSpec], List[TensorSpec]]:
    """An engine's (inputs, outputs) from its metadata: the exported graph's interface (backends/base.py)."""
    cfg, export = md.model_config(meta), meta["export"]
    c, s = cfg.channels, cfg.image_size
    # Engines keep the ONNX graph's float32 I/O whatever their kernels' precision.
    anomaly_map, score = export["outputs"][:2]
    b = -1 if export.get("batch", "dynamic") == "dynamic" else int(export["batch"])
    return ([(export["input"]["name"], "TYPE_FP32", [b, c, s, s])],
            [(anomaly_map, "TYPE_FP32", [b, 1, s, s]), (score, "TYPE_FP32", [b])])


def _batching(inputs: List[TensorSpec], outputs: List[TensorSpec], where: str) -> bool:
    """True when every tensor's first dimension is the dynamic batch (Triton's implicit batch)."""
    firsts = {dims[0] if dims else None for _, _, dims in inputs + outputs}
    if firsts == {-1}:
        return True
    if -1 in firsts:
        raise ConfigError(f"{where}: some tensors have a dynamic first dimension and some do not "
                          f"({inputs + outputs}); re-export with `dad-edge export --format onnx`")
    return False


def build_config(name: str, kind: str, inputs: List[TensorSpec], outputs: List[TensorSpec], meta: Dict[str, Any],
                 max_batch: int, instances: int, queue_delay_us: int, where: str):
    """The ModelConfig protobuf message for one model of the repository."""
    pb = _model_config_pb2()
    batching = _batching(inputs, outputs, where)
    if kind == "tensorrt":
        engine_max = meta["tensorrt"].get("batch", {}).get("max")
        if engine_max is not None and max_batch > engine_max:
            raise ConfigError(f"{where}: --max-batch {max_batch} is above the engine's profile maximum {engine_max}; "
                              f"pass --max-batch {engine_max} or rebuild the engine with --batch {max_batch}")
    config = pb.ModelConfig(name=name, max_batch_size=max_batch if batching else 0)
    if kind == "onnx":
        config.backend = "onnxruntime"
        config.platform = "onnxruntime_onnx"
    else:
        config.backend = "tensorrt"
        config.platform = "tensorrt_plan"
    config.default_model_filename = MODEL_FILES[kind]
    for specs, field in ((inputs, config.input), (outputs, config.output)):
        for tensor_name, dtype, dims in specs:
            # With batching on, Triton's dims leave out the batch dimension it adds itself; a tensor
            # that is the batch alone (score, (B,)) is declared [1] reshaped to [], as Triton asks.
            tensor = field.add(name=tensor_name, data_type=pb.DataType.Value(dtype),
                               dims=(dims[1:] or [1]) if batching else dims)
            if batching and not dims[1:]:
                tensor.reshape.SetInParent()
    if batching:
        config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    config.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.KIND_GPU if kind == "tensorrt"
                              else pb.ModelInstanceGroup.KIND_AUTO)
    config.parameters[METADATA_PARAMETER].string_value = md.dumps(meta)
    return config


def write_triton_repository(model: Union[str, Path], out: Union[str, Path], name: str = "dad_edge",
                            max_batch: int = 32, instances: int = 1, queue_delay_us: int = 1000) -> Path:
    """Write `out/<name>/config.pbtxt` and `out/<name>/1/model.{onnx,plan}`; return the model folder.

    `model`: an exported .onnx file or a .plan/.engine built by `dad-edge export --format engine`.
    An existing `<name>` folder in `out` is refused rather than mixed with: Triton would serve
    whatever versions it finds there."""
    from google.protobuf import text_format

    model, out = Path(model), Path(out)
    if not NAME.match(name):
        raise ConfigError(f"--name {name!r}: a Triton model name takes letters, digits, '_', '.' and '-' only")
    if max_batch < 1 or instances < 1 or queue_delay_us < 0:
        raise ConfigError(f"max_batch={max_batch}, instances={instances} must be >= 1 and queue delay "
                          f"{queue_delay_us} us >= 0")
    if not model.is_file():
        raise ConfigError(f"{model}: no such model file; give an exported .onnx or .plan/.engine file")
    kind = KINDS[backend_name(model)]
    if kind not in MODEL_FILES:
        raise ConfigError(f"{model}: --format triton takes an exported model (.onnx, or a .plan/.engine); export "
                          "the checkpoint first: dad-edge export model.safetensors --format onnx")
    folder = out / name
    if folder.exists():
        raise ConfigError(f"{folder} exists; remove it or pick another --name or --out (Triton serves every "
                          "version folder it finds, so an old one would be served beside the new)")
    from dad_edge.export.metadata_io import read_metadata

    meta = read_metadata(model)
    if kind == "onnx":
        inputs, outputs = onnx_io(model)
    else:
        inputs, outputs = engine_io(meta)
    config = build_config(name, kind, inputs, outputs, meta, max_batch, instances, queue_delay_us, str(model))
    target = folder / "1" / MODEL_FILES[kind]
    target.parent.mkdir(parents=True)
    if kind == "onnx":
        with atomic_path(target) as tmp:
            shutil.copyfile(model, tmp)
    else:
        from dad_edge.artifacts.engine_file import read_engine_file

        write_bytes_atomic(target, read_engine_file(model)[1])  # TensorRT's own bytes: Triton reads no header
    with atomic_path(folder / "config.pbtxt") as tmp:
        tmp.write_text(text_format.MessageToString(config), encoding="utf-8")
    return folder


def read_config(path: Union[str, Path]):
    """A config.pbtxt -> the ModelConfig message (how the tests and a user check a written repository)."""
    from google.protobuf import text_format

    pb = _model_config_pb2()
    return text_format.Parse(Path(path).read_text(encoding="utf-8"), pb.ModelConfig())


def metadata_of(config) -> Dict[str, Any]:
    """The dad_edge metadata carried in a ModelConfig's parameters, validated."""
    if METADATA_PARAMETER not in config.parameters:
        raise ConfigError(f"model config {config.name!r} has no {METADATA_PARAMETER!r} parameter; it was not "
                          "written by `dad-edge export --format triton`")
    return md.loads(config.parameters[METADATA_PARAMETER].string_value, f"config of {config.name}")

