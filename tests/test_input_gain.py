"""The input's gain normalisation (model/input_gain.py) and its choice from the data (training/brightness.py)."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dad_edge.artifacts.checkpoint import load_model
from dad_edge.cli import main
from dad_edge.data.imageio import list_images, read_image
from dad_edge.errors import ConfigError
from dad_edge.model.build import build_model
from dad_edge.model.config import ModelConfig, preset
from dad_edge.model.input_gain import apply_gain, image_gain, normalise_gain
from dad_edge.training.brightness import GAIN_VARIATION, choose_input_gain, parse_input_gain
from dad_edge.training.distill import DistillOptions, distill, student_overrides
from dad_edge.training.train import TrainOptions, train
from training_support import DIFFUSIONAD, good_only_demo

COMMON = dict(preset="tiny", batch_size=4, progress=False, device="cpu", lr_schedule="constant", warmup_fraction=0.0,
              model_overrides=DIFFUSIONAD)


def _pixels_to_x(p: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(p.astype(np.float32)) * (2 / 255) - 1


def test_images_one_gain_apart_become_the_same_input():
    rng = np.random.default_rng(0)
    base = rng.uniform(10, 100, (1, 3, 16, 16))
    x = _pixels_to_x(np.concatenate([base, base * 1.8, base * 0.6]))
    out = normalise_gain(x, 0.3)
    torch.testing.assert_close(out[1], out[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[2], out[0], rtol=0, atol=1e-5)
    assert ((out[0] + 1) / 2).mean().item() == pytest.approx(0.3, abs=1e-5)  # at the reference brightness
    assert torch.equal(normalise_gain(x, 0.0), x)  # off: the input itself
    # A gain that would leave the pixel range clips there, and an all-black frame is not a division by 0.
    bright = apply_gain(x[:1], torch.full((1, 1, 1, 1), 10.0))
    assert bright.max().item() == 1.0 and bright.min().item() >= -1.0
    assert torch.isfinite(image_gain(-torch.ones(1, 3, 8, 8), 0.4)).all()


def test_model_score_and_map_do_not_follow_exposure_with_the_gain_on():
    cfg = preset("tiny", image_size=32, channels=1)
    plain = build_model(cfg).eval()
    gained = build_model(cfg.replace(input_gain=0.35)).eval()
    gained.load_state_dict(plain.state_dict())  # the same networks and noise: no new tensors
    rng = np.random.default_rng(1)
    base = rng.uniform(20, 110, (1, 1, 32, 32))
    x = _pixels_to_x(np.concatenate([base, base * 2.0]))
    with torch.no_grad():
        p_in, g_in = plain.segmentation_input(x), gained.segmentation_input(x)
        g = gained(x)
    # Without the gain the networks see the brighter copy as another image (input and reconstruction) ...
    assert (p_in[1] - p_in[0]).abs().max() > 0.2
    # ... with it, the same one, and so the same map and score.
    torch.testing.assert_close(g_in[1], g_in[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(g.score[1], g.score[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(g.anomaly_map[1], g.anomaly_map[0], rtol=0, atol=1e-5)


def test_config_field_is_checked_and_left_out_when_off():
    assert "input_gain" not in preset("compact").to_dict()  # older configs read (and hash) as before
    cfg = preset("compact", input_gain=0.42)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["input_gain"] == 0.42
    for bad in (1.0, -0.1):
        with pytest.raises(ConfigError, match=f"input_gain={bad!r} must be a mean brightness"):
            preset("compact", input_gain=bad)
    with pytest.raises(ConfigError, match="leaves exposure_correction .* nothing to fit"):
        preset("compact", input_gain=0.4, exposure_correction=True)
    with pytest.raises(ConfigError, match="input_gain"):
        preset("compact", method="recon", input_gain=0.4)
    with pytest.raises(ConfigError, match="bad model config"):
        ModelConfig.from_dict({**cfg.to_dict(), "input_gain": "bright"})


def test_auto_turns_it_on_only_where_the_good_images_brightness_varies():
    rng = np.random.default_rng(2)
    base = rng.uniform(40, 120, (1, 8, 8, 1))
    gains = np.array([0.6, 0.8, 1.0, 1.2, 1.4, 1.6]).reshape(-1, 1, 1, 1)
    varied, even = base * gains, base * (1 + 0.01 * gains)
    on = choose_input_gain("auto", varied)
    assert on["brightness_cv"] >= GAIN_VARIATION
    assert on["input_gain"] == pytest.approx(varied.mean() / 255, abs=1e-5)  # the typical frame is left alone
    off = choose_input_gain(None, even)
    assert off["setting"] == "auto" and off["brightness_cv"] < GAIN_VARIATION and off["input_gain"] == 0.0
    assert choose_input_gain("off", varied)["input_gain"] == 0.0
    assert choose_input_gain(0.5, even)["input_gain"] == 0.5
    assert parse_input_gain(" OFF ") == "off" and parse_input_gain("0.3") == 0.3
    for bad in ("bright", 0, 1.5, "nan"):
        with pytest.raises(ConfigError, match="must be 'auto', 'off' or a mean brightness"):
            parse_input_gain(bad)


@pytest.fixture(scope="module")
def varied_data(tmp_path_factory) -> Path:
    """The tiny demo category with its good training images at six exposures (as magnetic tile's)."""
    root = good_only_demo(tmp_path_factory)
    for i, path in enumerate(list_images(root / "train" / "good")):
        img = read_image(path).astype(np.float32) * (0.5 + 0.2 * (i % 6))
        cv2.imwrite(str(path), np.clip(img, 0, 255).astype(np.uint8))
    return root


@pytest.mark.parametrize("method", ["diffusionad", "seg"])
def test_training_chooses_it_from_the_data_records_it_and_drops_the_exposure_fit(varied_data, tmp_path, method):
    run = train(TrainOptions(data=str(varied_data), out=str(tmp_path / "run"), epochs=1,
                             **{**COMMON, "model_overrides": {"method": method}}))
    model, meta = load_model(run)
    assert model.cfg.method == method
    choice = meta["training"]["input_gain"]
    assert choice["setting"] == "auto" and choice["brightness_cv"] >= GAIN_VARIATION
    assert model.cfg.input_gain == choice["input_gain"] > 0 and meta["model"]["input_gain"] == model.cfg.input_gain
    # With the gain on the recipe's exposure correction is off: nothing left to fit.
    assert not model.cfg.exposure_correction and not meta["training"]["recipe"]["exposure_correction"]
    assert model.exposure_term is None and "exposure_fit" not in meta["training"]


def test_even_data_keeps_it_off_and_the_cli_settings(tmp_path_factory, varied_data, tmp_path, capsys):
    even = good_only_demo(tmp_path_factory)  # the demo's evenly lit bricks
    model, meta = load_model(train(TrainOptions(data=str(even), out=str(tmp_path / "even"), epochs=1, **COMMON)))
    assert model.cfg.input_gain == 0 and meta["training"]["input_gain"]["input_gain"] == 0
    assert model.cfg.exposure_correction  # the recipe's default stays
    args = ["train", "--data", str(varied_data), "--epochs", "1", "--preset", "tiny", "--batch-size", "4",
            "--device", "cpu", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "off"), "--input-gain", "off"]) == 0
    model, meta = load_model(tmp_path / "off" / "model.safetensors")
    assert model.cfg.input_gain == 0 and model.cfg.exposure_correction and "input_gain" not in meta["model"]
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "both"), "--exposure-correction", "on"]) != 0
    err = capsys.readouterr().err
    assert "--exposure-correction on and the input gain (auto: the good images' brightness varies" in err
    assert "--input-gain off" in err and "Traceback" not in err
    assert main(args + ["--out", str(tmp_path / "bad"), "--input-gain", "2"]) != 0
    assert "input_gain='2' must be 'auto', 'off' or a mean brightness" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "r"), "--method", "recon", "--input-gain", "0.4"]) != 0
    assert "--input-gain 0.4 does not apply to --method recon" in capsys.readouterr().err


