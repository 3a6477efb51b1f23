"""Evaluation figures drawn with OpenCV alone (no matplotlib): ROC curves and heat-map overlays.

Images passed in and returned are RGB; conversion to BGR happens only when writing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import cv2
import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

_SIZE = 512  # ROC figure side in pixels
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 40, 56  # plot-area margins: room for ticks and labels
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# BGR, picked to stay distinct from each other and from the grey diagonal.
_COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214),
            (189, 103, 148), (75, 86, 140), (194, 119, 227), (34, 189, 188)]
_GREEN, _WHITE = (0, 255, 0), (255, 255, 255)  # RGB contour colours


def _write_png(path: PathLike, bgr: np.ndarray) -> None:
    """Encode in memory and write with Python, so non-ASCII paths work too."""
    ok, data = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError(f"could not encode a PNG for {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())


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


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise ValueError(f"image must be uint8 (H, W), (H, W, 1) or (H, W, 3); got {image.dtype} {image.shape}")
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(image)


def _draw_contour(canvas: np.ndarray, mask: np.ndarray, colour: Tuple[int, int, int]) -> None:
    height, width = canvas.shape[:2]
    mask = (np.asarray(mask) != 0).astype(np.uint8)
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    # RETR_LIST keeps the edges of holes, which matter for ring-shaped defects.
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, colour, max(1, min(height, width) // 256))


def heatmap_overlay(image: np.ndarray, anomaly_map: np.ndarray, gt_mask: Optional[np.ndarray] = None,
                    pred_mask: Optional[np.ndarray] = None, alpha: float = 0.5) -> np.ndarray:
    """JET heat map of `anomaly_map` (H, W) in [0, 1] blended over an RGB uint8 image.

    The map is resized bilinearly to the image if needed; masks (nearest) are outlined:
    ground truth in green, prediction in white. Returns RGB uint8 (H, W, 3).
    """
    rgb = _as_rgb(image)
    height, width = rgb.shape[:2]
    heat = np.asarray(anomaly_map, np.float32)
    if heat.ndim != 2:
        raise ValueError(f"anomaly_map must be (H, W); got {heat.shape}")
    if heat.shape != (height, width):
        heat = cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR)
    heat = np.round(np.clip(np.nan_to_num(heat), 0, 1) * 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = cv2.addWeighted(rgb, 1 - alpha, colour, alpha, 0)
    if gt_mask is not None:
        _draw_contour(out, gt_mask, _GREEN)
    if pred_mask is not None:
        _draw_contour(out, pred_mask, _WHITE)
    return out


def save_overlay(path: PathLike, image: np.ndarray, anomaly_map: np.ndarray,
                 gt_mask: Optional[np.ndarray] = None, pred_mask: Optional[np.ndarray] = None) -> None:
    """Write a PNG with the RGB image and its heat-map overlay side by side."""
    overlay = heatmap_overlay(image, anomaly_map, gt_mask, pred_mask)
    pair = np.concatenate([_as_rgb(image), overlay], axis=1)
    _write_png(path, cv2.cvtColor(pair, cv2.COLOR_RGB2BGR))
