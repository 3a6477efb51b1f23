"""The report of `dad-edge compare`: one table (rows = methods), as Markdown, CSV and JSON, and a chart.

    header, rows = summary_table(result)       # numbers as measured (None: not defined)
    print(format_table(header, rows))          # Markdown, ready for benchmarks/README.md
    write_report(result, "runs/cmp")           # compare.json, compare.csv, compare.png

A row aggregates a method's runs over the classes: image AUROC per class and their mean (the
one-class protocol's figure, data/oneclass.py mean_over_classes), pixel AUROC and AU-PRO means where
the test sets have masks, mean train seconds per class, the median of the per-class latencies, and
the model's size and cost (the same network for every class). The chart is drawn with OpenCV, as
the evaluation figures are (training/plots.py): matplotlib is not a dependency.
"""
from __future__ import annotations

import csv
import io
import json
import os
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from dad_edge.artifacts.atomic import write_bytes_atomic
from dad_edge.data.oneclass import mean_over_classes
from dad_edge.training.compare import MODEL_METHODS, WARMUP_CALLS, Comparison, Run

MEAN, PIXEL_AUROC, AU_PRO = "mean AUROC", "pixel AUROC", "AU-PRO"
TRAIN_S, LATENCY_MS, PARAMS_M, GFLOPS, MODEL = "train s", "latency ms", "params M", "GFLOPs", "model file"
MODEL_COLOUR, CLASSICAL_COLOUR = (180, 119, 31), (14, 127, 255)  # BGR bars of the chart: blue, orange
# How each column prints in the Markdown table (the CSV and JSON keep full precision).
_FORMATS = {TRAIN_S: "{:.1f}", LATENCY_MS: "{:.2f}", PARAMS_M: "{:.3g}", GFLOPS: "{:.3g}", MODEL: "{}"}
DEFINITIONS = {
    "AUROC <class>": "image AUROC on that class's test split (evaluate_model, as `dad-edge eval`)",
    MEAN: "mean of the per-class image AUROCs",
    PIXEL_AUROC: "mean over classes of the pixel AUROC (test sets with masks only)",
    AU_PRO: "mean over classes of the AU-PRO up to 30 % FPR (test sets with masks only)",
    TRAIN_S: "wall seconds per class of train() / fit_baseline(): reading, training, selection, thresholds",
    LATENCY_MS: f"median ms of one image at batch 1 (pre-processing + network + score, decoding excluded) "
                f"after {WARMUP_CALLS} warm-up calls; the median over classes",
    PARAMS_M: "millions of parameters (a baseline: of stored numbers, its fitted state and standardisation)",
    GFLOPS: "per image, 2 per multiply-add (model/info.py); not counted for a baseline",
    MODEL: "the file to deploy (<class>: one per class, under --out/runs/)",
}


def _runs_of(result: Comparison, method: str) -> List[Run]:
    return [r for r in result.runs if r.method == method]


def _mean_or_none(values: Sequence[Optional[float]]) -> Optional[float]:
    """The mean where every run has the value (a test set with masks), else None."""
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def _model_file(runs: List[Run]) -> str:
    """The run's file; with several classes the path with <class> in place of the class folder."""
    path = Path(runs[0].path)
    if len(runs) == 1:
        return str(path)
    return str(path.parents[2] / "<class>" / path.parent.name / path.name)  # runs/<class>/<method>/<file>


def summary_table(result: Comparison) -> Tuple[List[str], List[list]]:
    """(header, one row per method in the order run). Pixel columns only where some run has them."""
    methods = list(dict.fromkeys(r.method for r in result.runs))
    pixel = any(r.pixel_auroc is not None for r in result.runs)
    header = ["method"] + [f"AUROC {c}" for c in result.classes] + [MEAN]
    header += [PIXEL_AUROC, AU_PRO] if pixel else []
    header += [TRAIN_S, LATENCY_MS, PARAMS_M, GFLOPS, MODEL]
    rows = []
    for method in methods:
        runs = _runs_of(result, method)
        by_class = {r.normal_class: r.image_auroc for r in runs}
        row = [method] + [by_class[c] for c in result.classes] + [mean_over_classes(by_class)["mean"]]
        if pixel:
            row += [_mean_or_none([r.pixel_auroc for r in runs]), _mean_or_none([r.au_pro for r in runs])]
        gflops = runs[0].gflops
        row += [float(np.mean([r.train_s for r in runs])), statistics.median(r.latency_ms for r in runs),
                runs[0].params / 1e6, gflops, _model_file(runs)]
        rows.append(row)
    return header, rows


