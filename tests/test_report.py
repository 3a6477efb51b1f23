"""`dad-edge eval --report`: the HTML inspection report, checked as data and as a browser shows it."""
import base64
import contextlib
import csv
import io
import json
import sys
from html.parser import HTMLParser

import cv2
import numpy as np
import pytest

from chromium_support import load, needs_chromium, not_blank
from deploy_support import write_checkpoint
from dad_edge.artifacts import metadata as md
from dad_edge.cli import main
from dad_edge.data.demo import build_demo_dataset
from dad_edge.model.config import preset
from dad_edge.report.curves import pro_curve, roc_and_pr
from dad_edge.report.page import METRIC_COLUMNS, SECTIONS
from dad_edge.training.metrics import au_pro

pytest.importorskip("matplotlib")

N_GOOD, PER_DEFECT, DEFECTS = 4, 3, ("crack", "scratch", "spot")


class Page(HTMLParser):
    """The parts of the report the tests read: sections, metric cells, images, gallery cases, text."""

    def __init__(self, text: str):
        super().__init__()
        self.sections, self.cells, self.images, self.cases, self.tags = [], {}, [], {}, set()
        self._row, self._cell, self._gallery = None, None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.sections.append(a["id"])
            self._gallery = a["id"]
        elif tag == "tr" and "data-row" in a:
            self._row = a["data-row"]
        elif tag == "td" and "data-metric" in a:
            self._cell = (self._row, a["data-metric"], a["data-value"])
        elif tag == "img":
            self.images.append((a["src"], a["alt"], self._gallery))
        elif tag == "div" and a.get("class") == "case":
            self.cases.setdefault(self._gallery, []).append((float(a["data-score"]), a["data-path"]))

    def handle_data(self, data):
        if self._cell is not None:
            row, key, value = self._cell
            self.cells[(row, key)] = (value, data)
            self._cell = None


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A tiny random model with thresholds inside its score range, evaluated with --out and --report."""
    tmp = tmp_path_factory.mktemp("report")
    data = build_demo_dataset(tmp / "data", size=32, n_train=4, n_test_good=N_GOOD, n_test_per_defect=PER_DEFECT)
    model = write_checkpoint(tmp / "m.safetensors", preset("tiny"), seed=2)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["eval", str(model), "--data", str(data), "--json", "--out", str(tmp / "first"),
                     "--device", "cpu"]) == 0
    scores = [float(r["score"]) for r in csv.DictReader(open(tmp / "first" / "scores.csv"))]
    # Thresholds in the middle of the scores: some good images are flagged, some defective ones missed.
    write_checkpoint(model, preset("tiny"), seed=2,
                     thresholds=md.Thresholds(image=float(np.median(scores)), pixel=0.5, source="test"))
    out = tmp / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["eval", str(model), "--data", str(data), "--out", str(out), "--report", "--device", "cpu"]) == 0
    assert f"inspection report: {out / 'report.html'}" in printed.getvalue()
    rows = list(csv.DictReader(open(out / "scores.csv")))
    text = (out / "report.html").read_text(encoding="utf-8")
    return out, json.loads((out / "metrics.json").read_text()), rows, text, float(np.median(scores)), model, data


def test_sections_and_every_metric_equal_to_metrics_json(report):
    _, metrics, _, text = report[:4]
    page = Page(text)
    assert page.sections == list(SECTIONS)
    rows = {"all": metrics, **metrics["per_type"]}
    assert sorted(rows) == sorted(("all",) + DEFECTS)
    for row, m in rows.items():
        for key, _ in METRIC_COLUMNS:
            value, shown = page.cells[(row, key)]
            if m[key] is None:
                assert value == "", (row, key)
            else:
                assert float(value) == m[key], (row, key)  # exact: repr round-trips a float
                assert shown == f"{100 * m[key]:.2f}", (row, key)
    assert len(page.cells) == len(rows) * len(METRIC_COLUMNS)


def test_self_contained_every_image_embedded_and_decodable(report):
    _, metrics, rows, text = report[:4]
    page = Page(text)
    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert "http://" not in text and "https://" not in text and "url(" not in text
    n_bad = len(DEFECTS) * PER_DEFECT
    # ROC, PR, PRO, histogram; then image / overlay / ground truth per case (all good images, 8 misses).
    assert len(page.images) == 4 + 3 * (N_GOOD + min(8, n_bad))
    for src, alt, section in page.images:
        assert src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")), src[:40]
        image = cv2.imdecode(np.frombuffer(base64.b64decode(src.split(",", 1)[1]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert image is not None and image.size > 0, alt
        if alt.endswith("ground truth"):  # a mask: all 0 for a good image, some 255 for a defective one
            assert set(np.unique(image)) <= {0, 255} and (image.max() == 255) == (section == "misses"), alt
        else:
            assert image.std() > 0, alt  # a chart or a picture, not a flat fill
        if section in ("false-alarms", "misses"):
            assert image.shape[:2] == (metrics["image_size"],) * 2, alt  # what the model saw


def test_galleries_are_the_worst_cases_in_order(report):
    _, _, rows, text, threshold = report[:5]
    page = Page(text)
    good = sorted((float(r["score"]) for r in rows if r["label"] == "0"), reverse=True)
    bad = sorted(float(r["score"]) for r in rows if r["label"] == "1")
    assert [s for s, _ in page.cases["false-alarms"]] == good[:8]
    assert [s for s, _ in page.cases["misses"]] == bad[:8]
    paths = {r["path"]: r for r in rows}
    assert all(paths[p]["label"] == "0" for _, p in page.cases["false-alarms"])
    # The model's threshold is the median score: the flags say which cases it gets wrong.
    assert text.count("false alarm</span>") == sum(s >= threshold for s in good)
    assert text.count("missed</span>") == sum(s < threshold for s in bad[:8])
    assert text.count("false alarm</span>") > 0 and text.count("missed</span>") > 0


def test_pro_curve_area_is_au_pro():
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 40, 40), bool)
    masks[1, 5:15, 5:12] = masks[2, 20:30, 20:35] = masks[2, 2:5, 2:5] = masks[4, 10:30, 10:12] = True
    maps = (rng.random(masks.shape) * 0.6 + masks * rng.random(masks.shape) * 0.5).astype(np.float32)
    fpr, pro = pro_curve(masks, maps)
    assert fpr[0] == 0 and pro[0] == 0 and fpr[-1] == pytest.approx(0.3)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= 0)
    assert np.dot(np.diff(fpr), pro[1:] + pro[:-1]) / 2 / 0.3 == pytest.approx(au_pro(masks, maps), abs=1e-12)
    assert pro_curve(np.zeros_like(masks), maps) is None


def test_precision_recall_points_at_every_threshold():
    rng = np.random.default_rng(1)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300) + labels * 0.4, 2)  # ties on purpose
    (fpr, tpr), (recall, precision) = roc_and_pr(labels, scores)
    thresholds = np.unique(scores)[::-1]
    expected_recall = [labels[scores >= t].sum() / labels.sum() for t in thresholds]
    expected_precision = [labels[scores >= t].mean() for t in thresholds]
    np.testing.assert_allclose(recall, [0.0] + expected_recall)
    np.testing.assert_allclose(precision, [1.0] + expected_precision)
    np.testing.assert_allclose(fpr[-1], 1.0)


def test_default_path_and_a_missing_matplotlib(report, tmp_path, monkeypatch, capsys):
    model, data = report[5:]
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "matplotlib", None)  # as if not installed: `import matplotlib` raises ImportError
        assert main(["eval", str(model), "--data", str(data), "--report", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().splitlines() == [
        "dad-edge eval: error: the report draws its charts with matplotlib, which is not installed: "
        "pip install 'dad_edge[report]'"]
    assert not (tmp_path / "report.html").exists()  # refused before scoring, nothing written
    # With matplotlib, `--report` alone writes report.html in the current folder.
    assert main(["eval", str(model), "--data", str(data), "--report", "--json", "--device", "cpu"]) == 0
    assert Page((tmp_path / "report.html").read_text(encoding="utf-8")).sections == list(SECTIONS)


@needs_chromium
def test_chromium_shows_the_report_and_it_requests_nothing(report, tmp_path):
    out = report[0]
    shown = load((out / "report.html").as_uri(), tmp_path / "chromium", size=(1200, 2400))
    assert not_blank(shown.screenshot)
    assert shown.page_requests == []


@needs_chromium
def test_chromium_check_sees_a_page_that_loads_from_the_network(tmp_path):
    """The request check above can fail: a page with a remote image is caught (no network is needed:
    the request is logged whether or not it succeeds)."""
    page = tmp_path / "remote.html"
    page.write_text('<html><body><h1>remote</h1><img src="https://example.invalid/a.png"></body></html>')
    shown = load(page.as_uri(), tmp_path / "chromium", size=(400, 300))
    assert shown.page_requests == ["https://example.invalid/a.png"]
