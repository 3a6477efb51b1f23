"""`dad-edge calibrate`: run an artifact over data, choose thresholds, write them into it.

Scores and maps come from Detector.infer_batch with each map at its image's own size, where
the Detector applies the thresholds (the convention of training's thresholds too, see
dad_edge/training/thresholds.py). With anomalous images (an MVTec-layout category folder whose
test/ holds defect folders): image threshold at the F1-max of the image scores, pixel
threshold at the F1-max over all pixels (masks). With good images only (a plain folder, or a
category whose test/ has only good): the `quantile` of the good scores and of the good maps' maxima.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np

from dad_edge.artifacts.metadata import SCORE_NORMALIZATION
from dad_edge.training.thresholds import f1_thresholds, quantile_thresholds
from dad_edge.data.category import Category
from dad_edge.data.layouts import detect_layout, open_category
from dad_edge.data.mvtec import GOOD, Sample
from dad_edge.runtime.detector import Detector
from dad_edge.progress import progress_bar
from dad_edge.errors import DadEdgeError, DataError
from dad_edge.data.imageio import IMAGE_EXTENSIONS, list_images, read_image
from dad_edge.data.preprocess import check_frame
from dad_edge.artifacts.metadata import Thresholds

from .metadata_io import write_metadata


def calibration_samples(data) -> List[Sample]:
    """The test set of a category folder (MVTec with test/, a VisA object, a DAGM class), else every
    image under `data` as good; a Category already open (GoodBadFolders: `--good DIR --bad DIR`) gives
    its test samples."""
    if isinstance(data, Category):
        return data.test_samples()
    root = Path(data)
    if (root / "test").is_dir() or detect_layout(root) in ("visa", "dagm"):
        return open_category(root).test_samples()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; pass a category folder (MVTec layout) or a folder of good images")
    files = list_images(root, recursive=True)
    if not files:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) to calibrate on")
    return [Sample(p, GOOD, None) for p in files]


def _mask(sample: Sample, shape) -> Optional[np.ndarray]:
    """Ground truth at the map's size; all False for good images; None without a mask file."""
    if sample.label == 0:
        return np.zeros(shape, bool)
    if sample.mask_path is None:
        return None
    mask = sample.read_mask()
    if mask.shape != shape:
        mask = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return mask


def _score(det: Detector, samples: List[Sample], progress: bool = False):
    """-> (the samples read, their scores, their maps at each image's own size): through
    Detector.infer_batch(frame_size=True), the convention of every threshold (training/thresholds.py).
    A file that cannot be read is reported (a warning) and left out; the rest go on."""
    kept, scores, maps = [], [], []
    with progress_bar(len(samples), "calibrate", enabled=progress) as bar:  # stderr, on a terminal only
        for start in range(0, len(samples), det.batch_size):
            chunk, frames = [], []
            for sample in samples[start:start + det.batch_size]:
                try:
                    frames.append(check_frame(read_image(sample.path), str(sample.path)))
                except DadEdgeError as exc:
                    warnings.warn(f"calibration: skipped {exc}", stacklevel=3)
                    continue
                chunk.append(sample)
            if frames:
                m, s = det.infer_batch(frames, "RGB", frame_size=True)  # files decode as RGB
                kept += chunk
                scores += [float(v) for v in s]
                maps += m
            bar.update(len(samples[start:start + det.batch_size]))
    return kept, np.array(scores), maps


def calibrate(artifact, data, quantile: float = 0.99, backend: Optional[str] = None,
              device: Optional[str] = None, batch_size: int = 8, progress: bool = False) -> Thresholds:
    """Choose thresholds for `artifact` on `data`, store them in it (atomically), return them.
    `data`: a folder (see calibration_samples) or a Category; `progress`: a bar on stderr (a terminal)."""
    samples = calibration_samples(data)
    with Detector(artifact, backend=backend, device=device, batch_size=batch_size) as det:
        meta = det.meta
        kept, scores, maps = _score(det, samples, progress)
    if not kept:
        raise DataError(f"{data}: none of the {len(samples)} images could be read")
    labels = np.array([s.label for s in kept])
    if labels.all():
        raise DataError(f"{data}: no good images among the {len(kept)} read; thresholds need good images "
                        "(test/good/, or a folder of good images)")
    if labels.any():
        masks = [_mask(s, m.shape) for s, m in zip(kept, maps)]
        thresholds = f1_thresholds(labels, scores, maps, None if any(m is None for m in masks) else masks, quantile)
    else:
        thresholds = quantile_thresholds(scores, maps, quantile, source=f"quantile of {len(kept)} good images")
    write_metadata(artifact, {**meta, "thresholds": thresholds.to_dict(), "score_normalization": SCORE_NORMALIZATION})
    return thresholds
