"""The report page: one HTML file with every image inside it as a data: URI.

No script, no external style sheet or font, no link that loads anything: the file opens the
same from a USB stick on a machine without network. Each metric cell carries the exact value of
metrics.json in `data-value` (the percent shown is rounded), so the page can be checked
against the JSON.
"""
from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from dad_edge.artifacts.atomic import write_bytes_atomic
from dad_edge.report import charts
from dad_edge.report.curves import pro_curve, roc_and_pr
from dad_edge.report.gallery import Case, worst_cases
from dad_edge.version import __version__

METRIC_COLUMNS = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("au_pro", "AU-PRO"),
                  ("pixel_ap", "pixel AP"), ("f1_max", "image F1-max"),
                  ("pixel_auroc_in_image", "pixel AUROC in image"))
SECTIONS = ("metrics", "curves", "scores", "false-alarms", "misses")

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1120px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
.meta { color: #555; } .note { color: #555; font-size: 13px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { padding: 4px 10px; border-bottom: 1px solid #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } tr.all td { font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; } figure { margin: 0; }
figcaption { font-size: 13px; color: #555; }
.cases { display: flex; flex-wrap: wrap; gap: 14px; }
.case { width: 338px; padding: 6px; border: 1px solid #e4e4e4; border-radius: 4px; }
.case img { width: 106px; height: auto; image-rendering: pixelated; border: 1px solid #ccc; margin-right: 2px; }
.case .text { font-size: 12px; overflow-wrap: anywhere; }
.flag { color: #b30000; font-weight: 600; }
"""


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _img(mime: str, data: bytes, alt: str) -> str:
    return f'<img src="{_data_uri(mime, data)}" alt="{html.escape(alt)}">'


def _cell(key: str, value) -> str:
    shown = "&ndash;" if value is None else f"{100 * value:.2f}"
    exact = "" if value is None else repr(float(value))
    return f'<td class="num" data-metric="{key}" data-value="{exact}">{shown}</td>'


def metric_table(metrics: Dict[str, object]) -> str:
    """Overall and per defect type; percent with two decimals, the exact value in data-value."""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in METRIC_COLUMNS)
    rows = [("all", metrics)] + sorted(metrics.get("per_type", {}).items())
    body = []
    for name, m in rows:
        cells = "".join(_cell(k, m.get(k)) for k, _ in METRIC_COLUMNS)
        body.append(f'<tr class="{"all" if name == "all" else "type"}" data-row="{html.escape(name)}">'
                    f"<td>{html.escape(name)}</td>{cells}<td class=\"num\">{m.get('num_images')}</td>"
                    f"<td class=\"num\">{m.get('num_anomalous')}</td></tr>")
    return (f"<table><thead><tr><th>defect type</th>{head}<th>images</th><th>defective</th></tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def _charts(preds, metrics: Dict[str, object]) -> List[str]:
    figures = []
    labels, scores = preds.labels, np.asarray(preds.scores, np.float64)
    roc, pr = {}, {}
    if metrics.get("image_auroc") is not None:
        from dad_edge.training.metrics import average_precision

        image_roc, image_pr = roc_and_pr(labels, scores)
        roc["image"] = (image_roc, metrics["image_auroc"])
        pr["image"] = (image_pr, average_precision(labels, scores), float(labels.mean()))
    if metrics.get("pixel_auroc") is not None:
        pixel_roc, pixel_pr = roc_and_pr(preds.masks, preds.maps)
        roc["pixel"] = (pixel_roc, metrics["pixel_auroc"])
        pr["pixel"] = (pixel_pr, metrics.get("pixel_ap"), float(preds.masks.mean()))
    if roc:
        figures.append(("roc", charts.roc_chart(roc), "ROC: image scores and pooled test pixels"))
        figures.append(("pr", charts.pr_chart(pr), "Precision-recall; dotted: the share of defective images / pixels"))
    if metrics.get("au_pro") is not None:
        curve = pro_curve(preds.masks, preds.maps)
        figures.append(("pro", charts.pro_chart(curve, metrics["au_pro"]),
                        f"PRO curve ({html.escape(str(metrics.get('au_pro_definition', '')))})"))
    return [f'<figure id="chart-{key}">{_img("image/png", png, key)}<figcaption>{caption}</figcaption></figure>'
            for key, png, caption in figures]


def _gallery(cases: List[Case], threshold: Optional[float], flag_if_above: bool) -> str:
    if not cases:
        return '<p class="note">none in the test set</p>'
    out = []
    for c in cases:
        tiles = "".join(_img(t.mime, t.data, f"{Path(c.path).name}: {t.caption}") for t in c.tiles)
        verdict = ""
        if threshold is not None and (c.score >= threshold) == flag_if_above:
            verdict = f' <span class="flag">{"false alarm" if flag_if_above else "missed"}</span>'
        captions = " / ".join(t.caption for t in c.tiles)
        out.append(f'<div class="case" data-score="{c.score!r}" data-path="{html.escape(c.path)}">{tiles}'
                   f'<div class="text"><b>score {c.score:.4f}</b>{verdict} &middot; {html.escape(c.defect_type)}'
                   f'<br>{html.escape(c.path)}<br><span class="note">{html.escape(captions)}</span></div></div>')
    return f'<div class="cases">{"".join(out)}</div>'


def render(preds, metrics: Dict[str, object], thresholds=None, title: str = "", worst: int = 8,
           with_maps: bool = True) -> str:
    """The page as text. preds: training/evaluate.py Predictions; metrics: compute_metrics' dict (+ data,
    image_size); thresholds: the model's (md.Thresholds or None): drawn on the histogram and
    used to flag the worst cases."""
    image_t = getattr(thresholds, "image", None)
    pixel_t = getattr(thresholds, "pixel", None)
    with_masks = metrics.get("pixel_auroc") is not None
    labels, scores = preds.labels, np.asarray(preds.scores, np.float64)
    alarms, missed = worst_cases(preds, worst, pixel_t, with_maps, with_masks)
    missing = metrics.get("images_without_masks") or {}
    notes = [f"Percent. AU-PRO: {html.escape(str(metrics.get('au_pro_definition', '')))}. Each defect type is "
             "scored against all good images."]
    if missing:
        notes.append(f"Pixel metrics not computed: {sum(missing.values())} defective images have no ground-truth "
                     "mask (" + html.escape(", ".join(sorted(missing))) + ").")
    histogram = charts.score_histogram(scores[labels == 0], scores[labels == 1],
                                       {"model threshold": image_t,
                                        "F1-max threshold (test set)": metrics.get("image_threshold_f1")})
    n_bad = int(labels.sum())
    meta = (f"{html.escape(str(metrics.get('data', '')))} &middot; {labels.size} test images "
            f"({labels.size - n_bad} good, {n_bad} defective) at {metrics.get('image_size')} px &middot; "
            f"model thresholds: image {'none' if image_t is None else f'{image_t:.4g}'}, "
            f"pixel {'none' if pixel_t is None else f'{pixel_t:.4g}'}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Inspection report: {html.escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>Inspection report: {html.escape(title)}</h1>
<p class="meta">{meta}</p>
<section id="metrics"><h2>Metrics</h2>{metric_table(metrics)}<p class="note">{" ".join(notes)}</p></section>
<section id="curves"><h2>Curves</h2><div class="charts">{"".join(_charts(preds, metrics))}</div></section>
<section id="scores"><h2>Score distribution</h2><figure id="chart-histogram">{_img("image/png", histogram, "histogram")}
<figcaption>Image scores of good and defective test images; solid: the model's threshold, dashed: the
F1-max threshold on this test set.</figcaption></figure></section>
<section id="false-alarms"><h2>False alarms: the highest-scoring good images</h2>
{_gallery(alarms, image_t, True)}</section>
<section id="misses"><h2>Misses: the lowest-scoring defective images</h2>
{_gallery(missed, image_t, False)}</section>
<p class="note">dad_edge {__version__}, {time.strftime("%Y-%m-%d %H:%M")}. Heat maps: raw map values 0 (blue)
to 1 (red); green outline: ground truth; white outline: the model's pixel threshold.</p>
</body></html>
"""


def write_html_report(path, preds, metrics: Dict[str, object], thresholds=None, title: str = "",
                      worst: int = 8, with_maps: bool = True) -> Path:
    """Write render()'s page to `path` atomically; returns the path."""
    path = Path(path)
    write_bytes_atomic(path, render(preds, metrics, thresholds, title, worst, with_maps).encode("utf-8"))
    return path
