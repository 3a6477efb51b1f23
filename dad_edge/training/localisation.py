"""Localisation inside one image: each defective image's own pixel AUROC (its defect pixels
against the other pixels of the same image).

The pooled pixel AUROC answers two questions at once: does the map find the defect inside
its image, and is the map's level comparable across images (a defect pixel against the
pixels of every good image). The in-image figure answers the first alone. Low in-image:
the map does not see the defect (more training or other synthetic anomalies will not help
a threshold). High in-image but lower pooled: the defect is found, but the map's level
moves between images (brightness, texture), so no one threshold separates them.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from dad_edge.training.metrics import roc_auc


def in_image_auroc(masks: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """(N,) float64: image i's pixel AUROC, defect pixels of masks[i] against its other pixels;
    NaN where the image has no defect pixel (a good image) or no other pixel (all defect)."""
    masks, maps = np.asarray(masks), np.asarray(maps)
    if masks.ndim != 3 or masks.shape != maps.shape:
        raise ValueError(f"masks and maps must both be (N, H, W); got {masks.shape} and {maps.shape}")
    out = np.full(masks.shape[0], np.nan)
    for i, (mask, heat) in enumerate(zip(masks, maps)):
        defect = mask.reshape(-1) != 0
        if 0 < defect.sum() < defect.size:
            out[i] = roc_auc(defect, heat.reshape(-1))
    return out


def _mean(values: np.ndarray) -> Optional[float]:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def add_in_image_auroc(metrics: Dict[str, object], values: np.ndarray, defect_types: Sequence[str]) -> None:
    """Write `pixel_auroc_in_image` (mean over the defective images with a mask) into `metrics`
    and each of its `per_type` entries (None where no image of the type has a mask)."""
    types = np.asarray(list(defect_types), dtype=object)
    if types.size != values.size:
        raise ValueError(f"lengths differ: {values.size} per-image values, {types.size} defect types")
    metrics["pixel_auroc_in_image"] = _mean(values)
    for name, entry in (metrics.get("per_type") or {}).items():
        entry["pixel_auroc_in_image"] = _mean(values[types == name])
