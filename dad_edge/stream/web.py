"""The live view of `dad-edge stream --web PORT`: a page with the annotated video, the rates and the
last anomalies, served by the standard library's ThreadingHTTPServer on its own threads.

    view = LiveView(8080)                        # 127.0.0.1 unless host= says otherwise
    view.attach(stream.stats, "model.onnx on line.mp4")
    for r in stream:
        record = outputs.write(r, stream.stats)
        view.offer(r, record["boxes"])           # O(1): hands the result over, never waits
    view.close()

It never slows the inspection: offer() puts the newest result in a one-slot holder (the one
before it is dropped, not queued) and returns. Drawing and JPEG encoding happen in the server's
threads, only for frames a viewer asks for, once per frame however many viewers there are. A
viewer that cannot keep up gets fewer frames; one that stops reading is cut off after
CLIENT_TIMEOUT_S.

    /             the page: the video and a panel (no script: the panel reloads itself each second)
    /video.mjpg   the annotated frames, MJPEG (multipart/x-mixed-replace)
    /frame.jpg    the newest annotated frame
    /stats.json   counters, frames/s, latency p50/p99, the last anomalies
    /panel        the panel: the same figures and the anomalies as thumbnails
    /anomaly/N.jpg  the thumbnail of anomalous frame N
"""
from __future__ import annotations

import errno
import html
import json
import logging
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Deque, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

import cv2

from dad_edge.errors import ConfigError
from dad_edge.stream.outputs import annotate

log = logging.getLogger("dad_edge.stream.web")

