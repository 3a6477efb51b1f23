"""Latency and throughput of one model on this machine, through the Detector: the figure a line
engineer signs a cycle time off with. What `dad-edge benchmark` and `dad_edge.benchmark` run.

    report = benchmark_model("engine.plan", batches=(1, 8, 32))
    report["rows"][0]["p99_ms"]            # batch 1: 99 % of calls return within this

Each call is a whole Detector call on uint8 frames, as a camera gives them: pre-processing
(resize), the backend, the map back to the frame's size and the thresholds; decode from disk is
left out. For each batch size: `warmup` untimed calls (allocations, kernel selection, CUDA-graph
capture), then timed calls until `seconds` have passed and at least `min_calls` were made. p50 /
p99 are of the per-call latency (a call scores `batch` frames); images/s is frames over the
timed wall time.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dad_edge.errors import ConfigError


def machine_info() -> Dict[str, Any]:
    """Where the figures were measured: CPU model and cores, OS, Python."""
    from dad_edge.training.compare import cpu_name  # the one reader of /proc/cpuinfo (no torch)

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


def _precision(det) -> str:
    meta = det.meta
    for section in ("tensorrt", "export"):
        if isinstance(meta.get(section), dict) and meta[section].get("precision"):
            return str(meta[section]["precision"])
    return "fp16" if getattr(det.backend, "half", False) else "fp32"


def _check(batches: Sequence[int], seconds: float, warmup: int, min_calls: int) -> List[int]:
    batches = [batches] if isinstance(batches, int) else list(batches)
    if not batches or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batches):
        raise ConfigError(f"batch={batches!r}: give one or more positive integers (e.g. 1 8 32)")
    if not seconds > 0:
        raise ConfigError(f"seconds={seconds!r} must be > 0")
    if warmup < 0 or min_calls < 1:
        raise ConfigError(f"warmup={warmup} must be >= 0 and min_calls={min_calls} >= 1")
    return batches


def time_batch(det, frames: List[np.ndarray], seconds: float, warmup: int, min_calls: int) -> Dict[str, Any]:
    """One row: p50 / p99 per-call latency (ms) and images/s of det(frames) on this batch of frames."""
    for _ in range(warmup):
        det.predict(frames)
    latencies = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        results = det.predict(frames)
        latencies.append(time.perf_counter() - t0)
        if len(latencies) >= min_calls and t0 + latencies[-1] - start >= seconds:
            break
    wall = time.perf_counter() - start
    bad = [r.error for r in results if not r.ok]
    if bad:
        raise ConfigError(f"benchmark frames were refused: {bad[0]}")
    ms = np.array(latencies) * 1e3
    return {"batch": len(frames), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "images_per_s": len(frames) * len(latencies) / wall, "calls": len(latencies)}


def benchmark_model(model, batches: Sequence[int] = (1,), backend: Optional[str] = None,
                    device: Optional[str] = None, half: bool = False, cuda_graphs: bool = False,
                    resident: bool = False, frame_size: Optional[Tuple[int, int]] = None, seconds: float = 3.0, warmup: int = 3,
                    min_calls: int = 10, seed: int = 0) -> Dict[str, Any]:
    """Time `model` (a file) through a Detector at each batch size; a JSON-ready report.

    frame_size: (height, width) of the frames (default: the model's input size; a camera's
    size adds the resize to the figure). Returns {"model", "backend", "device", "precision",
    "input", "frame", "machine", "settings", "rows": [{"batch", "p50_ms", "p99_ms", "images_per_s",
    "calls"}]}."""
    from dad_edge.runtime.detector import Detector

    batches = _check(batches, seconds, warmup, min_calls)
    with Detector(model, backend=backend, device=device, half=half, cuda_graphs=cuda_graphs, resident=resident,
                  batch_size=max(batches)) as det:
        c = det.config
        h, w = frame_size or (c.image_size, c.image_size)
        if h < 1 or w < 1:
            raise ConfigError(f"frame_size={frame_size!r}: height and width must be >= 1")
        rng = np.random.default_rng(seed)
        pool = rng.integers(0, 256, (max(batches), h, w, c.channels), dtype=np.uint8)
        rows = [time_batch(det, list(pool[:b]), seconds, warmup, min_calls) for b in batches]
        report = {"model": str(model), "backend": det.backend.name, "device": str(det.backend.device),
                  "precision": _precision(det), "input": [c.channels, c.image_size, c.image_size],
                  "frame": [h, w, c.channels], "machine": machine_info(),
                  "settings": {"seconds": seconds, "warmup": warmup, "min_calls": min_calls,
                               "max_batch_per_call": det.batch_size, "resident": resident},
                  "rows": rows}
    return report


def format_table(report: Dict[str, Any]) -> str:
    """The report as a plain-text table, with what was measured and where above it."""
    m = report["machine"]
    head = (f"{report['model']}: {report['backend']} on {report['device']}, {report['precision']}, "
            f"input {'x'.join(map(str, report['input']))}, frames {report['frame'][0]}x{report['frame'][1]}\n"
            f"machine: {m['cpu']}, {m['cores']} cores, {m['platform']}")
    lines = [head, f"{'batch':>6} {'p50 ms':>10} {'p99 ms':>10} {'images/s':>10} {'calls':>7}"]
    for r in report["rows"]:
        lines.append(f"{r['batch']:>6} {r['p50_ms']:>10.2f} {r['p99_ms']:>10.2f} {r['images_per_s']:>10.1f} "
                     f"{r['calls']:>7}")
    return "\n".join(lines)
