"""Evaluation on an MVTec-layout test set: metrics JSON, ROC plot, heat-map overlays.

Maps are compared with the ground truth at the model's resolution (masks resized with
nearest neighbour), as the field reports. The model sees exactly the pre-processing of
the deployed Detector (dad_edge/data/preprocess.py), so scores here are the scores in production.
The test set is only ever read here: training never selects on it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dad_edge.data.mvtec import MVTecCategory, Sample, load_masks
from dad_edge.data.imageio import read_image
from dad_edge.training.metrics import compute_metrics, roc_curve
from dad_edge.data.preprocess import resize_bilinear

# frames (list of uint8 RGB/gray images, any size) -> maps (B, S, S), scores (B,)
InferFn = Callable[[List[np.ndarray]], Tuple[np.ndarray, np.ndarray]]


@dataclass
class Predictions:
    samples: List[Sample]
    maps: np.ndarray  # (N, S, S) float32
    scores: np.ndarray  # (N,)
    masks: np.ndarray  # (N, S, S) bool

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def defect_types(self) -> List[str]:
        return [s.defect_type for s in self.samples]


def backend_infer_fn(model_path, backend: Optional[str] = None, device: Optional[str] = None) -> Tuple[InferFn, int]:
    """An InferFn for any artifact (checkpoint, ONNX, engine) through the Detector's own
    backend and pre-processing, and the model's image size: evaluation scores are the
    scores the deployed Detector gives."""
    from dad_edge.runtime import ops
    from dad_edge.runtime.backends import load_backend
    from dad_edge.artifacts.metadata import model_config

    be = load_backend(Path(model_path), backend, device=device)
    cfg = model_config(be.meta)
    step = be.max_batch or 10 ** 9

    def infer(frames: List[np.ndarray]):
        x = ops.preprocess(frames, cfg.image_size, cfg.channels, "RGB", normalize=False)  # as the Detector
        outs = [be.infer(x[i:i + step]) for i in range(0, len(x), step)]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])

    return infer, cfg.image_size


def predict_test_set(infer: InferFn, image_size: int, samples: Sequence[Sample], batch_size: int = 16,
                     progress: bool = False) -> Predictions:
    maps, scores = [], []
    for i in range(0, len(samples), batch_size):
        frames = [read_image(s.path) for s in samples[i:i + batch_size]]
        m, sc = infer(frames)
        maps.append(np.asarray(m, np.float32))
        scores.append(np.asarray(sc, np.float64))
        if progress:
            print(f"\r  {min(i + batch_size, len(samples))}/{len(samples)} test images", end="", flush=True)
    if progress:
        print(flush=True)
    # Defect folders without any ground truth give image metrics only (pixel metrics None).
    with_masks = [s for s in samples if s.label == 0 or s.mask_path is not None]
    masks = load_masks(with_masks, image_size) if len(with_masks) == len(samples) else \
        np.zeros((len(samples), image_size, image_size), bool)
    return Predictions(list(samples), np.concatenate(maps), np.concatenate(scores), masks)


def evaluate(infer: InferFn, image_size: int, data_root, out_dir=None, batch_size: int = 16,
             overlays_per_type: int = 4, progress: bool = False) -> Dict[str, object]:
    """Metrics over the test split of `data_root`; with `out_dir`, also metrics.json,
    roc.png and overlays/<type>/<stem>.png."""
    category = MVTecCategory(data_root)
    preds = predict_test_set(infer, image_size, category.test_samples(), batch_size, progress)
    metrics = compute_metrics(preds.labels, preds.scores, preds.masks, preds.maps, preds.defect_types)
    metrics["data"] = str(Path(data_root).resolve())
    metrics["image_size"] = image_size
    if out_dir is not None:
        write_report(preds, metrics, Path(out_dir), overlays_per_type)
    return metrics


def write_report(preds: Predictions, metrics: Dict[str, object], out: Path, overlays_per_type: int) -> None:
    from dad_edge.training.plots import save_overlay, save_roc_plot

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    curves = {}
    if metrics.get("image_auroc") is not None:
        fpr, tpr, _ = roc_curve(preds.labels, preds.scores)
        curves["image"] = (fpr, tpr)
    if metrics.get("pixel_auroc") is not None:
        fpr, tpr, _ = roc_curve(preds.masks.reshape(-1), preds.maps.reshape(-1))
        curves["pixel"] = (fpr, tpr)
    if curves:
        save_roc_plot(out / "roc.png", curves)
    # The highest-scoring images of each type: what a user looks at first.
    by_type: Dict[str, List[int]] = {}
    for i, t in enumerate(preds.defect_types):
        by_type.setdefault(t, []).append(i)
    size = preds.maps.shape[-1]
    for t, idx in by_type.items():
        for i in sorted(idx, key=lambda j: -preds.scores[j])[:overlays_per_type]:
            s = preds.samples[i]
            image = np.rint(resize_bilinear(read_image(s.path).astype(np.float32), size)).astype(np.uint8)
            save_overlay(out / "overlays" / t / f"{s.path.stem}.png", image, preds.maps[i],
                         gt_mask=preds.masks[i] if s.label else None)
