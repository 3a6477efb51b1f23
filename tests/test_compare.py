"""`dad-edge compare` end to end through the CLI, at tiny budgets: the table, its files, the runs
it leaves, and one-line errors for bad input."""
import contextlib
import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors import safe_open

from dad_edge import Detector
from dad_edge.cli import main
from dad_edge.data.demo import build_demo_dataset
from dad_edge.data.imageio import write_image
from dad_edge.model.config import preset
from dad_edge.model.info import model_info
from dad_edge.training.compare_report import CLASSICAL_COLOUR, MODEL_COLOUR, bar_chart
from dad_edge.training.evaluate import evaluate_model
from dad_edge.training.recipe import resolve_recipe

METHODS = ["diffusionad", "recon", "dit", "seg", "iforest", "ocsvm", "copod"]
TINY = ["--epochs", "1", "--preset", "tiny", "--image-size", "32"]


def run_cli(argv):
    """(exit code, stdout, stderr) of `dad-edge ARGV`."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def markdown_rows(text):
    """The Markdown table in `text` as a list of cell lists, header first (the --- line dropped)."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    code, stdout, stderr = run_cli(["compare", "--data", "digits", "--methods", ",".join(METHODS),
                                    "--classes", "0,1", "--max-test", "10", "--out", str(out)] + TINY)
    assert code == 0, stderr
    return out, stdout, json.loads((out / "compare.json").read_text())


def test_table_has_a_row_per_method_and_the_files_agree_with_it(digits):
    out, stdout, report = digits
    table = markdown_rows(stdout)
    header, rows = table[0], table[1:]
    assert header == ["method", "AUROC 0", "AUROC 1", "mean AUROC", "train s", "latency ms", "params M", "GFLOPs",
                      "model file"]
    assert [r[0] for r in rows] == METHODS
    assert report["columns"] == header and [r["method"] for r in report["rows"]] == METHODS
    with open(out / "compare.csv", newline="") as f:
        csv_rows = list(csv.reader(f))
    assert csv_rows[0] == header
    decimals = {"train s": 1, "latency ms": 2}
    for printed, saved, row in zip(rows, csv_rows[1:], report["rows"]):
        for column, cell, csv_cell in zip(header, printed, saved):
            value = row[column]
            if column in ("method", "model file"):
                assert cell == csv_cell == value
            elif value is None:  # a baseline's GFLOPs
                assert (cell, csv_cell) == ("-", "") and row["method"] in ("iforest", "ocsvm", "copod")
            else:
                assert float(csv_cell) == value
                if column in ("params M", "GFLOPs"):
                    assert float(cell) == pytest.approx(value, rel=5e-3)  # 3 significant digits
                else:
                    assert float(cell) == round(value, decimals.get(column, 3))
    assert "machine: " in stdout and report["machine"] in stdout and "cores" in report["machine"]


def test_each_run_loads_and_its_auroc_is_evaluate_models(digits):
    out, _, report = digits
    assert [(r["normal_class"], r["method"]) for r in report["runs"]] == [(c, m) for c in "01" for m in METHODS]
    rows = {r["method"]: r for r in report["rows"]}
    for run in report["runs"]:
        path, method = Path(run["path"]), run["method"]
        assert path.parent == out / "runs" / run["normal_class"] / method
        if method in ("diffusionad", "recon", "dit", "seg"):
            with Detector(path) as det:  # the table's method is the model's own
                assert (det.config.method, det.config.backbone) == {
                    "diffusionad": ("diffusionad", "unet"), "recon": ("recon", "unet"), "dit": ("diffusionad", "dit"),
                    "seg": ("seg", "unet"),  # no eps-predictor: the config's backbone field at its default
                }[method]
        metrics = evaluate_model(path, run["data"])
        assert run["image_auroc"] == metrics["image_auroc"]
        assert rows[method]["AUROC " + run["normal_class"]] == metrics["image_auroc"]
        assert run["latency_ms"] > 0 and run["train_s"] > 0
    for method, row in rows.items():
        assert row["mean AUROC"] == pytest.approx((row["AUROC 0"] + row["AUROC 1"]) / 2)


def test_test_sets_are_the_normal_class_against_the_capped_others(digits):
    out, _, _ = digits
    test = out / "data" / "0" / "test"
    others = sorted(p.name for p in test.iterdir() if p.name != "good")
    assert others == [str(d) for d in range(1, 10)]
    assert sum(len(list((test / o).iterdir())) for o in others) == 10  # --max-test
    assert len(list((out / "data" / "0" / "train" / "good").iterdir())) > 100  # every training image of class 0


