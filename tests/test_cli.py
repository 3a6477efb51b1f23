import contextlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dad_edge.cli import main
from dad_edge.data.demo import build_demo_dataset

METRIC_KEYS = ("image_auroc", "pixel_auroc", "au_pro", "pixel_ap", "f1_max")
DEFECTS = ("crack", "scratch", "spot")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_demo_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=12, n_test_good=4,
                              n_test_per_defect=3)


@pytest.fixture(scope="module")
def model(data, tmp_path_factory) -> Path:
    """A tiny model trained through the CLI itself."""
    out = tmp_path_factory.mktemp("run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["train", "--data", str(data), "--out", str(out), "--preset", "tiny", "--epochs", "1",
                     "--batch-size", "4", "--device", "cpu", "--quiet"])
    assert code == 0
    path = out / "model.safetensors"
    assert path.is_file()
    assert printed.getvalue().strip() == f"model: {path}"  # --quiet: the result only
    return path


def _one_line_error(err: str, *must_contain: str) -> None:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for text in must_contain:
        assert text in lines[0], (text, err)


def test_train_on_a_folder_without_train_good(model, capsys):
    code = main(["train", "--data", str(model.parent), "--out", str(model.parent), "--preset", "tiny",
                 "--epochs", "1", "--quiet"])
    assert code == 2
    _one_line_error(capsys.readouterr().err, "dad-edge train: error:", str(model.parent), "train/good")


def test_train_out_that_is_a_file_exits_2_naming_it(data, tmp_path, capsys):
    """An existing file as --out (or a file among its parents) is a one-line error, before any data is read."""
    taken = tmp_path / "model.safetensors"
    taken.write_bytes(b"not a folder")
    for out in (taken, taken / "run"):
        code = main(["train", "--data", str(data), "--out", str(out), "--preset", "tiny", "--epochs", "1",
                     "--device", "cpu", "--quiet"])
        assert code == 2
        _one_line_error(capsys.readouterr().err, "dad-edge train: error:", str(taken), "is a file")
    assert taken.read_bytes() == b"not a folder"  # left as it was


