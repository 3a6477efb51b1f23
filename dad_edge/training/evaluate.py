"""Evaluation on an MVTec-layout test set: metrics JSON, per-image scores, ROC plot, heat-map overlays.

Every test image goes through a Detector (Detector.infer_batch: the backend's own run, the
deployed pre-processing), so the scores here are the scores `Detector(...)` gives, by
construction. Maps are compared with the ground truth at the model's resolution (masks
resized with nearest neighbour), as the field reports. The test set is only ever read here:
training never selects on it.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from dad_edge.data.imageio import read_image
from dad_edge.errors import ConfigError
from dad_edge.data.category import Category
from dad_edge.data.layouts import open_category
from dad_edge.data.mvtec import Sample, load_masks
from dad_edge.data.preprocess import check_frame, resize_bilinear
from dad_edge.runtime.detector import Detector
from dad_edge.progress import progress_bar
from dad_edge.training.localisation import add_in_image_auroc, in_image_auroc
from dad_edge.training.metrics import compute_metrics, roc_curve


@dataclass
class Predictions:
    samples: List[Sample]
    maps: np.ndarray  # (N, S, S) float32
    scores: np.ndarray  # (N,)
    masks: np.ndarray  # (N, S, S) bool
    in_image: Optional[np.ndarray] = None  # (N,) each defect image's own pixel AUROC, NaN: none

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def defect_types(self) -> List[str]:
        return [s.defect_type for s in self.samples]


def predict_test_set(detector: Detector, samples: Sequence[Sample], progress: bool = False) -> Predictions:
    """Maps (at model size) and scores of `samples`, detector.batch_size images per call."""
    image_size = detector.config.image_size
    maps, scores = [], []
    step = detector.batch_size
    with progress_bar(len(samples), "eval", enabled=progress) as bar:  # stderr, on a terminal only
        for i in range(0, len(samples), step):
            frames = [check_frame(read_image(s.path), str(s.path)) for s in samples[i:i + step]]
            m, sc = detector.infer_batch(frames, "RGB")  # files decode as RGB
            maps.append(np.asarray(m, np.float32))
            scores.append(np.asarray(sc, np.float64))
            bar.update(len(frames))
    # Defect folders without any ground truth give image metrics only (pixel metrics None); so does a
    # scorer without maps (a classical baseline, dad_edge/baselines/scorer.py).
    with_masks = [s for s in samples if s.label == 0 or s.mask_path is not None]
    masks = load_masks(with_masks, image_size) if len(with_masks) == len(samples) and \
        getattr(detector, "has_maps", True) else \
        np.zeros((len(samples), image_size, image_size), bool)
    return Predictions(list(samples), np.concatenate(maps), np.concatenate(scores), masks)


def images_without_masks(samples: Sequence[Sample], root: Path) -> Dict[str, int]:
    """{test/<defect> folder: defect images in it that have no ground-truth mask}; empty when all have one.

    Pixel metrics need a mask for every defect image; without one they are left out (None)."""
    counts: Dict[str, int] = {}
    for s in samples:
        if s.label == 1 and s.mask_path is None:
            key = str(root / "test" / s.defect_type)
            counts[key] = counts.get(key, 0) + 1
    return counts


def evaluate(detector: Detector, data_root, out_dir=None, overlays_per_type: int = 4,
             progress: bool = False, report=None) -> Dict[str, object]:
    """Metrics of `detector` over the test split of `data_root`; with `out_dir`, also
    metrics.json, scores.csv, roc.png and overlays/<type>/<stem>.png; with `report`, the HTML
    inspection report (dad_edge/report/, needs matplotlib) at that path."""
    # A folder, or a Category already open (GoodBadFolders: `--good DIR --bad DIR`, no masks).
    category = data_root if isinstance(data_root, Category) else open_category(data_root)
    preds = predict_test_set(detector, category.test_samples(), progress)
    metrics = compute_metrics(preds.labels, preds.scores, preds.masks, preds.maps, preds.defect_types)
    preds.in_image = in_image_auroc(preds.masks, preds.maps)  # all NaN without masks or maps
    add_in_image_auroc(metrics, preds.in_image, preds.defect_types)
    if getattr(category, "has_masks", True):
        root = category.root if isinstance(data_root, Category) else Path(data_root)
        metrics["images_without_masks"] = images_without_masks(preds.samples, root)
        metrics["data"] = str(root.resolve())
    else:
        metrics["images_without_masks"] = {}
        metrics["image_level_only"] = "no masks (--good/--bad folders): image-level metrics only, no pixel metrics"
        metrics["data"] = str(category)
    metrics["image_size"] = detector.config.image_size
    if out_dir is not None:
        write_report(preds, metrics, Path(out_dir), overlays_per_type)
    if report is not None:
        from dad_edge.report.page import write_html_report

        write_html_report(report, preds, metrics, getattr(detector, "thresholds", None),
                          title=str(getattr(detector, "path", None) or detector),
                          with_maps=getattr(detector, "has_maps", True))
    return metrics


def evaluate_model(model_path, data_root, out_dir=None, backend: Optional[str] = None, device: Optional[str] = None,
                   batch_size: int = 16, overlays_per_type: int = 4, progress: bool = False,
                   report=None) -> Dict[str, object]:
    """evaluate() on a model file (checkpoint, ONNX, engine) through its own Detector, closed at the end:
    what `dad-edge eval` runs. A baseline file (`dad-edge baseline`) goes through its BaselineScorer:
    image metrics only, no overlays."""
    from dad_edge.baselines.artifact import is_baseline_file
    from dad_edge.baselines.scorer import BaselineScorer

    if is_baseline_file(model_path):
        if backend or device:
            raise ConfigError(f"{model_path} is a baseline, scored with numpy: drop --backend/--device")
        with BaselineScorer(model_path, batch_size=batch_size) as scorer:
            return evaluate(scorer, data_root, out_dir, 0, progress, report)
    with Detector(model_path, backend=backend, device=device, batch_size=batch_size) as det:
        return evaluate(det, data_root, out_dir, overlays_per_type, progress, report)


def write_scores(path: Path, preds: Predictions) -> None:
    """One row per test image: path, defect type, label, score (repr: read back bit for bit) and the
    image's own pixel AUROC (empty for good images and images without a mask)."""
    in_image = preds.in_image if preds.in_image is not None else np.full(len(preds.samples), np.nan)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "defect_type", "label", "score", "pixel_auroc_in_image"])
        for s, score, auc in zip(preds.samples, preds.scores, in_image):
            w.writerow([str(s.path), s.defect_type, s.label, repr(float(score)),
                        f"{auc:.6f}" if np.isfinite(auc) else ""])


def write_report(preds: Predictions, metrics: Dict[str, object], out: Path, overlays_per_type: int) -> None:
    from dad_edge.training.plots import save_overlay, save_roc_plot
    from dad_edge.runtime.safe_paths import path_inside

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_scores(out / "scores.csv", preds)
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
            # Defect types can come from a layout's label file: a name from outside, kept inside `out`.
            save_overlay(path_inside(out, "overlays", t, s.path.stem, suffix=".png"), image, preds.maps[i],
                         gt_mask=preds.masks[i] if s.label else None)
