"""The stream pipeline's cost: frames/s through `Stream` on a video file against the Detector
alone on the same frames (decoded beforehand), ONNX Runtime on the CPU; and RSS over a long run.

    python -m pytest benchmarks/test_stream_overhead.py -s           # 1,000-frame RSS run
    python -m pytest benchmarks/test_stream_overhead.py -s --full    # 10,000 frames

Rows, all batch 1 unless named: the Detector alone (`det(frame)` per frame, frames in
memory); Stream (capture thread decoding the file, bounded queue, inference, results);
Stream at batch 4; Stream + outputs (events file and annotated mp4 for every frame).
Overhead = 1 - stream fps / alone fps. Variants alternate over 3 rounds and the fastest
round counts, so that load from other work on the machine hits all of them alike. CPU ms per
frame (all threads of the process, lowest round) is printed beside: on a machine shared with
other work it is steadier than wall time, and it shows what the pipeline costs in work.
"""
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import dad_edge
from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.checkpoint import save_model
from dad_edge.model.config import preset
from dad_edge.export.metadata_io import read_metadata, write_metadata
from dad_edge.export.onnx_export import export_onnx
from dad_edge.model.diffusion_ad import DiffusionAD
from dad_edge.stream.runner import Stream
from dad_edge.stream.outputs import StreamOutputs

ROUNDS = 3


def write_video(path: Path, n: int, size=(640, 480)) -> Path:
    """A still textured scene with sensor noise (a VGA line camera); a black disc every 25th frame."""
    rng = np.random.default_rng(0)
    w, h = size
    scene = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 3).astype(np.int16)
    noise = rng.integers(-6, 7, (8, h, w, 3), dtype=np.int16)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, size)
    for i in range(n):
        frame = np.clip(scene + noise[i % len(noise)], 0, 255).astype(np.uint8)
        if i % 25 == 24:
            cv2.circle(frame, (w // 3 + i % (w // 3), h // 2), h // 6, (0, 0, 0), -1)
        writer.write(frame)
    writer.release()
    return path


def onnx_model(tmp: Path, name: str, frames) -> Path:
    """A random-weight model as ONNX, thresholds just above its scores on the first good frames.

    Weights perturbed (seeded) so that maps vary: 0.1 for tiny, 0.01 for compact, whose
    deeper U-Net saturates the map at 1 with more.
    """
    cfg = preset(name)
    torch.manual_seed(2)
    model = DiffusionAD(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_((0.1 if name == "tiny" else 0.01) * torch.randn_like(p))
    save_model(tmp / f"{name}.safetensors", model, md.build_metadata(cfg))
    path = tmp / f"{name}.onnx"
    export_onnx(tmp / f"{name}.safetensors", path)
    with dad_edge.Detector(path) as det:
        good = det(frames[:8])
    meta = read_metadata(path)
    meta["thresholds"] = md.Thresholds(image=min(1.0, max(r.score for r in good) + 1e-4),
                                       pixel=min(1.0, max(float(r.anomaly_map.max()) for r in good) + 1e-4)).to_dict()
    write_metadata(path, meta)
    return path


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stream_bench")
    path = write_video(tmp / "vga.mp4", 300)
    cap = cv2.VideoCapture(str(path))
    frames = [cap.read()[1] for _ in range(300)]
    return tmp, path, frames


@pytest.mark.parametrize("name,n", [("tiny", 300), ("compact", 60)])
def test_stream_overhead(video, machine, name, n, tmp_path):
    tmp, path, frames = video
    frames = frames[:n]
    det = dad_edge.Detector(onnx_model(tmp, name, frames))
    det.warmup()

    def alone():
        for f in frames:
            det(f)

    def stream(batch=1, outputs=False):
        def run():
            out = StreamOutputs(video=tmp_path / "a.mp4", events=tmp_path / "e.jsonl") if outputs else None
            with Stream(det, path, batch=batch, max_frames=n) as s:
                for r in s:
                    if out:
                        out.write(r, s.stats)
            if out:
                out.close()
                (tmp_path / "e.jsonl").unlink()
        return run

    variants = {"Detector alone": alone, "Stream": stream(), "Stream batch 4": stream(4),
                "Stream + events + video": stream(outputs=True)}
    best = {k: 0.0 for k in variants}
    cpu_ms = {k: float("inf") for k in variants}
    for _ in range(ROUNDS):
        for label, fn in variants.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            best[label] = max(best[label], n / (time.perf_counter() - t0))
            cpu_ms[label] = min(cpu_ms[label], (time.process_time() - c0) / n * 1e3)
    base, base_cpu = best["Detector alone"], cpu_ms["Detector alone"]
    print(f"\n{name} {det.config.image_size}x{det.config.image_size} ONNX Runtime "
          f"({det.backend.device}), 640x480 mp4v frames, {n} frames, best of {ROUNDS}; {machine}, "
          f"load average {os.getloadavg()[0]:.1f}")
    for label, fps in best.items():
        print(f"  {label:26s} {fps:8.1f} frames/s   overhead {100 * (1 - fps / base):+6.1f} %   "
              f"CPU {cpu_ms[label]:6.1f} ms/frame ({100 * (cpu_ms[label] / base_cpu - 1):+6.1f} %)")
    assert all(v > 0 for v in best.values())


def test_stream_memory_stays_flat(tmp_path, request, machine):
    n = 10_000 if request.config.getoption("--full") else 1_000
    path = write_video(tmp_path / "long.mp4", n, size=(320, 240))
    cap = cv2.VideoCapture(str(path))
    det = dad_edge.Detector(onnx_model(tmp_path, "tiny", [cap.read()[1] for _ in range(8)]))
    cap.release()
    out = StreamOutputs(video=tmp_path / "a.mp4", events=tmp_path / "e.jsonl")
    marks = {}
    t0 = time.perf_counter()
    with Stream(det, path) as s:
        for r in s:
            out.write(r, s.stats)
            if r.frame in (99, n // 2 - 1, n - 1):  # after warm-up, half-way, at the end
                marks[r.frame + 1] = rss_mb()
    out.close()
    seconds = time.perf_counter() - t0
    first, last = marks[100], marks[n]
    print(f"\nRSS over {n} frames (tiny ONNX, 320x240, events + annotated mp4): "
          + ", ".join(f"{rss:.1f} MB after {k}" for k, rss in marks.items())
          + f"; growth after warm-up {last - first:+.1f} MB; {n / seconds:.0f} frames/s; {machine}")
    assert s.stats.frames == n
    assert last - first < 20, "memory grows with the number of frames"