def test_every_backend_and_a_student_compute_the_same_normalised_function(varied_data, tmp_path):
    pytest.importorskip("onnxruntime")
    from dad_edge.export.onnx_export import export_onnx
    from dad_edge.runtime.detector import Detector

    run = train(TrainOptions(data=str(varied_data), out=str(tmp_path / "run"), epochs=1, **COMMON))
    off = train(TrainOptions(data=str(varied_data), out=str(tmp_path / "off"), epochs=1, input_gain="off", **COMMON))
    export_onnx(run, tmp_path / "m.onnx")
    export_onnx(off, tmp_path / "off.onnx")
    rng = np.random.default_rng(3)
    base = rng.integers(30, 110, (40, 48)).astype(np.float32)
    frames = [np.clip(base * g, 0, 255).astype(np.uint8) for g in (1.0, 2.0)] + [rng.integers(0, 256, (40, 48), np.uint8)]
    with Detector(run) as torch_det, Detector(tmp_path / "m.onnx") as onnx_det, \
            Detector(run, device="cpu", fused=True) as fused_det, Detector(tmp_path / "off.onnx") as off_det:
        m_t, s_t = torch_det.infer_batch(frames)
        m_o, s_o = onnx_det.infer_batch(frames)
        m_f, s_f = fused_det.infer_batch(frames)  # the fused stages (C extension / reference)
        m_off, _ = off_det.infer_batch(frames)
    np.testing.assert_allclose(np.asarray(s_o), np.asarray(s_t), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(s_f), np.asarray(s_t), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(m_o[0]), np.asarray(m_t[0]), rtol=0, atol=1e-4)
    # The exported graph normalises too: the same part at twice the exposure gets the same map (it would not
    # without the gain, as the model trained with --input-gain off shows).
    assert np.abs(np.asarray(m_o[1]) - np.asarray(m_o[0])).max() < 1e-5
    assert np.abs(np.asarray(m_off[1]) - np.asarray(m_off[0])).max() > 1e-4
    assert s_o[1] == pytest.approx(s_o[0], abs=1e-5)
    # A student of this teacher reads the same normalised frames (its networks learn from the teacher's on them).
    teacher_cfg = load_model(run)[0].cfg
    changes = student_overrides(teacher_cfg, 32, single_pass=False)
    assert changes["input_gain"] == teacher_cfg.input_gain and changes["exposure_correction"] is False
    student = distill(DistillOptions(teacher=str(run), data=str(varied_data), out=str(tmp_path / "student"),
                                     epochs=1, **{k: v for k, v in COMMON.items() if k != "model_overrides"}))
    s_model, s_meta = load_model(student)
    assert s_model.cfg.input_gain == teacher_cfg.input_gain and not s_model.cfg.exposure_correction
    assert "input_gain" not in s_meta["training"]  # inherited from the teacher, not chosen again
