"""Classical baselines (dad_edge/baselines): detectors, the COPOD formula, the artifact, `dad-edge baseline` + eval."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from dad_edge.artifacts.atomic import is_temp_file
from dad_edge.artifacts.metadata import META_KEY
from dad_edge.baselines.artifact import is_baseline_file, load_baseline, save_baseline
from dad_edge.baselines.copod import CopodBaseline, skewness
from dad_edge.baselines.features import STD_FLOOR, PixelFeatures, downsample
from dad_edge.baselines.fit import MIN_TRAIN_IMAGES
from dad_edge.baselines.iforest import IsolationForestBaseline, average_path_length
from dad_edge.baselines.methods import METHODS
from dad_edge.baselines.ocsvm import OneClassSVMBaseline
from dad_edge.cli import main
from dad_edge.data.demo import build_demo_dataset
from dad_edge.data.imageio import read_image
from dad_edge.errors import CheckpointError
from dad_edge.training.metrics import roc_auc
from fs_watch import created_names

REPO = Path(__file__).resolve().parents[1]


def _blobs(seed=0, n_train=200, dim=20):
    """Normal points around 0; test: normal ones, then ones shifted by 4 in every feature."""
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(n_train, dim))
    test = np.concatenate([rng.normal(size=(30, dim)), rng.normal(size=(30, dim)) + 4.0])
    return train, test, np.repeat([0, 1], 30)


def _frames(seed, n, size=24):
    """Gray uint8 frames (size, size + 4, 1) of noise around grey level 100."""
    rng = np.random.default_rng(seed)
    return [np.clip(rng.normal(100, 10, (size, size + 4, 1)), 0, 255).astype(np.uint8) for _ in range(n)]


# -- detectors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_detector_separates_obvious_anomalies(method):
    train, test, labels = _blobs()
    scores = METHODS[method].fit(train, seed=0).score(test)
    assert scores.shape == (60,) and np.isfinite(scores).all()
    assert roc_auc(labels, scores) > 0.99
    assert scores[30:].min() > np.median(scores[:30])  # higher = more anomalous


def test_iforest_numpy_scores_equal_scikit_learn():
    from sklearn.ensemble import IsolationForest

    train, test, _ = _blobs(seed=1, n_train=300)
    ours = IsolationForestBaseline.fit(train, seed=7)
    ref = IsolationForest(n_estimators=100, max_samples=256, max_features=1.0, random_state=7).fit(train)
    np.testing.assert_allclose(ours.score(test), -ref.score_samples(test), rtol=1e-12)
    assert ours.max_samples == 256 and len(ours.roots) == 100


def test_iforest_average_path_length_closed_form():
    # c(n) = 2 H(n-1) - 2 (n-1) / n with H(i) ~ ln(i) + gamma; c(2) = 1 and c(1) = 0 by definition.
    n = np.array([0, 1, 2, 3, 256])
    expected = [0.0, 0.0, 1.0, 2 * (np.log(2) + np.euler_gamma) - 4 / 3,
                2 * (np.log(255) + np.euler_gamma) - 2 * 255 / 256]
    np.testing.assert_allclose(average_path_length(n), expected, rtol=1e-15)


def test_ocsvm_numpy_scores_equal_scikit_learn():
    from sklearn.svm import OneClassSVM

    train, test, _ = _blobs(seed=2)
    ours = OneClassSVMBaseline.fit(train)
    ref = OneClassSVM(kernel="rbf", nu=0.5, gamma="scale").fit(train)
    np.testing.assert_allclose(ours.decision_function(test), ref.decision_function(test), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ours.score(test), -ours.decision_function(test))


def test_copod_against_the_formula_by_hand():
    """n = 4 training rows; feature 0 symmetric (skewness 0: right tail), feature 1 skewed left.
    Tails: U = (1 + #{X <= x}) / 5, V = (1 + #{X >= x}) / 5 (the module docstring)."""
    train = np.array([[1.0, -10.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    copod = CopodBaseline.fit(train)
    assert copod.skew[0] == 0.0 and copod.skew[1] < 0
    x = np.array([[2.5, 0.0], [5.0, -20.0]])
    left, right = copod.tails(x)
    np.testing.assert_allclose(left, [[3 / 5, 5 / 5], [5 / 5, 1 / 5]], rtol=1e-15)
    np.testing.assert_allclose(right, [[3 / 5, 4 / 5], [1 / 5, 5 / 5]], rtol=1e-15)
    # x0: p_l = log 5/3, p_r = log 5/3 + log 5/4, p_s (V0, U1) = log 5/3       -> max = log 25/12
    # x1: p_l = log 5, p_r = log 5, p_s (V0 = 1/5, U1 = 1/5) = 2 log 5         -> max = log 25
    np.testing.assert_allclose(copod.score(x), [np.log(25 / 12), np.log(25)], rtol=1e-14)


def test_copod_skewness_is_the_biased_sample_skewness():
    x = np.array([[0.0, 5.0], [0.0, 5.0], [3.0, 5.0]])
    # column 0: mean 1, deviations (-1, -1, 2): m2 = 2, m3 = 2 -> 2 / 2^1.5; column 1 constant -> 0
    np.testing.assert_allclose(skewness(x), [2 / 2 ** 1.5, 0.0], rtol=1e-15)


# -- features ------------------------------------------------------------------------------------

def test_downsample_averages_areas_and_standardises_with_training_statistics():
    frame = np.zeros((4, 4, 1), np.uint8)
    frame[:2, :2] = 200
    frame[2:, 2:] = 40
    np.testing.assert_array_equal(downsample([frame], 2, 1), [[200.0, 0.0, 0.0, 40.0]])
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 100  # red: gray 29.9 (BT.601)
    np.testing.assert_allclose(downsample([rgb], 2, 1), np.full((1, 4), 29.9), rtol=1e-6)
    frames = _frames(0, 10)
    feats = PixelFeatures.fit(frames, image_size=8, channels=1)
    z = feats(frames)
    assert z.shape == (10, 64)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-9)
    const = [np.full((8, 8, 1), 50, np.uint8)] * 3
    assert (PixelFeatures.fit(const, image_size=8).std == STD_FLOOR).all()  # never a zero division


# -- artifact ------------------------------------------------------------------------------------

def _fitted(method, tmp_path, seed=0):
    frames = _frames(seed, 16)
    feats = PixelFeatures.fit(frames, image_size=8, channels=1)
    detector = METHODS[method].fit(feats(frames), seed=3)
    path = save_baseline(tmp_path / "baseline.safetensors", feats, detector, {"num_images": 16})
    return path, feats, detector


def test_a_save_creates_only_files_a_later_run_can_clean_up(tmp_path):
    # As tests/test_checkpoint.py: no temporary file of safetensors' own (it has no PID in its name).
    names = created_names(tmp_path, lambda: _fitted("copod", tmp_path))
    assert names and all(n == "baseline.safetensors" or is_temp_file(n) for n in names), names


@pytest.mark.parametrize("method", sorted(METHODS))
def test_save_load_gives_identical_scores(method, tmp_path):
    path, feats, detector = _fitted(method, tmp_path)
    test = _frames(5, 6) + [np.full((30, 20, 1), 250, np.uint8)]
    before = detector.score(feats(test))
    loaded = load_baseline(path)
    assert loaded.method == method and is_baseline_file(path)
    np.testing.assert_array_equal(loaded.score(test), before)
    assert before[-1] > before[:-1].max()  # the white frame is the anomaly


def test_scoring_a_baseline_needs_neither_torch_nor_scikit_learn(tmp_path):
    path, _, _ = _fitted("iforest", tmp_path)
    script = ("import sys, numpy as np\n"
              "from dad_edge.baselines.scorer import BaselineScorer\n"
              f"s = BaselineScorer({str(path)!r})\n"
              "maps, scores = s.infer_batch([np.zeros((9, 9, 1), np.uint8)])\n"
              "print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules), maps.shape, scores.shape)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] (1, 8, 8) (1,)"


def _rewrite(src, dst, edit_meta=None, edit_arrays=None):
    with safe_open(str(src), framework="np") as f:
        meta = json.loads(f.metadata()[META_KEY])
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    save_file(arrays, str(dst), metadata={META_KEY: json.dumps(meta)})
    return dst


def _set(section, key, value):
    return lambda meta: meta[section].__setitem__(key, value) if section else meta.__setitem__(key, value)


@pytest.mark.parametrize("damage, message", [
    (lambda src, dst: dst.write_bytes(b"\x00" * 64), "not a readable safetensors file"),
    (lambda src, dst: dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2]), "cut short"),
    (lambda src, dst: save_file({"x": np.zeros(3)}, str(dst)), "not a dad_edge artifact"),
    (lambda src, dst: _rewrite(src, dst, _set(None, "kind", "checkpoint")), "holds a 'checkpoint' artifact"),
    (lambda src, dst: _rewrite(src, dst, _set(None, "format_version", 99)), "upgrade dad_edge"),
    (lambda src, dst: _rewrite(src, dst, _set("baseline", "method", "knn")), "must name a method"),
    (lambda src, dst: _rewrite(src, dst, _set("features", "image_size", 0)), "feature size 0"),
    (lambda src, dst: _rewrite(src, dst, _set("features", "image_size", 9)), "'features.mean'"),
    (lambda src, dst: _rewrite(src, dst, edit_arrays=lambda a: a.pop("iforest.left")), "'left' is missing"),
    (lambda src, dst: _rewrite(src, dst, edit_arrays=lambda a: a["iforest.left"].__setitem__(0, 0)),
     "tree arrays are inconsistent"),
    (lambda src, dst: _rewrite(src, dst, edit_arrays=lambda a: a["features.std"].__setitem__(0, np.nan)),
     "NaN or inf"),
])
def test_a_damaged_or_foreign_file_is_refused_with_a_clear_error(damage, message, tmp_path):
    src, _, _ = _fitted("iforest", tmp_path)
    dst = tmp_path / "bad.safetensors"
    damage(src, dst)
    with pytest.raises(CheckpointError, match="bad.safetensors") as info:
        load_baseline(dst)
    assert message in str(info.value)


# -- command line --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return build_demo_dataset(tmp_path_factory.mktemp("data"), size=32, n_train=12, n_test_good=4,
                              n_test_per_defect=2)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_cli_baseline_then_eval(method, data, tmp_path, capsys):
    assert main(["baseline", "--data", str(data), "--method", method, "--out", str(tmp_path), "--size", "16"]) == 0
    path = tmp_path / "baseline.safetensors"
    assert f"-> {path}" in capsys.readouterr().out
    meta = load_baseline(path).meta
    assert meta["features"] == {"image_size": 16, "channels": 1, "resize": "area", "dim": 256}  # gray demo
    assert meta["training"]["num_images"] == 12

    assert main(["eval", str(path), "--data", str(data), "--json", "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= metrics["image_auroc"] <= 1.0 and metrics["num_images"] == 4 + 3 * 2
    assert all(metrics[k] is None for k in ("pixel_auroc", "au_pro", "pixel_ap", "pixel_f1_max"))
    assert metrics["image_size"] == 16
    # eval's scores are the baseline's own, image by image.
    with open(tmp_path / "eval" / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    own = load_baseline(path).score([read_image(r["path"]) for r in rows])
    np.testing.assert_array_equal([float(r["score"]) for r in rows], own)

    assert main(["eval", str(path), "--data", str(data)]) == 0
    table = capsys.readouterr().out
    row = next(line for line in table.splitlines() if line.startswith("all")).split()
    # all, image AUROC, pixel AUROC, AU-PRO, pixel AP, F1-max, pixel AUROC in image, images
    assert row[2:5] == ["-", "-", "-"] and float(row[1]) >= 0 and row[6] == "-" and row[7] == "10"
    assert "Traceback" not in table
    # The report line names only what was written: a baseline has no maps, so no overlays.
    assert main(["eval", str(path), "--data", str(data), "--out", str(tmp_path / "eval2")]) == 0
    report = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("report:"))
    assert "overlays" not in report and not (tmp_path / "eval2" / "overlays").exists()
    assert "roc.png" in report and (tmp_path / "eval2" / "roc.png").is_file()
    # A Detector refuses it with a message that says how to score it.
    from dad_edge import Detector
    from dad_edge.errors import CheckpointError
    with pytest.raises(CheckpointError, match="classical baseline.*dad-edge eval"):
        Detector(path)


def _one_line_error(code, err, *must_contain):
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for text in must_contain:
        assert text in lines[0], (text, err)


def test_cli_bad_inputs_are_one_line_errors(data, tmp_path, capsys):
    code = main(["baseline", "--data", str(data), "--method", "knn", "--out", str(tmp_path)])
    _one_line_error(code, capsys.readouterr().err, "dad-edge baseline: error:", "'knn'", "copod, iforest, ocsvm")
    code = main(["baseline", "--data", str(tmp_path), "--method", "copod", "--out", str(tmp_path / "o")])
    _one_line_error(code, capsys.readouterr().err, str(tmp_path), "train/good")
    few = build_demo_dataset(tmp_path / "few", size=32, n_train=MIN_TRAIN_IMAGES - 1, n_test_good=1,
                             n_test_per_defect=1)
    code = main(["baseline", "--data", str(few), "--method", "copod", "--out", str(tmp_path / "o")])
    _one_line_error(code, capsys.readouterr().err, f"{MIN_TRAIN_IMAGES - 1} images", f"at least {MIN_TRAIN_IMAGES}")
    taken = tmp_path / "taken"
    taken.write_text("a file")
    code = main(["baseline", "--data", str(data), "--method", "copod", "--out", str(taken / "run")])
    _one_line_error(code, capsys.readouterr().err, str(taken), "is a file")
    assert not (tmp_path / "o").exists()  # nothing written on a refused run


def test_eval_of_a_baseline_refuses_backend_options(data, tmp_path, capsys):
    assert main(["baseline", "--data", str(data), "--method", "copod", "--out", str(tmp_path), "--size", "8"]) == 0
    capsys.readouterr()
    code = main(["eval", str(tmp_path / "baseline.safetensors"), "--data", str(data), "--backend", "onnxruntime"])
    _one_line_error(code, capsys.readouterr().err, "is a baseline", "--backend")
