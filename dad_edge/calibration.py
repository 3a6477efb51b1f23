"""Decision thresholds from scores: F1-max with anomalies at hand, else a quantile of good.

Scores are also reported normalised so that the threshold maps to 0.5 (see normalize_score).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .metadata import Thresholds


def quantile_thresholds(good_scores: np.ndarray, good_maps: np.ndarray, quantile: float = 0.99,
                        source: str = "quantile of held-out good images") -> Thresholds:
    """Image threshold at `quantile` of good image scores; pixel threshold at the same
    quantile of the good images' per-image map maxima (so a good image is rarely flagged)."""
    if not 0.5 <= quantile < 1:
        raise ValueError(f"quantile={quantile} must be in [0.5, 1)")
    good_scores = np.asarray(good_scores, dtype=np.float64)
    pixel_max = np.asarray(good_maps, dtype=np.float32).reshape(len(good_maps), -1).max(axis=1)
    return Thresholds(image=float(np.quantile(good_scores, quantile)),
                      pixel=float(np.quantile(pixel_max, quantile)),
                      source=f"{source} (q={quantile})")


def normalize_score(score, threshold: Optional[float]):
    """Map a raw score in [0, 1] piecewise-linearly so that the threshold lands on 0.5."""
    s = np.asarray(score, dtype=np.float64)
    if threshold is None:
        return s
    t = min(max(threshold, 1e-12), 1 - 1e-12)
    return np.where(s < t, 0.5 * s / t, 0.5 + 0.5 * (s - t) / (1 - t))
