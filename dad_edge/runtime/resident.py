"""The torch backend's device-resident call: uint8 frames in, (maps, scores) out, fixed buffers between.

Per batch of frames of one shape (a camera's):

    frames --one host copy--> pinned uint8 buffer --one async copy--> device uint8 buffer
           --pre-processing (resize, colour, normalise, noise), networks, combine, smoothing, top-k
             score: one captured CUDA graph (cuda_graphs=True) or the same calls eagerly--> device
             output buffer (B, S*S + 1): each image's map at model resolution, then its score
           --one async copy--> pinned host output buffer --> (maps (B, S, S), scores (B,))

uint8 is a quarter of float32's bytes over the bus, and the pre-processing kernels (Triton on CUDA)
read it directly. The buffers are allocated once per batch shape and reused, so a replayed call
allocates nothing and synchronises with the host once, when its results are collected. The map at
a frame's own size is made on the host from the model-resolution map (the Detector's
map_at_frame_size), only for the frames whose Result asks for it.

Two slots per batch shape, each with its own CUDA stream, buffers and graph: `submit` enqueues a
batch and returns at once, `collect` waits for it. A caller that submits batch n+1 before collecting
batch n (Detector.infer_batch and run_items do, through double_buffer.collected) has batch n+1's
copy-in run on one stream while batch n computes on the other.

`forward(frames (B, H, W, C) uint8 tensor on the device, colour order) -> (maps (B, 1, S, S),
scores (B,))` is the backend's whole inference from uint8 frames (the fused DiffusionAD stages, or
the exported graph's function after ops.preprocess); it must be capturable when graphs are asked
for: device tensors only, no host synchronisation, no value-dependent allocation.

On the CPU the same class runs with plain host tensors, no streams and no graphs (the device buffer
is the host one), and computes in `submit`: tests hold it to the backend's plain path there.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import nullcontext
from typing import Callable, List, Sequence, Tuple

import numpy as np

from dad_edge.errors import BackendError

SLOTS = 2  # batches of one shape in flight at once: copy-in of the next overlaps compute of this one


class Ticket:
    """A submitted batch: collect it (once) for its (maps, scores)."""

    __slots__ = ("slot", "collected")

    def __init__(self, slot: "_Slot"):
        self.slot, self.collected = slot, False


class _Slot:
    """One batch shape's buffers, stream and graph."""

    def __init__(self, torch, shape: Tuple[int, ...], columns: int, device, cuda: bool):
        self.stream = torch.cuda.Stream(device=device) if cuda else None
        self.done = torch.cuda.Event() if cuda else None
        self.graph = None
        self.busy = False
        b = shape[0]
        # Allocated on the slot's stream, so the caching allocator ties the device blocks to it.
        with torch.cuda.stream(self.stream) if cuda else nullcontext():
            self.host_in = torch.empty(shape, dtype=torch.uint8, pin_memory=cuda)
            self.dev_in = torch.empty(shape, dtype=torch.uint8, device=device) if cuda else self.host_in
            self.dev_out = torch.empty((b, columns), dtype=torch.float32, device=device)
            self.host_out = torch.empty((b, columns), dtype=torch.float32, pin_memory=True) if cuda else self.dev_out


