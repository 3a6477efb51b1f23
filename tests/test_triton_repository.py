"""`dad-edge export --format triton`: the written config.pbtxt parses with Triton's own model-config
protobuf (tritonclient's model_config_pb2) and names the graph's real inputs, outputs and shapes, read
back from the ONNX file with onnx; engines go in raw, without our header."""
from __future__ import annotations

import pytest

from dad_edge.artifacts import metadata as md
from dad_edge.model.config import preset
from tests.deploy_support import engine_meta, write_checkpoint

pytest.importorskip("onnx")
pb = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                         reason="tritonclient is not installed (pip install 'tritonclient[all]')")
text_format = pytest.importorskip("google.protobuf.text_format")

THRESHOLDS = md.Thresholds(image=0.3, pixel=0.4, source="test")
ONNX_TYPES = {1: pb.TYPE_FP32}


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """A tiny model exported twice: dynamic batch and a fixed batch of 2."""
    from dad_edge.export.onnx_export import export_onnx

    tmp = tmp_path_factory.mktemp("triton_repo")
    ckpt = write_checkpoint(tmp / "tiny.safetensors", preset("tiny"), seed=1, thresholds=THRESHOLDS)
    export_onnx(ckpt, tmp / "dynamic.onnx")
    export_onnx(ckpt, tmp / "fixed.onnx", dynamic_batch=False, batch=2)
    return tmp / "dynamic.onnx", tmp / "fixed.onnx"


def parse(folder):
    """config.pbtxt -> ModelConfig, parsed here with text_format (not through our reader)."""
    return text_format.Parse((folder / "config.pbtxt").read_text(), pb.ModelConfig())


def graph_io(path):
    """{name: (elem_type, dims)} of the ONNX graph's inputs and of its outputs, -1 for a symbolic dim."""
    import onnx

    g = onnx.load(str(path)).graph

    def dims(v):
        return [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]

    return ({v.name: (v.type.tensor_type.elem_type, dims(v)) for v in g.input},
            {v.name: (v.type.tensor_type.elem_type, dims(v)) for v in g.output})


def test_onnx_repository_names_the_graphs_real_tensors(onnx_files, tmp_path):
    from dad_edge.cli import main
    from dad_edge.export.metadata_io import read_metadata

    src = onnx_files[0]
    assert main(["export", str(src), "--format", "triton", "--out", str(tmp_path / "repo"),
                 "--name", "tile_v2", "--max-batch", "16", "--instances", "2"]) == 0
    folder = tmp_path / "repo" / "tile_v2"
    config = parse(folder)
    assert (folder / "1" / "model.onnx").read_bytes() == src.read_bytes()
    assert (config.name, config.backend, config.platform) == ("tile_v2", "onnxruntime", "onnxruntime_onnx")
    assert config.max_batch_size == 16 and config.HasField("dynamic_batching")
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, pb.ModelInstanceGroup.KIND_AUTO)]
    inputs, outputs = graph_io(src)
    for declared, real in ((config.input, inputs), (config.output, outputs)):
        assert {t.name for t in declared} == set(real)
        for t in declared:
            elem, dims = real[t.name]
            assert dims[0] == -1  # the dynamic batch: Triton's implicit one, left out of dims
            # A (B,) tensor is declared [1] reshaped to [] (Triton's rule for batch-only tensors).
            shape = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
            assert shape == dims[1:] and t.data_type == ONNX_TYPES[elem]
    s = preset("tiny").image_size
    assert {t.name: list(t.dims) for t in config.output} == {"anomaly_map": [1, s, s], "score": [1]}
    meta = md.loads(config.parameters["dad_edge_metadata"].string_value, "config")
    assert meta == read_metadata(src) and md.thresholds(meta) == THRESHOLDS


def test_fixed_batch_onnx_keeps_its_batch_in_dims_without_batching(onnx_files, tmp_path):
    from dad_edge.export.triton_repository import read_config, write_triton_repository

    folder = write_triton_repository(onnx_files[1], tmp_path, name="fixed")
    config = read_config(folder / "config.pbtxt")
    _, outputs = graph_io(onnx_files[1])
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert {t.name: list(t.dims) for t in config.output} == {k: v[1] for k, v in outputs.items()}
    assert list(config.input[0].dims)[0] == 2


def test_engine_goes_in_raw_without_our_header(tmp_path):
    from dad_edge.artifacts.engine_file import MAGIC, write_engine_file
    from dad_edge.export.triton_repository import metadata_of, read_config, write_triton_repository

    plan = b"\x01TRT-engine-bytes" * 10
    meta = engine_meta(batch={"min": 1, "opt": 1, "max": 8})
    write_engine_file(tmp_path / "e.plan", plan, meta)
    assert (tmp_path / "e.plan").read_bytes().startswith(MAGIC)
    folder = write_triton_repository(tmp_path / "e.plan", tmp_path / "repo", max_batch=8)
    assert (folder / "1" / "model.plan").read_bytes() == plan
    config = read_config(folder / "config.pbtxt")
    assert (config.platform, config.backend, config.max_batch_size) == ("tensorrt_plan", "tensorrt", 8)
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    s, c = preset("tiny").image_size, preset("tiny").channels
    assert [(t.name, list(t.dims)) for t in config.input] == [("image", [c, s, s])]
    assert metadata_of(config)["tensorrt"]["engine_bytes"] == len(plan)


def test_bad_requests_are_one_line_errors(onnx_files, tmp_path, capsys):
    from dad_edge.cli import main

    out = str(tmp_path / "repo")
    base = ["export", str(onnx_files[0]), "--format", "triton", "--out", out]
    assert main(base) == 0
    assert main(base) == 2  # the model folder exists: not mixed with
    assert main(base[:-2] + ["--out", out, "--name", "../up"]) == 2
    ckpt = onnx_files[0].parent / "tiny.safetensors"
    assert main(["export", str(ckpt), "--format", "triton", "--out", out, "--name", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("dad-edge export: error:") for line in err)
    assert "exists" in err[0] and "'../up'" in err[1] and "--format onnx" in err[2]


def test_engine_max_batch_above_its_profile_is_refused(tmp_path):
    from dad_edge.artifacts.engine_file import write_engine_file
    from dad_edge.errors import ConfigError
    from dad_edge.export.triton_repository import write_triton_repository

    write_engine_file(tmp_path / "e.plan", b"x" * 8, engine_meta(batch={"min": 1, "opt": 1, "max": 4}))
    with pytest.raises(ConfigError, match="profile maximum 4"):
        write_triton_repository(tmp_path / "e.plan", tmp_path / "repo", max_batch=32)
