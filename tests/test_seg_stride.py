"""The segmentation net on a pooled input (SegConfig.stride): same interface, a quarter of the work
per halving, carried through the checkpoint, ONNX export and the train CLI."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dad_edge.errors import ConfigError
from dad_edge.model.config import ModelConfig, preset
from dad_edge.model.info import model_info
from dad_edge.model.segnet import SegNet
from dad_edge.training.recipe import CPU_SEG_STRIDE, default_recipe, resolve_recipe
from deploy_support import assert_onnx_matches_torch, random_model


def test_stride_pools_the_input_and_upsamples_the_logits():
    cfg = preset("tiny", seg_stride=2).seg
    net = SegNet(cfg, channels=3).eval()
    full = SegNet(dataclasses.replace(cfg, stride=1), channels=3).eval()
    full.load_state_dict(net.state_dict())  # the same weights: stride adds no parameters
    x = torch.randn(2, 6, 32, 32)
    with torch.no_grad():
        out = net(x)
        expected = F.interpolate(full(F.avg_pool2d(x, 2)), size=(32, 32), mode="bilinear", align_corners=False)
        plain = full(x)
    assert out.shape == (2, 1, 32, 32)
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, plain, atol=1e-3)  # it is not the full-resolution net


def test_stride_quarters_the_segmentation_flops():
    full, half = preset("compact", image_size=128), preset("compact", image_size=128, seg_stride=2)
    f_full, f_half = model_info(full), model_info(half)
    assert f_half["gflops_seg"] == pytest.approx(f_full["gflops_seg"] / 4, rel=0.02)
    assert f_half["gflops_unet"] == f_full["gflops_unet"]
    assert f_half["params"] == f_full["params"]


def test_config_checks_and_round_trip():
    cfg = preset("compact", image_size=128, seg_stride=2)
    assert cfg.seg.stride == 2 and cfg.seg.widths == preset("compact").seg.widths
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["seg"]["stride"]  # files written before the field: full resolution
    assert ModelConfig.from_dict(old).seg.stride == 1
    with pytest.raises(ConfigError, match="seg.stride=3"):
        preset("tiny", seg_stride=3)
    with pytest.raises(ConfigError, match="stride x 2"):  # 96 / (4 * 32) is not whole
        preset("compact", image_size=96, seg_stride=4)
    with pytest.raises(ConfigError, match="no segmentation net"):
        preset("tiny", method="recon", seg_stride=2)


def test_onnx_export_matches_torch(tmp_path):
    assert_onnx_matches_torch(random_model(preset("tiny", seg_stride=2), seed=5), tmp_path)


@pytest.mark.parametrize("flag,expected", [(None, CPU_SEG_STRIDE), ("1", 1), ("4", 4)])
def test_train_takes_the_recipes_stride_unless_told(tmp_path, flag, expected):
    from dad_edge.artifacts.checkpoint import load_model
    from dad_edge.cli import main
    from dad_edge.data.demo import build_demo_dataset

    data = build_demo_dataset(tmp_path / "demo", size=64, n_train=6, n_test_good=2, n_test_per_defect=1)
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(out), "--preset", "tiny", "--image-size", "32",
            "--epochs", "1", "--batch", "2", "--device", "cpu", "--quiet"]
    rc = main(argv + ([] if flag is None else ["--seg-stride", flag]))
    assert rc in (0, None)
    model, meta = load_model(out / "model.safetensors")
    assert model.cfg.seg.stride == expected
    assert meta["training"]["recipe"]["seg_stride"] == expected


def test_recipe_stride_by_device_and_checks():
    assert default_recipe("compact", 256, "cpu").seg_stride == CPU_SEG_STRIDE == 2
    assert default_recipe("compact", 256, "cuda").seg_stride == 1
    assert default_recipe("paper", 256, "cpu").seg_stride == 1
    assert resolve_recipe("compact", 256, "cpu", seg_stride=1).seg_stride == 1
    with pytest.raises(ConfigError, match="seg_stride=3"):
        resolve_recipe("compact", 256, "cpu", seg_stride=3)
    # Sizes the pooled input cannot serve (compact: 6 levels, so 2 x 32 must divide the side) fall back to 1.
    assert resolve_recipe("compact", 256, "cpu", data_side=100).image_size == 96
    assert resolve_recipe("compact", 256, "cpu", data_side=100).seg_stride == 1
    assert resolve_recipe("compact", 256, "cpu", image_size=32).seg_stride == 1
    assert resolve_recipe("compact", 256, "cpu", image_size=64).seg_stride == 2


def test_recon_refuses_a_stride(tmp_path):
    from dad_edge.training.options import TrainOptions

    with pytest.raises(ConfigError, match="--seg-stride 2 does not apply to --method recon"):
        TrainOptions(data=str(tmp_path), out=str(tmp_path / "o"), epochs=1, seg_stride=2,
                     model_overrides={"method": "recon"}).validate()
    # Without the flag a recon model simply has no segmentation net (the CPU recipe's stride is not applied).
    cfg = TrainOptions(data=str(tmp_path), out=str(tmp_path / "o"), epochs=1,
                       model_overrides={"method": "recon"}).model_config(1, 64, CPU_SEG_STRIDE)
    assert cfg.seg is None


def test_a_distilled_student_keeps_the_teachers_stride():
    from dad_edge.training.distill import student_overrides

    for stride in (1, 2):
        teacher = preset("compact", image_size=128, seg_stride=stride)
        assert preset("compact", **student_overrides(teacher, 128, False)).seg.stride == stride
