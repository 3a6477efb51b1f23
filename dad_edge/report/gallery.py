"""The worst cases of an evaluation, as picture tiles for the report.

False alarms are the good test images with the highest scores, misses the defective ones with
the lowest: the images a line engineer looks at before trusting a threshold. Each case has the
image at the model's resolution (what the model saw), the heat-map overlay (ground truth
outlined in green, the pixel threshold's mask in white) and the ground-truth mask.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import cv2
import numpy as np

from dad_edge.data.imageio import read_image
from dad_edge.data.preprocess import resize_bilinear
from dad_edge.runtime.overlay import heatmap_overlay

JPEG_QUALITY = 90


@dataclass
class Tile:
    caption: str
    mime: str  # image/jpeg for pictures, image/png for masks (exact pixels)
    data: bytes


@dataclass
class Case:
    path: str
    defect_type: str
    score: float
    tiles: List[Tile] = field(default_factory=list)


def false_alarms(labels: np.ndarray, scores: np.ndarray, count: int) -> List[int]:
    """Indices of the `count` highest-scoring good images, highest first."""
    good = np.flatnonzero(labels == 0)
    return good[np.argsort(-scores[good], kind="stable")][:count].tolist()


def misses(labels: np.ndarray, scores: np.ndarray, count: int) -> List[int]:
    """Indices of the `count` lowest-scoring defective images, lowest first."""
    bad = np.flatnonzero(labels == 1)
    return bad[np.argsort(scores[bad], kind="stable")][:count].tolist()


def _encode(ext: str, rgb_or_gray: np.ndarray) -> bytes:
    img = rgb_or_gray if rgb_or_gray.ndim == 2 or rgb_or_gray.shape[2] == 1 else \
        cv2.cvtColor(rgb_or_gray, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise OSError(f"OpenCV could not encode a {ext} tile")
    return buf.tobytes()


def build_case(preds, i: int, pixel_threshold: Optional[float], with_maps: bool, with_masks: bool) -> Case:
    """Tiles of test image `i` of `preds` (training/evaluate.py Predictions)."""
    sample = preds.samples[i]
    size = preds.maps.shape[-1]
    image = np.rint(resize_bilinear(read_image(sample.path).astype(np.float32), size)).astype(np.uint8)
    case = Case(str(sample.path), sample.defect_type, float(preds.scores[i]))
    case.tiles.append(Tile("image", "image/jpeg", _encode(".jpg", image)))
    mask = preds.masks[i] if with_masks else None
    if with_maps:
        pred = preds.maps[i] >= pixel_threshold if pixel_threshold is not None else None
        overlay = heatmap_overlay(image, preds.maps[i], gt_mask=mask if sample.label else None, pred_mask=pred)
        case.tiles.append(Tile("anomaly map", "image/jpeg", _encode(".jpg", overlay)))
    if mask is not None:
        case.tiles.append(Tile("ground truth", "image/png", _encode(".png", mask.astype(np.uint8) * 255)))
    return case


def worst_cases(preds, count: int, pixel_threshold: Optional[float], with_maps: bool,
                with_masks: bool) -> Tuple[List[Case], List[Case]]:
    """(false alarms, misses), up to `count` of each."""
    labels, scores = preds.labels, np.asarray(preds.scores, np.float64)
    return tuple([build_case(preds, i, pixel_threshold, with_maps, with_masks) for i in pick(labels, scores, count)]
                 for pick in (false_alarms, misses))
