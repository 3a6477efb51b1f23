"""benchmarks/learning_curve.py on a tiny run: snapshots found in order, three scorings, and the
full scoring equal to the Detector's (what `dad-edge eval` reports)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dad_edge.data.demo import build_demo_dataset
from dad_edge.training.train import TrainOptions, train
from training_support import DIFFUSIONAD, benchmark_module, model_with_exposure_slope



def _module():
    return benchmark_module("learning_curve")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = build_demo_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=10, n_test_good=4,
                              n_test_per_defect=3)
    out = tmp_path_factory.mktemp("run")
    train(TrainOptions(data=str(data), out=str(out), preset="tiny", epochs=2, batch_size=4, progress=False,
                       device="cpu", snapshot_minutes=1e-6, ema_decay=0.9,
                       input_gain=0.3, model_overrides=DIFFUSIONAD))  # frames scaled to one brightness: the curve's inputs must be too
    return data, out


def test_snapshots_are_listed_by_minute_then_the_final_model(run):
    lc = _module()
    _, out = run
    paths = lc.snapshots(out)
    assert paths[-1].name == "model.safetensors"
    minutes = [lc.snapshot_minutes(p) for p in paths[:-1]]
    assert minutes == sorted(minutes) and len(paths) > 3
    assert lc.snapshot_minutes(Path("model_12.5min_ema.safetensors")) == 12.5


def test_curve_rows_have_every_scoring_and_match_the_detector(run, tmp_path):
    lc = _module()
    data, out = run
    result = tmp_path / "curve.json"
    assert lc.main([str(out), "--data", str(data), "--out", str(result), "--every", "4",
                    "--weights", "average"]) == 0
    rows = json.loads(result.read_text())
    assert rows[-1]["file"].endswith("model.safetensors")
    assert all(r["training"]["weights"] == "average" for r in rows)
    for row in rows:
        for scoring in lc.SCORINGS:
            m = row[scoring]
            assert 0.0 <= m["image_auroc"] <= 1.0 and 0.0 <= m["pixel_auroc"] <= 1.0
            assert set(m["per_type_pixel_auroc"]) == {"scratch", "spot", "crack"}
            inside = m["per_type_pixel_auroc_in_image"]
            assert set(inside) == {"scratch", "spot", "crack"} and all(0.0 <= v <= 1.0 for v in inside.values())
            assert min(inside.values()) <= m["pixel_auroc_in_image"] <= max(inside.values())
    # The curve's "full" scores are the deployed ones: the same numbers dad-edge eval gives.
    assert rows[-1]["max_abs_score_diff_vs_detector"] <= 1e-6



def test_full_scores_carry_the_exposure_correction_as_the_detector_does(tmp_path):
    """A model whose score has a brightness slope: the curve's "full" scores are still dad-edge eval's."""
    lc = _module()
    data, path = model_with_exposure_slope(tmp_path)
    result = tmp_path / "curve.json"
    assert lc.main([str(path.parent), "--data", str(data), "--out", str(result)]) == 0
    rows = json.loads(result.read_text())
    assert rows[-1]["max_abs_score_diff_vs_detector"] <= 1e-6


def test_a_seg_model_curve_has_its_deployed_scores_and_no_reconstruction_rows(tmp_path):
    """--method seg has no x0_ng: "full" is its forward (dad-edge eval's scores), recon / mixed are null."""
    lc = _module()
    data = build_demo_dataset(tmp_path / "data", size=32, n_train=10, n_test_good=4, n_test_per_defect=3)
    out = tmp_path / "seg"
    train(TrainOptions(data=str(data), out=str(out), preset="tiny", model_overrides={"method": "seg"}, epochs=2,
                       batch_size=4, progress=False, device="cpu", snapshot_minutes=1e-6, input_gain=0.3))
    result = tmp_path / "curve.json"
    assert lc.main([str(out), "--data", str(data), "--out", str(result), "--last-only"]) == 0
    rows = json.loads(result.read_text())
    assert [r["method"] for r in rows] == ["seg", "seg"] and rows[-1]["file"].endswith("model.safetensors")
    for row in rows:
        assert row["recon"] is None and row["mixed"] is None
        assert 0.0 <= row["full"]["image_auroc"] <= 1.0 and 0.0 <= row["full"]["au_pro"] <= 1.0
    assert rows[-1]["max_abs_score_diff_vs_detector"] <= 1e-6
