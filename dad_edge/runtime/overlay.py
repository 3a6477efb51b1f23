"""Heat-map overlays drawn with OpenCV: what `Result.plot()`, `dad-edge predict --save` and the
evaluation report show. Runtime code (numpy + OpenCV, no matplotlib, no torch).

Images passed in and returned are RGB; conversion to BGR happens only when writing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Tuple, Union

import cv2
import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

_GREEN, _WHITE = (0, 255, 0), (255, 255, 255)  # RGB contour colours


def _write_png(path: PathLike, bgr: np.ndarray) -> None:
    """Encode in memory and write with Python, so non-ASCII paths work too."""
    ok, data = cv2.imencode(".png", bgr)
    if not ok:
        raise OSError(f"could not encode a PNG for {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())



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
