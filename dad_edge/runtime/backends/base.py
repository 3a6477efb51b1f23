"""The backend seam: one small abstract class that every runtime implements.

A backend loads one artifact file and runs the whole norm-guided pipeline on a batch of
pre-processed frames. Pre-processing (decode, colour, resize: dad_edge.runtime.ops.preprocess) and
post-processing (resize back, thresholds) live in the Detector, so every backend sees the
same input. A backend that pre-processes on its device (the fused torch path) says so with
`takes_frames` and gets the validated uint8 frames through `infer_frames` instead.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

# The exported graph's interface; the exporter writes these names, the runtimes read them.
INPUT_NAME = "image"  # float32 (B, C, S, S), pixel values 0..255 in model colour order
OUTPUT_NAMES = ("anomaly_map", "score")  # (B, 1, S, S) probabilities, (B,) top-k mean


class Backend(ABC):
    name: str  # "torch", "onnxruntime" or "tensorrt"
    device: str  # where it runs, in words: "cpu", "cuda:0", "CUDAExecutionProvider", ...
    meta: Dict[str, Any]  # the artifact's validated metadata
    max_batch: Optional[int] = None  # largest batch one call accepts (engines: their profile); None = any
    takes_frames: bool = False  # True: infer_frames takes uint8 frames and pre-processes them itself

    @abstractmethod
    def infer(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """x float32 (B, C, S, S) in 0..255 -> (maps float32 (B, S, S), scores float32 (B,))."""

    def infer_frames(self, frames: Sequence[np.ndarray], color_order: str) -> Tuple[np.ndarray, np.ndarray]:
        """uint8 frames (H, W, C) of any sizes in `color_order` -> as infer(); where takes_frames."""
        raise NotImplementedError(f"the {self.name} backend takes pre-processed pixels (infer)")

    def close(self) -> None:
        """Release device memory and handles; the default has nothing to release."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
