"""The live view of `dad-edge stream --web`: page, stats, MJPEG, thumbnails, a taken port, and the page
as headless Chromium shows it against a running stream."""
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from chromium_support import load, needs_chromium, not_blank
from dad_edge.cli import main
from dad_edge.errors import ConfigError
from dad_edge.runtime.detector import Detector
from dad_edge.stream.outputs import anomaly_boxes
from dad_edge.stream.runner import Stream
from dad_edge.stream.web import MAX_VIDEO_FPS, LiveView
from stream_support import SIZE, calibrated_onnx, write_video

N_FRAMES = 40
DEFECTIVE = {3, 11, 12, 30}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream_web")
    video = write_video(tmp / "line.mp4", N_FRAMES, DEFECTIVE)
    model = calibrated_onnx(tmp, video, DEFECTIVE)
    return tmp, video, model


@pytest.fixture(scope="module")
def results(setup):
    """(stats, [(result, boxes)]) of the whole video, as the stream command sees them."""
    _, video, model = setup
    with Detector(model) as det, Stream(det, video) as stream:
        out = [(r, anomaly_boxes(r, det.thresholds.image)) for r in stream]
    assert len(out) == N_FRAMES
    return stream.stats, out


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type"), response.read()


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def mjpeg_parts(url: str, count: int):
    """The first `count` JPEG parts of a multipart/x-mixed-replace response."""
    parts = []
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
        while len(parts) < count:
            assert response.readline() == b"--frame\r\n"
            headers = {}
            while (line := response.readline()) != b"\r\n":
                key, value = line.decode().split(":", 1)
                headers[key.strip().lower()] = value.strip()
            assert headers["content-type"] == "image/jpeg"
            parts.append(response.read(int(headers["content-length"])))
            assert response.readline() == b"\r\n"
    return parts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_page_stats_thumbnails_and_nothing_encoded_without_a_viewer(results):
    stats, frames = results
    with LiveView(0) as view:
        assert view.url == f"http://127.0.0.1:{view.port}/"
        view.attach(stats, "tiny.onnx on rtsp://user:secret@camera/line")
        for r, boxes in frames:
            view.offer(r, boxes)
        assert view.encoded == 0  # offering draws and encodes nothing: the inspection thread only hands over
        status, kind, body = get(view.url + "stats.json")
        s = json.loads(body)
        assert (status, kind) == (200, "application/json")
        assert (s["frames"], s["good"], s["anomalous"]) == (N_FRAMES, N_FRAMES - len(DEFECTIVE), len(DEFECTIVE))
        assert s["skipped"] == s["dropped"] == 0
        assert s["latency_ms"]["p99"] >= s["latency_ms"]["p50"] > 0
        assert "secret" not in s["title"] and s["title"] == "tiny.onnx on rtsp://camera/line"
        assert [a["frame"] for a in s["anomalies"]] == sorted(DEFECTIVE, reverse=True)  # newest first
        scored = {r.frame: r for r, _ in frames}
        for a in s["anomalies"]:
            assert a["score"] == scored[a["frame"]].score
            thumb = decode(get(view.url + a["thumbnail"][1:])[2])
            assert thumb.shape == (round(SIZE[1] * 200 / SIZE[0]), 200, 3)
        _, kind, page = get(view.url)
        page = page.decode()
        assert kind.startswith("text/html") and '<img id="video" src="/video.mjpg"' in page and "<script" not in page
        panel = get(view.url + "panel")[2].decode()
        assert f'id="anomalous">{len(DEFECTIVE)}<' in panel and 'http-equiv="refresh"' in panel
        frame = decode(get(view.url + "frame.jpg")[2])
        assert frame.shape == (SIZE[1], SIZE[0], 3) and view.encoded == 1
        get(view.url + "frame.jpg")
        assert view.encoded == 1  # a second viewer of the same frame reuses its JPEG
        with pytest.raises(urllib.error.HTTPError) as missing:
            get(view.url + "anomaly/999.jpg")
        assert missing.value.code == 404


def test_mjpeg_frames_while_the_stream_runs_and_skips_frames(results):
    stats, frames = results
    with LiveView(0) as view:
        view.attach(stats)

        def feed():
            for r, boxes in frames * 3:
                view.offer(r, boxes)
                time.sleep(0.01)

        feeder = threading.Thread(target=feed)
        started = time.monotonic()
        feeder.start()
        parts = mjpeg_parts(view.url + "video.mjpg", 4)
        feeder.join()
        elapsed = time.monotonic() - started
        images = [decode(p) for p in parts]
        assert all(im.shape == (SIZE[1], SIZE[0], 3) for im in images)
        assert all(np.abs(a.astype(int) - b).sum() > 0 for a, b in zip(images, images[1:]))  # each a newer frame
        # At most MAX_VIDEO_FPS frames/s are drawn for the viewer; the others are dropped, never queued.
        assert view.encoded <= MAX_VIDEO_FPS * elapsed + 2 < 3 * N_FRAMES


def test_close_with_a_viewer_that_stopped_reading(results):
    stats, frames = results
    view = LiveView(0)
    view.attach(stats)
    stalled = socket.create_connection(("127.0.0.1", view.port))
    stalled.sendall(b"GET /video.mjpg HTTP/1.0\r\n\r\n")  # and never reads
    for r, boxes in frames:
        view.offer(r, boxes)
    started = time.monotonic()
    view.close()
    assert time.monotonic() - started < 6
    LiveView(view.port).close()  # the port is free again: a restarted stream can serve on it
    stalled.close()


def test_a_taken_port_is_a_clear_error(setup, capsys):
    _, video, model = setup
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already in use"):
            LiveView(port)
        assert main(["stream", str(model), "--source", str(video), "--no-display", "--web", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"dad-edge stream: error: --web {port}: port {port} on 127.0.0.1 is already in use")


@needs_chromium
def test_chromium_shows_the_live_page_of_a_running_stream(setup, tmp_path):
    tmp, _, model = setup
    video = write_video(tmp_path / "long.mp4", 3000, defective=range(5, 3000, 20))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dad_edge", "stream", str(model), "--source", str(video),
                             "--no-display", "--web", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:  # until the model is loaded and frames come
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else ""
            with contextlib.suppress(OSError):
                if json.loads(get(url + "stats.json")[2])["anomalous"] > 0:
                    break
            time.sleep(0.2)
        shown = load(url, tmp_path / "chromium", size=(1100, 700), budget_ms=2500)
        assert proc.poll() is None, "the stream ended before the screenshot: make the video longer"
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert f"live view: {url}" in output
    assert not_blank(shown.screenshot)
    # The video and the thumbnails are heat maps: saturated colours, which the page itself (grey on black) has not.
    saturation = cv2.cvtColor(shown.screenshot, cv2.COLOR_BGR2HSV)[:, :, 1]
    assert np.mean(saturation > 80) > 0.05
    assert shown.page_requests and all(u.startswith(url) for u in shown.page_requests), shown.page_requests
    assert url + "video.mjpg" in shown.page_requests and url + "panel" in shown.page_requests
