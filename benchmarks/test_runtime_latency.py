"""Runtime latency and throughput of the compact model on this CPU: torch vs ONNX Runtime.

Host to host through the public Detector (frame in, map and score out: resize,
inference, resize back, thresholds), the way EfficientAD reports latency. The same
random-weight compact model (256x256 RGB, the deployment default) runs on both backends
in one session, so the two columns are comparable:

    python -m pytest benchmarks/test_runtime_latency.py -s      # prints the side-by-side table

batch 1: p50 / p99 latency over 50 calls; batch 32: images/s over 3 calls of 32 frames.
Both after one untimed warm-up call. About 2 minutes on an idle 2-core CPU.
"""

import numpy as np
import pytest
import torch

import dad_edge
from dad_edge import metadata as md
from dad_edge.checkpoint import save_model
from dad_edge.config import preset
from dad_edge.export.onnx_export import export_onnx
from dad_edge.pipeline import DiffusionAD

BACKENDS = ("torch", "onnxruntime")
RESULTS = {}  # (backend, batch) -> figures, for the table printed at the end


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The compact model as checkpoint and ONNX file (weights random but non-trivial: speed is all we read)."""
    tmp = tmp_path_factory.mktemp("latency")
    cfg = preset("compact")
    torch.manual_seed(0)
    model = DiffusionAD(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    save_model(tmp / "compact.safetensors", model, md.build_metadata(cfg))
    export_onnx(tmp / "compact.safetensors", tmp / "compact.onnx")
    yield {"torch": tmp / "compact.safetensors", "onnxruntime": tmp / "compact.onnx"}
    _print_table()


def _print_table():
    if not RESULTS:
        return
    print("\n\ncompact 256x256 RGB, fp32, host to host through Detector")
    print(f"{'':24}" + "".join(f"{b:>16}" for b in BACKENDS) + f"{'ORT / torch':>14}")
    rows = [("batch 1 p50 (ms)", 1, "p50_ms"), ("batch 1 p99 (ms)", 1, "p99_ms"),
            ("batch 1 images/s", 1, "images_per_s"), ("batch 32 images/s", 32, "images_per_s")]
    for label, batch, key in rows:
        values = [RESULTS.get((b, batch), {}).get(key) for b in BACKENDS]
        cells = "".join(f"{v:>16.1f}" if v is not None else f"{'-':>16}" for v in values)
        ratio = values[1] / values[0] if None not in values else None
        print(f"{label:24}{cells}" + (f"{ratio:>14.2f}" if ratio is not None else ""))
    any_result = next(iter(RESULTS.values()))
    print(f"device: {any_result['device']}")


@pytest.mark.parametrize("batch", [1, 32], ids=["batch1", "batch32"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_runtime_latency(benchmark, machine, artifacts, backend, batch):
    benchmark.group = f"compact-256 batch {batch}"
    det = dad_edge.Detector(artifacts[backend], batch_size=batch)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(batch)]
    source = frames[0] if batch == 1 else frames
    det(source)  # warm-up outside the clock: allocations, kernel selection
    rounds = 50 if batch == 1 else 3
    benchmark.pedantic(det, args=(source,), rounds=rounds, iterations=1)
    times_ms = np.array(benchmark.stats.stats.data) * 1e3
    threads = torch.get_num_threads() if backend == "torch" else "default (one per core)"
    figures = {
        "p50_ms": float(np.percentile(times_ms, 50)),
        "p99_ms": float(np.percentile(times_ms, 99)),
        "images_per_s": batch / (float(np.mean(times_ms)) / 1e3),
        "device": f"cpu ({machine}); torch {torch.__version__}, threads {torch.get_num_threads()}",
    }
    RESULTS[(backend, batch)] = figures
    benchmark.extra_info.update(figures, backend=backend, runs_on=det.backend.device, batch=batch,
                                threads=threads, precision="fp32", image_size=256, preset="compact")
    print(f"\n{backend} ({det.backend.device}) batch {batch}: p50 {figures['p50_ms']:.1f} ms, "
          f"p99 {figures['p99_ms']:.1f} ms, {figures['images_per_s']:.1f} images/s on {machine}, fp32 256x256")
    assert figures["images_per_s"] > 0
