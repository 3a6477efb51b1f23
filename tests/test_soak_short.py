"""Stream soak and faults, short (issue #17, part 3; the 10,000-frame run is benchmarks/stream_soak.py):
memory flat after warm-up on a file source, an MJPEG camera over HTTP that drops its connection
every 50 frames reconnected each time, and `dad-edge stream` stopped by SIGTERM or killed by
SIGKILL at a random moment leaving outputs our own reader reads."""
import random
import signal
import subprocess
import sys
import time

import cv2
import pytest

from dad_edge.artifacts.atomic import is_temp_file
from dad_edge.artifacts.json_lines import read_json_lines
from dad_edge.stream.runner import Reconnect
from soak_support import MjpegServer, soak
from stream_support import SIZE, calibrated_onnx, read_video, write_video

N_FRAMES = 240
DEFECTIVE = {5, 60, 61, 150}
KILL_FRAMES = 2000  # long enough that the run is still going when the signal comes
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("soak")
    video = write_video(tmp / "line.mp4", N_FRAMES, DEFECTIVE)
    return video, calibrated_onnx(tmp, video, DEFECTIVE)


def test_file_source_scores_every_frame_with_flat_memory(setup, tmp_path):
    video, model = setup
    report = soak(model, str(video), N_FRAMES, every=40, events=tmp_path / "events.jsonl")
    assert (report.scored, report.skipped, report.dropped) == (N_FRAMES, 0, 0)
    assert report.rss_growth() < 0.05, report.line()  # after the first 20 % of the frames
    events = read_json_lines(tmp_path / "events.jsonl")
    assert [e["frame"] for e in events.records] == list(range(N_FRAMES)) and not events.cut_tail
    assert {e["frame"] for e in events.records if e["label"]} == DEFECTIVE


def test_mjpeg_camera_dropping_every_50_frames_is_reconnected_every_time(setup, tmp_path):
    video, model = setup
    with MjpegServer(read_video(video)[:16], drop_every=50, fps=100) as camera:
        report = soak(model, camera.url, 200, every=40, events=tmp_path / "events.jsonl",
                      reconnect=Reconnect(first_s=0.05, max_s=0.5))
    assert report.frames_read == 200
    assert camera.connections >= 4  # 200 frames, 50 a connection
    assert report.reconnects == camera.connections - 1  # every drop reopened (the last connection was open)
    events = read_json_lines(tmp_path / "events.jsonl").records
    assert len(events) == report.scored and all(e["source"] == camera.url for e in events)


def _stream(model, source, out, *extra):
    argv = [sys.executable, "-m", "dad_edge", "stream", str(model), "--source", str(source), "--no-display",
            "--events", str(out / "events.jsonl"), "--save-anomalies", str(out / "anomalies"), *extra]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_events(proc, path, lines: int) -> None:
    end = time.monotonic() + TIMEOUT_S
    while not (path.is_file() and path.read_bytes().count(b"\n") >= lines):
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < end
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_signal_at_a_random_moment_leaves_readable_outputs(setup, tmp_path, sig):
    _, model = setup
    video = write_video(tmp_path / "long.mp4", KILL_FRAMES, set(range(0, KILL_FRAMES, 7)))
    out = tmp_path / "out"
    # The annotated video: one mp4 with SIGTERM (its index is written on close); with SIGKILL, Matroska in
    # 1 s segments (tests/test_video_kill.py has the details: an mp4 killed before it closes is unreadable).
    extra = (["--out", str(out / "annotated.mp4")] if sig == signal.SIGTERM else
             ["--out", str(out / "annotated.mkv"), "--video-segment-s", "1"])
    proc = _stream(model, video, out, *extra)
    _wait_for_events(proc, out / "events.jsonl", 5)
    time.sleep(random.Random(sig).uniform(0.0, 0.5))
    assert proc.poll() is None, "the stream ended before the signal"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=TIMEOUT_S)
    events = read_json_lines(out / "events.jsonl")  # our reader: whole lines, a cut last one left out
    frames = [e["frame"] for e in events.records]
    assert frames == list(range(len(frames))) and 5 <= len(frames) < KILL_FRAMES
    images = sorted(p for p in (out / "anomalies").iterdir() if not is_temp_file(p))
    assert images and all(cv2.imread(str(p)) is not None for p in images)  # every image whole
    saved = {e["saved"] for e in events.records if "saved" in e}
    assert saved <= {p.name for p in images}  # every event's image is there
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, err.decode()[-2000:]
        assert not events.cut_tail and "SIGTERM: stopping" in err.decode()
        assert _video_frames(out / "annotated.mp4") == len(frames)  # the video closed with every frame the events list
    else:
        assert proc.returncode == -signal.SIGKILL
        segments = sorted(out.glob("annotated.[0-9]*.mkv"))  # finished (25 frames each) and the one killed
        counts = [_video_frames(p) for p in segments]
        assert all(n == 25 for p, n in zip(segments, counts) if ".partial." not in p.name)
        assert sum(counts) <= len(frames)  # a frame's event line is written before its video frame


def _video_frames(path) -> int:
    """Frames cv2.VideoCapture decodes from `path`, each checked to have the stream's frame size."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            return n
        assert img.shape[:2] == (SIZE[1], SIZE[0]), f"{path}: a frame of {img.shape}"
        n += 1
