"""The C extension (dad_edge._C) against the numpy references on this CPU, 256x256, batch 1 and 32.

    python -m pytest benchmarks/test_kernels_cpu.py -s      # prints the side-by-side table

preprocess + noise: BGR uint8 frames 256x256 -> U-Net input (2B, 3, 256, 256) and x.
combine: x, eps (2B, ...), fixed noise -> cat(x, x0_ng) (B, 6, 256, 256).
score: maps (B, 1, 256, 256) -> Gaussian blur (sigma 4), top-50 mean, normalised score, mask.
GB/s counts the bytes each stage must move at least (inputs read once, outputs written once).
"c+out" is the C form writing into buffers allocated once, as a camera loop would: it
leaves out the page faults of fresh output arrays, which both other columns pay.
"""
import os

import numpy as np
import pytest

from dad_edge.runtime import ops
from dad_edge.model.config import preset
from dad_edge.artifacts.metadata import Thresholds

pytestmark = pytest.mark.skipif(not ops.available()["c"], reason=str(ops.available()["reasons"].get("c")))

CFG = preset("compact", smoothing_sigma=4.0)  # 256 x 256 RGB, top-50
S, C = CFG.image_size, CFG.channels
FORMS = ("reference", "c", "c+out")
RESULTS = {}  # (op, batch, form) -> seconds per call


def _inputs(op, batch):
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((2, C, S, S), dtype=np.float32)
    if op == "preprocess_noise":
        frames = rng.integers(0, 256, (batch, S, S, 3), dtype=np.uint8)
        moved = frames.nbytes + noise.nbytes + 3 * batch * C * S * S * 4
        unet, x = np.empty((2 * batch, C, S, S), np.float32), np.empty((batch, C, S, S), np.float32)

        def run(form):
            if form == "c+out":
                return ops.preprocess_noise(frames, CFG, noise, "BGR", out=unet, x_out=x, impl="c")
            return ops.preprocess_noise(frames, CFG, noise, "BGR", impl=form)
        return run, moved
    if op == "combine":
        x = rng.uniform(-1, 1, (batch, C, S, S)).astype(np.float32)
        eps = rng.standard_normal((2 * batch, C, S, S), dtype=np.float32)
        moved = x.nbytes + eps.nbytes + noise.nbytes + 2 * x.nbytes
        seg = np.empty((batch, 2 * C, S, S), np.float32)

        def run(form):
            if form == "c+out":
                return ops.combine(x, eps, noise, CFG, out=seg, impl="c")
            return ops.combine(x, eps, noise, CFG, impl=form)
        return run, moved
    maps = rng.random((batch, 1, S, S), dtype=np.float32)
    moved = maps.nbytes * 2 + batch * S * S  # read the map, write the blurred map and the mask
    return (lambda form: ops.score(maps, CFG, Thresholds(image=0.5, pixel=0.9), impl=form)), moved


@pytest.fixture(scope="module", autouse=True)
def table(machine):
    yield
    if not RESULTS:
        return
    threads = ops.available()["c_threads"]
    print(f"\n\nC extension vs numpy reference, {S}x{S} RGB float32, {machine}, C threads {threads}")
    print(f"{'stage':18}{'batch':>6}{'numpy ms':>11}{'C ms':>9}{'speed-up':>10}{'C GB/s':>9}"
          f"{'C+out ms':>10}{'speed-up':>10}")
    for (op, batch) in sorted({(o, b) for o, b, _ in RESULTS}):
        ref, fast, out = (RESULTS.get((op, batch, f)) for f in FORMS)
        if ref is None or fast is None:
            continue
        _, moved = _inputs(op, batch)
        line = f"{op:18}{batch:>6}{ref * 1e3:>11.2f}{fast * 1e3:>9.2f}{ref / fast:>9.1f}x{moved / fast / 1e9:>9.2f}"
        print(line + (f"{out * 1e3:>10.2f}{ref / out:>9.1f}x" if out else ""))
    print(f"(DAD_EDGE_NUM_THREADS={os.environ.get('DAD_EDGE_NUM_THREADS', 'unset')})")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("batch", [1, 32], ids=["batch1", "batch32"])
@pytest.mark.parametrize("op", ["preprocess_noise", "combine", "score"])
def test_kernel_cpu(benchmark, machine, op, batch, form):
    if form == "c+out" and op == "score":
        pytest.skip("score has no output buffers to pass")
    run, moved = _inputs(op, batch)
    benchmark.group = f"{op} batch {batch}"
    benchmark.extra_info.update(device=machine, precision="float32", resolution=f"{S}x{S}", form=form)
    rounds = 5 if batch == 32 and form == "reference" else 20
    benchmark.pedantic(run, args=(form,), rounds=rounds, warmup_rounds=1)
    seconds = benchmark.stats.stats.median
    benchmark.extra_info["GB/s"] = round(moved / seconds / 1e9, 3)
    RESULTS[(op, batch, form)] = seconds
