"""Decision thresholds from scores: F1-max with anomalies at hand, else a quantile of good.

One convention for every threshold (training's and `dad-edge calibrate`'s): scores and maps
as the Detector gives them, through Detector.infer_batch, with each map at its frame's own
size (infer_batch(frame_size=True)): the maps the pixel threshold is applied to in a Result.
Scores are also reported normalised so that the threshold maps to 0.5 (see normalize_score).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from dad_edge.artifacts.metadata import SCORE_NORMALIZATION, Thresholds, normalize_score  # noqa: F401 (re-exported)
from dad_edge.data.preprocess import check_frame
from dad_edge.errors import DataError
from dad_edge.training.metrics import f1_max

if TYPE_CHECKING:
    from dad_edge.runtime.detector import Detector


def _check_quantile(quantile: float) -> None:
    if not 0.5 <= quantile < 1:
        raise ValueError(f"quantile={quantile} must be in [0.5, 1)")


def quantile_thresholds(good_scores: np.ndarray, good_maps: Sequence[np.ndarray], quantile: float = 0.99,
                        source: str = "quantile of held-out good images") -> Thresholds:
    """Image threshold at `quantile` of good image scores; pixel threshold at the same
    quantile of the good images' per-image map maxima (so a good image is rarely flagged).

    `good_maps` is an (N, H, W) array or a list of maps of any sizes.
    """
    _check_quantile(quantile)
    good_scores = np.asarray(good_scores, dtype=np.float64)
    pixel_max = np.array([np.max(m) for m in good_maps], dtype=np.float64)
    return Thresholds(image=float(np.quantile(good_scores, quantile)),
                      pixel=float(np.quantile(pixel_max, quantile)),
                      source=f"{source} (q={quantile})")


def f1_thresholds(labels: np.ndarray, scores: np.ndarray, maps: Sequence[np.ndarray],
                  masks: Optional[Sequence[np.ndarray]], quantile: float = 0.99) -> Thresholds:
    """Thresholds from a labelled set with anomalous images.

    Image threshold: F1-max of the image scores. Pixel threshold: F1-max over all pixels
    pooled when ground-truth masks (each the shape of its map) hold anomalous pixels;
    otherwise the quantile rule on the maps of the good images.
    """
    _check_quantile(quantile)
    labels = np.asarray(labels).reshape(-1) != 0
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.all() or not labels.any():
        raise ValueError("F1-max thresholds need both good and anomalous images; "
                         "use quantile_thresholds for good images only")
    image_f1, image_t = f1_max(labels, scores)
    source = f"F1-max over {labels.size} images ({int(labels.sum())} anomalous, image F1 {image_f1:.3f})"
    if masks is not None and any(m.any() for m in masks):
        pixel_f1, pixel_t = f1_max(np.concatenate([m.reshape(-1) for m in masks]),
                                   np.concatenate([np.asarray(m, np.float32).reshape(-1) for m in maps]))
        source += f"; pixel F1-max {pixel_f1:.3f}"
    else:
        pixel_t = float(np.quantile([np.max(m) for m, bad in zip(maps, labels) if not bad], quantile))
        source += f"; pixel: q={quantile} of good map maxima (no pixel ground truth)"
    return Thresholds(image=float(image_t), pixel=float(pixel_t), source=source)


def detector_thresholds(detector: "Detector", frames: Sequence[np.ndarray], quantile: float = 0.99,
                        color_order: str = "RGB", source: str = "quantile of held-out good images") -> Thresholds:
    """Quantile thresholds (quantile_thresholds) from good frames, scored by `detector` exactly as
    it scores in deployment: Detector.infer_batch, maps at each frame's own size.

    frames: uint8 (H, W), (H, W, 1) or (H, W, 3) images of any sizes, in `color_order` ("RGB":
    as read_image and the data loaders give them). For a model in training, pass
    Detector.from_module(model, meta, color_order=...) as `detector`."""
    _check_quantile(quantile)
    frames = [check_frame(f, f"threshold frame {i}") for i, f in enumerate(frames)]
    if not frames:
        raise DataError("thresholds need at least one good frame; got none")
    maps, scores = detector.infer_batch(frames, color_order, frame_size=True)
    return quantile_thresholds(scores, maps, quantile, source=source)
