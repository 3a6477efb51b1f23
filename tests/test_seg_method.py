"""The segmentation net alone (`--method seg`, issue 12's ablation made a method): the config without an
eps-predictor, the module against its formula, the ONNX graph against torch through the Detector, training
on the synthetic anomalies, resuming, and the options and paths that refuse it."""
import json

import numpy as np
import onnx
import pytest
import torch

import dad_edge
from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.checkpoint import read_tensors, save_model
from dad_edge.cli import main
from dad_edge.data.demo import build_demo_dataset
from dad_edge.data.imageio import read_image
from dad_edge.errors import ConfigError
from dad_edge.export.onnx_export import export_onnx
from dad_edge.model.config import ModelConfig, UNetConfig, preset
from dad_edge.model.info import model_info
from dad_edge.model.input_gain import normalise_gain
from dad_edge.model.seg_ad import SegAD
from dad_edge.training.distill import DistillOptions, distill
from dad_edge.training.resume import resumed_options
from dad_edge.training.train import Trainer, TrainOptions, train
from deploy_support import random_model

SEG = {"method": "seg"}


# -- the config ----------------------------------------------------------------------------------

def test_config_has_no_denoiser_and_round_trips():
    cfg = preset("tiny", method="seg", seg_stride=2)
    assert cfg.unet is None and cfg.dit is None and cfg.seg == preset("tiny", seg_stride=2).seg
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["method"] == "seg" and not {"unet", "dit", "backbone", "recon", "t_small", "t_large", "guidance_w",
                                         "denoiser", "recon_weight"} & set(d)
    assert ModelConfig.from_dict(d) == cfg
    assert md.model_config(md.loads(md.dumps(md.build_metadata(cfg)), "test")) == cfg
    assert preset("tiny-dit", method="seg") == preset("tiny", method="seg")  # no eps-predictor to differ in


@pytest.mark.parametrize("change, message", [
    ({"t_large": 300}, r"t_large=300 is a setting of the denoiser"),
    ({"recon_weight": 0.5}, r"recon_weight=0.5 is a setting of the denoiser"),
    ({"unet": UNetConfig()}, r"no eps-predictor"),
    ({"seg": None}, r"method='seg' needs the `seg` config section"),
])
def test_a_seg_config_refuses_the_denoisers_fields(change, message):
    with pytest.raises(ConfigError, match=message):
        preset("tiny", method="seg").replace(**change)


# -- the module ----------------------------------------------------------------------------------

def test_map_is_the_segmentation_net_on_the_image_and_score_its_top_k():
    cfg = preset("tiny", method="seg", channels=1, input_gain=0.4)
    model = random_model(cfg)  # perturbed: maps differ from pixel to pixel
    assert model.segnet.encoder[0][0].in_channels == 1  # the image alone, not cat(x, x0_ng)
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 0.5, (3, 1, 32, 32)).astype(np.float32))
    out = model(x)
    expected = torch.sigmoid(model.segnet(normalise_gain(x, 0.4)))
    torch.testing.assert_close(out.anomaly_map, expected)
    torch.testing.assert_close(out.score, expected.flatten(1).topk(cfg.top_k, dim=1).values.mean(1))
    assert set(model.state_dict()) == {k for k in model.state_dict() if k.startswith("segnet.")}
    with pytest.raises(ConfigError, match="method is 'diffusionad'"):
        SegAD(preset("tiny"))


def test_info_counts_the_segmentation_net_alone():
    seg, dad = model_info(preset("tiny", method="seg")), model_info(preset("tiny"))
    assert seg["params"] == seg["params_seg"] and seg["params_unet"] == 0 and seg["unet_passes"] == 0
    assert seg["gflops"] == pytest.approx(seg["gflops_seg"]) and seg["gflops"] < dad["gflops_seg"]  # C, not 2C, in


def test_onnx_graph_matches_torch_in_the_detector_and_the_fused_path_refuses_it(tmp_path):
    cfg = preset("tiny", method="seg", smoothing_sigma=1.0, exposure_correction=True)
    model = random_model(cfg, seed=7)
    model.exposure_term.coef.copy_(torch.tensor([0.2, 0.5]))  # a fitted correction, as training leaves one
    ckpt = tmp_path / "model.safetensors"
    save_model(ckpt, model, md.build_metadata(cfg, thresholds=md.Thresholds(0.3, 0.4, "test")))
    export_onnx(ckpt, tmp_path / "model.onnx")
    proto = onnx.load(str(tmp_path / "model.onnx"))
    assert md.model_config(md.loads({p.key: p.value for p in proto.metadata_props}["dad_edge"], "test")) == cfg
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (40, 36, 3), dtype=np.uint8), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)]
    with dad_edge.Detector(ckpt, device="cpu") as a, dad_edge.Detector(tmp_path / "model.onnx") as b:
        by_torch, by_ort = a(frames), b(frames)
    assert max(float(np.abs(r.anomaly_map - s.anomaly_map).max()) for r, s in zip(by_torch, by_ort)) <= 1e-5
    assert max(abs(r.score - s.score) for r, s in zip(by_torch, by_ort)) <= 1e-5
    assert abs(by_torch[0].score - by_torch[1].score) > 1e-4  # distinct images, distinct scores
    with pytest.raises(ConfigError, match="method is 'seg'"):
        dad_edge.Detector(ckpt, device="cpu", fused=True)


