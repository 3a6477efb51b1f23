"""The pooled segmentation net's last share of training at full resolution (Recipe.full_res_fraction,
training/full_resolution.py): the recipe's default and checks, the switch in a run, the saved model at
stride 1 selected after the switch, resuming across it, and the CLI flag."""
import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

import dad_edge
from dad_edge.artifacts.checkpoint import load_model, read_tensors
from dad_edge.cli import main
from dad_edge.data.demo import build_demo_dataset
from dad_edge.data.imageio import read_image
from dad_edge.errors import ConfigError
from dad_edge.model.build import build_model
from dad_edge.model.config import ModelConfig, preset
from dad_edge.training import full_resolution
from dad_edge.training.recipe import FULL_RES_FRACTION, default_recipe, resolve_recipe
from dad_edge.training.train import TrainOptions, train
from deploy_support import assert_onnx_matches_torch, random_model


def test_recipe_default_by_method_and_device_and_checks():
    assert default_recipe("compact", 256, "cpu", method="seg").full_res_fraction == FULL_RES_FRACTION == 1 / 3
    assert default_recipe("compact", 256, "cpu").full_res_fraction == 0  # DiffusionAD: not measured
    assert default_recipe("compact", 256, "cuda", method="seg").full_res_fraction == 0  # stride 1 there already
    # At full resolution throughout there is nothing to switch: the default falls to 0, a user's value is refused.
    assert resolve_recipe("compact", 256, "cpu", seg_stride=1, method="seg").full_res_fraction == 0
    assert resolve_recipe("compact", 256, "cpu", image_size=96, method="seg").full_res_fraction == 0  # stride 1 there
    with pytest.raises(ConfigError, match="seg_stride is 1"):
        resolve_recipe("compact", 256, "cpu", seg_stride=1, full_res_fraction=0.25)
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match="full_res_fraction"):
            resolve_recipe("compact", 256, "cpu", full_res_fraction=bad)
    assert resolve_recipe("compact", 256, "cpu", full_res_fraction=0.25).full_res_fraction == 0.25  # DiffusionAD too


def test_the_switch_happens_once_at_its_point_of_the_budget():
    cfg = preset("tiny", method="seg", seg_stride=2)
    model = build_model(cfg)
    trainer = SimpleNamespace(cfg=cfg, model=model, recipe=SimpleNamespace(full_res_fraction=0.25), best_val=0.5)
    full_resolution.follow(trainer, 0.74)
    assert trainer.cfg.seg.stride == model.segnet.stride == 2 and trainer.best_val == 0.5
    full_resolution.follow(trainer, 0.75)
    assert trainer.cfg.seg.stride == model.cfg.seg.stride == model.segnet.stride == 1
    assert trainer.cfg.seg.map_strides == model.segnet.map_strides == (1, 2)  # the map: both resolutions' mean
    assert trainer.best_val == math.inf  # selection restarts among the full-resolution epochs
    trainer.best_val = 0.3
    full_resolution.follow(trainer, 1.0)  # the last step: no second switch, no second restart
    assert trainer.best_val == 0.3
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():  # the same weights now map at both resolutions: the mean of the two nets' maps
        pooled, full = build_model(cfg).eval(), build_model(preset("tiny", method="seg")).eval()
        pooled.load_state_dict(model.state_dict())
        full.load_state_dict(model.state_dict())
        both = model.eval()(x).anomaly_map
        assert torch.allclose(both, (pooled(x).anomaly_map + full(x).anomaly_map) / 2, atol=1e-6)
        assert not torch.allclose(both, pooled(x).anomaly_map, atol=1e-4)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_demo_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=12, n_test_good=4,
                              n_test_per_defect=3)


def seg_options(data, out, **changes):
    return TrainOptions(**{**dict(data=str(data), out=str(out), preset="tiny", model_overrides={"method": "seg"},
                                  batch_size=4, device="cpu", progress=False), **changes})


def test_a_seg_run_switches_and_saves_a_full_resolution_model_selected_after_the_switch(data, tmp_path):
    path = train(seg_options(data, tmp_path, epochs=6, full_res_fraction=0.5))
    model, meta = load_model(path)
    assert model.cfg.seg.stride == model.segnet.stride == 1 and model.cfg.seg.map_strides == (1, 2)
    training = meta["training"]
    assert training["recipe"]["seg_stride"] == 2 and training["recipe"]["full_res_fraction"] == 0.5
    # Progress 0.5 is reached at epoch 4's first step (steps are counted before each), so epochs 4-6 ran at stride 1.
    assert training["selected_epoch"] >= 4
    frames = [read_image(p) for p in sorted((data / "test").glob("*/*.png"))[:3]]
    with dad_edge.Detector(path, device="cpu") as det:
        results = det(frames)
    assert all(r.ok and r.anomaly_map.shape == f.shape[:2] for r, f in zip(results, frames))


def test_without_the_fraction_the_model_stays_pooled(data, tmp_path):
    path = train(seg_options(data, tmp_path, epochs=1, full_res_fraction=0.0))
    assert load_model(path)[0].cfg.seg.stride == 2


def test_a_run_resumes_after_the_switch_with_its_recipe(data, tmp_path):
    train(seg_options(data, tmp_path, epochs=2, full_res_fraction=0.5))  # switched in epoch 2
    state = read_tensors(tmp_path / "train_state.safetensors")[1]
    assert state["model"]["seg"]["stride"] == 1
    path = train(seg_options(data, tmp_path, epochs=4, resume=True))
    _, meta = load_model(path)
    assert meta["model"]["seg"]["stride"] == 1
    assert meta["training"]["recipe"]["seg_stride"] == 2  # the recipe it ran, not the stride it ended at
    assert meta["training"]["recipe"]["full_res_fraction"] == 0.5
    assert read_tensors(tmp_path / "train_state.safetensors")[1]["train_state"]["epoch"] == 4


def test_cli_flag_and_its_refusals(data, tmp_path, capsys):
    argv = ["train", "--data", str(data), "--preset", "tiny", "--epochs", "1", "--batch", "4", "--device", "cpu",
            "--quiet", "--method", "seg"]
    assert main(argv + ["--out", str(tmp_path / "a"), "--full-res-fraction", "0"]) in (0, None)
    assert load_model(tmp_path / "a" / "model.safetensors")[0].cfg.seg.stride == 2
    assert main(argv + ["--out", str(tmp_path / "b"), "--seg-stride", "1", "--full-res-fraction", "0.3"]) == 2
    assert "seg_stride is 1" in capsys.readouterr().err
    recon = ["train", "--data", str(data), "--preset", "tiny", "--epochs", "1", "--device", "cpu", "--quiet",
             "--method", "recon", "--out", str(tmp_path / "c"), "--full-res-fraction", "0.3"]
    assert main(recon) == 2
    assert "does not apply to --method recon" in capsys.readouterr().err


def test_map_strides_checks_round_trip_and_onnx_export(tmp_path):
    base = preset("tiny", method="seg")
    for bad in ((2,), (1, 1), (1, 3)):
        with pytest.raises(ConfigError, match="map_strides"):
            base.replace(seg=dataclasses.replace(base.seg, map_strides=bad))
    cfg = full_resolution.at_full_resolution(preset("tiny", method="seg", seg_stride=2))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["seg"]["map_strides"]  # files written before the field: the map at seg.stride alone
    assert ModelConfig.from_dict(old).seg.map_strides == ()
    assert_onnx_matches_torch(random_model(cfg, seed=3), tmp_path)  # two passes of the net in one graph