class ResidentPipeline:
    """Fixed-buffer, optionally graph-captured, two-stream inference from uint8 frames (module doc).

    `image_size`: the model's S; `device`: a torch device; `graphs`: capture each slot's work in a
    CUDA graph (CUDA only); `max_shapes`: batch shapes kept (each holds SLOTS slots; the least
    recently used idle shape is released when a new one comes)."""

    def __init__(self, forward: Callable, image_size: int, device, graphs: bool = False, max_shapes: int = 4):
        import torch

        self._torch = torch
        self.forward = forward
        self.size = int(image_size)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        if graphs and not self.cuda:
            raise BackendError(f"CUDA graphs need a CUDA device; this pipeline runs on {self.device}")
        self.graphs = graphs
        self.max_shapes = max_shapes
        self._shapes: "OrderedDict[Tuple, List[_Slot]]" = OrderedDict()
        self._primed = False
        self.captures = 0  # graphs captured so far (one per slot of each batch shape)

    @staticmethod
    def accepts(frames: Sequence[np.ndarray], orders: Sequence[str]) -> bool:
        """Whether one submit takes this batch: frames of one shape (H, W, C) and one colour order."""
        return bool(frames) and len({f.shape for f in frames}) == 1 and frames[0].ndim == 3 and len(set(orders)) == 1

    def submit(self, frames: Sequence[np.ndarray], color_order: str) -> Ticket:
        """Enqueue one batch (accepts() must hold) and return its Ticket; on CUDA nothing waits for the GPU."""
        frames = list(frames)
        if not self.accepts(frames, [color_order]):
            raise BackendError("a resident batch takes (H, W, C) uint8 frames of one shape; got shapes "
                               f"{sorted({tuple(f.shape) for f in frames})}")
        slot = self._free_slot((len(frames),) + tuple(frames[0].shape), color_order)
        np.stack(frames, out=slot.host_in.numpy())  # the one host copy
        torch = self._torch
        if not self.cuda:
            self._compute(slot, color_order)
        else:
            with torch.cuda.stream(slot.stream):
                slot.dev_in.copy_(slot.host_in, non_blocking=True)  # one async copy in
                if slot.graph is not None:
                    slot.graph.replay()
                else:
                    self._compute(slot, color_order)
                slot.host_out.copy_(slot.dev_out, non_blocking=True)  # one async copy out
                slot.done.record(slot.stream)
        slot.busy = True
        return Ticket(slot)

    def collect(self, ticket: Ticket) -> Tuple[np.ndarray, np.ndarray]:
        """Wait for a submitted batch -> (maps float32 (B, S, S), scores float32 (B,)); frees its slot."""
        if ticket.collected:
            raise BackendError("this batch was collected already; each submit is collected once")
        slot = ticket.slot
        if slot.done is not None:
            slot.done.synchronize()  # the one wait for the host
        out = slot.host_out.numpy()
        s2 = self.size * self.size
        maps = out[:, :s2].reshape(-1, self.size, self.size).copy()
        scores = out[:, s2].copy()
        ticket.collected, slot.busy = True, False
        return maps, scores

    def run(self, frames: Sequence[np.ndarray], color_order: str) -> Tuple[np.ndarray, np.ndarray]:
        return self.collect(self.submit(frames, color_order))

    def in_flight(self) -> int:
        """Batches submitted and not collected."""
        return sum(s.busy for slots in self._shapes.values() for s in slots)

    def close(self) -> None:
        """Wait for what is in flight and release every buffer and graph."""
        if self.cuda:
            for slots in self._shapes.values():
                for s in slots:
                    if s.busy:
                        s.done.synchronize()
        self._shapes.clear()

    # -- internals ----------------------------------------------------------------------------

    def _compute(self, slot: _Slot, color_order: str) -> None:
        """forward on the slot's device frames, written into its output buffer (what a graph captures)."""
        maps, scores = self.forward(slot.dev_in, color_order)
        b, s2 = slot.dev_out.shape[0], self.size * self.size
        slot.dev_out[:, :s2].copy_(maps.reshape(b, s2))
        slot.dev_out[:, s2].copy_(scores.reshape(b))

    def _free_slot(self, shape: Tuple[int, ...], color_order: str) -> _Slot:
        key = shape + (color_order,)
        slots = self._shapes.pop(key, None)
        if slots is None:
            self._release_idle_shape()
            slots = [self._new_slot(shape, color_order) for _ in range(SLOTS)]
        self._shapes[key] = slots  # most recently used last
        for slot in slots:
            if not slot.busy:
                return slot
        raise BackendError(f"{len(slots)} batches of shape {shape} are in flight; collect one before submitting "
                           "another")

    def _release_idle_shape(self) -> None:
        while len(self._shapes) >= self.max_shapes:
            idle = next((k for k, slots in self._shapes.items() if not any(s.busy for s in slots)), None)
            if idle is None:
                return  # every shape has a batch in flight: keep them all
            del self._shapes[idle]

    def _new_slot(self, shape: Tuple[int, ...], color_order: str) -> _Slot:
        torch = self._torch
        slot = _Slot(torch, shape, self.size * self.size + 1, self.device, self.cuda)
        if self.cuda and not self._primed:
            # The first call fills what the forward computes once and then shares between the slots'
            # streams (timestep embeddings, compiled kernels): on the default stream, waited for.
            slot.dev_in.zero_()
            self._compute(slot, color_order)
            torch.cuda.synchronize(self.device)
            self._primed = True
        if self.graphs:
            self._capture(slot, color_order)
        return slot

    def _capture(self, slot: _Slot, color_order: str) -> None:
        """The slot's whole call captured (backends/cuda_graphs.capture: torch's recipe, the graph's own pool)."""
        from dad_edge.runtime.backends.cuda_graphs import capture

        slot.graph, _ = capture(self._torch, lambda: self._compute(slot, color_order), self.device)
        self.captures += 1


def resident_forward(backend) -> Callable:
    """The torch backend's inference from device uint8 frames, for ResidentPipeline: the fused
    DiffusionAD stages where the backend runs them, else its plain graph after ops.preprocess
    (pixels 0..255, as every exported graph takes them)."""
    from dad_edge.runtime import ops

    cfg = backend.config
    network = backend._network

    if backend.fused is not None:
        fused = backend.fused

        def forward(frames, color_order: str):
            maps, scores, _ = network(*fused.prepare_frames(frames, color_order))
            return maps, scores
    else:
        def forward(frames, color_order: str):
            pixels = ops.preprocess(frames, cfg.image_size, cfg.channels, color_order, normalize=False,
                                    device=frames.device)
            return network(pixels.to(backend.dtype))
    return forward

