"""The backend seam: one small abstract class that every runtime implements.

A backend loads one artifact file and runs the whole norm-guided pipeline on a batch of
pre-processed frames. Pre-processing (decode, colour, resize: dad_edge.runtime.ops.preprocess) and
post-processing (resize back, thresholds) live in the Detector. The Detector reaches every
backend through one call, `run(frames, color_order)`: the base implementation pre-processes
on the host (ops.preprocess) and calls the backend's `infer` on the pixels, so every backend
sees the same input; a backend that pre-processes on its device (the fused torch path)
overrides `run` alone, and the Detector needs no branch for it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from dad_edge.errors import ConfigError
from dad_edge.runtime import ops

# The exported graph's interface; the exporter writes these names, the runtimes read them.
INPUT_NAME = "image"  # float32 (B, C, S, S), pixel values 0..255 in model colour order
OUTPUT_NAMES = ("anomaly_map", "score")  # (B, 1, S, S) probabilities, (B,) top-k mean


def as_orders(color_order: Union[str, Sequence[str]], n: int) -> List[str]:
    """One colour order for all n frames, or one per frame -> one per frame."""
    return [color_order] * n if isinstance(color_order, str) else list(color_order)


def by_order(color_order: Union[str, Sequence[str]], n: int) -> List[Tuple[str, List[int]]]:
    """-> [(colour order, indices of the frames in it)]: the one split of a batch by colour order."""
    orders = as_orders(color_order, n)
    return [(o, [i for i, x in enumerate(orders) if x == o]) for o in sorted(set(orders))]


class Backend(ABC):
    name: str  # "torch", "onnxruntime" or "tensorrt"
    device: str  # where it runs, in words: "cpu", "cuda:0", "CUDAExecutionProvider", ...
    meta: Dict[str, Any]  # the artifact's validated metadata
    max_batch: Optional[int] = None  # largest batch one call accepts (engines: their profile); None = any
    # run() is infer(prepare(...)): the Detector may prepare the next batch on the host while this one runs
    # (runtime/double_buffer.py). False for a backend that pre-processes on its device or on a server.
    prepares_on_host: bool = True
    # Batches the Detector may submit before it collects the first (submit / collect below): 2 where a
    # backend overlaps one batch's copy-in with another's compute (the torch backend's resident path).
    in_flight: int = 1

    @abstractmethod
    def infer(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """x float32 (B, C, S, S) in 0..255 -> (maps float32 (B, S, S), scores float32 (B,))."""

    @property
    def config(self):
        """The artifact's ModelConfig (image_size, channels: what pre-processing resizes to)."""
        from dad_edge.artifacts import metadata as md
        return md.model_config(self.meta)

    def run(self, frames: Sequence[np.ndarray], color_order: Union[str, Sequence[str]]) -> Tuple[np.ndarray, np.ndarray]:
        """Validated uint8 frames (H, W, C) of any sizes -> as infer(); `color_order`: one for
        all frames or one per frame.

        The one entry the Detector uses: pre-processing on the host (`prepare`), then one `infer`
        call for the whole batch. A backend that overrides run sets prepares_on_host to False."""
        return self.infer(self.prepare(frames, color_order))

    def submit(self, frames: Sequence[np.ndarray], color_order: Union[str, Sequence[str]]) -> Any:
        """Start run() on a batch and return a handle for `collect`. The default runs it to the end
        here; a backend with in_flight > 1 returns before its device has finished."""
        return self.run(frames, color_order)

    def collect(self, handle: Any) -> Tuple[np.ndarray, np.ndarray]:
        """The result of a submitted batch (run()'s); each handle is collected once, in submit order."""
        return handle

    def prepare(self, frames: Sequence[np.ndarray], color_order: Union[str, Sequence[str]]) -> np.ndarray:
        """run()'s host half: frames -> float32 (B, C, S, S) pixels 0..255 for `infer` (one
        ops.preprocess call per colour order in the batch, one in practice). No backend state is
        touched, so the Detector may call it on another thread while `infer` runs."""
        c = self.config
        frames = list(frames)
        out = np.empty((len(frames), c.channels, c.image_size, c.image_size), np.float32)
        for order, idx in by_order(color_order, len(frames)):
            out[idx] = ops.preprocess([frames[i] for i in idx], c.image_size, c.channels, order, normalize=False)
        return out

    @staticmethod
    def reject_torch_options(fused: Optional[bool] = None, cuda_graphs: bool = False) -> None:
        """For the backends that run their own graph: fused / cuda_graphs are torch options, and
        asking for them elsewhere is a mistake to report rather than ignore."""
        if fused or cuda_graphs:
            raise ConfigError(f"{'fused' if fused else 'cuda_graphs'}=True applies to the torch backend (a "
                              ".safetensors checkpoint); ONNX Runtime and TensorRT run their own graph")

    def close(self) -> None:
        """Release device memory and handles; the default has nothing to release."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
