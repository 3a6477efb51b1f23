"""`dad-edge eval` scores are the Detector's scores: evaluation runs through Detector.infer_batch."""
import csv
import json

import numpy as np
import pytest

import dad_edge
from dad_edge.cli import main
from dad_edge.export.onnx_export import export_onnx
from dad_edge.model.config import preset
from dad_edge.training.metrics import roc_auc
from deploy_support import write_category, write_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A random tiny gray checkpoint, its ONNX export and a tiny MVTec-layout category (48x40 images)."""
    tmp = tmp_path_factory.mktemp("evalparity")
    ckpt = write_checkpoint(tmp / "m.safetensors", preset("tiny", channels=1), seed=6, std=0.15)
    export_onnx(ckpt, tmp / "m.onnx")
    return {"checkpoint": ckpt, "onnx": tmp / "m.onnx"}, write_category(tmp / "category", n_good=7, n_bad=6)


def _eval_cli(model, data, out, capsys, *extra):
    assert main(["eval", str(model), "--data", str(data), "--out", str(out), "--json", "--device", "cpu",
                 *extra]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return metrics, rows


@pytest.mark.parametrize("kind", ["checkpoint", "onnx"])
def test_eval_cli_scores_are_the_detectors(models, kind, tmp_path, capsys):
    paths, data = models
    model = paths[kind]
    metrics, rows = _eval_cli(model, data, tmp_path / "eval", capsys)
    assert len(rows) == metrics["num_images"] == 13
    files = [r["path"] for r in rows]
    eval_scores = np.array([float(r["score"]) for r in rows])
    assert eval_scores.std() > 1e-4  # the random model tells images apart: the comparison means something

    # The Detector as a user runs it (its default batch of 8, against eval's 16).
    with dad_edge.Detector(model, device="cpu") as det:
        results = det(files)
    assert all(r.ok for r in results)
    det_scores = np.array([r.score for r in results])
    print(f"\n{kind}: max |eval - Detector| over {len(files)} images {np.abs(eval_scores - det_scores).max():.1e}")
    assert np.abs(eval_scores - det_scores).max() <= 1e-6
    # With eval's batch size the two are the same calls: bit for bit.
    with dad_edge.Detector(model, device="cpu", batch_size=16) as det:
        assert np.array_equal(eval_scores, np.array([r.score for r in det(files)], dtype=np.float64))
    # And the image metrics are those of the Detector's scores.
    labels = [int(r["label"]) for r in rows]
    assert metrics["image_auroc"] == pytest.approx(roc_auc(labels, det_scores), abs=1e-12)
    assert sorted({r["defect_type"] for r in rows}) == ["good", "spot"]


def test_eval_batch_size_does_not_change_scores(models, tmp_path, capsys):
    paths, data = models
    _, big = _eval_cli(paths["onnx"], data, tmp_path / "a", capsys)
    _, small = _eval_cli(paths["onnx"], data, tmp_path / "b", capsys, "--batch-size", "3")
    assert [r["path"] for r in big] == [r["path"] for r in small]
    diff = max(abs(float(a["score"]) - float(b["score"])) for a, b in zip(big, small))
    assert diff <= 1e-6


@pytest.mark.parametrize("kind", ["checkpoint", "onnx"])
def test_detectors_and_backends_close_through_with(models, kind):
    from dad_edge.errors import BackendError, ConfigError
    from dad_edge.runtime.backends import load_backend

    paths, data = models
    frame = np.zeros((40, 48, 1), np.uint8)
    with dad_edge.Detector(paths[kind], device="cpu") as det:
        det.infer_batch([frame])
    assert det.closed
    with pytest.raises(ConfigError, match="is closed"):
        det.infer_batch([frame])
    det.close()  # a second close does nothing
    with load_backend(paths[kind], device="cpu") as backend:
        backend.run([frame], "RGB")
    with pytest.raises(BackendError, match="closed"):
        backend.run([frame], "RGB")
