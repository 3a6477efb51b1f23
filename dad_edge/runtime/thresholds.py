"""Thresholds chosen at run time: fixed values, or a sensitivity along the calibrated scale.

The model file keeps the calibrated thresholds (`dad-edge calibrate` writes them); a Detector may
decide with others without touching the file:

    Detector("model.onnx", image_threshold=0.31, pixel_threshold=0.5)   # raw score values
    Detector("model.onnx", sensitivity=0.7)                              # more parts flagged

Sensitivity follows anomalib's post-processor: on the normalised scale, where the calibrated
threshold sits at 0.5 (artifacts.metadata.normalize_score), a part is anomalous when its
normalised score reaches 1 - sensitivity. Sensitivity 0.5 is the calibrated threshold, 1 flags
everything (threshold 0), 0 flags only a score of 1. Here that cut is mapped back to a raw
threshold once, so every backend and every Result compares raw scores as before; image and pixel
thresholds each move along their own scale. A threshold given as a value wins over the
sensitivity for its level.
"""
from __future__ import annotations

import math
from typing import Optional

from dad_edge.artifacts.metadata import Thresholds
from dad_edge.errors import ConfigError


def _check_unit(name: str, value) -> Optional[float]:
    """None, or a real number in [0, 1] (scores and maps lie there); ConfigError naming it otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        raise ConfigError(f"{name}={value!r} must be a number in [0, 1] (scores and maps lie in [0, 1])")
    return float(value)


def threshold_at_sensitivity(calibrated: float, sensitivity: float) -> float:
    """The raw threshold where the normalised score (calibrated threshold at 0.5) equals 1 - sensitivity:
    the inverse of normalize_score's piecewise-linear map at that cut."""
    cut = 1.0 - sensitivity
    t = min(max(calibrated, 0.0), 1.0)
    if cut <= 0.5:
        return 2.0 * cut * t  # [0, 0.5] -> [0, t]
    return t + (2.0 * cut - 1.0) * (1.0 - t)  # [0.5, 1] -> [t, 1]


def runtime_thresholds(calibrated: Thresholds, image_threshold: Optional[float] = None,
                       pixel_threshold: Optional[float] = None,
                       sensitivity: Optional[float] = None) -> Thresholds:
    """The thresholds a Detector decides with: `calibrated` (the file's) unless overridden.

    ConfigError for a value outside [0, 1], and for a sensitivity on a model that has no calibrated
    threshold to move (there is no scale to move along)."""
    image = _check_unit("image_threshold", image_threshold)
    pixel = _check_unit("pixel_threshold", pixel_threshold)
    sens = _check_unit("sensitivity", sensitivity)
    if image is None and pixel is None and sens is None:
        return calibrated
    notes = []
    if sens is not None:
        moved = []
        if image is None and calibrated.image is not None:
            image = threshold_at_sensitivity(calibrated.image, sens)
            moved.append("image")
        if pixel is None and calibrated.pixel is not None:
            pixel = threshold_at_sensitivity(calibrated.pixel, sens)
            moved.append("pixel")
        if not moved and (image_threshold is None or pixel_threshold is None):
            raise ConfigError(f"sensitivity={sensitivity}: the model has no calibrated thresholds to move; run "
                              "`dad-edge calibrate MODEL --data DIR` first, or give image_threshold / "
                              "pixel_threshold as values")
        if moved:
            notes.append(f"sensitivity {sens:g} ({' and '.join(moved)})")
    if image_threshold is not None:
        notes.append("image threshold given")
    if pixel_threshold is not None:
        notes.append("pixel threshold given")
    if image is None:
        image = calibrated.image
    if pixel is None:
        pixel = calibrated.pixel
    return Thresholds(image=image, pixel=pixel, source=f"{calibrated.source}; at run time: {', '.join(notes)}")
