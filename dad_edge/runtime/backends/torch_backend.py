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

TorchBackend.from_module wraps a DiffusionAD already in memory (training's threshold step:
Detector.from_module), sharing it rather than loading a file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from dad_edge.errors import BackendError, ConfigError
from dad_edge.runtime.backends.base import Backend, as_orders, by_order
from dad_edge.runtime.backends.cuda_graphs import GraphedCall


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path: Path, device: Optional[str] = None, half: bool = False,
                 fused: Optional[bool] = None, fused_impl: Optional[str] = None, cuda_graphs: bool = False,
                 resident: bool = False):
        import torch

        from dad_edge.artifacts.checkpoint import load_model

        self._torch = torch
        dev = self._device(device, half, cuda_graphs)
        model, meta = load_model(path, device=str(dev))
        self._grad_off = torch.inference_mode  # the model is this backend's own
        self._restore_training = False
        self._setup(model, meta, dev, half, fused, fused_impl, cuda_graphs, resident)

    @classmethod
    def from_module(cls, model, meta: Optional[Dict[str, Any]] = None, device: Optional[str] = None) -> "TorchBackend":
        """A backend over an in-memory DiffusionAD (a model being trained), without writing a file.

        The module is shared, not copied: it runs where it is (`device`, when given, must be
        that device: nothing is moved), in float32 through the plain graph (the one export
        traces), under torch.no_grad (not inference_mode, so that the module's tensors stay
        usable for training). It is put in eval mode while the backend is open and back in
        training mode by close() if it was training. `meta`: the model's metadata
        (artifacts.metadata.build_metadata; its thresholds become the Detector's), default
        build_metadata(model.cfg); its model config must be the module's."""
        import torch

        from dad_edge.artifacts import metadata as md

        self = cls.__new__(cls)
        self._torch = torch
        try:
            params = next(model.parameters())
            cfg = model.cfg
        except (AttributeError, StopIteration, TypeError):
            raise BackendError(f"from_module needs a DiffusionAD module, got {type(model).__name__}") from None
        here = params.device
        if device is not None:
            asked = self._device(device, False, False)
            if asked.type != here.type or (None not in (asked.index, here.index) and asked.index != here.index):
                raise BackendError(f"device={device!r} but the module is on {here}; the module is used in "
                                   "place and never moved: pass device=None or move the module first")
        if meta is None:
            meta = md.build_metadata(cfg)
        else:
            meta = md.validate_metadata(meta, "from_module metadata")
            if md.model_config(meta) != cfg:
                raise BackendError("from_module: the metadata's model config differs from the module's "
                                   f"({md.model_config(meta)} vs {cfg}); build it with build_metadata(model.cfg)")
        self._grad_off = torch.no_grad
        self._restore_training = model.training
        self._setup(model, meta, here, False, False, None, False)
        return self

    def _device(self, device: Optional[str], half: bool, cuda_graphs: bool):
        """The torch device asked for (default: CUDA where torch sees it), checked: never a silent change."""
        torch = self._torch
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
        return dev

    def _setup(self, model, meta, dev, half: bool, fused: Optional[bool], fused_impl: Optional[str],
               cuda_graphs: bool, resident: bool = False) -> None:
        from dad_edge.model.deploy_graph import DeployGraph
        from dad_edge.runtime.fused import FusedPipeline, fused_available

        torch = self._torch
        self.meta = meta
        self.module = model
        self.dtype = torch.float16 if half else torch.float32
        if fused is None:  # the fused stages are DiffusionAD's: a recon model takes the plain graph
            fused = fused_available(dev) and model.cfg.method == "diffusionad"
        try:
            # Before the cast to half: the pipeline keeps a float32 copy of the fixed noise.
            self.fused = FusedPipeline(model, impl=fused_impl) if fused else None
        except ConfigError:  # a model the fused path does not run (its message names the method)
            raise
        except ValueError as exc:
            raise BackendError(f"fused_impl: {exc}") from None
        self.graph = DeployGraph(model).to(self.dtype).eval()
        self.device = str(dev)
        # With cuda_graphs: the network part captured once per batch size (cuda_graphs.py);
        # pre-processing (uploads of frames of any size) stays outside the graph.
        self._network = self.fused.stages if self.fused is not None else self.graph
        self.resident = None
        if resident:  # its graphs take the whole call, pre-processing included (resident.py)
            from dad_edge.runtime.resident import ResidentPipeline, resident_forward
            self.resident = ResidentPipeline(resident_forward(self), self.config.image_size, dev, graphs=cuda_graphs)
            self.in_flight = 2
        elif cuda_graphs:
            self._network = GraphedCall(self._network)

    def close(self) -> None:
        """Drop the graphs and the model; a module from from_module goes back to training mode if it was in it."""
        module = getattr(self, "module", None)
        if module is not None and self._restore_training:
            module.train()
        if getattr(self, "resident", None) is not None:
            self.resident.close()
        self.module = self.graph = self.fused = self._network = self.resident = None

    @property
    def prepares_on_host(self) -> bool:
        """The fused and resident paths pre-process on the device (run below); the plain graph on the host."""
        return self.fused is None and self.resident is None

    @property
    def graphed(self) -> Optional[GraphedCall]:
        """The CUDA graphs of the network (cuda_graphs=True), else None."""
        return self._network if isinstance(self._network, GraphedCall) else None

    def _check_open(self) -> None:
        if self._network is None:
            raise BackendError("this torch backend is closed (its Detector was closed); open the model again")

    def infer(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        self._check_open()
        with self._grad_off():
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
        return self.collect(self.submit(frames, color_order))

    def submit(self, frames: Sequence[np.ndarray], color_order):
        """Backend.submit: a batch of one frame shape and colour order goes through the resident
        pipeline (resident=True), which returns before the GPU has finished; any other batch runs now."""
        self._check_open()
        frames = list(frames)
        orders = as_orders(color_order, len(frames))
        if self.resident is not None and self.resident.accepts(frames, orders):
            with self._grad_off():
                return self.resident.submit(frames, orders[0])
        return self._run_now(frames, color_order)

    def collect(self, handle):
        from dad_edge.runtime.resident import Ticket
        return self.resident.collect(handle) if isinstance(handle, Ticket) else handle

    def _run_now(self, frames: Sequence[np.ndarray], color_order) -> Tuple[np.ndarray, np.ndarray]:
        if self.fused is None:
            return self.infer(self.prepare(frames, color_order))
        frames = list(frames)
        maps, scores = [None] * len(frames), np.empty(len(frames), np.float32)
        with self._grad_off():
            for order, idx in by_order(color_order, len(frames)):
                m, s, _ = self._network(*self.fused.prepare_frames([frames[i] for i in idx], order))
                m, s = m[:, 0].cpu().numpy(), s.cpu().numpy()
                for j, i in enumerate(idx):
                    maps[i] = m[j]
                scores[idx] = s
        return np.stack(maps), scores
