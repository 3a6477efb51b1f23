"""The map's reconstruction-error term (model/recon_term.py): formula, calibration, training, every backend."""
from pathlib import Path

import numpy as np
import pytest
import torch

from dad_edge.artifacts.checkpoint import load_model
from dad_edge.cli import main
from dad_edge.data.mvtec import MVTecCategory, load_images
from dad_edge.data.preprocess import preprocess_batch
from dad_edge.errors import ConfigError
from dad_edge.model.info import model_info
from dad_edge.kernels.score_ref import gaussian_taps, smooth_ref
from dad_edge.model.build import build_model
from dad_edge.model.config import ModelConfig, preset
from dad_edge.training.map_statistics import calibrate_recon_term
from dad_edge.training.train import TrainOptions, train
from training_support import DIFFUSIONAD, good_only_demo

COMMON = dict(preset="tiny", batch_size=4, progress=False, device="cpu", lr_schedule="constant", warmup_fraction=0.0,
              model_overrides=DIFFUSIONAD)


def _reference_error(seg_in: np.ndarray, channels: int, sigma: float) -> np.ndarray:
    """numpy: mean over channels of |x - x0|, blurred with the kernels' reference smoothing -> (B, H, W)."""
    e = np.abs(seg_in[:, :channels] - seg_in[:, channels:]).mean(axis=1).astype(np.float32)
    return smooth_ref(e, gaussian_taps(sigma))


def _pieces(model, x):
    """(segmentation map (B, 1, S, S), seg_in) of the model's own steps."""
    with torch.no_grad():
        seg_in = model.segmentation_input(x)
        return model.segment(seg_in), seg_in


def test_map_is_seg_plus_standardised_error_after_calibration():
    cfg = preset("tiny", image_size=32, channels=3, recon_weight=0.7, recon_sigma=1.5)
    model = build_model(cfg).eval()
    torch.manual_seed(0)
    good, test = torch.rand(6, 3, 32, 32) * 2 - 1, torch.rand(3, 3, 32, 32) * 2 - 1
    seg_t, seg_in_t = _pieces(model, test)
    # Not calibrated: the term is exactly 0, the map is the segmentation map's.
    assert not model.recon_term.calibrated
    torch.testing.assert_close(model(test).anomaly_map, seg_t, rtol=0, atol=0)

    seg_g, seg_in_g = _pieces(model, good)
    seg_std, mean, std = model.recon_term.calibrate([(seg_g[:4], seg_in_g[:4]), (seg_g[4:], seg_in_g[4:])])
    err_g = _reference_error(seg_in_g.numpy(), 3, 1.5)
    assert seg_std == pytest.approx(float(seg_g.double().std()), rel=1e-4)
    assert mean == pytest.approx(float(err_g.mean()), rel=1e-4)
    assert std == pytest.approx(float(err_g.astype(np.float64).std(ddof=1)), rel=1e-3)

    expected = seg_t[:, 0].numpy() + 0.7 * seg_std / std * (_reference_error(seg_in_t.numpy(), 3, 1.5) - mean)
    expected = np.clip(expected, 0.0, 1.0)
    with torch.no_grad():
        got = model(test)
    np.testing.assert_allclose(got.anomaly_map[:, 0].numpy(), expected, rtol=0, atol=1e-5)
    # The score is the top-k mean of that map, not of the segmentation map.
    top = np.sort(expected.reshape(3, -1), axis=1)[:, -cfg.top_k:].mean(axis=1)
    np.testing.assert_allclose(got.score.numpy(), top, rtol=0, atol=1e-5)
    assert not np.allclose(got.anomaly_map.numpy(), seg_t.numpy(), atol=1e-3)  # the term does something
    # A large weight drives the map to both ends: clamped to [0, 1], where thresholds and heat maps live.
    model.recon_term.weight = 1000.0
    with torch.no_grad():
        far = model(test).anomaly_map
    assert float(far.min()) == 0.0 and float(far.max()) == 1.0


