"""Thresholds at run time (#15 part 1): Detector(image_threshold=, pixel_threshold=, sensitivity=),
set_thresholds, and --threshold / --pixel-threshold / --sensitivity on predict and stream; the model
file stays as it was."""
import json

import numpy as np
import pytest

import dad_edge
from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.metadata import normalize_score
from dad_edge.cli import main
from dad_edge.data.imageio import write_image
from dad_edge.errors import ConfigError
from dad_edge.export.metadata_io import read_metadata, write_metadata
from dad_edge.export.onnx_export import export_onnx
from dad_edge.model.config import preset
from dad_edge.runtime.thresholds import threshold_at_sensitivity
from deploy_support import generated_image, write_checkpoint

Detector = dad_edge.Detector


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny gray ONNX model uncalibrated and calibrated (image threshold at the median score of
    the frames, pixel threshold at the median map maximum), and 8 frames (4 with a dark blotch)."""
    tmp = tmp_path_factory.mktemp("rt")
    ckpt = write_checkpoint(tmp / "m.safetensors", preset("tiny", channels=1), seed=2, std=0.15)
    plain = tmp / "plain.onnx"
    export_onnx(ckpt, plain)
    rng = np.random.default_rng(5)
    frames = [generated_image(rng, i >= 4) for i in range(8)]
    results = Detector(plain)(frames, color_order="RGB")
    scores = np.array([r.score for r in results])
    assert scores.std() > 1e-4  # the frames get different scores: the thresholds below split them
    calibrated = tmp / "calibrated.onnx"
    calibrated.write_bytes(plain.read_bytes())
    t = md.Thresholds(image=float(np.median(scores)), pixel=float(np.median([r.anomaly_map.max() for r in results])),
                      source="test")
    write_metadata(calibrated, {**read_metadata(calibrated), "thresholds": t.to_dict()})
    return plain, calibrated, frames, t, tmp


def test_calibrated_by_default_and_the_file_unchanged(models):
    _, calibrated, frames, t, _ = models
    before = calibrated.read_bytes()
    with Detector(calibrated, image_threshold=0.0, pixel_threshold=1.0) as det:
        assert det.calibrated_thresholds == t
        results = det(frames, color_order="RGB")
    assert all(r.label for r in results)  # every score >= 0
    assert all(not r.mask.any() for r in results)  # no map value reaches 1
    assert all(r.normalized_score >= 0.5 for r in results)  # normalised against the threshold in use
    assert calibrated.read_bytes() == before
    default = Detector(calibrated)(frames, color_order="RGB")
    assert [r.label for r in default] == [r.score >= t.image for r in default]
    assert 0 < sum(r.label for r in default) < len(frames)


def test_image_threshold_splits_as_given(models):
    _, calibrated, frames, _, _ = models
    scores = sorted(r.score for r in Detector(calibrated)(frames, color_order="RGB"))
    cut = (scores[5] + scores[6]) / 2  # exactly two frames above
    results = Detector(calibrated, image_threshold=cut)(frames, color_order="RGB")
    assert sum(r.label for r in results) == 2
    assert all(r.thresholds.image == cut for r in results)
    assert all((r.normalized_score >= 0.5) == r.label for r in results)


def test_sensitivity_moves_both_along_the_calibrated_scale(models):
    _, calibrated, frames, t, _ = models
    det = Detector(calibrated)
    assert det.set_thresholds(sensitivity=0.5) == md.Thresholds(t.image, t.pixel, det.thresholds.source)
    flagged, pixels = [], []
    for s in (0.0, 0.2, 0.5, 0.8, 1.0):
        thr = det.set_thresholds(sensitivity=s)
        # On the normalised scale (calibrated threshold at 0.5) the cut is 1 - sensitivity: anomalib's rule.
        assert float(normalize_score(thr.image, t.image)) == pytest.approx(1 - s, abs=1e-9)
        assert float(normalize_score(thr.pixel, t.pixel)) == pytest.approx(1 - s, abs=1e-9)
        results = det(frames, color_order="RGB")
        assert [r.label for r in results] == [r.score >= thr.image for r in results]
        flagged.append(sum(r.label for r in results))
        pixels.append(sum(int(r.mask.sum()) for r in results))
    assert flagged == sorted(flagged) and pixels == sorted(pixels)  # higher sensitivity flags more
    assert flagged[0] == 0 and flagged[-1] == len(frames) and 0 < flagged[2] < len(frames)
    assert "sensitivity 1" in det.thresholds.source
    # A value given for one level wins over the sensitivity there; the other level moves.
    thr = det.set_thresholds(image_threshold=0.25, sensitivity=1.0)
    assert (thr.image, thr.pixel) == (0.25, 0.0)
    assert det.set_thresholds() == t  # back to the file's


def test_threshold_at_sensitivity_ends():
    assert threshold_at_sensitivity(0.3, 0.5) == pytest.approx(0.3)
    assert threshold_at_sensitivity(0.3, 1.0) == 0.0 and threshold_at_sensitivity(0.3, 0.0) == 1.0
    assert threshold_at_sensitivity(0.3, 0.75) == pytest.approx(0.15)  # halfway down [0, t]
    assert threshold_at_sensitivity(0.3, 0.25) == pytest.approx(0.65)  # halfway up [t, 1]


@pytest.mark.parametrize("kwargs, named", [
    ({"image_threshold": 1.5}, "image_threshold=1.5"),
    ({"pixel_threshold": -0.1}, "pixel_threshold=-0.1"),
    ({"sensitivity": 2}, "sensitivity=2"),
    ({"sensitivity": float("nan")}, "sensitivity=nan"),
    ({"image_threshold": "0.3"}, "image_threshold='0.3'"),
])
def test_out_of_range_values_are_named(models, kwargs, named):
    _, calibrated, _, _, _ = models
    with pytest.raises(ConfigError, match="must be a number in \\[0, 1\\]") as info:
        Detector(calibrated, **kwargs)
    assert named in str(info.value)


def test_uncalibrated_model(models):
    plain, _, frames, _, _ = models
    with pytest.raises(ConfigError, match="no calibrated thresholds.*dad-edge calibrate"):
        Detector(plain, sensitivity=0.7)
    r = Detector(plain, image_threshold=0.0)(frames[0], color_order="RGB")
    assert r.label is True and r.mask is None  # a value needs no calibration; the pixel level stays off


def _predict_labels(capsys, model, folder, *flags):
    assert main(["predict", str(model), str(folder), *flags]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith(str(folder))]


def test_predict_and_stream_flags(models, capsys):
    _, calibrated, frames, t, tmp = models
    folder = tmp / "frames"
    for i, f in enumerate(frames):
        write_image(folder / f"{i}.png", f)
    lines = _predict_labels(capsys, calibrated, folder)
    assert 0 < sum("ANOMALY" in line for line in lines) < len(frames)
    assert sum("ANOMALY" in line for line in _predict_labels(capsys, calibrated, folder, "--sensitivity", "1")) == 8
    assert sum("ANOMALY" in line for line in _predict_labels(capsys, calibrated, folder, "--threshold", "1")) == 0
    assert main(["predict", str(calibrated), str(folder), "--pixel-threshold", "7"]) == 2
    assert "pixel_threshold=7.0" in capsys.readouterr().err
    events = tmp / "events.jsonl"
    assert main(["stream", str(calibrated), "--source", str(folder), "--events", str(events), "--no-display",
                 "--sensitivity", "1"]) == 0
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(records) == 8 and all(r["label"] for r in records)
    assert all(r["boxes"] for r in records)  # the whole map is at or above a pixel threshold of 0
    assert read_metadata(calibrated)["thresholds"] == t.to_dict()  # the file is as calibrate left it
