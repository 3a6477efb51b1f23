"""BaselineScorer: a baseline file behind the interface evaluation reads from a Detector.

training/evaluate.py scores a test set through `infer_batch(frames, color_order)`,
`batch_size` and `config.image_size`; a baseline answers the same calls, so `dad-edge eval`
runs the same metric code on it. It scores whole images only: `has_maps` is False, the maps
it returns are zeros, and evaluation leaves the pixel metrics out (None) instead of scoring them.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import numpy as np

from dad_edge.baselines.artifact import load_baseline
from dad_edge.errors import ConfigError

COLOR_ORDERS = ("BGR", "RGB")


class BaselineScorer:
    has_maps = False  # image scores only: no anomaly map to compare with masks

    def __init__(self, path, batch_size: int = 16):
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        self.path = path
        self.baseline = load_baseline(path)
        self.config = self.baseline.features  # .image_size: the side eval loads masks at
        self.batch_size = batch_size
        self.meta = self.baseline.meta

    def __repr__(self) -> str:
        f = self.baseline.features
        return (f"BaselineScorer({str(self.path)!r}, {self.baseline.method} on {f.image_size}x{f.image_size}x"
                f"{f.channels} pixels)")

    def infer_batch(self, frames: Sequence[np.ndarray], color_order: Union[str, Sequence[str]] = "RGB"
                    ) -> Tuple[np.ndarray, np.ndarray]:
        """uint8 frames (H, W, C) -> (zero maps (B, S, S) float32, scores (B,) float64)."""
        orders = [color_order] * len(frames) if isinstance(color_order, str) else list(color_order)
        if len(orders) != len(frames) or not set(orders) <= set(COLOR_ORDERS):
            raise ConfigError(f"color_order {color_order!r}: give one of {COLOR_ORDERS}, or one per frame")
        features = self.baseline.features
        x = np.empty((len(frames), features.dim), np.float64)  # (B, D): one detector call per batch
        for i, (frame, order) in enumerate(zip(frames, orders)):
            x[i] = features([frame], order)[0]
        scores = self.baseline.detector.score(x) if len(frames) else np.empty(0, np.float64)
        size = features.image_size
        return np.zeros((len(frames), size, size), np.float32), scores

    def close(self) -> None:
        """Nothing to release: the arrays are plain numpy."""

    def __enter__(self) -> "BaselineScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
