"""Torch backend: a checkpoint run through the same graph that export traces.

The reference runtime: CUDA when torch sees a GPU (or device= says so), else the CPU.
Never moves to another device silently: a device that is asked for and missing is an error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ..errors import BackendError
from .base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path: Path, device: Optional[str] = None, half: bool = False):
        import torch

        from dad_edge.checkpoint import load_model
        from dad_edge.export.graph import DeployGraph

        self._torch = torch
        try:
            dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except (RuntimeError, ValueError):
            raise BackendError(f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N'") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"device={device!r} but torch sees no CUDA GPU (torch {torch.__version__}); "
                               "use device='cpu' or install a CUDA build of torch")
        if half and dev.type != "cuda":
            raise BackendError("half=True needs a CUDA device; on the CPU the torch backend runs fp32")
        model, self.meta = load_model(path, device=str(dev))
        self.dtype = torch.float16 if half else torch.float32
        self.graph = DeployGraph(model).to(self.dtype).eval()
        self.device = str(dev)

    def infer(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            image = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device, self.dtype)
            maps, scores = self.graph(image)
            return maps[:, 0].float().cpu().numpy(), scores.float().cpu().numpy()
