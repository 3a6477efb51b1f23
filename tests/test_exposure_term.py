"""The image score's exposure correction (model/exposure_term.py): the fit, the formula, training, every backend."""
from pathlib import Path

import numpy as np
import pytest
import torch

from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.checkpoint import load_model, save_model
from dad_edge.cli import main
from dad_edge.data.mvtec import MVTecCategory, load_images
from dad_edge.data.preprocess import preprocess_batch
from dad_edge.errors import ConfigError
from dad_edge.model.build import build_model
from dad_edge.model.config import ModelConfig, preset
from dad_edge.model.exposure_term import MIN_IMAGES, fit_exposure
from dad_edge.training.map_statistics import calibrate_exposure_term
from dad_edge.training.train import TrainOptions, train
from training_support import DIFFUSIONAD, good_only_demo

COMMON = dict(preset="tiny", batch_size=4, progress=False, device="cpu", lr_schedule="constant", warmup_fraction=0.0,
              model_overrides=DIFFUSIONAD)


def test_fit_keeps_a_real_slope_and_drops_noise():
    rng = np.random.default_rng(0)
    means = rng.uniform(-0.6, 0.2, 80)
    scores = 0.4 + 0.25 * means + rng.normal(0, 0.03, 80)
    fit = fit_exposure(scores, means)
    assert fit["kept"] and fit["slope"] == pytest.approx(0.25, abs=0.03) and fit["images"] == 80
    assert fit["reference"] == pytest.approx(means.mean()) and fit["r"] > 0.8 and fit["t"] > 3
    # Scores that do not follow brightness: a slope fitted to noise is not kept, so nothing moves.
    noise = fit_exposure(rng.normal(0.4, 0.05, 80), means)
    assert not noise["kept"] and noise["slope"] == 0.0 and abs(noise["t"]) < 3
    # Too few images, or a constant input: never kept, however well they line up.
    few = fit_exposure(0.4 + 0.25 * means[:MIN_IMAGES - 1], means[:MIN_IMAGES - 1])
    assert not few["kept"] and few["slope"] == 0.0
    assert not fit_exposure(scores, np.zeros(80))["kept"]
    with pytest.raises(ValueError, match="80 scores but 3"):
        fit_exposure(scores, means[:3])


def test_score_is_topk_less_slope_times_brightness_and_map_unchanged():
    cfg = preset("tiny", image_size=32, channels=3)
    plain = build_model(cfg).eval()
    corrected = build_model(preset("tiny", image_size=32, channels=3, exposure_correction=True)).eval()
    corrected.load_state_dict(plain.state_dict(), strict=False)  # same networks and noise
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    x[1] = x[1] * 0.3 + 0.6  # a bright image
    with torch.no_grad():
        base = plain(x)
        assert torch.equal(corrected(x).score, base.score)  # not calibrated: slope 0, nothing changes
        corrected.exposure_term.coef.copy_(torch.tensor([0.2, -0.1]))
        got = corrected(x)
    expected = np.clip(base.score.numpy() - 0.2 * (x.mean(dim=(1, 2, 3)).numpy() + 0.1), 0, 1)
    np.testing.assert_allclose(got.score.numpy(), expected, rtol=0, atol=1e-6)
    assert got.score[1] < base.score[1] - 0.1  # the bright image lost most
    torch.testing.assert_close(got.anomaly_map, base.anomaly_map, rtol=0, atol=0)


