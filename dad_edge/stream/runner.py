"""The stream pipeline: capture on its own thread, inference in the caller's, results one by one.

    with Stream(det, "rtsp://host/cam", batch=1) as stream:
        for r in stream:                  # StreamResult: a Result plus frame, time, latency_ms
            if r.label:
                reject(r)

    capture thread                 bounded queue                   caller's thread
    source.read() -> Frame  --->  live: the newest frame wins  --->  batch -> Detector -> yield
       bad frame: count, skip     finite: no frame is dropped
       drop: reopen with backoff

Live sources (cameras, network streams) must not fall behind: when inference is slower
than the camera the oldest queued frame is dropped (and counted). Finite sources (files,
folders) block the reader instead, so every frame is scored. Memory is bounded: the queue,
and the windows the statistics keep, have fixed sizes; results are not kept.

`stop()` (or SIGINT / SIGTERM inside `stop_on_signals`) ends the iteration after the batch
in flight, so that whatever consumes the results can flush and close its outputs.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Dict, Iterator, List, Optional

import cv2
import numpy as np

from dad_edge.errors import ConfigError, DataError
from dad_edge.runtime.result import Result
from dad_edge.runtime.inputs import Item
from dad_edge.stream.capture import FrameSource, open_source

log = logging.getLogger("dad_edge.stream.runner")

_END = object()  # the capture thread's last queue item
_POLL_S = 0.1  # how often blocked waits look at the stop flag


@dataclass
class StreamResult(Result):
    frame: int = 0  # index of the frame in the source, from 0 (dropped and bad frames take an index too)
    time: float = 0.0  # Unix time at which the frame was captured
    latency_ms: float = 0.0  # capture to result: queueing, pre-processing, inference, post-processing


@dataclass
class Reconnect:
    """How a dropped source is reopened: delays double from `first_s` up to `max_s`."""

    first_s: float = 0.5
    max_s: float = 10.0
    attempts: Optional[int] = None  # failed opens in a row before giving up; None: live sources never give up

    def delays(self) -> Iterator[float]:
        delay, n = self.first_s, 0
        while self.attempts is None or n < self.attempts:
            yield delay
            delay, n = min(delay * 2, self.max_s), n + 1


@dataclass
class _Captured:
    index: int
    time: float  # Unix time, for records
    clock: float  # perf_counter, for latency
    frame: np.ndarray
    name: str


class StreamStats:
    """Counters and rolling windows, fixed size: a week-long run keeps the same memory as a minute."""

    def __init__(self, window: int = 1000):
        self.frames = 0  # scored
        self.skipped = 0  # bad or empty frames
        self.dropped = 0  # live frames replaced by newer ones before inference
        self.reconnects = 0  # successful reopens of a dropped source
        self.started = time.perf_counter()
        self._lock = threading.Lock()  # the capture thread and the caller both count
        self._latency_ms: Deque[float] = deque(maxlen=window)
        self._done: Deque[float] = deque(maxlen=64)  # perf_counter of recent results, for the live rate

    def count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def add(self, latency_ms: float, done: float) -> None:
        with self._lock:  # snapshot() reads the windows from another thread (the live view's)
            self.frames += 1
            self._latency_ms.append(latency_ms)
            self._done.append(done)

    def snapshot(self) -> Dict[str, float]:
        """Counters, frames/s and latency p50/p99 at one instant; safe from any thread."""
        with self._lock:
            latencies = np.fromiter(self._latency_ms, float)
            done = tuple(self._done)
            counts = {k: getattr(self, k) for k in ("frames", "skipped", "dropped", "reconnects")}
        span = done[-1] - done[0] if len(done) > 1 else 0.0
        p50, p99 = np.percentile(latencies, [50, 99]) if latencies.size else (0.0, 0.0)
        return {**counts, "fps": (len(done) - 1) / span if span > 0 else 0.0,
                "latency_ms_p50": float(p50), "latency_ms_p99": float(p99)}

    @property
    def fps(self) -> float:
        """Results per second over the last (up to) 64 frames."""
        if len(self._done) < 2:
            return 0.0
        span = self._done[-1] - self._done[0]
        return (len(self._done) - 1) / span if span > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        """Percentile `q` of the last `window` latencies."""
        return float(np.percentile(np.fromiter(self._latency_ms, float), q)) if self._latency_ms else 0.0

    def line(self) -> str:
        return (f"{self.frames} frames, {self.fps:.1f} fps, latency p50 {self.latency_ms(50):.0f} ms "
                f"p99 {self.latency_ms(99):.0f} ms, skipped {self.skipped}, dropped {self.dropped}, "
                f"reconnects {self.reconnects}")


class Stream:
    """Results of a Detector on a camera, network stream, video file or image folder, frame by frame.

    batch: frames per backend call (live sources take what is queued, up to `batch`, so that
    latency does not wait for a full batch); queue_size: frames buffered between capture and
    inference (default 2 x batch); max_frames: stop after reading this many frames;
    color_order: of the frames (default: the source's own; cameras and videos are BGR).
    """

    def __init__(self, detector, source, batch: int = 1, color_order: Optional[str] = None,
                 queue_size: Optional[int] = None, max_frames: Optional[int] = None,
                 reconnect: Optional[Reconnect] = None, log_every_s: float = 10.0):
        if batch < 1:
            raise ConfigError(f"batch={batch} must be >= 1")
        if queue_size is not None and queue_size < 1:
            raise ConfigError(f"queue_size={queue_size} must be >= 1")
        if max_frames is not None and max_frames < 1:
            raise ConfigError(f"max_frames={max_frames} must be >= 1")
        self.detector, self.batch, self.max_frames = detector, batch, max_frames
        self.log_every_s = log_every_s
        self.source: FrameSource = open_source(source)  # fails here, before any thread, when it cannot open
        # A file that fails to read is retried a few times; a camera or stream is waited for.
        self.reconnect = reconnect or Reconnect(attempts=None if self.source.live else 3)
        self.color_order = color_order or self.source.color_order
        self.stats = StreamStats()
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=queue_size or 2 * batch)
        self._stop = threading.Event()
        self._stop_requested = False  # stop() was called (rather than the source ending)
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def __repr__(self) -> str:
        return f"Stream({self.source!r}, batch={self.batch})"

    # -- the caller's side ------------------------------------------------------------------

    def __iter__(self) -> Iterator[StreamResult]:
        if self._thread is not None:
            raise RuntimeError("a Stream can be iterated once; open a new one")
        self.detector.warmup(self.batch)  # allocations happen here, not in the first frame's latency
        self.stats.started = time.perf_counter()
        self._thread = threading.Thread(target=self._capture, name="dad_edge-capture", daemon=True)
        self._thread.start()
        try:
            yield from self._results()
        finally:
            self.close()

    def _batches(self, pulled: "deque[List[_Captured]]") -> Iterator[List[Item]]:
        """The queued frames as batches of Items, each also appended to `pulled` (for its capture times)."""
        while True:
            batch = self._next_batch()
            if not batch:
                return
            pulled.append(batch)
            yield [Item(c.name, array=c.frame) for c in batch]

    def _results(self) -> Iterator[StreamResult]:
        last_log = time.perf_counter()
        pulled: "deque[List[_Captured]]" = deque()
        # A file or folder is read ahead (the next batch read and submitted while this one computes:
        # Detector.run_batches); a live source is not, or a result would wait for the next frame to arrive.
        for results in self.detector.run_batches(self._batches(pulled), self.color_order,
                                                 ahead=not self.source.live):
            batch = pulled.popleft()
            done = time.perf_counter()
            for captured, r in zip(batch, results):
                if not r.ok:
                    self.stats.count("skipped")
                    log.warning("frame %d skipped: %s", captured.index, r.error)
                    continue
                latency_ms = (done - captured.clock) * 1e3
                self.stats.add(latency_ms, done)
                yield StreamResult(**vars(r), frame=captured.index, time=captured.time, latency_ms=latency_ms)
            if done - last_log >= self.log_every_s:
                log.info("%s: %s", self.source.name, self.stats.line())
                last_log = done
        if self._error is not None:
            raise self._error
        log.info("%s: %s, %s", self.source.name, "stopped" if self._stop_requested else "done", self.stats.line())

    def _next_batch(self) -> List[_Captured]:
        """Up to `batch` frames; [] at the end or on stop. Live: what is queued, without waiting for more."""
        batch: List[_Captured] = []
        while len(batch) < self.batch and not self._stop.is_set():
            if batch and self.source.live and self._queue.empty():
                break
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if item is _END:
                self._stop.set()
                break
            batch.append(item)
        return batch

    def stop(self) -> None:
        """End the iteration after the batch in flight; safe from signal handlers and other threads."""
        self._stop_requested = True
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Stop capturing and release the source (iteration does this when it ends)."""
        self._stop.set()
        if self._thread is None:
            self.source.close()
        elif self._thread is not threading.current_thread():
            # The thread closes the source as it ends; a read blocked in a driver may outlive this
            # wait (network reads time out after NETWORK_TIMEOUT_MS), and the thread is a daemon.
            self._thread.join(timeout=5.0)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the capture thread ----------------------------------------------------------------

    def _capture(self) -> None:
        index = 0
        try:
            while not self._stop.is_set() and (self.max_frames is None or index < self.max_frames):
                try:
                    ok, frame = self.source.read()
                    failure = None
                except (cv2.error, OSError) as exc:  # a driver or file-system failure: reopen, as for a drop
                    ok, frame, failure = False, None, f"{type(exc).__name__}: {exc}"
                if ok:
                    if frame is None:
                        self.stats.count("skipped")
                        log.warning("%s: frame %d skipped: %s", self.source.name, index, self.source.last_error)
                    else:
                        self._put(_Captured(index, time.time(), time.perf_counter(), frame, self.source.last_name))
                    index += 1
                elif failure is not None or self.source.live:
                    if not self._reopen(failure or self.source.last_error or "no frame"):
                        break
                else:  # the end of a file or folder
                    self._warn_if_short(index)
                    break
        except Exception as exc:  # anything else ends the stream; the caller's thread re-raises it
            self._error = exc
        finally:
            self.source.close()
            self._put(_END, blocking=True)

    def _put(self, item: Any, blocking: bool = False) -> None:
        """Finite sources (and the end marker) wait for room; live ones drop the oldest frame instead."""
        if self.source.live and not blocking:
            while True:
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        self._queue.get_nowait()
                        self.stats.count("dropped")
        while not self._stop.is_set() or item is _END:
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                if item is _END and self._stop.is_set():
                    return  # nobody reads any more
                continue

    def _reopen(self, reason: str) -> bool:
        """Reopen with backoff until it works, the attempts run out (False) or the stream stops (False)."""
        log.warning("%s dropped (%s); reopening", self.source.name, reason)
        for attempt, delay in enumerate(self.reconnect.delays(), 1):
            if self._stop.wait(delay):
                return False
            try:
                self.source.reopen()
            except Exception as exc:  # DataError, cv2.error, OSError: try again after a longer wait
                log.warning("%s: reopen attempt %d failed (%s); next in %.1f s", self.source.name, attempt,
                            str(exc).split(";")[0], min(delay * 2, self.reconnect.max_s))
                continue
            self.stats.count("reconnects")
            log.warning("%s reopened after %d attempt(s)", self.source.name, attempt)
            return True
        self._error = DataError(f"{self.source.name}: dropped ({reason}) and could not be reopened after "
                                f"{self.reconnect.attempts} attempts")
        return False

    def _warn_if_short(self, frames_read: int) -> None:
        expected = getattr(self.source, "frame_count", None)
        if expected and frames_read < expected and self.max_frames is None:
            log.warning("%s ended after %d of the %d frames its header announces: the file may be cut short",
                        self.source.name, frames_read, expected)


@contextlib.contextmanager
def stop_on_signals(stream: Stream) -> Iterator[Stream]:
    """SIGINT and SIGTERM stop `stream` cleanly (outputs get flushed); a second Ctrl-C interrupts at once.

    Main thread only (Python delivers signals there); the previous handlers come back on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stream
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, _frame):
        if stream.stopped and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("%s: stopping after the frames in flight", signal.Signals(signum).name)
        stream.stop()

    for s in previous:
        signal.signal(s, handler)
    try:
        yield stream
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
