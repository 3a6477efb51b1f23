"""Stream soak and faults, long (issue #17, part 3; the short version is tests/test_soak_short.py).

    nice -n 19 python benchmarks/stream_soak.py --frames 10000 --drop-every 500 --kills 10

1. 10,000 frames from a video file through Stream + StreamOutputs (events file), tiny ONNX model:
   RSS (VmRSS) sampled every 250 frames, growth from the end of warm-up (first 20 %) to the end.
2. 10,000 frames read from a local MJPEG-over-HTTP camera (http.server on a thread) that closes the
   connection every --drop-every frames: drops vs reconnects, frames scored / dropped (a live
   source drops the oldest frame when inference is slower than the camera), RSS as above.
3. --kills times: `dad-edge stream` on a file, SIGTERM or SIGKILL (alternating) at a random moment;
   every events file must read back with our reader and every saved image decode, and the annotated
   video (.mkv in 2 s segments) play: every frame after SIGTERM, every finished segment after SIGKILL
   (the frames the killed segment still gives are counted).
Frames/s and p50 latency are printed per sample window: stable means no trend over the run.
"""
from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The helpers the tests use (tests/soak_support.py, tests/stream_support.py); this script runs outside pytest.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import cv2  # noqa: E402

from dad_edge.artifacts.atomic import is_temp_file  # noqa: E402
from dad_edge.artifacts.json_lines import read_json_lines  # noqa: E402
from dad_edge.stream.runner import Reconnect  # noqa: E402
from soak_support import MjpegServer, soak  # noqa: E402
from stream_support import calibrated_onnx, read_video, write_video  # noqa: E402


def windows(report, n: int = 5) -> str:
    """frames/s and p50 latency at n evenly spaced samples: a trend shows here."""
    s = report.samples
    picks = [s[round(i * (len(s) - 1) / (n - 1))] for i in range(n)] if len(s) >= n else s
    return "  ".join(f"@{f}: {fps:.0f} fps, p50 {p50:.1f} ms" for f, _, fps, p50, _ in picks)


SEGMENT_S = 2.0  # of the annotated video in the kill runs


def video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def check_video(out: Path, events: int, sig, fps: float):
    """(ok, a line): SIGTERM: the segments hold every frame the events list; SIGKILL: every finished segment
    is whole, and the killed one gives what reached the disk."""
    per = round(SEGMENT_S * fps)
    finished = sorted(out.glob("annotated.[0-9][0-9][0-9][0-9][0-9][0-9].mkv"))
    partial = sorted(out.glob("annotated.*.partial.mkv"))
    counts, tail = [video_frames(p) for p in finished], sum(video_frames(p) for p in partial)
    if sig == signal.SIGTERM:
        ok = not partial and sum(counts) == events and all(c == per for c in counts[:-1])
    else:
        ok = all(c == per for c in counts) and sum(counts) + tail <= events
    return ok, (f"video {sum(counts) + tail} frames: {len(finished)} whole segments"
                + (f" + {tail} from the killed one ({len(partial)} file)" if partial else ""))


def kills(model: Path, video: Path, tmp: Path, n: int, seed: int) -> str:
    rng = random.Random(seed)
    readable = cut_tails = 0
    for i in range(n):
        sig = signal.SIGTERM if i % 2 == 0 else signal.SIGKILL
        out = tmp / f"kill{i}"
        proc = subprocess.Popen([sys.executable, "-m", "dad_edge", "stream", str(model), "--source", str(video),
                                 "--no-display", "--events", str(out / "events.jsonl"), "--save-anomalies",
                                 str(out / "anomalies"), "--out", str(out / "annotated.mkv"),
                                 "--video-segment-s", str(SEGMENT_S)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (out / "events.jsonl").is_file() and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 3.0))
        proc.send_signal(sig)
        proc.wait()
        shown = "video ?"
        try:
            events = read_json_lines(out / "events.jsonl")
            frames = [e["frame"] for e in events.records]
            images = [p for p in (out / "anomalies").iterdir() if not is_temp_file(p)]
            ok = frames == list(range(len(frames))) and all(cv2.imread(str(p)) is not None for p in images)
            cut_tails += events.cut_tail
            video_ok, shown = check_video(out, len(frames), sig, fps=25.0)
            ok = ok and video_ok
        except Exception as exc:  # noqa: BLE001 (counted and shown, never hidden)
            ok = False
            print(f"  kill {i} ({sig.name}): {type(exc).__name__}: {exc}")
        readable += ok
        print(f"  kill {i + 1} ({sig.name}): {'outputs readable' if ok else 'UNREADABLE'}, "
              f"{len(frames) if ok else '?'} events, {len(images) if ok else '?'} images; {shown}", flush=True)
    return f"signals: outputs readable after {readable} / {n} (SIGTERM and SIGKILL alternating; {cut_tails} cut last lines)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--drop-every", type=int, default=500, help="the camera closes its connection every N frames")
    ap.add_argument("--camera-fps", type=float, default=100.0)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dad_edge_soak_"))
    defective = set(range(3, args.frames, 97))
    calib = write_video(tmp / "calib.mp4", 60, {d for d in defective if d < 60})
    model = calibrated_onnx(tmp, calib, {d for d in defective if d < 60})
    video = write_video(tmp / "line.mp4", args.frames, defective)
    every = max(1, args.frames // 40)

    report = soak(model, str(video), args.frames, every=every, events=tmp / "file_events.jsonl")
    events = read_json_lines(tmp / "file_events.jsonl")
    print(f"file source: {report.line()}; events read back: {len(events.records)}", flush=True)
    print(f"  {windows(report)}", flush=True)

    with MjpegServer(read_video(calib)[:16], drop_every=args.drop_every, fps=args.camera_fps) as camera:
        report = soak(model, camera.url, args.frames, every=every, events=tmp / "mjpeg_events.jsonl",
                      reconnect=Reconnect(first_s=0.1, max_s=1.0))
        connections, sent = camera.connections, camera.sent
    events = read_json_lines(tmp / "mjpeg_events.jsonl")
    print(f"MJPEG camera ({args.camera_fps:g} fps, drop every {args.drop_every} frames): {report.line()}; "
          f"camera: {sent} frames sent over {connections} connections = {connections - 1} drops, "
          f"{report.reconnects} reconnected; events read back: {len(events.records)}", flush=True)
    print(f"  {windows(report)}", flush=True)

    print(kills(model, write_video(tmp / "kill.mp4", 3000, set(range(0, 3000, 7))), tmp, args.kills, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
