"""The Python API (#15 part 5): dad_edge.train / evaluate / export / benchmark on a tiny run, and the
`dad-edge benchmark` command (part 6), which runs the same code as dad_edge.benchmark."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dad_edge
from dad_edge.cli import main
from dad_edge.data.demo import build_demo_dataset
from dad_edge.errors import ConfigError
from dad_edge.export.metadata_io import read_metadata
from dad_edge.training.evaluate import evaluate_model

REPO = Path(__file__).resolve().parents[1]
ROW_KEYS = {"batch", "p50_ms", "p99_ms", "images_per_s", "calls"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny model trained through dad_edge.train on the demo data (a few seconds)."""
    tmp = tmp_path_factory.mktemp("api")
    data = build_demo_dataset(tmp / "data", size=32, n_train=12, n_test_good=4, n_test_per_defect=3)
    model = dad_edge.train(data, tmp / "run", preset="tiny", epochs=1, batch_size=4, device="cpu", progress=False)
    return data, model, tmp


def test_train_returns_the_model_file(run):
    _, model, tmp = run
    assert model == tmp / "run" / "model.safetensors" and model.is_file()
    det = dad_edge.Detector(model, device="cpu")
    assert det.config.image_size == 32 and det.thresholds.image is not None  # trained and thresholded


def test_evaluate_returns_the_metrics_evaluate_model_gives(run):
    data, model, _ = run
    metrics = dad_edge.evaluate(model, data, device="cpu")
    assert metrics == evaluate_model(model, data, device="cpu")  # the command's own function
    assert 0 <= metrics["image_auroc"] <= 1 and set(metrics["per_type"]) == {"crack", "scratch", "spot"}
    good_bad = dad_edge.evaluate(model, good=data / "test" / "good", bad=data / "test" / "crack", device="cpu")
    assert good_bad["image_auroc"] == metrics["per_type"]["crack"]["image_auroc"]  # the same images, no masks
    assert good_bad["pixel_auroc"] is None and "image-level" in good_bad["image_level_only"]
    with pytest.raises(ConfigError, match="data=DIR, or good=DIR and bad=DIR"):
        dad_edge.evaluate(model, good=data / "test" / "good")


def test_export_onnx_scores_as_the_checkpoint(run):
    data, model, tmp = run
    onnx = dad_edge.export(model, format="onnx")
    assert onnx == model.with_suffix(".onnx") and onnx.is_file()
    other = dad_edge.export(model, format="onnx", out=tmp / "opset18.onnx", opset=18)  # flags as keywords
    assert read_metadata(other)["export"]["opset"] == 18 and read_metadata(onnx)["export"]["opset"] == 17
    images = sorted((data / "test" / "crack").glob("*.png"))
    by_ckpt = dad_edge.Detector(model, device="cpu")(images)
    for path in (onnx, other):
        by_onnx = dad_edge.Detector(path)(images)
        assert max(abs(a.score - b.score) for a, b in zip(by_ckpt, by_onnx)) < 1e-5
    with pytest.raises(ConfigError, match="unrecognized arguments: --colour"):
        dad_edge.export(model, format="onnx", out=tmp / "x.onnx", colour="red")
    with pytest.raises(ConfigError, match="--format engine builds from"):
        dad_edge.export(tmp / "x.txt", format="engine", out=tmp / "x.plan")


def test_benchmark_rows(run):
    _, model, _ = run
    onnx = model.with_suffix(".onnx")
    if not onnx.is_file():
        dad_edge.export(model, format="onnx")
    report = dad_edge.benchmark(onnx, batch=[1, 3], seconds=0.05, warmup=1, min_calls=3)
    assert report["backend"] == "onnxruntime" and report["precision"] == "fp32"
    assert [r["batch"] for r in report["rows"]] == [1, 3]
    for r in report["rows"]:
        assert set(r) == ROW_KEYS and r["calls"] >= 3
        assert 0 < r["p50_ms"] <= r["p99_ms"]
        # images/s is frames over wall time: at most batch / fastest call, at least batch / slowest p99-ish
        assert r["images_per_s"] <= r["batch"] / (r["p50_ms"] / 1e3) * r["calls"]
        assert r["images_per_s"] > 0
    assert report["machine"]["cores"] >= 1 and report["input"][1:] == [32, 32]
    framed = dad_edge.benchmark(onnx, frame_size=(48, 64), seconds=0.01, warmup=0, min_calls=2)
    assert framed["frame"][:2] == [48, 64]
    for bad in ([0], [], [1.5]):
        with pytest.raises(ConfigError, match="positive integers"):
            dad_edge.benchmark(onnx, batch=bad)


def test_benchmark_command_table_and_json(run, tmp_path, capsys):
    _, model, _ = run
    onnx = model.with_suffix(".onnx")
    if not onnx.is_file():
        dad_edge.export(model, format="onnx")
    out = tmp_path / "bench.json"
    assert main(["benchmark", str(onnx), "--batch", "1", "2", "--seconds", "0.05", "--warmup", "1",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "p50 ms" in printed and "images/s" in printed and "onnxruntime" in printed
    report = json.loads(out.read_text())
    assert [r["batch"] for r in report["rows"]] == [1, 2] and set(report["rows"][0]) == ROW_KEYS
    # The table shows the JSON's figures.
    row = report["rows"][1]
    assert f"{row['p50_ms']:.2f}" in printed and f"{row['images_per_s']:.1f}" in printed
    assert {"cpu", "cores", "platform", "python"} <= set(report["machine"])
    assert main(["benchmark", str(tmp_path / "missing.onnx")]) == 2
    assert "missing.onnx" in capsys.readouterr().err


def test_import_stays_light_and_typed():
    script = ("import sys, dad_edge\n"
              "names = [dad_edge.train, dad_edge.evaluate, dad_edge.benchmark, dad_edge.export]\n"
              "assert all(callable(n) for n in names)\n"
              "import dad_edge.export.metadata_io\n"  # a submodule import keeps the export function callable
              "assert callable(dad_edge.export)\n"
              "print(sorted(m for m in ('torch', 'onnxruntime', 'tqdm') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert (REPO / "dad_edge" / "py.typed").is_file()
    for fn in (dad_edge.train, dad_edge.evaluate, dad_edge.benchmark, dad_edge.export):
        doc = fn.__doc__ or fn.__call__.__doc__
        assert "dad_edge." in doc  # an example each


def test_frames_of_the_api_are_numpy_too(run):
    """The Detector the API's models load into takes arrays: the README's first lines work."""
    data, model, _ = run
    frame = np.zeros((40, 50, 3), np.uint8)
    r = dad_edge.Detector(model.with_suffix(".onnx") if model.with_suffix(".onnx").is_file() else model)(frame)
    assert r.anomaly_map.shape == (40, 50)
