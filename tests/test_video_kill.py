"""The annotated video after SIGKILL (issue #17): a real child process writes frames through VideoOutput
(or runs `dad-edge stream`) and is killed with SIGKILL; what it leaves is read back with cv2.VideoCapture.

Each frame of the writer tests carries its index as a row of black/white blocks, so a read-back frame
is checked to be the right one, in order, at the right size; the background is noise, so that the
encoded video is as large per frame as a real scene's."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dad_edge.errors import ConfigError, DataError
from dad_edge.stream.video import VideoOutput
from stream_support import SIZE, calibrated_onnx, write_video

W, H = 640, 480
BITS, BLOCK = 10, 40  # the frame index, 10 bits, as 40x40 blocks along the top
TIMEOUT_S = 120

CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from test_video_kill import frame
from dad_edge.stream.video import VideoOutput
path, k, segment_s, fps = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) or None, float(sys.argv[5])
video = VideoOutput(path, fps=fps, segment_s=segment_s)
for i in range(k):
    video.write(frame(i))
print(video.frames, flush=True)
sys.stdin.read()  # until killed
"""


def frame(i: int) -> np.ndarray:
    """BGR, W x H: noise, and the index i in binary along the top (white block: bit set)."""
    rng = np.random.default_rng(i)
    img = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (0, 0), 1.5)
    for b in range(BITS):
        img[:BLOCK, b * BLOCK:(b + 1) * BLOCK] = 255 if (i >> b) & 1 else 0
    return img


def read_indices(path: Path):
    """The index of every frame cv2.VideoCapture decodes from `path`, each checked to be W x H."""
    cap = cv2.VideoCapture(str(path))
    indices = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        assert img.shape == (H, W, 3), f"{path}: a frame of {img.shape}"
        blocks = [img[8:BLOCK - 8, b * BLOCK + 8:(b + 1) * BLOCK - 8].mean() for b in range(BITS)]
        assert all(v < 60 or v > 195 for v in blocks), f"{path}: frame {len(indices)} does not decode cleanly"
        indices.append(sum(1 << b for b, v in enumerate(blocks) if v > 128))
    cap.release()
    return indices


def kill_after(path: Path, k: int, segment_s: float = 0.0, fps: float = 25.0) -> None:
    """A child process writes k frames to `path` through VideoOutput, says so, and is SIGKILLed."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(Path(__file__).parent), str(path), str(k),
                             str(segment_s), str(fps)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line.strip() == str(k).encode(), proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=TIMEOUT_S)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL


def test_mkv_killed_plays_up_to_its_last_block_and_the_next_run_keeps_it(tmp_path):
    out = tmp_path / "annotated.mkv"
    k = 120  # about 1 MB of mp4v: several of the 256 KiB blocks FFmpeg hands to the system
    kill_after(out, k)
    assert not out.exists()  # the final name is for a closed file only
    partial = tmp_path / "annotated.partial.mkv"
    got = read_indices(partial)
    assert 0 < len(got) <= k and got == list(range(len(got)))  # the first frames, whole and in order

    video = VideoOutput(out, fps=25)  # the next run: the killed recording moves aside, readable as it was
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("annotated.killed-")]
    assert len(kept) == 1 and kept[0].suffix == ".mkv" and not partial.exists()
    assert read_indices(kept[0]) == got
    for i in range(7):
        video.write(frame(i))
    video.close()
    assert read_indices(out) == list(range(7)) and video.files == [out]


def test_mp4_killed_is_lost_but_mkv_and_avi_are_not(tmp_path):
    """What each container leaves after a kill of one file (no segments), on this machine's OpenCV."""
    k = 120
    for suffix, readable in ((".mp4", False), (".mkv", True), (".avi", True)):
        kill_after(tmp_path / f"v{suffix}", k)
        got = read_indices(tmp_path / f"v.partial{suffix}")
        if readable:
            assert 0 < len(got) <= k and got == list(range(len(got))), suffix
        else:
            assert got == [], "an mp4 without its index played: the help and README say it does not"


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".avi"])
def test_segments_killed_keep_every_finished_segment(tmp_path, suffix):
    out = tmp_path / f"annotated{suffix}"
    k, per = 35, 10  # 0.4 s segments at 25 frames/s: 3 whole segments and 5 frames of a fourth
    kill_after(out, k, segment_s=0.4)
    for n in (1, 2, 3):
        assert read_indices(tmp_path / f"annotated.{n:06d}{suffix}") == list(range((n - 1) * per, n * per))
    partial = tmp_path / f"annotated.000004.partial{suffix}"
    assert partial.is_file() and not (tmp_path / f"annotated.000004{suffix}").exists()
    got = read_indices(partial)  # .mkv / .avi: what reached the disk (here, under 256 KiB: maybe nothing)
    assert got == list(range(3 * per, 3 * per + len(got))) and len(got) <= k - 3 * per

    video = VideoOutput(out, fps=25, segment_s=0.4)  # a restart numbers on: nothing is overwritten
    for i in range(12):
        video.write(frame(i))
    video.close()
    assert video.files == [tmp_path / f"annotated.{n:06d}{suffix}" for n in (5, 6)]
    assert read_indices(video.files[0]) == list(range(10)) and read_indices(video.files[1]) == [10, 11]
    assert partial.is_file() and read_indices(tmp_path / f"annotated.000001{suffix}") == list(range(per))


