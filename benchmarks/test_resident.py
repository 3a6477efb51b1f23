"""The resident path (Detector(resident=True), dad_edge/runtime/resident.py) against the same target's host path,
side by side: host to host through Detector.infer_batch, uint8 frames of one shape (a camera's).

    python -m pytest benchmarks/test_resident.py -q -s            # every resident target this machine has

Three modes per case, on warm Detectors, alternating over ROUNDS rounds so that drift hits all alike:
  host       the target without resident (pre-processing on the host or per-frame uploads, as before)
  resident1  resident, one batch in flight (submit, then collect, then the next)
  resident2  resident, two in flight (batch n+1's copy-in on its stream while batch n computes)
Prints images/s (CALLS batches per measurement) and p50 ms per batch of each mode, and the ratios.
On the CPU the resident path has no pinning, streams or graphs: its row says what the fixed buffers
and the one-copy input cost or save there, nothing about a GPU.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

import harness
from backends import discover

TARGETS = [t for t in discover() if t.options.get("resident")]
CASES = {"cpu": [("compact-seg", 1, 256), ("compact-seg", 8, 256), ("compact", 1, 256)],
         "cuda": [(m, b, f) for m in ("compact", "compact-seg") for b in (1, 64) for f in (256, 1080)]}
ROUNDS, CALLS = {"cpu": 5, "cuda": 3}, {"cpu": 4, "cuda": 20}  # sized for one device call (gpu_check.sh)
POOL = 64  # distinct frames; longer runs cycle through them (64 1080p frames are 400 MB already)
MODES = ("host", "resident1", "resident2")


def _cases():
    for t in TARGETS:
        for model, batch, frame in CASES[t.device]:
            yield pytest.param(t, model, batch, frame, id=f"{t.id}-{model}-b{batch}-{frame}")


@pytest.mark.parametrize("target,model,batch,frame", list(_cases()))
def test_resident(benchmark, artifacts, target, model, batch, frame):
    if target.skip:
        pytest.skip(target.skip)
    host_target = dataclasses.replace(target, id=target.id.replace("-resident", ""),
                                      options={k: v for k, v in target.options.items() if k != "resident"})
    shape = (256, 256, 3) if frame == 256 else (1080, 1920, 3)
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(min(POOL, batch * CALLS[target.device]))]
    frames = [pool[i % len(pool)] for i in range(batch * CALLS[target.device])]
    dets = {"host": artifacts.detector(model, host_target, batch), "resident": artifacts.detector(model, target, batch)}
    seconds = {m: [] for m in MODES}
    try:
        for det in dets.values():
            det.pipeline = False  # the host thread's overlap is measured in test_double_buffer.py
            det.infer_batch(frames[:2 * batch])  # warm: buffers, graphs, kernel choice
        _, s_host = dets["host"].infer_batch(frames[:batch])
        _, s_res = dets["resident"].infer_batch(frames[:batch])
        np.testing.assert_allclose(s_res, s_host, atol=5e-3)  # the same function (fp16 on a GPU)
        for _ in range(ROUNDS[target.device]):
            for mode in MODES:
                det = dets["host" if mode == "host" else "resident"]
                if mode != "host":
                    det.backend.in_flight = 1 if mode == "resident1" else 2
                t0 = time.perf_counter()
                det.infer_batch(frames)
                seconds[mode].append(time.perf_counter() - t0)
        benchmark.pedantic(dets["resident"].infer_batch, args=(frames,), rounds=1, iterations=1)
    finally:
        for det in dets.values():
            det.close()
    rate = {m: len(frames) / float(np.median(seconds[m])) for m in MODES}
    per_batch_ms = {m: float(np.median(seconds[m])) / CALLS[target.device] * 1e3 for m in MODES}
    benchmark.extra_info.update({"target": target.id, "model": model, "batch": batch, "frame": list(shape),
                                 "images_per_s": rate, "ms_per_batch": per_batch_ms,
                                 "device_name": harness.device_name(target.device), "versions": harness.versions()})
    print(f"\n{model} {target.id} batch {batch}, frames {shape[1]}x{shape[0]}: "
          + ", ".join(f"{m} {rate[m]:.1f} images/s ({per_batch_ms[m]:.2f} ms/batch)" for m in MODES)
          + f"; resident2/host {rate['resident2'] / rate['host']:.2f}x, resident2/resident1 "
          f"{rate['resident2'] / rate['resident1']:.2f}x; {harness.device_name(target.device)}")
    assert all(r > 0 for r in rate.values())