def test_config_fields_are_checked_and_left_out_when_off():
    assert "recon_weight" not in preset("compact").to_dict()  # older configs read (and hash) as before
    cfg = preset("compact", recon_weight=0.5)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="recon_weight=-1"):
        preset("compact", recon_weight=-1.0)
    with pytest.raises(ConfigError, match="recon_sigma=0"):
        preset("compact", recon_weight=0.5, recon_sigma=0.0)
    with pytest.raises(ConfigError, match="recon_weight"):
        preset("compact", method="recon", recon_weight=0.5)
    assert "recon_term.stats" not in build_model(preset("tiny", image_size=32)).state_dict()
    # The term's blur is counted in the total, not as U-Net work.
    off, on = model_info(preset("tiny", image_size=64)), model_info(preset("tiny", image_size=64, recon_weight=0.5))
    assert on["gflops_unet"] == pytest.approx(off["gflops_unet"]) and on["gflops"] > off["gflops"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return good_only_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    return train(TrainOptions(data=str(data), out=str(out), epochs=1, **COMMON))


def test_training_calibrates_the_term_on_held_out_good_images(data, trained):
    model, meta = load_model(trained)
    assert model.cfg.recon_weight == 0.5 and meta["training"]["recipe"]["recon_weight"] == 0.5  # the default
    assert model.recon_term.calibrated
    stored = model.recon_term.stats.clone()
    _, val = MVTecCategory(data).train_val_split(0.1, 0)
    images = load_images(val, model.cfg.image_size, model.cfg.channels)
    again = calibrate_recon_term(model, images, torch.device("cpu"), batch_size=3)
    np.testing.assert_allclose(np.array(again), stored.numpy(), rtol=1e-4)


def test_exported_graph_computes_the_same_map(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    from dad_edge.export.onnx_export import export_onnx
    from dad_edge.runtime.detector import Detector

    export_onnx(trained, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 48), dtype=np.uint8) for _ in range(3)]
    with Detector(trained) as torch_det, Detector(tmp_path / "m.onnx") as onnx_det:
        m_t, s_t = torch_det.infer_batch(frames)
        m_o, s_o = onnx_det.infer_batch(frames)
    np.testing.assert_allclose(np.asarray(m_o), np.asarray(m_t), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(s_o), np.asarray(s_t), rtol=0, atol=1e-4)
    # ... and that map is the segmentation map plus the term, which is far above the tolerance: the term is
    # in the exported graph (a 1-epoch net's maps are flat, so the term is small but not negligible here).
    model, _ = load_model(trained)
    x = torch.from_numpy(preprocess_batch(frames, model.cfg.image_size, model.cfg.channels))
    seg, seg_in = _pieces(model, x)
    with torch.no_grad():
        term = (model.recon_term(seg, seg_in) - seg).numpy()
    onnx_maps = np.asarray(m_o).reshape(seg.shape)
    np.testing.assert_allclose(onnx_maps, seg.numpy() + term, rtol=0, atol=1e-5)
    assert np.abs(term).max() > 1e-4


def test_cli_weight_zero_trains_without_the_term(data, tmp_path, capsys):
    out = tmp_path / "run0"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--preset", "tiny",
                 "--batch-size", "4", "--device", "cpu", "--recon-weight", "0", "--quiet"]) == 0
    model, meta = load_model(out / "model.safetensors")
    assert model.recon_term is None and "recon_weight" not in meta["model"]
    with pytest.raises(SystemExit):
        main(["train", "--data", str(data), "--out", str(out), "--epochs", "1", "--recon-weight", "nan"])
    capsys.readouterr()
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "neg"), "--epochs", "1", "--preset", "tiny",
               "--recon-weight", "-0.5", "--quiet"])
    assert rc != 0 and "recon_weight=-0.5 must be a number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "neg" / "model.safetensors").exists()
