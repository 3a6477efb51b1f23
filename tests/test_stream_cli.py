"""`dad-edge stream` end to end: annotated video, events, saved anomalies, alarms, SIGTERM."""
import argparse
import json
import signal
import subprocess
import sys
import time

import cv2
import pytest

from dad_edge.cli.stream import add_command
from dad_edge.errors import DataError
from stream_support import SIZE, calibrated_onnx, defect_centre, write_video

N_FRAMES = 40
DEFECTIVE = {3, 11, 12, 30}

# The `dad-edge` entry point with only the stream command registered (cli.py registers it
# beside the others through the same add_command).
HARNESS = ("import argparse, sys\n"
           "from dad_edge.cli.stream import add_command\n"
           "parser = argparse.ArgumentParser(prog='dad-edge')\n"
           "add_command(parser.add_subparsers(dest='command', required=True))\n"
           "args = parser.parse_args(sys.argv[1:])\n"
           "sys.exit(args.func(args))\n")


def dad_edge_stream(*argv) -> int:
    parser = argparse.ArgumentParser(prog="dad-edge")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["stream", *map(str, argv)])
    return args.func(args)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream_cli")
    video = write_video(tmp / "line.mp4", N_FRAMES, DEFECTIVE)
    return video, calibrated_onnx(tmp, video, DEFECTIVE)


def read_events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n, (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))


def test_video_file_to_annotated_video_events_anomalies_and_alarm(setup, tmp_path):
    video, model = setup
    alarm_log = tmp_path / "alarms.txt"
    rc = dad_edge_stream(model, "--source", video, "--out", tmp_path / "annotated.mp4",
                         "--events", tmp_path / "events.jsonl", "--save-anomalies", tmp_path / "anomalies",
                         "--no-display", "--batch", "2",
                         "--alarm-cmd", f"sh -c 'echo $DAD_EDGE_FRAME >> {alarm_log}'", "--alarm-interval", "3600")
    assert rc == 0
    events = read_events(tmp_path / "events.jsonl")
    assert [e["frame"] for e in events] == list(range(N_FRAMES))
    assert {e["frame"] for e in events if e["label"]} == DEFECTIVE
    for e in events:
        assert set(e) >= {"frame", "time", "score", "label", "boxes"}
        assert bool(e["boxes"]) == e["label"]
        for x, y, w, h in e["boxes"]:  # every box touches the disc drawn on that frame
            cx, cy = defect_centre(e["frame"])
            assert x - 22 <= cx <= x + w + 22 and y - 22 <= cy <= y + h + 22
    assert count_frames(tmp_path / "annotated.mp4") == (N_FRAMES, SIZE)
    saved = sorted(p.name for p in (tmp_path / "anomalies").glob("*.png"))
    assert saved == [f"frame_{i:08d}.png" for i in sorted(DEFECTIVE)]
    assert alarm_log.read_text().split() == [str(min(DEFECTIVE))]  # one alarm: the interval holds the rest


def test_only_anomalies_and_max_frames(setup, tmp_path):
    video, model = setup
    rc = dad_edge_stream(model, "--source", video, "--events", tmp_path / "e.jsonl", "--only-anomalies",
                         "--max-frames", "20", "--no-display")
    assert rc == 0
    assert [e["frame"] for e in read_events(tmp_path / "e.jsonl")] == sorted(f for f in DEFECTIVE if f < 20)


def test_a_source_that_does_not_exist(setup, tmp_path):
    _, model = setup
    with pytest.raises(DataError, match="no such file or folder"):
        dad_edge_stream(model, "--source", tmp_path / "missing.mp4", "--no-display")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_leaves_complete_output_files(setup, tmp_path, signum):
    _, model = setup
    video = write_video(tmp_path / "long.mp4", 3000, defective=range(0, 3000, 50))
    events, out = tmp_path / "events.jsonl", tmp_path / "annotated.mp4"
    proc = subprocess.Popen([sys.executable, "-c", HARNESS, "stream", str(model), "--source", str(video),
                             "--out", str(out), "--events", str(events), "--no-display"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (events.exists() and events.read_text().count("\n") >= 30):
            assert proc.poll() is None and time.monotonic() < deadline, "the stream did not get going"
            time.sleep(0.05)
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    log = output.decode()
    assert proc.returncode == 0, log
    assert f"{signum.name}: stopping" in log
    frames = [e["frame"] for e in read_events(events)]  # every line is complete JSON
    assert 30 <= len(frames) < 3000 and frames == list(range(len(frames)))
    assert count_frames(out) == (len(frames), SIZE)  # the video's index was written: it plays to the end
