"""Helpers shared by the stream tests and benchmark: a generated video with known defective
frames, and a tiny ONNX model whose thresholds separate them."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Tuple

import cv2
import numpy as np

from dad_edge.artifacts import metadata as md
from dad_edge.model.config import preset
from deploy_support import write_checkpoint

SIZE = (160, 120)  # (w, h) of the generated frames
DEFECT_RADIUS = 22


def defect_centre(index: int) -> Tuple[int, int]:
    """Where frame `index` carries its defect (it moves, so no two defective frames are alike)."""
    return 40 + (2 * index) % 80, 60


def write_video(path: Path, n_frames: int, defective: Iterable[int], fps: float = 25.0, seed: int = 0) -> Path:
    """An mp4 (mp4v) of a still textured scene with sensor noise; `defective` frames carry a black disc."""
    defective = set(defective)
    rng = np.random.default_rng(seed)
    w, h = SIZE
    scene = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    scene = cv2.normalize(scene, None, 60, 200, cv2.NORM_MINMAX).astype(np.int16)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, SIZE)
    assert writer.isOpened(), "this OpenCV cannot write mp4v"
    noise = rng.integers(-6, 7, (16, h, w, 3), dtype=np.int16)  # reused: long videos stay fast to make
    for i in range(n_frames):
        frame = np.clip(scene + noise[i % len(noise)], 0, 255).astype(np.uint8)
        if i in defective:
            cv2.circle(frame, defect_centre(i), DEFECT_RADIUS, (0, 0, 0), -1)
        writer.write(frame)
    writer.release()
    return path


def read_video(path: Path) -> List[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def calibrated_onnx(tmp: Path, video: Path, defective: Iterable[int]) -> Path:
    """A tiny random ONNX model, thresholds set between the good and the defective frames of `video`.

    image threshold: midway between the highest good score and the lowest defective one
    (asserted to exist: seed 2 separates the black disc by about 10x the spread of the good
    scores); pixel threshold: just above the highest map value on a good frame, so that only
    defects make mask pixels.
    """
    import dad_edge
    from dad_edge.export.metadata_io import read_metadata, write_metadata
    from dad_edge.export.onnx_export import export_onnx

    defective = set(defective)
    ckpt = write_checkpoint(tmp / "tiny.safetensors", preset("tiny"), seed=2, std=0.1)
    onnx_path = tmp / "tiny.onnx"
    export_onnx(ckpt, onnx_path)
    frames = read_video(video)
    with dad_edge.Detector(onnx_path) as det:
        results = det(frames)
    good = [r for i, r in enumerate(results) if i not in defective]
    bad = [r for i, r in enumerate(results) if i in defective]
    top_good, low_bad = max(r.score for r in good), min(r.score for r in bad)
    assert top_good < low_bad, f"the tiny model does not separate the defects: {top_good} >= {low_bad}"
    pixel = float(np.nextafter(max(r.anomaly_map.max() for r in good), np.float32(1)))  # float32 just above
    meta = read_metadata(onnx_path)
    meta["thresholds"] = md.Thresholds(image=(top_good + low_bad) / 2, pixel=pixel, source="test").to_dict()
    write_metadata(onnx_path, meta)
    return onnx_path