def _cell(column: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return _FORMATS.get(column, "{:.3f}").format(value)  # the AUROC columns: 3 decimals


def format_table(header: List[str], rows: List[list]) -> str:
    """A Markdown table with the values rounded as _FORMATS says."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c, v) for c, v in zip(header, row)) + " |" for row in rows]
    return "\n".join(lines)


def best_method(header: List[str], rows: List[list]) -> Tuple[str, float, str]:
    """(method, mean AUROC, model file) of the row with the highest mean image AUROC."""
    i, j = header.index(MEAN), header.index(MODEL)
    row = max(rows, key=lambda r: r[i])
    return row[0], row[i], row[j]


def _csv_text(header: List[str], rows: List[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([["" if v is None else v if isinstance(v, str) else repr(float(v)) for v in row] for row in rows])
    return buf.getvalue()


def _relative(path: str) -> str:
    """`path` relative to the working directory where it lies below it: the table reads shorter."""
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith("..") else rel


def report_dict(result: Comparison, header: List[str], rows: List[list]) -> dict:
    o = result.options
    return {"data": o.data, "machine": result.machine, "classes": result.classes, "methods": list(o.methods),
            "budget": {"minutes": o.minutes, "epochs": o.epochs, "preset": o.preset, "image_size": o.image_size,
                       "baseline_size": o.baseline_size, "max_test": o.max_test, "seed": o.seed, "device": o.device},
            "columns": header, "rows": [dict(zip(header, row)) for row in rows], "definitions": DEFINITIONS,
            "runs": [asdict(r) for r in result.runs]}


def bar_chart(methods: Sequence[str], values: Sequence[float], title: str, width: int = 640) -> np.ndarray:
    """BGR image of horizontal bars, one per method, on a 0..1 axis, each labelled with its value."""
    left, right, top, bar, gap = 130, 60, 56, 28, 12
    height = top + len(methods) * (bar + gap) + 40
    canvas = np.full((height, width, 3), 255, np.uint8)
    x0, x1 = left, width - right
    font = cv2.FONT_HERSHEY_SIMPLEX
    for tick in np.linspace(0, 1, 6):
        x = int(round(x0 + tick * (x1 - x0)))
        cv2.line(canvas, (x, top - 6), (x, height - 34), (225, 225, 225), 1)
        cv2.putText(canvas, f"{tick:.1f}", (x - 10, height - 16), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(canvas, title, (10, 24), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for k, (name, value) in enumerate(zip(methods, values)):
        y = top + k * (bar + gap)
        end = int(round(x0 + float(np.clip(value, 0, 1)) * (x1 - x0)))
        colour = MODEL_COLOUR if name in MODEL_METHODS else CLASSICAL_COLOUR
        cv2.rectangle(canvas, (x0, y), (max(end, x0 + 1), y + bar), colour, -1)
        cv2.putText(canvas, name, (10, y + bar - 9), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, f"{value:.3f}", (end + 4, y + bar - 9), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.line(canvas, (x0, top - 6), (x0, height - 34), (0, 0, 0), 1)
    for k, (label, colour) in enumerate((("networks", MODEL_COLOUR), ("classical", CLASSICAL_COLOUR))):
        x = width - 190 + k * 95
        cv2.rectangle(canvas, (x, 36), (x + 12, 46), colour, -1)
        cv2.putText(canvas, label, (x + 16, 46), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def write_report(result: Comparison, out_dir) -> Tuple[List[str], List[list]]:
    """Write out_dir/compare.json, compare.csv and compare.png (atomically); return the table."""
    header, rows = summary_table(result)
    j = header.index(MODEL)
    for row in rows:
        row[j] = _relative(row[j])
    out = Path(out_dir)
    write_bytes_atomic(out / "compare.json", json.dumps(report_dict(result, header, rows), indent=2).encode())
    write_bytes_atomic(out / "compare.csv", _csv_text(header, rows).encode())
    i = header.index(MEAN)
    o = result.options
    budget = f"{o.minutes:g} min" if o.minutes else f"{o.epochs} epoch{'' if o.epochs == 1 else 's'}"
    title = f"mean image AUROC over {len(result.classes)} class(es), {Path(result.options.data).name}, {budget}"
    ok, png = cv2.imencode(".png", bar_chart([r[0] for r in rows], [r[i] for r in rows], title))
    if not ok:
        raise OSError(f"could not encode {out / 'compare.png'}")
    write_bytes_atomic(out / "compare.png", png.tobytes())
    return header, rows
