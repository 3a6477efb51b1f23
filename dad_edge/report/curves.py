"""The curves behind the report's numbers, from the metric code itself (training/metrics.py).

ROC points come from metrics.roc_curve; precision-recall follows from the same points
(precision = tp / (tp + fp), recall = tpr), so no second sort. The PRO curve is the one
metrics.au_pro integrates: the same sorted pixel stream and the same per-region weights,
read out point by point instead of summed, so its area up to the FPR limit is AU-PRO.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

# The scan au_pro runs; imported rather than rewritten so that the curve cannot drift from the metric.
from dad_edge.training.metrics import _groups, _PixelEvaluator, roc_curve

Curve = Tuple[np.ndarray, np.ndarray]


def roc_and_pr(labels, scores) -> Tuple[Curve, Curve]:
    """((fpr, tpr), (recall, precision)) of binary labels and scores; every threshold for a few
    thousand points, only the ROC's corners beyond (pixels: the plot cannot show more)."""
    labels = np.asarray(labels).reshape(-1) != 0
    n_pos, n_neg = int(labels.sum()), int(labels.size - labels.sum())
    fpr, tpr, _ = roc_curve(labels, np.asarray(scores).reshape(-1), drop_intermediate=labels.size > 4096)
    tp, fp = tpr * n_pos, fpr * n_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)  # no prediction yet: precision 1 by convention
    return (fpr, tpr), (tpr, precision)


def pro_curve(masks, maps, fpr_limit: float = 0.3) -> Optional[Curve]:
    """(fpr, pro) from (0, 0) to fpr = `fpr_limit` (the last point interpolated there, as AU-PRO does);
    None without an anomalous or a normal pixel. The trapezoid area divided by `fpr_limit` is au_pro()."""
    masks, maps = np.asarray(masks), np.asarray(maps)
    pixels = _PixelEvaluator(masks, maps)
    n_regions, n_neg = pixels.size.size - 1, int(pixels.normal.sum())
    if n_regions == 0 or n_neg == 0:
        return None
    weight = np.zeros(pixels.size.size)
    weight[1:] = 1.0 / (pixels.size[1:] * n_regions)  # each region counts 1 / regions when fully covered
    xs, ys, pro = [np.zeros(1)], [np.zeros(1)], 0.0
    for key, ends, _, _, fps in _groups(pixels.stream, None):
        pros = pro + np.cumsum(weight[np.maximum(key, 0)])[ends]  # normal pixels (key < 0) weigh 0
        pro = float(pros[-1])
        xs.append(fps / n_neg)
        ys.append(np.minimum(pros, 1.0))  # as metrics: the official code clips rounding
        if xs[-1][-1] >= fpr_limit:
            break
    x, y = np.concatenate(xs), np.concatenate(ys)
    j = int(np.searchsorted(x, fpr_limit, side="right"))  # first point past the limit
    if j < x.size and x[j - 1] < fpr_limit:
        y_lim = y[j - 1] + (y[j] - y[j - 1]) * (fpr_limit - x[j - 1]) / (x[j] - x[j - 1])
        return np.append(x[:j], fpr_limit), np.append(y[:j], y_lim)
    return x[:j], y[:j]


def thin(x: np.ndarray, y: np.ndarray, resolution: int = 2000) -> Curve:
    """The points of a curve in [0, 1]^2 that move it by at least 1 / `resolution`: a pixel ROC has
    millions of corners, a chart a few hundred pixels."""
    cells = np.round(np.stack([x, y], axis=1) * resolution)
    moved = np.concatenate(([True], np.any(cells[1:] != cells[:-1], axis=1)))
    moved[-1] = True  # keep the end point
    return x[moved], y[moved]
