"""Latency and throughput of every backend this machine has, with the anchors beside compact.

    python -m pytest benchmarks/test_latency.py -q            # default: short rounds (CPU: about 2 min)
    python -m pytest benchmarks/test_latency.py -q --full     # more rounds; the slow CPU cases too

Models, all 256x256 RGB: `compact` (the deployment preset), `compact-seg` (the same preset's
segmentation net alone: what `dad-edge train` makes of compact on a CPU), `efficientad-s` (an
EfficientAD-S-sized network, random weights, anchors.py) and `paper` (the reference's
networks, about 1.2 TFLOPs per image). Each runs on every target of backends.py through
the public Detector, host to host: the clock starts with uint8 frames on the host and
stops when every frame's map and score are host arrays (pre-processing, the network,
resize back, thresholds): EfficientAD's protocol. Batch 1: p50 / p99 of single calls;
batch LARGE_BATCH: images/s = batch / mean call time. Weights are random: speed does not
depend on them. Rounds per case are in ROUNDS (timed rounds, untimed warm-up calls); on a
CPU the paper preset runs once at batch 1 on plain torch by default (one call is 10-30 s
on 2 cores) and the slow cases (paper on ONNX Runtime and fused torch, the anchors at the
large batch) need --full. With
--full on a GPU, batch 1 follows EfficientAD's protocol: 1000 warm-up calls, then 1000.

test_ort_session_settings times compact at batch 1 on ONNX Runtime (fp32 and INT8 files) with
each setting of onnxruntime_backend.SESSION changed in turn, side by side with the chosen ones.

Every result goes to pytest-benchmark (its JSON with --benchmark-save / --benchmark-json)
with extra_info: device and its name, precision, resolution, batch, library versions,
p50/p99, images/s, FLOPs and bytes per image, achieved GFLOP/s and GB/s and their fraction
of this device's measured peaks. The table of all cases prints at the end of the session.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import harness
from backends import discover

MODELS = ("compact", "compact-seg", "efficientad-s", "paper")
LARGE_BATCH = 32
TARGETS = discover()

# (model, device, batch is 1) -> (timed rounds, warm-up calls), default and --full.
ROUNDS_AS = {"compact-seg": "compact"}  # timed as compact (smaller, so no fewer rounds are needed)
ROUNDS = {
    "default": {
        ("compact", "cpu", True): (20, 1), ("compact", "cpu", False): (2, 1),
        ("efficientad-s", "cpu", True): (5, 1), ("efficientad-s", "cpu", False): None,
        ("paper", "cpu", True): (1, 0), ("paper", "cpu", False): None,
        ("compact", "cuda", True): (200, 20), ("compact", "cuda", False): (20, 3),
        ("efficientad-s", "cuda", True): (200, 20), ("efficientad-s", "cuda", False): (20, 3),
        ("paper", "cuda", True): (20, 3), ("paper", "cuda", False): (3, 1),
    },
    "full": {
        ("compact", "cpu", True): (100, 3), ("compact", "cpu", False): (5, 1),
        ("efficientad-s", "cpu", True): (20, 1), ("efficientad-s", "cpu", False): (2, 1),
        ("paper", "cpu", True): (3, 1), ("paper", "cpu", False): (1, 1),
        ("compact", "cuda", True): (1000, 1000), ("compact", "cuda", False): (100, 10),
        ("efficientad-s", "cuda", True): (1000, 1000), ("efficientad-s", "cuda", False): (100, 10),
        ("paper", "cuda", True): (100, 10), ("paper", "cuda", False): (10, 2),
    },
}


def plan(model: str, target, batch: int, full: bool):
    """(rounds, warm-up) for this case, or the reason it is skipped by default."""
    if target.skip:
        return target.skip
    if model == "efficientad-s" and (target.fused or target.options.get("resident")):
        return ("the fused kernels, CUDA graphs and the resident path are options of the dad_edge pipeline; the anchor "
                "is plain torch")
    if target.fused and harness.model_config(model).method != "diffusionad":
        return f"the fused kernels run DiffusionAD's steps (runtime/fused.py); {model} runs its plain graph"
    slow = "slow on a CPU: run with --full"
    if not full and target.device == "cpu" and model == "paper" and (target.runtime != "torch" or target.fused):
        return slow
    rounds = ROUNDS["full" if full else "default"][(ROUNDS_AS.get(model, model), target.device, batch == 1)]
    return rounds if rounds is not None else slow


@pytest.mark.parametrize("batch", [1, LARGE_BATCH], ids=["b1", f"b{LARGE_BATCH}"])
@pytest.mark.parametrize("target", TARGETS, ids=[t.id for t in TARGETS])
@pytest.mark.parametrize("model", MODELS)
def test_latency(benchmark, request, artifacts, model, target, batch):
    how = plan(model, target, batch, request.config.getoption("--full"))
    if isinstance(how, str):
        pytest.skip(how)
    rounds, warmup = how
    det = artifacts.detector(model, target, batch)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(batch)]
    source = frames[0] if batch == 1 else frames
    benchmark.group = f"{model} batch {batch}"
    try:
        benchmark.pedantic(det, args=(source,), rounds=rounds, iterations=1, warmup_rounds=warmup)
    except torch.cuda.OutOfMemoryError as exc:
        pytest.skip(f"out of GPU memory at batch {batch}: {str(exc).splitlines()[0]}")
    finally:
        det.close()
    if benchmark.stats is None:  # --benchmark-disable: ran once, timed nothing
        return
    times_ms = np.array(benchmark.stats.stats.data) * 1e3
    images_per_s = batch / (float(np.mean(times_ms)) / 1e3)
    size = det.config.image_size
    c = harness.cost(model, batch)
    peak = harness.peaks(target.device, target.precision)
    mb_per_image = c["elements"] * harness.BYTES_PER_ELEMENT[target.precision] / 1e6
    row = {
        "model": model, "target": target.id, "order": TARGETS.index(target), "runtime": target.runtime,
        "runs_on": det.backend.device, "device": target.device, "device_name": harness.device_name(target.device),
        "precision": target.precision, "image_size": size, "batch": batch, "rounds": rounds, "warmup": warmup,
        "p50_ms": float(np.percentile(times_ms, 50)), "p99_ms": float(np.percentile(times_ms, 99)),
        "images_per_s": images_per_s, "gflops_per_image": c["gflops"], "mb_per_image": mb_per_image,
        "achieved_gflops": c["gflops"] * images_per_s, "peak_gflops": peak["gflops"],
        "peak_fraction": c["gflops"] * images_per_s / peak["gflops"],
        "achieved_gbps": mb_per_image * images_per_s / 1e3, "peak_gbps": peak["gbps"],
        "bandwidth_fraction": mb_per_image * images_per_s / 1e3 / peak["gbps"],
        "peak_measured_by": peak["how"], "versions": harness.versions(),
    }
    harness.record(row)
    benchmark.extra_info.update({k: v for k, v in row.items() if k != "order"})
    print(f"\n{model} {size}x{size} on {target.id} ({det.backend.device}), batch {batch}: "
          f"p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, {images_per_s:.1f} images/s, "
          f"{row['achieved_gflops']:.0f} GFLOP/s = {100 * row['peak_fraction']:.1f} % of peak, "
          f"{target.precision}, {row['device_name']}")
    assert images_per_s > 0


# -- ONNX Runtime session settings, side by side ------------------------------------------------
# Each variant changes one setting of onnxruntime_backend.SESSION (what the backend opens a
# session with); "chosen" is SESSION itself. compact 256x256 at batch 1, fp32 and INT8 files.
SESSION_VARIANTS = {
    "chosen": {},
    "optimisation basic": {"graph_optimization_level": "basic"},
    "optimisation extended": {"graph_optimization_level": "extended"},
    "1 intra-op thread": {"intra_op_num_threads": 1},
    "no memory arena": {"enable_cpu_mem_arena": False},
    "parallel execution": {"execution_mode": "parallel"},
    "spinning": {"allow_spinning": True},  # ORT's default; SESSION turns it off
}
SESSION_CASES = [(p, v) for p in ("fp32", "int8") for v in SESSION_VARIANTS]
SESSION_P50: dict = {}  # (precision, variant) -> p50 ms, for the ratio to "chosen"


@pytest.mark.parametrize("precision, variant", SESSION_CASES, ids=[f"{p}-{v.replace(' ', '_')}" for p, v in SESSION_CASES])
def test_ort_session_settings(benchmark, request, artifacts, precision, variant):
    import dad_edge
    from dad_edge.runtime.backends.onnxruntime_backend import SESSION, OnnxRuntimeBackend

    target = next(t for t in TARGETS if t.id == f"ort-cpu-{precision}")
    if target.skip:
        pytest.skip(target.skip)
    rounds, warmup = ROUNDS["full" if request.config.getoption("--full") else "default"][("compact", "cpu", True)]
    path = artifacts.onnx("compact") if precision == "fp32" else artifacts.onnx_int8("compact")
    det = dad_edge.Detector(path, backend="onnxruntime", device="cpu", batch_size=1)
    det.backend.close()  # the same Detector around a session opened with this variant's settings
    det.backend = OnnxRuntimeBackend(path, device="cpu", session=SESSION_VARIANTS[variant])
    frame = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    benchmark.group = f"ORT session settings, compact {precision} batch 1"
    try:
        benchmark.pedantic(det, args=(frame,), rounds=rounds, iterations=1, warmup_rounds=warmup)
    finally:
        det.close()
    if benchmark.stats is None:
        return
    times_ms = np.array(benchmark.stats.stats.data) * 1e3
    p50 = float(np.percentile(times_ms, 50))
    SESSION_P50[(precision, variant)] = p50
    chosen = SESSION_P50.get((precision, "chosen"))
    settings = {**SESSION, **SESSION_VARIANTS[variant]}
    benchmark.extra_info.update({"precision": precision, "variant": variant, "settings": settings, "p50_ms": p50,
                                 "device_name": harness.device_name("cpu"), "versions": harness.versions()})
    print(f"\nORT session '{variant}' ({precision}, compact 256x256, batch 1): p50 {p50:.1f} ms, "
          f"p99 {float(np.percentile(times_ms, 99)):.1f} ms"
          + (f", {p50 / chosen:.2f}x chosen" if chosen else "") + f"; {harness.device_name('cpu')}")
    assert p50 > 0