JPEG_QUALITY = 80
THUMBNAIL_WIDTH = 200
CLIENT_TIMEOUT_S = 10.0  # a viewer whose socket takes nothing for this long is dropped
MAX_VIDEO_FPS = 15.0  # frames a viewer gets per second at most: the encoding cost stays bounded at any line rate
_WAIT_S = 1.0  # how often a waiting MJPEG response looks at the closing flag
_BOUNDARY = "frame"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #111; color: #eee; }
header { padding: 8px 16px; background: #222; } h1 { font-size: 18px; margin: 0; display: inline; }
header span { color: #aaa; margin-left: 12px; }
main { display: flex; flex-wrap: wrap; gap: 12px; padding: 12px; align-items: flex-start; }
#video { width: calc(100vw - 470px); min-width: 320px; max-width: 1280px; height: auto; background: #000; }
iframe { width: 420px; height: calc(100vh - 80px); min-height: 520px; border: 0; }
"""
_PANEL_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #111; color: #eee; }
table { border-collapse: collapse; width: 100%; } td { padding: 3px 6px; border-bottom: 1px solid #333; }
td.num { text-align: right; font-variant-numeric: tabular-nums; font-size: 18px; }
.anomalous { color: #ff6b5b; } .good { color: #6bd66b; } h2 { font-size: 15px; margin: 14px 0 6px; }
.thumbs { display: flex; flex-wrap: wrap; gap: 6px; } figure { margin: 0; font-size: 12px; color: #bbb; }
figure img { width: 200px; display: block; border: 1px solid #ff6b5b; }
"""


def _jpeg(bgr) -> bytes:
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise OSError("OpenCV could not encode a JPEG")
    return buf.tobytes()


class LiveView:
    """A web page on `host`:`port` showing a stream as it runs (see the module doc). port=0 picks a free
    port (`.port` says which). ConfigError when the port is taken or the address cannot be served."""

    def __init__(self, port: int, host: str = "127.0.0.1", thumbnails: int = 8):
        self._lock = threading.Condition()  # guards the holder and counters; notified on each new frame
        self._encode = threading.Lock()  # one encoder at a time: each frame is encoded once
        self._latest: Optional[Tuple[int, Any, List[List[int]]]] = None  # (sequence, result, boxes)
        self._sequence = 0
        self._encoded: Tuple[int, bytes] = (0, b"")
        self._pending: Deque[Tuple[Any, List[List[int]]]] = deque(maxlen=thumbnails)  # anomalies to thumbnail
        self._thumbnails: Deque[Dict[str, Any]] = deque(maxlen=thumbnails)
        self.good = self.anomalous = 0
        self.encoded = 0  # frames drawn and encoded for viewers: at most what they asked for, never every frame
        self.stats = None
        self.title = ""
        self.closed = False
        handler = type("LiveViewHandler", (_Handler,), {"view": self})
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"--web {port}: port {port} on {host} is already in use (another stream or "
                                  "server); pick another port") from None
            raise ConfigError(f"--web {port}: cannot serve on {host}:{port}: {exc.strerror or exc}; check "
                              "--web-host is an address of this machine") from None
        self.host, self.port = host, self.server.server_address[1]
        if host not in _LOOPBACK:
            log.warning("live view on %s:%d: reachable from the network, without authentication", host, self.port)
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.25},
                                        name="dad_edge-web", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def attach(self, stats, title: str = "") -> None:
        """The stream's StreamStats (read through snapshot() on request) and a line naming model and source
        (credentials in a URL, as rtsp://user:password@host/, are left out: viewers need not see them)."""
        self.stats, self.title = stats, re.sub(r"//[^/@\s]*@", "//", title)

    # -- the inspection thread's side ------------------------------------------------------

    def offer(self, result, boxes: List[List[int]]) -> None:
        """The newest result and its boxes: replaces the one held; anomalous ones wait for a thumbnail."""
        with self._lock:
            self._sequence += 1
            self._latest = (self._sequence, result, boxes)
            if result.label:
                self.anomalous += 1
                self._pending.append((result, boxes))
            else:
                self.good += 1
            self._lock.notify_all()

    # -- the server's side ---------------------------------------------------------------

    def _snapshot(self) -> Dict[str, float]:
        return self.stats.snapshot() if self.stats is not None else \
            {"frames": 0, "skipped": 0, "dropped": 0, "reconnects": 0, "fps": 0.0,
             "latency_ms_p50": 0.0, "latency_ms_p99": 0.0}

    def frame(self, after: int = 0, timeout: float = 0.0) -> Tuple[int, Optional[bytes]]:
        """(sequence, JPEG) of the newest frame once it is newer than `after`, waiting up to `timeout`;
        (after, None) when none came (or the view closed)."""
        with self._lock:
            if self._sequence <= after and not self.closed:
                self._lock.wait(timeout)
            if self._latest is None or self._sequence <= after or self.closed:
                return after, None
            sequence, result, boxes = self._latest
        with self._encode:
            if self._encoded[0] != sequence:
                self._encoded = (sequence, _jpeg(annotate(result, boxes, self._snapshot()["fps"])))
                self.encoded += 1
            return self._encoded

    def anomalies(self) -> List[Dict[str, Any]]:
        """The last anomalies, newest first: frame, time, score, boxes, thumbnail (its path here)."""
        with self._lock:
            pending = list(self._pending)
            self._pending.clear()
        with self._encode:
            for result, boxes in pending:  # drawn here, on a viewer's request, never on the inspection thread
                bgr = annotate(result, boxes)
                height = max(1, round(bgr.shape[0] * THUMBNAIL_WIDTH / bgr.shape[1]))
                small = cv2.resize(bgr, (THUMBNAIL_WIDTH, height), interpolation=cv2.INTER_AREA)
                self._thumbnails.append({"frame": result.frame, "time": round(result.time, 3),
                                         "score": result.score, "boxes": boxes, "jpeg": _jpeg(small)})
            return [{k: v for k, v in t.items() if k != "jpeg"} | {"thumbnail": f"/anomaly/{t['frame']}.jpg"}
                    for t in reversed(self._thumbnails)]

    def thumbnail(self, frame: int) -> Optional[bytes]:
        self.anomalies()
        with self._encode:
            return next((t["jpeg"] for t in self._thumbnails if t["frame"] == frame), None)

    def status(self) -> Dict[str, Any]:
        """What /stats.json returns."""
        with self._lock:  # read before the stream's counters, which count a frame before it is offered
            good, anomalous = self.good, self.anomalous
        s = self._snapshot()
        return {"title": self.title, "frames": s["frames"], "good": good, "anomalous": anomalous,
                "skipped": s["skipped"], "dropped": s["dropped"], "reconnects": s["reconnects"],
                "fps": round(s["fps"], 2), "latency_ms": {"p50": round(s["latency_ms_p50"], 2),
                                                         "p99": round(s["latency_ms_p99"], 2)},
                "anomalies": self.anomalies()}

    def close(self) -> None:
        """Stop serving: waiting video responses end, the port is released."""
        with self._lock:
            self.closed = True
            self._lock.notify_all()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> "LiveView":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def page(title: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>dad-edge live: '
            f"{html.escape(title)}</title><style>{_STYLE}</style></head><body><header><h1>dad-edge live</h1>"
            f"<span>{html.escape(title)}</span></header><main>"
            '<img id="video" src="/video.mjpg" alt="annotated video">'
            '<iframe id="panel" src="/panel" title="statistics and last anomalies"></iframe></main></body></html>')


