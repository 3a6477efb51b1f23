"""The anomalous regions of a result: connected parts of its mask, as boxes with a score.

One implementation for `Result.boxes` and the stream's events file (dad_edge/stream/outputs.py):
the regions of an anomalous frame's mask (map >= pixel threshold). A model calibrated without a
pixel threshold outlines the regions where the map reaches the image threshold instead: the image
score is a mean of the top map values, so those regions are where the score came from.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import cv2
import numpy as np

MAX_REGIONS = 32  # the largest regions of a frame; a noisy map must not make every record kilobytes

Region = Tuple[int, int, int, int, float]  # x, y, w, h (frame pixels), the highest map value inside


def region_mask(anomaly_map: Optional[np.ndarray], mask: Optional[np.ndarray], label: Optional[bool],
                image_threshold: Optional[float] = None) -> Optional[np.ndarray]:
    """The pixels to outline: the mask of an anomalous result, else its map >= the image threshold;
    None for a good or uncalibrated result (no regions)."""
    if not label or anomaly_map is None:
        return None
    if mask is not None:
        return mask
    if image_threshold is not None:
        return anomaly_map >= image_threshold
    return None


def anomaly_regions(anomaly_map: np.ndarray, mask: np.ndarray, min_area: int = 1,
                    max_regions: int = MAX_REGIONS) -> List[Region]:
    """(x, y, w, h, score) of the 8-connected regions of `mask`, largest first, at most `max_regions`;
    score is the highest value of `anomaly_map` inside the region."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return []
    # Per-region maximum in one pass over the masked pixels (label 0 is the background).
    peak = np.zeros(n, np.float32)
    np.maximum.at(peak, labels[mask.astype(bool)], anomaly_map[mask.astype(bool)])
    keep = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= min_area) + 1  # columns: x, y, w, h, area
    order = keep[np.argsort(-stats[keep, cv2.CC_STAT_AREA], kind="stable")][:max_regions]
    return [(int(stats[i, 0]), int(stats[i, 1]), int(stats[i, 2]), int(stats[i, 3]), float(peak[i]))
            for i in order]
