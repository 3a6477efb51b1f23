"""Stream soak helpers, shared by tests/test_soak_short.py and benchmarks/stream_soak.py: a local
MJPEG-over-HTTP camera that drops its connection every N frames, the process's resident memory,
and one soak run through Stream + StreamOutputs with samples along the way."""
from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional

import cv2
import numpy as np

from dad_edge.runtime.detector import Detector
from dad_edge.stream.outputs import StreamOutputs
from dad_edge.stream.runner import Reconnect, Stream


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class MjpegServer:
    """multipart/x-mixed-replace JPEG frames on http://127.0.0.1:PORT/cam.mjpg (what IP cameras serve),
    `fps` frames a second; each connection is closed after `drop_every` frames (a camera dropping)."""

    def __init__(self, frames: List[np.ndarray], drop_every: int, fps: float = 200.0):
        self.jpegs = [cv2.imencode(".jpg", f)[1].tobytes() for f in frames]
        self.drop_every, self.period = drop_every, 1.0 / fps
        self.connections = 0  # GET requests served
        self.sent = 0
        self._stop = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for i in range(server.drop_every):
                        if server._stop.is_set():
                            return
                        jpeg = server.jpegs[server.sent % len(server.jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(jpeg) + jpeg + b"\r\n")
                        server.sent += 1
                        time.sleep(server.period)
                except (BrokenPipeError, ConnectionResetError):  # the client went away first
                    return
                self.close_connection = True  # the drop

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cam.mjpg"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "MjpegServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class SoakReport:
    frames_read: int = 0  # capture indices taken (scored + skipped + dropped)
    scored: int = 0
    skipped: int = 0
    dropped: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    # (frames scored, RSS MiB, frames/s over the last 64, p50 latency ms, p99 latency ms), every `every` frames
    samples: List[tuple] = field(default_factory=list)

    def rss_growth(self, warmup_fraction: float = 0.2) -> float:
        """Relative RSS growth from the first sample after warm-up to the last."""
        after = [s for s in self.samples if s[0] >= warmup_fraction * self.scored] or self.samples
        return (self.samples[-1][1] - after[0][1]) / after[0][1]

    def line(self) -> str:
        after = [s for s in self.samples if s[0] >= 0.2 * self.scored] or self.samples
        fps = [s[2] for s in after]
        p50 = [s[3] for s in after]
        return (f"{self.frames_read} frames read, {self.scored} scored, {self.skipped} skipped, {self.dropped} "
                f"dropped, {self.reconnects} reconnects in {self.seconds:.0f} s; RSS {self.samples[0][1]:.1f} MiB "
                f"at the first sample, {after[0][1]:.1f} after warm-up, {self.samples[-1][1]:.1f} at the end "
                f"({100 * self.rss_growth():+.2f} %); frames/s per sample {min(fps):.0f}-{max(fps):.0f}, "
                f"p50 latency {min(p50):.1f}-{max(p50):.1f} ms")


def soak(model, source, max_frames: int, every: int = 100, events=None,
         reconnect: Optional[Reconnect] = None) -> SoakReport:
    """Run `model` (a .onnx path) on `source` for `max_frames` frames read, writing `events` (JSON lines);
    sample RSS, frames/s and latency every `every` scored frames."""
    report = SoakReport()
    t0 = time.perf_counter()
    with Detector(model) as det, Stream(det, source, max_frames=max_frames, log_every_s=3600,
                                        reconnect=reconnect) as stream:
        outputs = StreamOutputs(events=events, display=False)
        try:
            for r in stream:
                outputs.write(r, stream.stats)
                if stream.stats.frames % every == 0:
                    report.samples.append((stream.stats.frames, rss_mb(), stream.stats.fps,
                                           stream.stats.latency_ms(50), stream.stats.latency_ms(99)))
        finally:
            outputs.close()
        s = stream.stats
        report.samples.append((s.frames, rss_mb(), s.fps, s.latency_ms(50), s.latency_ms(99)))
    report.seconds = time.perf_counter() - t0
    report.scored, report.skipped, report.dropped, report.reconnects = s.frames, s.skipped, s.dropped, s.reconnects
    report.frames_read = s.frames + s.skipped + s.dropped
    return report