def test_eval_says_which_defect_folders_lack_masks(model, data, tmp_path, capsys):
    """Without ground truth for some defect folders the pixel metrics are left out, and eval says why."""
    partial = tmp_path / "partial"
    shutil.copytree(data, partial)
    shutil.rmtree(partial / "ground_truth" / "crack")
    shutil.rmtree(partial / "ground_truth" / "spot")
    assert main(["eval", str(model), "--data", str(partial), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    note = [line for line in printed.splitlines() if line.startswith("pixel metrics not computed")]
    assert len(note) == 1, printed
    assert "6 defect images" in note[0]
    assert f"{partial / 'test' / 'crack'} (3)" in note[0] and f"{partial / 'test' / 'spot'} (3)" in note[0]
    assert "scratch" not in note[0]
    assert main(["eval", str(model), "--data", str(partial), "--device", "cpu", "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["pixel_auroc"] is None and m["image_auroc"] is not None
    assert m["images_without_masks"] == {str(partial / "test" / "crack"): 3, str(partial / "test" / "spot"): 3}
    # With every mask present there is no such note.
    assert main(["eval", str(model), "--data", str(data), "--device", "cpu"]) == 0
    assert "pixel metrics not computed" not in capsys.readouterr().out


def test_info_paper_json(capsys):
    assert main(["info", "--preset", "paper", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    info = json.loads(out[0])
    assert info["model"] == "paper"
    assert 155e6 < info["params"] < 165e6
    assert abs(info["params_unet"] - 131.7e6) < 0.01 * 131.7e6
    assert 1000 < info["gflops"] < 1500
    assert info["config"]["image_size"] == 256 and info["config"]["top_k"] == 50


def test_info_text_and_overrides(capsys):
    assert main(["info", "--preset", "compact", "--image-size", "128", "--channels", "1"]) == 0
    out = capsys.readouterr().out
    assert "compact:" in out and "M parameters" in out and "GFLOPs per 128x128 image" in out


def test_info_of_a_model_file(model, capsys):
    assert main(["info", str(model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == str(model)
    assert info["image_size"] == 32 and info["channels"] == 1
    assert 0 < info["params"] < 1e6


def test_unknown_preset_exits_2_naming_it(capsys):
    assert main(["info", "--preset", "gigantic"]) == 2
    _one_line_error(capsys.readouterr().err, "gigantic", "compact")


def test_train_unknown_preset_exits_2(data, tmp_path, capsys):
    assert main(["train", "--data", str(data), "--out", str(tmp_path), "--preset", "gigantic", "--epochs", "1"]) == 2
    _one_line_error(capsys.readouterr().err, "gigantic")


def test_train_missing_folder_exits_2(tmp_path, capsys):
    missing = tmp_path / "no_such_category"
    code = main(["train", "--data", str(missing), "--out", str(tmp_path / "out"), "--preset", "tiny",
                 "--epochs", "1"])
    assert code == 2
    captured = capsys.readouterr()
    _one_line_error(captured.err, str(missing), "no such folder")
    assert not (tmp_path / "out").exists()


def test_train_on_a_single_image_exits_2(tmp_path, capsys):
    """Nothing can be held out of one image: a one-line data error, not a numpy traceback."""
    one = build_demo_dataset(tmp_path / "one", size=32, n_train=1, n_test_good=1, n_test_per_defect=1)
    code = main(["train", "--data", str(one), "--out", str(tmp_path / "out"), "--preset", "tiny", "--epochs", "1",
                 "--quiet"])
    assert code == 2
    _one_line_error(capsys.readouterr().err, str(one / "train" / "good"), "at least 2")


def test_train_without_stop_exits_2(data, tmp_path, capsys):
    assert main(["train", "--data", str(data), "--out", str(tmp_path), "--preset", "tiny"]) == 2
    _one_line_error(capsys.readouterr().err, "--epochs or --minutes")


def test_argparse_errors_exit_2(capsys):
    for argv in (["train", "--out", "x", "--epochs", "1"], ["train", "--data", "d", "--out", "o", "--epochs", "0"],
                 ["info", "--channels", "2"], ["bogus"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv
    capsys.readouterr()


def test_eval_missing_model_exits_2(data, tmp_path, capsys):
    missing = tmp_path / "model.safetensors"
    assert main(["eval", str(missing), "--data", str(data), "--json"]) == 2
    captured = capsys.readouterr()
    _one_line_error(captured.err, str(missing))
    assert captured.out == ""


def _check_metric_set(m):
    for k in METRIC_KEYS:
        assert k in m
        assert m[k] is None or (isinstance(m[k], float) and 0 <= m[k] <= 1), (k, m[k])


def test_eval_json(model, data, capsys):
    assert main(["eval", str(model), "--data", str(data), "--json", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # nothing but the JSON object on stdout
    m = json.loads(lines[0])
    assert isinstance(m, dict)
    _check_metric_set(m)
    # Both classes and pixel ground truth exist: every top-level metric is defined.
    assert all(m[k] is not None for k in METRIC_KEYS)
    assert sorted(m["per_type"]) == list(DEFECTS)
    for t in DEFECTS:
        _check_metric_set(m["per_type"][t])
    assert m["image_size"] == 32 and Path(m["data"]) == data.resolve()


def test_eval_out_writes_report(model, data, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["eval", str(model), "--data", str(data), "--out", str(out), "--batch-size", "5",
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "image_auroc" in printed and "metrics.json" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    _check_metric_set(metrics)
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    overlays = out / "overlays"
    assert sorted(p.name for p in overlays.iterdir()) == sorted(("good",) + DEFECTS)
    assert len(list((overlays / "good").glob("*.png"))) == 4
    for t in DEFECTS:
        assert len(list((overlays / t).glob("*.png"))) == 3
    # The same numbers as --json (batching does not change them).
    assert main(["eval", str(model), "--data", str(data), "--json", "--device", "cpu"]) == 0
    again = json.loads(capsys.readouterr().out)
    for k in METRIC_KEYS:
        assert again[k] == pytest.approx(metrics[k], abs=1e-6)


def test_help_in_a_subprocess():
    exe = shutil.which("dad-edge")
    cmd = [exe] if exe else [sys.executable, "-m", "dad_edge"]
    r = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for sub in ("demo", "train", "eval", "info"):
        assert sub in r.stdout
    r = subprocess.run([sys.executable, "-m", "dad_edge", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("dad_edge ")
    r = subprocess.run([sys.executable, "-m", "dad_edge", "info", "--preset", "nope"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    _one_line_error(r.stderr, "'nope'")


def test_demo_end_to_end(tmp_path, capsys):
    """The demo: 128 px real photos, compact preset, a few seconds of training, a report."""
    out = tmp_path / "demo"
    t0 = time.time()
    assert main(["demo", "--minutes", "0.05", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    seconds = time.time() - t0
    printed = capsys.readouterr().out
    assert "[3/3]" in printed and "done in" in printed
    assert (out / "model" / "model.safetensors").is_file()
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    _check_metric_set(metrics)
    assert metrics["image_size"] == 128
    assert (out / "report" / "roc.png").is_file()
    assert any((out / "report" / "overlays").rglob("*.png"))
    assert seconds < 120, f"demo took {seconds:.0f} s"
