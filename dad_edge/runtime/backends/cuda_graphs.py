"""CUDA graphs for the torch backend: a captured forward replayed per batch shape.

At batch 1 the compact model's forward is a few hundred small kernels; launching them from
Python costs more than running them. On an H100 (benchmarks/results/h100-2026-11-22/
gpu_pipeline.txt) a captured forward ran at 341 images/s against 80 without a graph, batch 1.

`GraphedCall(fn)` captures `fn(*inputs)` once per input signature (shapes and dtypes of the
CUDA tensors given) following torch's documented recipe (torch.cuda.graphs): warm-up calls on
a side stream, then capture into a `torch.cuda.CUDAGraph` with static input tensors. A call
copies its inputs into the static ones, replays, and returns the static outputs: they are
overwritten by the next call, so a caller copies what it keeps (the backend moves them to the
host at once). `fn` must be capturable: CUDA tensors only, no host synchronisation, no
allocation whose size depends on values. Graphs are kept for the `max_graphs` most recently
used signatures (each holds its own memory pool); older ones are released.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Tuple

from dad_edge.errors import BackendError

WARMUP_CALLS = 3  # torch's recipe: a few eager calls on a side stream before capture


class GraphedCall:
    def __init__(self, fn: Callable[..., Any], max_graphs: int = 8):
        import torch

        if max_graphs < 1:
            raise ValueError(f"max_graphs={max_graphs} must be >= 1")
        self._torch = torch
        self.fn = fn
        self.max_graphs = max_graphs
        self._graphs: "OrderedDict[Tuple, Tuple[Any, Tuple, Any]]" = OrderedDict()
        self.captures = 0  # graphs captured so far (a new batch size costs one capture)

    @staticmethod
    def signature(inputs) -> Tuple:
        return tuple((tuple(t.shape), t.dtype, str(t.device)) for t in inputs)

    def __len__(self) -> int:
        return len(self._graphs)

    def _capture(self, inputs):
        static = tuple(t.clone() for t in inputs)
        graph, outputs = capture(self._torch, lambda: self.fn(*static), static[0].device)
        self.captures += 1
        return graph, static, outputs

    def __call__(self, *inputs):
        if not inputs or not all(getattr(t, "is_cuda", False) for t in inputs):
            raise BackendError("CUDA graphs replay CUDA tensors only; got "
                               f"{[getattr(t, 'device', type(t).__name__) for t in inputs]}")
        key = self.signature(inputs)
        entry = self._graphs.pop(key, None)
        if entry is None:
            while len(self._graphs) >= self.max_graphs:
                self._graphs.popitem(last=False)  # the least recently used signature
            entry = self._capture(inputs)
        self._graphs[key] = entry  # most recently used last
        graph, static, outputs = entry
        for dst, src in zip(static, inputs):
            dst.copy_(src)
        graph.replay()
        return outputs


def capture(torch, fn: Callable[[], Any], device) -> Tuple[Any, Any]:
    """fn() captured into a torch.cuda.CUDAGraph by torch's documented recipe: WARMUP_CALLS eager calls on a
    side stream, then the capture (the graph's own memory pool) -> (graph, fn's outputs, which each replay
    rewrites). fn must be capturable (GraphedCall's doc); a failed capture is a BackendError."""
    side = torch.cuda.Stream(device=device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP_CALLS):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            outputs = fn()
    except RuntimeError as exc:
        raise BackendError(f"CUDA graph capture failed ({str(exc).splitlines()[0]}); run with "
                           "cuda_graphs=False") from exc
    return graph, outputs
