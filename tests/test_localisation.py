"""Each defect image's own pixel AUROC (dad_edge/training/localisation.py) and its place in `dad-edge eval`."""
import csv
import json

import numpy as np
import pytest

from dad_edge.cli import main
from dad_edge.model.config import preset
from dad_edge.training.localisation import add_in_image_auroc, in_image_auroc
from dad_edge.training.metrics import compute_metrics
from deploy_support import write_category, write_checkpoint


def pairwise_auroc(mask: np.ndarray, heat: np.ndarray) -> float:
    """Every (defect pixel, other pixel) pair: 1 when the defect scores higher, 1/2 for a tie."""
    pos, neg = heat[mask != 0], heat[mask == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def test_each_image_against_every_pair_of_its_pixels():
    rng = np.random.default_rng(3)
    masks = rng.random((5, 9, 7)) < 0.3
    maps = np.round(rng.random((5, 9, 7)) + 0.6 * masks, 1).astype(np.float32)  # rounded: ties on purpose
    masks[1] = False  # a good image
    masks[3] = True  # all defect: no pixel to compare with
    got = in_image_auroc(masks, maps)
    assert np.isnan(got[1]) and np.isnan(got[3])
    for i in (0, 2, 4):
        assert got[i] == pytest.approx(pairwise_auroc(masks[i], maps[i]), abs=1e-12)


def test_found_in_every_image_but_at_levels_no_threshold_separates():
    """The map finds each defect (in-image 1.0) while its level moves between images, so the pooled
    pixel AUROC is lower: the case the in-image figure exists to tell apart."""
    masks = np.zeros((4, 8, 8), bool)
    masks[2:, 2:5, 2:5] = True  # images 2, 3 defective
    maps = np.zeros((4, 8, 8), np.float32) + np.array([0.5, 0.6, 0.0, 0.1], np.float32)[:, None, None]
    maps[masks] += 0.3  # defects at 0.3 / 0.4: above their own image, below the good images
    values = in_image_auroc(masks, maps)
    metrics = compute_metrics([0, 0, 1, 1], maps.max(axis=(1, 2)), masks, maps, ["good", "good", "cut", "cut"])
    add_in_image_auroc(metrics, values, ["good", "good", "cut", "cut"])
    assert metrics["pixel_auroc_in_image"] == 1.0 == metrics["per_type"]["cut"]["pixel_auroc_in_image"]
    assert metrics["pixel_auroc"] < 0.8


def test_mean_per_type_and_none_without_masks():
    values = np.array([np.nan, 0.5, 0.9, 0.7, np.nan])
    types = ["good", "cut", "cut", "hole", "hole"]
    metrics = {"per_type": {"cut": {}, "hole": {}}}
    add_in_image_auroc(metrics, values, types)
    assert metrics["pixel_auroc_in_image"] == pytest.approx(0.7)
    assert metrics["per_type"]["cut"]["pixel_auroc_in_image"] == pytest.approx(0.7)
    assert metrics["per_type"]["hole"]["pixel_auroc_in_image"] == pytest.approx(0.7)
    empty = {"per_type": {"cut": {}}}
    add_in_image_auroc(empty, np.full(2, np.nan), ["good", "cut"])
    assert empty["pixel_auroc_in_image"] is None and empty["per_type"]["cut"]["pixel_auroc_in_image"] is None
    with pytest.raises(ValueError, match="lengths differ"):
        add_in_image_auroc({}, values, types[:3])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        in_image_auroc(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))


def test_eval_reports_it_per_type_and_per_image(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "m.safetensors", preset("tiny", channels=1), seed=6, std=0.15)
    data = write_category(tmp_path / "category", n_good=5, n_bad=4)
    out = tmp_path / "eval"
    assert main(["eval", str(ckpt), "--data", str(data), "--out", str(out), "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["pixel_auroc_in_image"] == "" for r in rows if r["label"] == "0")
    defect_rows = [r for r in rows if r["label"] == "1"]
    assert defect_rows and all(0.0 <= float(r["pixel_auroc_in_image"]) <= 1.0 for r in defect_rows)
    for name, entry in metrics["per_type"].items():
        own = [float(r["pixel_auroc_in_image"]) for r in defect_rows if r["defect_type"] == name]
        assert entry["pixel_auroc_in_image"] == pytest.approx(np.mean(own), abs=1e-6)
    assert metrics["pixel_auroc_in_image"] == pytest.approx(
        np.mean([float(r["pixel_auroc_in_image"]) for r in defect_rows]), abs=1e-6)
    # The table shows it as its own column, in percent.
    assert main(["eval", str(ckpt), "--data", str(data), "--device", "cpu", "--quiet"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "px_in_image" in table[0]
    row = next(line for line in table if line.startswith("all")).split()
    assert float(row[6]) == pytest.approx(100 * metrics["pixel_auroc_in_image"], abs=0.006)
