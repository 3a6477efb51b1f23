"""What a Detector returns for one image: score, label, map and mask at the image's size."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import cv2
import numpy as np


@dataclass
class Result:
    source: str  # file path, or "array" / "array[i]"
    score: Optional[float] = None  # raw image score in [0, 1]: mean of the top-k map values
    normalized_score: Optional[float] = None  # image threshold at 0.5; None until calibrated
    label: Optional[bool] = None  # True = anomalous (score >= image threshold); None until calibrated
    anomaly_map: Optional[np.ndarray] = None  # float32 (H, W) at the input's own size, values in [0, 1]
    mask: Optional[np.ndarray] = None  # bool (H, W): map >= pixel threshold; None until calibrated
    image: Optional[np.ndarray] = field(default=None, repr=False)  # the input, RGB or gray uint8, for plot()
    speed: Dict[str, float] = field(default_factory=dict)  # ms per image: preprocess, inference, postprocess
    error: Optional[str] = None  # why this item failed; everything else is then None

    @property
    def ok(self) -> bool:
        return self.error is None

    def _check_ok(self) -> None:
        if not self.ok:
            raise ValueError(f"{self.source} has no result: {self.error}")

    def plot(self) -> np.ndarray:
        """RGB uint8 (H, W, 3): the heat map over the image, the mask outlined, the verdict written on it."""
        from dad_edge.runtime.overlay import heatmap_overlay

        self._check_ok()
        canvas = heatmap_overlay(self.image, self.anomaly_map, pred_mask=self.mask)
        verdict = {None: "", True: " ANOMALY", False: " good"}[self.label]
        shown = self.normalized_score if self.normalized_score is not None else self.score
        text = f"{shown:.3f}{verdict}"
        scale = max(0.4, canvas.shape[1] / 640)
        thickness = max(1, round(scale * 2))
        origin = (4, 4 + int(22 * scale))
        # Dark outline under light text: readable over any colour of the heat map.
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
        return canvas

    def save(self, path) -> None:
        """Write plot() to `path` (the extension picks the format)."""
        from dad_edge.data.imageio import write_image

        write_image(path, self.plot())

    def to_dict(self) -> Dict[str, Any]:
        """Everything but the arrays, JSON-ready; the mask is summarised as its pixel count."""
        shape = None if self.anomaly_map is None else list(self.anomaly_map.shape)
        return {
            "source": self.source,
            "ok": self.ok,
            "error": self.error,
            "score": self.score,
            "normalized_score": self.normalized_score,
            "label": self.label,
            "anomalous_pixels": None if self.mask is None else int(self.mask.sum()),
            "shape": shape,
            "speed": self.speed,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
