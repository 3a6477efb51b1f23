"""Double buffering across batches (dad_edge/runtime/double_buffer.py): a folder of real images scored
through Detector.predict (decode, check, resize, the backend, map back), with the next batch read and
resized on a worker thread while the backend runs this one, against the stages in turn.

    python -m pytest benchmarks/test_double_buffer.py -q -s

compact-seg (the CPU default's net, 256x256 RGB, random weights) on every CPU target and the CUDA ones
this machine has; IMAGES magnetic-tile test images (JPEG, 109-609 px; random 1080p frames where the data
is missing), batch BATCH. Each case alternates the two modes over ROUNDS rounds, so that drift in the
machine's load hits both alike, and prints images/s for each and their ratio.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import harness
from backends import discover
from conftest import DATA

TARGETS = [t for t in discover() if not t.options.get("resident")  # test_resident.py times those
           and (t.runtime in ("onnxruntime", "openvino", "tensorrt") or (t.runtime == "torch" and not t.fused))]
IMAGES, BATCH, ROUNDS = 64, 8, 5


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    files = sorted(p for p in (DATA / "test").rglob("*") if p.suffix.lower() in (".jpg", ".png"))[:IMAGES]
    if len(files) == IMAGES:
        return files, "magnetic-tile test images"
    import cv2

    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8))
    return sorted(folder.glob("*.png")), "random 1080p PNG frames"


@pytest.mark.parametrize("target", TARGETS, ids=[t.id for t in TARGETS])
def test_double_buffer(benchmark, artifacts, sources, target):
    if target.skip:
        pytest.skip(target.skip)
    files, what = sources
    det = artifacts.detector("compact-seg", target, BATCH)
    det.warmup(BATCH)
    seconds = {True: [], False: []}
    try:
        for _ in range(ROUNDS):
            for pipeline in (False, True):
                det.pipeline = pipeline
                t0 = time.perf_counter()
                results = det.predict(files)
                seconds[pipeline].append(time.perf_counter() - t0)
                assert len(results) == len(files) and not [r.error for r in results if r.error]
        det.pipeline = True
        benchmark.pedantic(det.predict, args=(files,), rounds=1, iterations=1)
    finally:
        det.close()
    plain, buffered = (IMAGES / float(np.median(seconds[p])) for p in (False, True))
    benchmark.extra_info.update({"target": target.id, "images": IMAGES, "batch": BATCH, "source": what,
                                 "images_per_s_in_turn": plain, "images_per_s_double_buffered": buffered,
                                 "ratio": buffered / plain, "device_name": harness.device_name(target.device),
                                 "versions": harness.versions()})
    print(f"\ncompact-seg on {target.id}, {IMAGES} {what}, batch {BATCH}: stages in turn {plain:.1f} images/s, "
          f"double-buffered {buffered:.1f} images/s ({buffered / plain:.2f}x; medians of {ROUNDS} alternating "
          f"rounds); {harness.device_name(target.device)}")
    assert buffered > 0 and plain > 0
