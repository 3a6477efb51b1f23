"""What a Detector returns for one image: score, label, map and mask at the image's size.

    r = det(frame)
    r.score, r.normalized_score, r.label        # raw score, threshold at 0.5, anomalous?
    r.anomaly_map, r.mask                       # float32 / bool (H, W) at the frame's own size
    r.boxes                                     # [(x, y, w, h, score)] of the anomalous regions
    cv2.imwrite("x.png", r.plot())              # BGR, as OpenCV and the Detector's frames
"""
from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from dad_edge.artifacts.metadata import Thresholds
from dad_edge.errors import ConfigError, DataError
from dad_edge.runtime.regions import Region, anomaly_regions, region_mask

PLOT_COLOR_ORDERS = ("BGR", "RGB")


@dataclass
class Result:
    """One image's result. The arrays stay out of repr() (print(r) is one line); `boxes` is computed
    from the mask on each access, not stored."""

    source: str  # file path, or "array" / "array[i]"
    score: Optional[float] = None  # raw image score in [0, 1]: mean of the top-k map values
    normalized_score: Optional[float] = None  # the image threshold in use at 0.5; None until calibrated
    label: Optional[bool] = None  # True = anomalous (score >= image threshold); None until calibrated
    anomaly_map: Optional[np.ndarray] = field(default=None, repr=False)  # float32 (H, W), input's size, in [0, 1]
    mask: Optional[np.ndarray] = field(default=None, repr=False)  # bool (H, W): map >= pixel threshold
    image: Optional[np.ndarray] = field(default=None, repr=False)  # the input, RGB or gray uint8, for plot()
    speed: Dict[str, float] = field(default_factory=dict)  # ms per image: preprocess, inference, postprocess
    error: Optional[str] = None  # why this item failed; everything else is then None
    thresholds: Optional[Thresholds] = field(default=None, repr=False)  # what label and mask were decided with

    @property
    def ok(self) -> bool:
        return self.error is None

    def _check_ok(self) -> None:
        if not self.ok:
            raise ValueError(f"{self.source} has no result: {self.error}")

    @property
    def boxes(self) -> List[Region]:
        """The anomalous regions, largest first: (x, y, w, h, score) in the image's pixels, score the
        highest map value inside; [] for a good or uncalibrated image. The same regions as the
        stream's events file (dad_edge/runtime/regions.py)."""
        image_threshold = None if self.thresholds is None else self.thresholds.image
        mask = region_mask(self.anomaly_map, self.mask, self.label, image_threshold)
        return [] if mask is None else anomaly_regions(self.anomaly_map, mask)

    def plot(self, color_order: str = "BGR") -> np.ndarray:
        """uint8 (H, W, 3): the heat map over the image, the mask outlined, the verdict written on it.

        BGR by default, as OpenCV (cv2.imwrite, cv2.imshow), ultralytics' plot() and the Detector's
        own default for frames; color_order="RGB" for matplotlib or PIL."""
        from dad_edge.runtime.overlay import heatmap_overlay

        if color_order not in PLOT_COLOR_ORDERS:
            raise ConfigError(f"color_order={color_order!r} must be one of {PLOT_COLOR_ORDERS}")
        self._check_ok()
        canvas = heatmap_overlay(self.image, self.anomaly_map, pred_mask=self.mask)  # RGB
        verdict = {None: "", True: " ANOMALY", False: " good"}[self.label]
        shown = self.normalized_score if self.normalized_score is not None else self.score
        text = f"{shown:.3f}{verdict}"
        scale = max(0.4, canvas.shape[1] / 640)
        thickness = max(1, round(scale * 2))
        origin = (4, 4 + int(22 * scale))
        # Dark outline under light text: readable over any colour of the heat map.
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
        return cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR) if color_order == "BGR" else canvas

    def save(self, path) -> None:
        """Write plot() to `path` (the extension picks the format)."""
        from dad_edge.data.imageio import write_image

        write_image(path, self.plot(color_order="RGB"))  # write_image takes RGB

    def save_maps(self, folder, stem: Optional[str] = None) -> List[Path]:
        """Write the raw map and the mask into `folder`; returns the files written.

        <stem>_map.tiff: the anomaly map as float32 TIFF, at the image's size, value for value (the
        numbers the thresholds compare; a 16-bit PNG would round them to 1/65535, and TIFF, unlike
        .npy, opens in image tools: ImageJ, tifffile, cv2.imread(path, cv2.IMREAD_UNCHANGED)).
        <stem>_mask.png: the mask as 0 / 255, when the model has a pixel threshold. Written
        atomically. `stem`: default the source file's stem."""
        from dad_edge.artifacts.atomic import write_bytes_atomic
        from dad_edge.runtime.safe_paths import safe_filename

        self._check_ok()
        folder = Path(folder)
        stem = safe_filename(stem or Path(self.source).stem)  # a source may be a URL, or a name given from outside
        written = [(folder / f"{stem}_map.tiff", ".tiff", np.ascontiguousarray(self.anomaly_map, np.float32))]
        if self.mask is not None:
            written.append((folder / f"{stem}_mask.png", ".png", self.mask.astype(np.uint8) * 255))
        for path, ext, array in written:
            ok, buf = cv2.imencode(ext, array)
            if not ok:
                raise DataError(f"{path}: OpenCV could not encode this {array.dtype} array as {ext}")
            write_bytes_atomic(path, buf.tobytes())
        return [path for path, _, _ in written]

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
            "boxes": [list(b) for b in self.boxes] if self.ok else [],
            "thresholds": None if self.thresholds is None else
            {"image": self.thresholds.image, "pixel": self.thresholds.pixel},
            "shape": shape,
            "speed": self.speed,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())
