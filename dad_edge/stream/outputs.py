"""What a stream writes: the annotated video, the anomalous frames, one JSON line per event,
and a window on screen. Every writer flushes as it goes and closes cleanly on stop.

    outputs = StreamOutputs(video="annotated.mp4", events="events.jsonl", fps=source.fps)
    for r in stream:
        outputs.write(r, stream.stats)
    outputs.close()

Boxes are the bounding boxes [x, y, w, h] (frame pixels) of the connected regions of an
anomalous frame's mask (map >= pixel threshold). A model calibrated without a pixel
threshold outlines the regions where the map reaches the image threshold instead: the image
score is a mean of the top map values, so those regions are where the score came from.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import sys
import threading
import time
from itertools import count
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from dad_edge.artifacts.atomic import remove_stale_temps, write_bytes_atomic
from dad_edge.artifacts.json_lines import JsonLinesWriter
from dad_edge.errors import DataError
from dad_edge.runtime.regions import MAX_REGIONS, anomaly_regions, region_mask
from dad_edge.stream.video import DEFAULT_FPS, VIDEO_CODECS, VideoOutput  # noqa: F401 (the video: stream/video.py)

log = logging.getLogger("dad_edge.stream.runner")

MAX_BOXES = MAX_REGIONS  # the largest regions of a frame; a noisy map must not make every line kilobytes
_RED = (255, 40, 40)  # RGB


def anomaly_boxes(result, image_threshold: Optional[float] = None, min_area: int = 1) -> List[List[int]]:
    """[x, y, w, h] of the anomalous regions of an anomalous result, largest first; [] otherwise
    (the regions of Result.boxes: dad_edge/runtime/regions.py)."""
    mask = region_mask(result.anomaly_map, result.mask, result.label, image_threshold)
    return [] if mask is None else [list(r[:4]) for r in anomaly_regions(result.anomaly_map, mask, min_area)]


def event_record(result, boxes: List[List[int]], saved: Optional[str] = None) -> Dict[str, Any]:
    """One line of the events file: frame (from 0 in each run), time (Unix seconds of capture), score,
    label, boxes; EventLog adds the run."""
    record = {"frame": result.frame, "time": round(result.time, 3), "source": result.source,
              "score": result.score, "normalized_score": result.normalized_score, "label": result.label,
              "boxes": boxes, "latency_ms": round(result.latency_ms, 2)}
    if saved is not None:
        record["saved"] = saved
    return record


def annotate(result, boxes: List[List[int]], fps: Optional[float] = None) -> np.ndarray:
    """BGR uint8: the result's plot() (heat map, mask outline, score), the boxes, and a status line
    (frame index, live frames/s, latency)."""
    canvas = result.plot(color_order="RGB")
    thickness = max(1, min(canvas.shape[:2]) // 240)
    for x, y, w, h in boxes:
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), _RED, thickness)
    status = f"#{result.frame}  {result.latency_ms:.0f} ms"
    if fps is not None:
        status += f"  {fps:.1f} fps"
    scale = max(0.35, canvas.shape[1] / 900)
    origin = (4, canvas.shape[0] - 6)
    cv2.putText(canvas, status, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(canvas, status, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)


_LOG_NUMBERS = count()  # tells apart two logs opened in the same second by one process


def new_run_id() -> str:
    """The `run` of event lines: local start time, process id and a counter ("20261122T184301-4242-0")."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{next(_LOG_NUMBERS)}"


class EventLog:
    """JSON lines (artifacts/json_lines.py), appended (a restart keeps earlier events), one write and one
    flush per line; read them back with dad_edge.artifacts.json_lines.read_json_lines.

    Frame numbers start at 0 in every run, so each line carries the run it belongs to: "run",
    the local start time and process id of this log (e.g. "20261122T184301-4242").
    """

    def __init__(self, path):
        self.writer = JsonLinesWriter(path)
        self.path = self.writer.path
        self.run = new_run_id()

    @property
    def lines(self) -> int:
        return self.writer.lines

    @property
    def file(self):
        return self.writer.file

    def write(self, record: Dict[str, Any]) -> None:
        self.writer.write({**record, "run": self.run})

    def close(self) -> None:
        self.writer.close()