def test_params_and_gflops_are_the_networks_and_the_baselines_stored_numbers(digits):
    _, _, report = digits
    rows = {r["method"]: r for r in report["rows"]}
    recipe = resolve_recipe("tiny", 32, "cpu", image_size=32)
    # The CPU recipe's segmentation input and the map's reconstruction-error term.
    seg = {"seg_stride": recipe.seg_stride, "recon_weight": recipe.recon_weight}
    for method, name, overrides in (("diffusionad", "tiny", seg), ("dit", "tiny-dit", seg),
                                    ("recon", "tiny", {"method": "recon"})):
        info = model_info(preset(name, channels=1, image_size=32, **overrides))
        assert rows[method]["params M"] == info["params"] / 1e6
        assert rows[method]["GFLOPs"] == pytest.approx(info["gflops"])
    assert rows["recon"]["params M"] < rows["diffusionad"]["params M"]  # no segmentation net
    for method in ("iforest", "ocsvm", "copod"):
        run = next(r for r in report["runs"] if r["method"] == method)
        with safe_open(run["path"], framework="np") as f:
            stored = sum(f.get_tensor(k).size for k in f.keys())
        assert rows[method]["params M"] == stored / 1e6 and rows[method]["GFLOPs"] is None


def test_chart_draws_one_bar_per_method_as_long_as_its_mean_auroc(digits):
    out, _, report = digits
    chart = cv2.imread(str(out / "compare.png"))
    values = [r["mean AUROC"] for r in report["rows"]]
    assert chart is not None and chart.shape == bar_chart(METHODS, values, "title").shape
    # In each bar's middle row the bar-coloured pixels run from the axis to the value's share of it.
    axis = 640 - 130 - 60
    for k, (method, value) in enumerate(zip(METHODS, values)):
        colour = MODEL_COLOUR if method in ("diffusionad", "recon", "dit", "seg") else CLASSICAL_COLOUR
        row = chart[56 + k * 40 + 14]
        drawn = np.flatnonzero(np.all(row == colour, axis=1))
        assert drawn[0] in (130, 131)  # 130: the axis line, drawn over the bar
        assert abs(drawn[-1] - (130 + value * axis)) <= 1 and len(drawn) == drawn[-1] - drawn[0] + 1


def test_a_category_gets_pixel_metrics_where_the_method_has_maps(tmp_path):
    data = build_demo_dataset(tmp_path / "data", size=32, n_train=12, n_test_good=4, n_test_per_defect=2)
    out = tmp_path / "cmp"
    code, stdout, stderr = run_cli(["compare", "--data", str(data), "--methods", "diffusionad,iforest",
                                    "--out", str(out)] + TINY)
    assert code == 0, stderr
    header, *rows = markdown_rows(stdout)
    assert header[1:6] == [f"AUROC {data.name}", "mean AUROC", "pixel AUROC", "AU-PRO", "train s"]
    report = json.loads((out / "compare.json").read_text())
    model, baseline = report["rows"]
    run = report["runs"][0]
    assert Path(run["path"]) == out / "runs" / data.name / "diffusionad" / "model.safetensors"
    metrics = evaluate_model(run["path"], data)
    assert model["pixel AUROC"] == metrics["pixel_auroc"] and model["AU-PRO"] == metrics["au_pro"]
    assert baseline["pixel AUROC"] is None and rows[1][header.index("pixel AUROC")] == "-"
    assert model["model file"].endswith(f"runs/{data.name}/diffusionad/model.safetensors")  # the one file, no <class>
    assert not (out / "data").exists()  # a category is read where it is


def _one_line_error(argv, *fragments):
    code, stdout, stderr = run_cli(argv)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("dad-edge compare: error: ")
    for fragment in fragments:
        assert fragment in stderr


def test_bad_input_is_one_line_naming_the_value(tmp_path):
    out = tmp_path / "cmp"
    base = ["compare", "--data", "digits", "--out", str(out)]
    _one_line_error(base + ["--methods", "diffusionad,svdd"] + TINY, "'svdd'", "iforest, ocsvm, copod")
    _one_line_error(base + ["--methods", "iforest,iforest"], "twice")
    _one_line_error(base + ["--methods", "iforest", "--classes", "0,11"], "'11'", "0, 1, 2")
    _one_line_error(base + ["--methods", "diffusionad,iforest"], "--minutes or --epochs")
    _one_line_error(base + ["--methods", "diffusionad", "--epochs", "1", "--preset", "huge"], "'huge'")
    (tmp_path / "file").write_text("x")
    _one_line_error(["compare", "--data", "digits", "--out", str(tmp_path / "file" / "cmp"),
                     "--methods", "iforest"], str(tmp_path / "file"))
    _one_line_error(["compare", "--data", str(tmp_path / "nowhere"), "--out", str(out), "--methods", "iforest"],
                    str(tmp_path / "nowhere"), "no such folder")
    assert not out.exists()  # every check ran before anything was written

    one_class = tmp_path / "shapes"
    write_image(one_class / "circle" / "a.png", np.zeros((8, 8, 3), np.uint8))
    _one_line_error(["compare", "--data", str(one_class), "--out", str(out), "--methods", "iforest"],
                    str(one_class), "1 class folder", "circle")

    category = build_demo_dataset(tmp_path / "demo", size=32, n_train=12, n_test_good=1, n_test_per_defect=1)
    _one_line_error(["compare", "--data", str(category), "--out", str(out), "--methods", "iforest",
                     "--classes", "a"], "--classes", str(category))
