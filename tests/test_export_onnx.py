"""ONNX export: one graph, named outputs, dynamic batch, metadata inside, torch parity."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from dad_edge.artifacts import metadata as md
from dad_edge.model.config import preset
from dad_edge.errors import ConfigError
from dad_edge.export.onnx_export import export_onnx
from dad_edge.data.preprocess import OFFSET, SCALE
from deploy_support import random_model, write_checkpoint


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _torch_reference(model, pixels: np.ndarray):
    """The training-time path: normalise in numpy (as preprocess does), then DiffusionAD."""
    with torch.no_grad():
        out = model(torch.from_numpy(pixels * SCALE + OFFSET))
    return out.anomaly_map.numpy(), out.score.numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("onnx")
    cfg = preset("tiny")
    model = random_model(cfg, seed=3)
    meta = md.build_metadata(cfg, thresholds=md.Thresholds(0.4, 0.6, "test"))
    export_onnx(model, tmp / "m.onnx", meta=meta)
    return model, tmp / "m.onnx"


def test_graph_interface_and_metadata(exported):
    model, path = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [(i.name, _dims(i)) for i in proto.graph.input] == [("image", ["batch", 3, 32, 32])]
    assert [(o.name, _dims(o)) for o in proto.graph.output] == [("anomaly_map", ["batch", 1, 32, 32]),
                                                                ("score", ["batch"])]
    ops = {n.op_type for n in proto.graph.node}
    # One graph: U-Net (conv), segmentation, sigmoid map and top-k score are all inside.
    assert {"Conv", "TopK", "Sigmoid", "InstanceNormalization"} <= ops
    assert "GroupNormalization" not in ops  # TensorRT 8.6 cannot parse it
    props = {p.key: p.value for p in proto.metadata_props}
    meta = md.loads(props["dad_edge"], "test")
    assert meta["kind"] == "onnx" and meta["export"]["precision"] == "fp32"
    assert meta["export"]["input"]["range"] == [0, 255]
    assert md.model_config(meta) == model.cfg
    assert md.thresholds(meta) == md.Thresholds(0.4, 0.6, "test")  # carried over from the checkpoint


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch(exported, batch):
    model, path = exported
    pixels = np.random.default_rng(batch).uniform(0, 255, (batch, 3, 32, 32)).astype(np.float32)
    ref_map, ref_score = _torch_reference(model, pixels)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    amap, score = sess.run(["anomaly_map", "score"], {"image": pixels})
    assert amap.shape == (batch, 1, 32, 32) and score.shape == (batch,)
    assert np.abs(amap - ref_map).max() <= 1e-4
    assert np.abs(score - ref_score).max() <= 1e-4
    assert ref_score.std() > 0 or batch == 1  # a random model gives distinct scores


def test_gray_smoothing_fixed_batch_from_checkpoint(tmp_path):
    cfg = preset("tiny", channels=1, smoothing_sigma=1.0)
    ckpt = write_checkpoint(tmp_path / "m.safetensors", cfg, seed=4)
    meta = export_onnx(ckpt, tmp_path / "m.onnx", dynamic_batch=False, batch=2)
    assert meta["export"]["batch"] == 2
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert _dims(proto.graph.input[0]) == [2, 1, 32, 32]
    from dad_edge.artifacts.checkpoint import load_model

    model, _ = load_model(ckpt)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 1, 32, 32)).astype(np.float32)
    ref_map, ref_score = _torch_reference(model, pixels)
    amap, score = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"image": pixels})
    assert np.abs(amap - ref_map).max() <= 1e-4 and np.abs(score - ref_score).max() <= 1e-4


def test_export_leaves_the_module_alone(exported, tmp_path):
    model, _ = exported
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model.double(), tmp_path / "d.onnx")  # a float64 module is traced as a float32 copy
    model.float()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kwargs", [{"opset": 12}, {"opset": 21}, {"batch": 0}])
def test_bad_options(exported, tmp_path, kwargs):
    with pytest.raises(ConfigError):
        export_onnx(exported[0], tmp_path / "x.onnx", **kwargs)
    assert not (tmp_path / "x.onnx").exists()


def _cli(argv):
    import argparse

    from dad_edge.cli import deploy as cli_deploy

    parser = argparse.ArgumentParser()
    cli_deploy.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_export(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "m.safetensors", preset("tiny"))
    assert _cli(["export", str(ckpt), "--format", "onnx"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "m.onnx").is_file()
    assert _cli(["export", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "f.onnx"), "--fixed-batch", "4"]) == 0
    assert _dims(onnx.load(str(tmp_path / "f.onnx")).graph.input[0])[0] == 4
    with pytest.raises(ConfigError, match="exports a checkpoint"):
        _cli(["export", str(tmp_path / "m.onnx"), "--format", "onnx"])
    with pytest.raises(ConfigError, match="needs --calib"):
        _cli(["export", str(tmp_path / "m.onnx"), "--format", "engine", "--int8"])
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        from dad_edge.errors import BackendError

        with pytest.raises(BackendError, match="TensorRT is not installed"):
            _cli(["export", str(ckpt), "--format", "engine", "--half", "--out", str(tmp_path / "e.plan")])
        assert not (tmp_path / "e.onnx").exists()  # refused before the ONNX export, not after