def test_close_gives_every_frame_under_the_final_names(tmp_path):
    video = VideoOutput(tmp_path / "a.mkv", fps=10, segment_s=1.0)
    for i in range(25):
        video.write(frame(i))
    video.close()
    assert [p.name for p in video.files] == ["a.000001.mkv", "a.000002.mkv", "a.000003.mkv"]
    assert sum((read_indices(p) for p in video.files), []) == list(range(25))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.000001.mkv", "a.000002.mkv", "a.000003.mkv"]


def test_formats_it_cannot_write_fail_at_start_naming_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"clip\.webm.*\.mkv"):
        VideoOutput(tmp_path / "clip.webm")
    with pytest.raises(ConfigError, match="no suffix"):
        VideoOutput(tmp_path / "clip")
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="segment"):
            VideoOutput(tmp_path / "clip.mkv", segment_s=bad)
    (tmp_path / "taken.mkv").mkdir()
    video = VideoOutput(tmp_path / "taken.mkv")
    with pytest.raises(DataError, match=r"taken\.mkv.*folder"):
        video.write(frame(0))
    assert not (tmp_path / "taken.partial.mkv").exists()


# -- `dad-edge stream` itself ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("video_kill")
    defective = {3, 11, 30}
    return calibrated_onnx(tmp, write_video(tmp / "calib.mp4", 40, defective), defective)


def _count(path: Path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        assert img.shape == (SIZE[1], SIZE[0], 3)
        n += 1
    return n


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_dad_edge_stream_signalled_leaves_readable_segments(model, tmp_path, sig):
    source = write_video(tmp_path / "long.mp4", 2000, set(range(0, 2000, 7)))  # 25 frames/s
    out, events = tmp_path / "out", tmp_path / "events.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "dad_edge", "stream", str(model), "--source", str(source),
                             "--no-display", "--events", str(events), "--out", str(out / "annotated.mkv"),
                             "--video-segment-s", "0.4"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + TIMEOUT_S
        while not (events.is_file() and events.read_bytes().count(b"\n") >= 45):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < end
            time.sleep(0.01)
        time.sleep(random.Random(sig).uniform(0.0, 0.3))
        assert proc.poll() is None, "the stream ended before the signal"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=TIMEOUT_S)
    finally:
        proc.kill()
    lines = events.read_bytes().count(b"\n")  # whole event lines: a frame's event is written before its video
    finished = sorted(out.glob("annotated.[0-9][0-9][0-9][0-9][0-9][0-9].mkv"))
    assert [p.name for p in finished] == [f"annotated.{n:06d}.mkv" for n in range(1, len(finished) + 1)]
    counts = [_count(p) for p in finished]
    if sig == signal.SIGTERM:
        assert proc.returncode == 0, err.decode()[-2000:]
        assert sum(counts) == lines and all(n == 10 for n in counts[:-1]) and 1 <= counts[-1] <= 10
        assert not list(out.glob("*.partial.mkv"))
    else:
        assert proc.returncode == -signal.SIGKILL
        assert len(finished) >= 4 and counts == [10] * len(finished)  # 44 frames or more reached the video
        partial = list(out.glob("*.partial.mkv"))  # none if the kill fell between one segment and the next
        assert [p.name for p in partial] in ([], [f"annotated.{len(finished) + 1:06d}.partial.mkv"])
        assert sum(counts) + sum(_count(p) for p in partial) <= lines
