"""Double buffering on the host: the next batch is prepared while the backend runs this one.

A Detector call over many frames is a loop of two stages per batch: host work (decoding files,
checking frames, resizing them to the model: ops.preprocess) and the backend's run on the
prepared batch. In sequence, the accelerator waits while the host prepares, and the host waits
while the accelerator runs. `double_buffered` prepares batch n+1 on one worker thread while the
caller's thread runs batch n (ONNX Runtime, OpenVINO, TensorRT and torch release the GIL while
they compute, and so do OpenCV's decode and resize), which is the "copy-in of batch n+1 overlaps
compute of batch n" of a throughput pipeline, done where every backend can share it. Results come
out in input order, and an exception in either stage surfaces where the sequential loop would
have raised it: a batch's results are yielded before the next batch's preparation error.

`collected` is the device side of the same idea: with a backend that returns from submit before
its device has finished (Backend.submit / collect, the resident paths), batch n+1 is submitted
before batch n is waited for, so its copy-in runs on one stream while batch n computes on another.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from typing import Callable, Deque, Iterable, Iterator, TypeVar

T = TypeVar("T")
P = TypeVar("P")
R = TypeVar("R")
H = TypeVar("H")
_END = object()  # no further chunk


def double_buffered(chunks: Iterable[T], prepare: Callable[[T], P], run: Callable[[P], R],
                    enabled: bool = True) -> Iterator[R]:
    """Yield run(prepare(chunk)) for each chunk, in order.

    enabled: prepare(chunk n+1) runs on a worker thread while run(prepare(chunk n)) runs on the
    caller's thread, so at most two prepared chunks are alive at once; disabled, or for a single
    chunk, it is the plain loop on the caller's thread, no worker started. `run` always runs on the
    caller's thread: a backend's session, engine or CUDA context is used from one thread only. Chunks
    are taken from `chunks` one ahead when enabled, only as they are run otherwise (a live camera's
    batches: Detector.run_batches(ahead=False))."""
    chunks = iter(chunks)
    first = next(chunks, _END)
    second = next(chunks, _END) if enabled and first is not _END else _END
    if second is _END:  # disabled, or nothing to overlap (a live stream's one batch per call): no thread
        for chunk in chunks if first is _END else chain([first], chunks):
            yield run(prepare(chunk))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dad_edge-prepare") as pool:
        pending = pool.submit(prepare, first)
        for chunk in chain([second], chunks):
            ready = pending.result()  # this chunk's preparation error is raised here, in order
            pending = pool.submit(prepare, chunk)
            yield run(ready)
        yield run(pending.result())


def collected(handles: Iterable[H], collect: Callable[[H], R], depth: int = 1) -> Iterator[R]:
    """Yield collect(handle) for each handle, in order, pulling up to `depth` handles before collecting
    the first: with handles from a backend's submit (Backend.submit / collect), batch n+1 is submitted
    (its copy-in started on its own stream) before batch n is waited for. depth 1 is the plain loop.
    An error while pulling the next handle (its preparation or submit) is raised after the handles
    already pulled are collected and yielded, as the sequential loop would have yielded them."""
    if depth < 1:
        raise ValueError(f"depth={depth} must be >= 1")
    handles = iter(handles)
    pending: Deque[H] = deque()
    try:
        while True:
            try:
                handle = next(handles)
            except StopIteration:
                break
            except BaseException:
                while pending:
                    yield collect(pending.popleft())
                raise
            pending.append(handle)
            if len(pending) >= depth:
                yield collect(pending.popleft())
        while pending:
            yield collect(pending.popleft())
    finally:
        # A caller that stops early (or an error in collect) leaves handles behind: they are still
        # collected, results dropped, so that the backend's buffers are free for its next call.
        while pending:
            try:
                collect(pending.popleft())
            except Exception:  # the first error is the one that propagates
                pass