# -- training ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return build_demo_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=12, n_test_good=4,
                              n_test_per_defect=3)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """tiny, --method seg, on the CPU (a few seconds: no denoiser to train)."""
    return train(TrainOptions(data=str(data), out=str(tmp_path_factory.mktemp("run")), preset="tiny",
                              model_overrides=dict(SEG), epochs=8, batch_size=4, lr_seg=0.01,
                              device="cpu", progress=False))


def test_training_trains_the_segmentation_net_alone_on_synthetic_anomalies(data, tmp_path):
    trainer = Trainer(TrainOptions(data=str(data), out=str(tmp_path), preset="tiny", model_overrides=dict(SEG),
                                   epochs=1, batch_size=4, lr_seg=2e-3, device="cpu"))
    assert isinstance(trainer.model, SegAD)
    assert any(bool(b.mask.any()) for b in trainer.train.epoch(0))  # the synthetic anomalies are drawn
    (group,) = trainer.optimizer.param_groups
    assert group["lr"] == 2e-3 and trainer.base_lrs == (2e-3,)  # the segmentation net's rate, not lr_unet's
    assert sum(p.numel() for p in group["params"]) == sum(p.numel() for p in trainer.model.parameters())
    terms = trainer._loss(next(iter(trainer.val.epoch(0))), torch.Generator().manual_seed(0))
    assert float(terms.noise) == 0.0
    total, focal, smooth = (float(t.detach()) for t in (terms.total, terms.focal, terms.smooth_l1))
    assert total == pytest.approx(5 * focal + smooth)


def test_trained_model_learnt_the_synthetic_anomalies_and_loads_in_the_detector(trained, data):
    tensors, meta = read_tensors(trained)
    assert all(k.startswith("segnet.") or k.startswith("exposure_term.") for k in tensors)
    assert meta["model"]["method"] == "seg"
    # The recipe record names what trained the net, not the denoiser's rates it does not have.
    recipe = meta["training"]["recipe"]
    assert recipe["lr_seg"] == 0.01 and not {"lr_unet", "large_target", "recon_weight"} & set(recipe)
    # Learnt: the loss on the held-out images' fixed synthetic anomalies falls several times over
    # (0.23 -> 0.01 in the run this was written with; an unlearnt net stays near its first epoch's).
    history = read_tensors(trained.parent / "train_state.safetensors")[1]["train_state"]["history"]
    assert min(h["val_loss"] for h in history) < 0.25 * history[0]["val_loss"]
    thresholds = md.thresholds(meta)
    assert 0 <= thresholds.image <= 1 and 0 <= thresholds.pixel <= 1  # from held-out good images
    frames = [read_image(p) for p in sorted((data / "test").glob("*/*.png"))[:4]]
    with dad_edge.Detector(trained, device="cpu") as det:
        results = det(frames)
    assert all(r.ok and r.anomaly_map.shape == f.shape[:2] for r, f in zip(results, frames))


def test_a_seg_run_resumes_with_its_own_recipe(data, tmp_path):
    opts = dict(data=str(data), out=str(tmp_path), preset="tiny", model_overrides=dict(SEG),
                batch_size=4, device="cpu", progress=False)
    train(TrainOptions(epochs=1, lr_seg=5e-4, **opts))
    resumed = resumed_options(TrainOptions(epochs=2, resume=True, **opts))
    assert resumed.lr_seg == 5e-4 and resumed.lr_unet is None and resumed.large_target is None
    assert resumed.recon_weight is None
    train(TrainOptions(epochs=2, resume=True, **opts))
    assert read_tensors(tmp_path / "train_state.safetensors")[1]["train_state"]["epoch"] == 2


def test_distillation_refuses_a_seg_teacher(trained, data, tmp_path):
    with pytest.raises(ConfigError, match="method='seg'"):
        distill(DistillOptions(teacher=str(trained), data=str(data), out=str(tmp_path), preset="tiny", epochs=1,
                               device="cpu", progress=False))


# -- the CLI -------------------------------------------------------------------------------------

def test_cli_refuses_the_denoisers_options_and_info_names_the_method(trained, data, tmp_path, capsys):
    for flags, named in ((["--lr-unet", "0.001"], "--lr-unet 0.001 does not apply to --method seg"),
                         (["--large-target", "clean"], "--large-target clean does not apply to --method seg"),
                         (["--recon-weight", "0.5"], "--recon-weight 0.5 does not apply to --method seg"),
                         (["--backbone", "dit"], "--backbone dit does not apply to --method seg")):
        code = main(["train", "--data", str(data), "--out", str(tmp_path / "bad"), "--preset", "tiny", "--epochs",
                     "1", "--quiet", "--method", "seg", *flags])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and named in err, (flags, err)
    assert main(["info", str(trained)]) == 0
    assert "segmentation net alone" in capsys.readouterr().out
