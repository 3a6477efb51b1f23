"""Evaluation figures drawn with OpenCV alone (no matplotlib): ROC curves. The heat-map
overlays are the runtime's (dad_edge/runtime/overlay.py), re-exported here for the report.

Images passed in and returned are RGB; conversion to BGR happens only when writing.
"""
from __future__ import annotations

import os
from typing import Dict, Tuple, Union

import cv2
import numpy as np

from dad_edge.runtime.overlay import _write_png, heatmap_overlay, save_overlay  # noqa: F401 (re-exported)

PathLike = Union[str, "os.PathLike[str]"]

_SIZE = 512  # ROC figure side in pixels
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 40, 56  # plot-area margins: room for ticks and labels
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# BGR, picked to stay distinct from each other and from the grey diagonal.
_COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214),
            (189, 103, 148), (75, 86, 140), (194, 119, 227), (34, 189, 188)]



def _to_canvas(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """(K, 1, 2) int32 pixel points of a curve in the plot area, repeated points dropped."""
    width, height = _SIZE - _LEFT - _RIGHT, _SIZE - _TOP - _BOTTOM
    points = np.stack([_LEFT + np.clip(fpr, 0, 1) * width,
                       _SIZE - _BOTTOM - np.clip(tpr, 0, 1) * height], axis=1)
    points = np.round(points).astype(np.int32)
    # A pixel ROC has millions of points on a 400-pixel plot: keep one per pixel step.
    moved = np.concatenate(([True], np.any(points[1:] != points[:-1], axis=1)))
    return points[moved].reshape(-1, 1, 2)


def save_roc_plot(path: PathLike, curves: Dict[str, Tuple[np.ndarray, np.ndarray]],
                  title: str = "ROC") -> None:
    """Write a 512x512 PNG of ROC curves {name: (fpr, tpr)}, with each AUC in the legend."""
    canvas = np.full((_SIZE, _SIZE, 3), 255, np.uint8)
    x0, x1, y0, y1 = _LEFT, _SIZE - _RIGHT, _SIZE - _BOTTOM, _TOP
    for tick in np.linspace(0, 1, 6):
        x = int(round(x0 + tick * (x1 - x0)))
        y = int(round(y0 + tick * (y1 - y0)))
        cv2.line(canvas, (x, y0), (x, y1), (235, 235, 235), 1)  # grid
        cv2.line(canvas, (x0, y), (x1, y), (235, 235, 235), 1)
        cv2.line(canvas, (x, y0), (x, y0 + 5), (0, 0, 0), 1)  # tick marks
        cv2.line(canvas, (x0 - 5, y), (x0, y), (0, 0, 0), 1)
        text = f"{tick:.1f}"
        cv2.putText(canvas, text, (x - 12, y0 + 20), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(canvas, text, (x0 - 32, y + 4), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(canvas, (x0, y1), (x1, y0), (0, 0, 0), 1)
    cv2.line(canvas, (x0, y0), (x1, y1), (160, 160, 160), 1, cv2.LINE_AA)  # chance
    cv2.putText(canvas, "false positive rate", (x0 + 120, _SIZE - 14), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    label = np.full((20, 170, 3), 255, np.uint8)
    cv2.putText(label, "true positive rate", (4, 15), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    canvas[y1 + 110:y1 + 280, 8:28] = cv2.rotate(label, cv2.ROTATE_90_COUNTERCLOCKWISE)
    cv2.putText(canvas, title, (x0, 26), _FONT, 0.6, (0, 0, 0), 1, cv2.LINE_AA)

    for i, (name, (fpr, tpr)) in enumerate(curves.items()):
        fpr, tpr = np.asarray(fpr, np.float64), np.asarray(tpr, np.float64)
        if fpr.shape != tpr.shape or fpr.ndim != 1:
            raise ValueError(f"curve {name!r}: fpr and tpr must be 1-D of equal length")
        colour = _COLOURS[i % len(_COLOURS)]
        cv2.polylines(canvas, [_to_canvas(fpr, tpr)], False, colour, 2, cv2.LINE_AA)
        area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2)  # trapezoid rule
        y = y0 - 12 - 18 * (len(curves) - 1 - i)  # legend stacked in the lower-right corner
        cv2.line(canvas, (x0 + 190, y - 4), (x0 + 210, y - 4), colour, 2, cv2.LINE_AA)
        cv2.putText(canvas, f"{name} (AUC {area:.3f})", (x0 + 216, y), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    _write_png(path, canvas)