class AnomalySaver:
    """Anomalous frames as they came (PNG, lossless, for re-training or audit) and annotated (JPEG)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.folder)  # what a killed run was writing
        self.saved = 0

    def save(self, result, annotated_bgr: np.ndarray) -> str:
        # Named by frame index only (the event's `source` names the file of image-folder frames), and
        # written atomically: a stream killed at any moment leaves whole images.
        stem = f"frame_{result.frame:08d}"
        image = result.image
        if image.ndim == 3 and image.shape[2] == 3:
            image = image[:, :, ::-1]  # RGB -> OpenCV's BGR
        for name, bgr, params in ((f"{stem}.png", image, []),
                                  (f"{stem}_annotated.jpg", annotated_bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])):
            ok, buf = cv2.imencode(Path(name).suffix, np.ascontiguousarray(bgr), params)
            if not ok:
                raise DataError(f"{self.folder / name}: OpenCV could not encode this frame")
            write_bytes_atomic(self.folder / name, buf.tobytes())
        self.saved += 1
        return f"{stem}.png"


def gui_available() -> Optional[str]:
    """None when a window can be shown; else why not."""
    if re.search(r"GUI:\s*NONE", cv2.getBuildInformation()):
        return ("this OpenCV has no GUI (opencv-python-headless); pip install opencv-python "
                "(not -headless) for a window")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display ($DISPLAY is not set)"
    return None


class Display:
    """A window with the annotated frames; q or Esc in it stops the stream."""

    WINDOW = "dad-edge stream"

    def __init__(self):
        self.open = False

    def show(self, bgr: np.ndarray) -> bool:
        """Show one frame; False when the user asked to stop."""
        cv2.imshow(self.WINDOW, bgr)
        self.open = True
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        if self.open:
            cv2.destroyWindow(self.WINDOW)
            self.open = False


class StreamOutputs:
    """Everything a stream writes, from one call per result; close() flushes and closes all of it.

    video: annotated video file (in segments of video_segment_s seconds when given: stream/video.py);
    anomalies: folder for anomalous frames; events: JSONL file; only_anomalies: events for anomalous
    frames only; display: show a window (when OpenCV can); fps: of the video file (default:
    DEFAULT_FPS); image_threshold: boxes for models calibrated without a pixel threshold (see the
    module doc).

    Drawing and encoding cost as much as a small model's inference, so the files are written
    on a worker thread (background=True): it overlaps the next frame's inference, and on a GPU
    box keeps the GPU busy. Its queue is short and never drops: outputs that cannot keep up
    slow the stream down rather than lose frames. The window stays on the caller's thread,
    where GUI toolkits want it.
    """

    def __init__(self, video=None, anomalies=None, events=None, only_anomalies: bool = False,
                 display: bool = False, fps: Optional[float] = None, image_threshold: Optional[float] = None,
                 background: bool = True, queue_size: int = 8, video_segment_s: Optional[float] = None):
        self.video = VideoOutput(video, fps, segment_s=video_segment_s) if video else None
        self.saver = AnomalySaver(anomalies) if anomalies else None
        self.events = EventLog(events) if events else None
        self.only_anomalies = only_anomalies
        self.quit_requested = False  # q / Esc in the window
        self.image_threshold = image_threshold
        self.display = None
        if display:
            why_not = gui_available()
            if why_not:
                log.warning("no window: %s; going on without one (--no-display silences this)", why_not)
            else:
                self.display = Display()
        self._jobs: Optional["queue.Queue[Any]"] = None
        self._worker: Optional[threading.Thread] = None
        self._failure: Optional[BaseException] = None
        if background and (self.video or self.saver or self.events):
            self._jobs = queue.Queue(maxsize=queue_size)
            self._worker = threading.Thread(target=self._work, name="dad_edge-outputs", daemon=True)
            self._worker.start()

    def write(self, result, stats=None) -> Dict[str, Any]:
        """Write one result everywhere it goes; returns its event record (written or not).

        Raises the failure of an earlier background write (a full disk, say) rather than go on silently.
        """
        self._check()
        boxes = anomaly_boxes(result, self.image_threshold)
        saved = f"frame_{result.frame:08d}.png" if self.saver and result.label else None
        record = event_record(result, boxes, saved)
        fps = stats.fps if stats is not None else None
        annotated = None
        if self.display:
            annotated = annotate(result, boxes, fps)
            if not self.display.show(annotated):
                self.quit_requested = True
        job = (result, boxes, record, fps, annotated)
        if self._jobs is None:
            self._write(*job)
        else:
            while True:  # wait for room, but notice a worker that died meanwhile
                try:
                    self._jobs.put(job, timeout=0.5)
                    break
                except queue.Full:
                    self._check()
        return record

    def _write(self, result, boxes, record, fps, annotated) -> None:
        if annotated is None and (self.video or (self.saver and result.label)):
            annotated = annotate(result, boxes, fps)
        if record.get("saved"):
            self.saver.save(result, annotated)
        if self.events and (result.label or not self.only_anomalies):
            self.events.write(record)
        if self.video:
            self.video.write(annotated)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self._failure is not None:
                continue  # drain without writing: the caller raises on its next call
            try:
                self._write(*job)
            except Exception as exc:  # handed to the caller's thread by _check()
                self._failure = exc

    def _check(self) -> None:
        if self._failure is not None:
            raise self._failure

    def close(self) -> None:
        """Write what is queued, then close every output even when one fails; the first failure is raised."""
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join()
            self._worker = None
        failure = self._failure
        for out in (self.video, self.events, self.display):
            try:
                if out is not None:
                    out.close()
            except Exception as exc:  # keep closing the others: a half-closed video loses its index
                failure = failure or exc
        if failure is not None:
            raise failure
