"""Thresholds: F1-max with anomalies, a quantile of good images without; stored in the artifact."""
import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest

import dad_edge
from dad_edge.cli import deploy as cli_deploy
from dad_edge.artifacts import metadata as md
from dad_edge.training.thresholds import SCORE_NORMALIZATION, f1_thresholds, normalize_score, quantile_thresholds
from dad_edge.model.config import preset
from dad_edge.errors import DataError
from dad_edge.export.calibrate import calibrate
from dad_edge.export.metadata_io import read_metadata
from dad_edge.export.onnx_export import export_onnx
from dad_edge.training.metrics import f1_max
from deploy_support import write_category, write_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cal")
    ckpt = write_checkpoint(tmp / "m.safetensors", preset("tiny", channels=1), seed=6)
    export_onnx(ckpt, tmp / "m.onnx")
    return ckpt, tmp / "m.onnx", write_category(tmp / "category")


def _copy(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst


def test_f1_thresholds():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.35, 0.3, 0.9])
    maps = [np.full((2, 2), v, np.float32) for v in (0.1, 0.2, 0.3, 0.6, 0.9)]
    masks = [np.zeros((2, 2), bool)] * 3 + [np.ones((2, 2), bool)] * 2
    t = f1_thresholds(labels, scores, maps, masks)
    assert t.image == 0.3 and t.pixel == pytest.approx(0.6)  # where F1 is best: 0.8 and 1.0
    assert "F1-max over 5 images (2 anomalous" in t.source
    without_masks = f1_thresholds(labels, scores, maps, None, quantile=0.5)
    assert without_masks.image == 0.3 and without_masks.pixel == pytest.approx(0.2)  # median of the good maps' maxima
    with pytest.raises(ValueError, match="both good and anomalous"):
        f1_thresholds(np.zeros(3), scores[:3], maps[:3], None)


def test_quantile_thresholds_take_maps_of_any_size():
    rng = np.random.default_rng(0)
    stacked = rng.random((6, 4, 4)).astype(np.float32)
    scores = rng.random(6)
    assert quantile_thresholds(scores, stacked) == quantile_thresholds(scores, list(stacked))
    mixed = [rng.random((3 + i, 5)).astype(np.float32) for i in range(6)]
    t = quantile_thresholds(scores, mixed, quantile=0.9)
    assert t.pixel == pytest.approx(np.quantile([m.max() for m in mixed], 0.9))
    assert float(normalize_score(t.image, t.image)) == pytest.approx(0.5)


def test_calibrate_onnx_with_anomalies(model, tmp_path):
    _, onnx_src, category = model
    onnx_path = _copy(onnx_src, tmp_path / "m.onnx")
    t = calibrate(onnx_path, category)
    meta = read_metadata(onnx_path)
    assert md.thresholds(meta) == t and meta["score_normalization"] == SCORE_NORMALIZATION
    assert t.source.startswith("F1-max over 12 images (6 anomalous") and "pixel F1-max" in t.source
    # The stored threshold is the F1-max threshold of the scores the Detector gives.
    det = dad_edge.Detector(onnx_path)
    results = det(category / "test" / "good") + det(category / "test" / "spot")
    labels = [0] * 6 + [1] * 6
    assert t.image == pytest.approx(f1_max(labels, [r.score for r in results])[1])
    assert all(r.label == (r.score >= t.image) for r in results)
    assert all(r.mask.shape == r.anomaly_map.shape for r in results)


def test_calibrate_checkpoint_on_good_images_only(model, tmp_path):
    ckpt_src, _, category = model
    ckpt = _copy(ckpt_src, tmp_path / "m.safetensors")
    folder = category / "train" / "good"
    t = calibrate(ckpt, folder, quantile=0.95)
    assert t.source == "quantile of 4 good images (q=0.95)"
    from dad_edge.artifacts.checkpoint import read_tensors

    tensors, meta = read_tensors(ckpt)
    before, _ = read_tensors(ckpt_src)
    assert md.thresholds(meta) == t and all(np.array_equal(tensors[k], before[k]) for k in before)
    scores = [r.score for r in dad_edge.Detector(ckpt)(folder)]
    assert t.image == pytest.approx(np.quantile(scores, 0.95))


def test_calibrate_bad_data(model, tmp_path):
    _, onnx_src, category = model
    onnx_path = _copy(onnx_src, tmp_path / "m.onnx")
    folder = Path(shutil.copytree(category / "train" / "good", tmp_path / "good"))
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\ncut")
    with pytest.warns(UserWarning, match="zz_broken.png"):
        t = calibrate(onnx_path, folder)
    assert "quantile of 4 good images" in t.source
    with pytest.raises(DataError, match="no such folder"):
        calibrate(onnx_path, tmp_path / "missing")
    only_bad = tmp_path / "bad_category"
    write_category(only_bad, n_good=0)
    with pytest.raises(DataError, match="no good images"):
        calibrate(onnx_path, only_bad)


def test_cli_calibrate(model, tmp_path, capsys):
    _, onnx_src, category = model
    onnx_path = _copy(onnx_src, tmp_path / "m.onnx")
    parser = argparse.ArgumentParser()
    cli_deploy.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["calibrate", str(onnx_path), "--data", str(category)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "image threshold" in out and "F1-max" in out
    assert md.thresholds(read_metadata(onnx_path)).image is not None