def test_config_field_is_checked_and_left_out_when_off():
    assert "exposure_correction" not in preset("compact").to_dict()  # older configs read (and hash) as before
    cfg = preset("compact", exposure_correction=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["exposure_correction"] is True
    with pytest.raises(ConfigError, match="exposure_correction='yes' must be true or false"):
        preset("compact", exposure_correction="yes")
    with pytest.raises(ConfigError, match="exposure_correction"):
        preset("compact", method="recon", exposure_correction=True)
    assert "exposure_term.coef" not in build_model(preset("tiny", image_size=32)).state_dict()
    assert "exposure_term.coef" in build_model(preset("tiny", image_size=32, exposure_correction=True)).state_dict()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return good_only_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    return train(TrainOptions(data=str(data), out=str(tmp_path_factory.mktemp("run")), epochs=1, **COMMON))


def test_training_fits_on_held_out_good_images_and_records_the_fit(data, trained):
    model, meta = load_model(trained)
    assert model.cfg.exposure_correction and meta["training"]["recipe"]["exposure_correction"]  # the default
    fit = meta["training"]["exposure_fit"]
    assert fit["images"] == len(MVTecCategory(data).train_val_split(0.1, 0)[1]) < MIN_IMAGES  # too few to keep a slope
    assert not fit["kept"] and model.exposure_term.slope == 0.0
    # The stored reference is the held-out images' mean input, as calibrate computes it again.
    _, val = MVTecCategory(data).train_val_split(0.1, 0)
    images = load_images(val, model.cfg.image_size, model.cfg.channels)
    again = calibrate_exposure_term(model, images, torch.device("cpu"), batch_size=1)
    assert again["reference"] == pytest.approx(fit["reference"], abs=1e-6)
    assert float(model.exposure_term.coef[1]) == pytest.approx(fit["reference"], abs=1e-6)


def test_calibration_fits_the_uncorrected_scores(data, trained):
    """On images whose brightness varies, the stored slope is the fit of the model's own top-k scores."""
    model, _ = load_model(trained)
    model.exposure_term.coef.copy_(torch.tensor([5.0, 0.0]))  # a stale slope must not leak into the fit
    base = load_images(MVTecCategory(data).train_samples()[:6], model.cfg.image_size, model.cfg.channels)
    images = np.concatenate([np.clip(base * g, 0, 255) for g in (0.5, 0.8, 1.0, 1.3)]).astype(np.float32)
    fit = calibrate_exposure_term(model, images, torch.device("cpu"), batch_size=5)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()) * (2 / 255) - 1
    model.exposure_term.coef.zero_()
    with torch.no_grad():
        raw = model(x).score.double().numpy()
    expected = fit_exposure(raw, x.mean(dim=(1, 2, 3)).double().numpy())
    assert fit["images"] == 24 and fit["slope"] == pytest.approx(expected["slope"], abs=1e-6)
    assert fit["r"] == pytest.approx(expected["r"], abs=1e-6)


def test_exported_graph_computes_the_same_corrected_score(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from dad_edge.export.onnx_export import export_onnx
    from dad_edge.runtime.detector import Detector

    model, meta = load_model(trained)
    model.exposure_term.coef.copy_(torch.tensor([0.3, -0.2]))  # a kept slope, as a brightness-bound product gets
    ckpt = tmp_path / "m.safetensors"
    save_model(ckpt, model, md.validate_metadata(meta, "test"))
    export_onnx(ckpt, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.integers(0, 256, (40, 48)) * g, 0, 255).astype(np.uint8) for g in (0.3, 1.0, 1.0)]
    with Detector(ckpt) as torch_det, Detector(tmp_path / "m.onnx") as onnx_det, Detector(trained) as uncorrected, \
            Detector(ckpt, device="cpu", fused=True) as fused_det:  # the fused stages (C extension / reference)
        _, s_t = torch_det.infer_batch(frames)
        _, s_o = onnx_det.infer_batch(frames)
        _, s_u = uncorrected.infer_batch(frames)
        _, s_f = fused_det.infer_batch(frames)
    np.testing.assert_allclose(np.asarray(s_o), np.asarray(s_t), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(s_f), np.asarray(s_t), rtol=0, atol=1e-5)
    # ... and the correction is in the exported graph: the dark frame gained, as the formula says.
    means = preprocess_batch(frames, model.cfg.image_size, model.cfg.channels).mean(axis=(1, 2, 3))
    expected = np.clip(np.asarray(s_u) - 0.3 * (means + 0.2), 0, 1)
    np.testing.assert_allclose(np.asarray(s_o), expected, rtol=0, atol=1e-5)
    assert np.asarray(s_o)[0] > np.asarray(s_u)[0] + 0.05


def test_cli_off_trains_without_the_term_and_recon_refuses_it(data, tmp_path, capsys):
    out = tmp_path / "off"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--preset", "tiny",
                 "--batch-size", "4", "--device", "cpu", "--exposure-correction", "off", "--quiet"]) == 0
    model, meta = load_model(out / "model.safetensors")
    assert model.exposure_term is None and "exposure_correction" not in meta["model"]
    assert "exposure_fit" not in meta["training"]
    capsys.readouterr()
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--epochs", "1", "--method", "recon",
               "--exposure-correction", "on", "--quiet"])
    assert rc != 0 and "--exposure-correction True does not apply to --method recon" in capsys.readouterr().err
