"""Torch backend: a checkpoint run through the same graph that export traces, or through the fused stages.

The reference runtime: CUDA when torch sees a GPU (or device= says so), else the CPU.
Never moves to another device silently: a device that is asked for and missing is an error.

fused: None (the default) takes the fused path (dad_edge.runtime.fused: pre-processing +
noise, combine and score as Triton kernels between the networks, GroupNorm + SiLU fused in
the U-Net) on a CUDA device where Triton is installed, and the plain DeployGraph elsewhere;
True forces it anywhere (on the CPU its stages run in the C extension or the numpy
reference: the same numbers, for tests); False always runs the plain graph. `fused_impl`
forces one form on every fused stage ("triton", "c", "reference"). Both paths compute the
same function; the fused backend overrides Backend.run to pre-process the uint8 frames on
its device (resize, colour, normalisation and noise in one kernel).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from dad_edge.errors import BackendError
from dad_edge.runtime.backends.base import Backend, by_order
from dad_edge.runtime.backends.cuda_graphs import GraphedCall


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path: Path, device: Optional[str] = None, half: bool = False,
                 fused: Optional[bool] = None, fused_impl: Optional[str] = None, cuda_graphs: bool = False):
        import torch

        from dad_edge.artifacts.checkpoint import load_model
        from dad_edge.model.deploy_graph import DeployGraph
        from dad_edge.runtime.fused import FusedPipeline, fused_available

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
        if cuda_graphs and dev.type != "cuda":
            raise BackendError(f"cuda_graphs=True needs a CUDA device (device={str(dev)!r}); CUDA graphs "
                               "replay the GPU work of one call without Python's launch overhead")
        model, self.meta = load_model(path, device=str(dev))
        self.dtype = torch.float16 if half else torch.float32
        if fused is None:
            fused = fused_available(dev)
        try:
            # Before the cast to half: the pipeline keeps a float32 copy of the fixed noise.
            self.fused = FusedPipeline(model, impl=fused_impl) if fused else None
        except ValueError as exc:
            raise BackendError(f"fused_impl: {exc}") from None
        self.graph = DeployGraph(model).to(self.dtype).eval()
        self.device = str(dev)
        # With cuda_graphs: the network part captured once per batch size (cuda_graphs.py);
        # pre-processing (uploads of frames of any size) stays outside the graph.
        self._network = self.fused.stages if self.fused is not None else self.graph
        if cuda_graphs:
            self._network = GraphedCall(self._network)

    @property
    def graphed(self) -> Optional[GraphedCall]:
        """The CUDA graphs of the network (cuda_graphs=True), else None."""
        return self._network if isinstance(self._network, GraphedCall) else None

    def infer(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            if self.fused is not None:
                prepared = self.fused.prepare_pixels(torch.from_numpy(np.ascontiguousarray(x, np.float32)))
                maps, scores, _ = self._network(*prepared)
            else:
                image = torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device, self.dtype)
                maps, scores = self._network(image)
            return maps[:, 0].float().cpu().numpy(), scores.float().cpu().numpy()

    def run(self, frames: Sequence[np.ndarray], color_order) -> Tuple[np.ndarray, np.ndarray]:
        """As Backend.run; the fused path pre-processes on its device instead of on the host
        (one call of its stages per colour order in the batch)."""
        if self.fused is None:
            return super().run(frames, color_order)
        frames = list(frames)
        maps, scores = [None] * len(frames), np.empty(len(frames), np.float32)
        with self._torch.inference_mode():
            for order, idx in by_order(color_order, len(frames)):
                m, s, _ = self._network(*self.fused.prepare_frames([frames[i] for i in idx], order))
                m, s = m[:, 0].cpu().numpy(), s.cpu().numpy()
                for j, i in enumerate(idx):
                    maps[i] = m[j]
                scores[idx] = s
        return np.stack(maps), scores
