"""The stream pipeline on real sources with a real tiny ONNX model: exact defective frames,
batching, bad frames, reopening (file and network camera), newest-wins, stop."""
import http.server
import socketserver
import threading
import time

import cv2
import numpy as np
import pytest

import dad_edge
from dad_edge.errors import DataError
from dad_edge.data.imageio import write_image
from dad_edge.stream.runner import Reconnect, Stream, StreamResult
from dad_edge.stream.capture import CaptureSource
from stream_support import calibrated_onnx, read_video, write_video

N_FRAMES = 40
DEFECTIVE = {3, 11, 12, 30}
FAST = Reconnect(first_s=0.01, max_s=0.05, attempts=3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream")
    video = write_video(tmp / "line.mp4", N_FRAMES, DEFECTIVE)
    return video, calibrated_onnx(tmp, video, DEFECTIVE)


@pytest.fixture(scope="module")
def det(setup):
    with dad_edge.Detector(setup[1], batch_size=8) as d:
        yield d


@pytest.mark.parametrize("batch", [1, 4])
def test_video_file_finds_exactly_the_defective_frames(setup, det, batch):
    video, _ = setup
    with Stream(det, str(video), batch=batch) as stream:
        results = list(stream)
    assert all(isinstance(r, StreamResult) for r in results)
    assert [r.frame for r in results] == list(range(N_FRAMES))  # a file drops nothing, in order
    assert {r.frame for r in results if r.label} == DEFECTIVE
    assert all(r.mask.any() == (r.frame in DEFECTIVE) for r in results)  # the pixel threshold too
    assert all(r.anomaly_map.shape == (120, 160) and r.latency_ms > 0 and r.time > 0 for r in results)
    s = stream.stats
    assert (s.frames, s.skipped, s.dropped, s.reconnects) == (N_FRAMES, 0, 0, 0)
    assert s.fps > 0 and 0 < s.latency_ms(50) <= s.latency_ms(99)


def test_stream_and_detector_agree(setup, det):
    video, _ = setup
    alone = det(read_video(video))
    with Stream(det, video, batch=4) as stream:
        streamed = list(stream)
    assert max(abs(a.score - b.score) for a, b in zip(alone, streamed)) < 1e-5


class FailsOnce(CaptureSource):
    """A real video file whose read raises once at frame `at`, like a network share that hiccups."""

    def __init__(self, path, at):
        super().__init__(str(path), str(path), live=False)
        self.at, self.failed = at, False

    def read(self):
        if self.position == self.at and not self.failed:
            self.failed = True
            raise OSError("Input/output error")
        return super().read()


def test_a_source_that_fails_mid_stream_is_reopened(setup, det, caplog):
    video, _ = setup
    with Stream(det, FailsOnce(video, at=17), reconnect=FAST) as stream:
        results = list(stream)
    assert stream.stats.reconnects == 1
    assert [r.frame for r in results] == list(range(N_FRAMES))  # resumed at frame 17, none repeated
    assert {r.frame for r in results if r.label} == DEFECTIVE
    assert "dropped (OSError: Input/output error)" in caplog.text and "reopened after 1 attempt" in caplog.text


class NeverComesBack(FailsOnce):
    def open(self):
        if self.failed:
            raise DataError(f"{self.name}: gone")
        super().open()


def test_a_source_that_stays_down_ends_the_stream_with_an_error(setup, det):
    video, _ = setup
    seen = []
    with pytest.raises(DataError, match="could not be reopened after 3 attempts"):
        with Stream(det, NeverComesBack(video, at=5), reconnect=FAST) as stream:
            seen.extend(r.frame for r in stream)
    assert seen == [0, 1, 2, 3, 4]  # the frames before the drop still came out


def test_corrupt_frames_are_skipped_and_counted(setup, det, tmp_path):
    frames = read_video(setup[0])[:6]
    for i, frame in enumerate(frames):
        write_image(tmp_path / f"{i:03d}.png", frame[:, :, ::-1])
    data = (tmp_path / "002.png").read_bytes()
    (tmp_path / "002.png").write_bytes(data[: len(data) // 2])  # cut short
    (tmp_path / "004.png").write_bytes(b"")  # empty
    with Stream(det, tmp_path, batch=2) as stream:
        results = list(stream)
    assert [r.source.split("/")[-1] for r in results] == ["000.png", "001.png", "003.png", "005.png"]
    assert [r.frame for r in results] == [0, 1, 3, 5]
    assert stream.stats.skipped == 2 and stream.stats.frames == 4
    assert results[3].label is False  # files decode as RGB: the source tells the pipeline


def test_max_frames_and_stop(setup, det):
    video, _ = setup
    with Stream(det, video, max_frames=7) as stream:
        assert len(list(stream)) == 7
    stream = Stream(det, video, batch=2)
    got = []
    for r in stream:
        got.append(r.frame)
        if r.frame == 4:
            stream.stop()
    assert got[-1] <= 5 and stream._thread is not None and not stream._thread.is_alive()
    assert stream.source.cap is None  # released


class MjpegCamera:
    """A real network camera in miniature: MJPEG over HTTP, frames numbered by brightness.

    Each connection sends the next `per_connection` frames and hangs up, as a flaky camera
    does; `interval_s` paces the frames.
    """

    def __init__(self, per_connection=10, interval_s=0.0, total=255):
        self.next = 0
        jpegs = [cv2.imencode(".jpg", np.full((48, 64, 3), i, np.uint8))[1].tobytes() for i in range(total)]
        camera = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for _ in range(per_connection):
                    if camera.next >= total:
                        break
                    jpeg = jpegs[camera.next]
                    camera.next += 1
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                     % len(jpeg) + jpeg + b"\r\n")
                    time.sleep(interval_s)

            def log_message(self, *args):
                pass

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cam"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_network_camera_that_drops_is_reopened(det):
    camera = MjpegCamera(per_connection=10, interval_s=0.005)
    try:
        with Stream(det, camera.url, max_frames=25, queue_size=64, reconnect=FAST) as stream:
            assert stream.source.live
            results = list(stream)
    finally:
        camera.close()
    brightness = [int(round(r.image.mean())) for r in results]
    assert stream.stats.reconnects == 2 and stream.stats.dropped == 0
    assert [r.frame for r in results] == list(range(25))
    assert max(abs(b - i) for i, b in enumerate(brightness)) <= 1  # the camera's frames 0..24, in order


def test_live_source_keeps_the_newest_frames_when_inference_lags(det):
    camera = MjpegCamera(per_connection=200, total=200)
    try:
        with Stream(det, camera.url, queue_size=2, max_frames=200, reconnect=FAST) as stream:
            frames = []
            for r in stream:
                frames.append(r.frame)
                time.sleep(0.02)  # a slow consumer
    finally:
        camera.close()
    s = stream.stats
    assert s.dropped > 0 and s.frames + s.dropped == 200 and len(frames) == s.frames
    assert frames == sorted(frames) and frames[-1] == 199  # the newest frame always gets through


def test_detector_stream(setup, det, tmp_path):
    video, _ = setup
    results = list(det.stream(str(video), batch=2))
    assert isinstance(results[0], StreamResult) and [r.frame for r in results] == list(range(N_FRAMES))
    assert {r.frame for r in results if r.label} == DEFECTIVE
    assert [r.ok for r in det.stream([tmp_path / "missing.png"])] == [False]  # lists run as before