def panel(status: Dict[str, Any]) -> str:
    rows = [("frames", status["frames"], ""), ("good", status["good"], "good"),
            ("anomalous", status["anomalous"], "anomalous"), ("skipped", status["skipped"], ""),
            ("dropped", status["dropped"], ""), ("frames/s", f"{status['fps']:.1f}", ""),
            ("latency p50", f"{status['latency_ms']['p50']:.1f} ms", ""),
            ("latency p99", f"{status['latency_ms']['p99']:.1f} ms", "")]
    table = "".join(f'<tr><td>{name}</td><td class="num {cls}" id="{name.replace(" ", "-").replace("/", "-")}">'
                    f"{value}</td></tr>" for name, value, cls in rows)
    thumbs = "".join(f'<figure><img src="{a["thumbnail"]}" alt="frame {a["frame"]}"><figcaption>frame {a["frame"]}'
                     f' &middot; score {a["score"]:.4f} &middot; {time.strftime("%H:%M:%S", time.localtime(a["time"]))}'
                     "</figcaption></figure>" for a in status["anomalies"])
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="1">'
            f"<style>{_PANEL_STYLE}</style></head><body><table>{table}</table><h2>Last anomalies</h2>"
            f'<div class="thumbs">{thumbs or "none yet"}</div></body></html>')


class _Handler(BaseHTTPRequestHandler):
    view: LiveView
    timeout = CLIENT_TIMEOUT_S  # socket timeout: a stalled viewer ends its own response, nobody else's
    server_version = "dad-edge"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = urlsplit(self.path).path
        try:
            if path == "/":
                self._send(200, "text/html; charset=utf-8", page(self.view.title).encode())
            elif path == "/panel":
                self._send(200, "text/html; charset=utf-8", panel(self.view.status()).encode())
            elif path == "/stats.json":
                self._send(200, "application/json", json.dumps(self.view.status()).encode())
            elif path == "/frame.jpg":
                _, jpeg = self.view.frame()
                if jpeg is None:
                    self._send(503, "text/plain", b"no frame yet\n")
                else:
                    self._send(200, "image/jpeg", jpeg)
            elif path == "/video.mjpg":
                self._mjpeg()
            elif path.startswith("/anomaly/") and path.endswith(".jpg") and path[9:-4].isdigit():
                jpeg = self.view.thumbnail(int(path[9:-4]))
                if jpeg is None:
                    self._send(404, "text/plain", b"no such anomaly (only the last few are kept)\n")
                else:
                    self._send(200, "image/jpeg", jpeg, immutable=True)
            else:
                self._send(404, "text/plain", b"not found\n")
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the viewer went away or stopped reading: its business, not the stream's

    def _send(self, code: int, kind: str, body: bytes, immutable: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=86400, immutable" if immutable else "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _mjpeg(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        sequence, sent = 0, 0.0
        while not self.view.closed:
            time.sleep(max(0.0, sent + 1 / MAX_VIDEO_FPS - time.monotonic()))  # frames in between are skipped
            sequence, jpeg = self.view.frame(after=sequence, timeout=_WAIT_S)
            if jpeg is None:
                continue
            sent = time.monotonic()
            self.wfile.write(f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                             .encode() + jpeg + b"\r\n")
            self.wfile.flush()

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)
