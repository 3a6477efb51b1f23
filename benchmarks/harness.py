"""What every latency figure is printed with: the machine, library versions, the device's
measured peaks, the model's FLOPs and bytes per image, and the session's result table.

Definitions (stated once here, printed under the table):
- FLOPs: torch's FlopCounterMode on the meta device, 2 per multiply-add of convolutions,
  matrix products and attention; elementwise work uncounted (as dad_edge.model.info).
- bytes per image: every aten operator of the deployed forward reads its tensor inputs
  (weights included) and writes its outputs once, views excepted: the traffic of an
  unfused execution, counted on the meta device at batch B and divided by B; tensors at
  the target's precision (fp32: 4 bytes, fp16: 2, INT8 counted as fp16, an upper bound).
- peak: measured here once per session and device: GFLOP/s, the best of a large matrix
  product and a large 3x3 convolution in torch and (CPU) in ONNX Runtime
  (CPU: 2048^2 fp32; GPU: 8192^2 fp32 without TF32, and fp16, which INT8 rows also use),
  and GB/s of a large device copy (256 MiB on the CPU, 1 GiB on a GPU; bytes read +
  written), best of several runs (see `peaks`).
- achieved: the model's FLOPs (bytes) per image x images/s; % of peak = achieved / peak.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from typing import Any, Dict, List, Optional

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from dad_edge.training.compare import cpu_name  # the one reader of /proc/cpuinfo

RESULTS: List[Dict[str, Any]] = []  # one row per timed (model, target, batch), for the final table
PARITY: List[Dict[str, Any]] = []  # one row per backend of the AUROC parity test
_PEAKS: Dict[tuple, Dict[str, float]] = {}
_COSTS: Dict[tuple, Dict[str, float]] = {}
BYTES_PER_ELEMENT = {"fp32": 4, "fp16": 2, "int8": 2}


# -- machine and versions ---------------------------------------------------------------

def device_name(device: str) -> str:
    """The device in words: CPU model and cores, or the GPU's name."""
    if device == "cpu":
        return f"{cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    from dad_edge.runtime.backends.cuda_runtime import Cuda

    return Cuda(0).name()


def versions() -> Dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("dad_edge", "numpy", "onnxruntime", "onnxruntime-gpu", "tensorrt", "opencv-python-headless"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    if torch.version.cuda:
        out["cuda"] = torch.version.cuda
    return out


# -- measured peaks -----------------------------------------------------------------------

def _best(fn, repeats: int, sync=lambda: None) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def _ort_kernels(n: int, conv_shape, repeats: int) -> Dict[str, float]:
    """FLOP/s of an n x n fp32 MatMul and a 3x3 Conv in ONNX Runtime's CPU provider (MLAS); {} without it."""
    try:
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return {}
    rng = np.random.default_rng(0)
    bsz, ch, h, w = conv_shape

    def session(node, inputs, initializers=()):
        graph = helper.make_graph([node], "peak", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  list(initializers))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    mm = session(helper.make_node("MatMul", ["a", "b"], ["y"]),
                 [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "ab"])
    feeds = {k: rng.random((n, n), dtype=np.float32) for k in "ab"}
    weight = numpy_helper.from_array(0.01 * rng.random((ch, ch, 3, 3), dtype=np.float32), "w")
    conv = session(helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(conv_shape))], [weight])
    x = {"x": rng.random(conv_shape, dtype=np.float32)}
    return {f"ORT MatMul {n}^2": 2 * n ** 3 / _best(lambda: mm.run(None, feeds), repeats),
            f"ORT conv 3x3 {ch}ch": 2 * bsz * h * w * ch * ch * 9 / _best(lambda: conv.run(None, x), repeats)}


def peaks(device: str, precision: str) -> Dict[str, float]:
    """{"gflops": GFLOP/s, "gbps": copy GB/s, "how": ...} of `device` ("cpu"/"cuda") at `precision`.

    GFLOP/s is the best of the dense kernels the runtimes here use: torch's matrix product
    (MKL / cuBLAS), torch's 3x3 convolution (oneDNN / cuDNN) and, on the CPU, ONNX
    Runtime's MatMul and 3x3 convolution (MLAS): on the AMD development VM MKL's sgemm
    reaches under half of what MLAS reaches, so a single library would understate the device.
    """
    dtype_name = "fp16" if precision in ("fp16", "int8") and device == "cuda" else "fp32"
    key = (device, dtype_name)
    if key in _PEAKS:
        return _PEAKS[key]
    dtype = torch.float16 if dtype_name == "fp16" else torch.float32
    if device == "cpu":
        n, copy_bytes, repeats, sync = 2048, 256 << 20, 5, (lambda: None)
        conv_shape = (8, 256, 64, 64)
    elif not torch.cuda.is_available():
        nan = float("nan")
        _PEAKS[key] = {"gflops": nan, "gbps": nan, "how": f"not measured: torch {torch.__version__} has no CUDA"}
        return _PEAKS[key]
    else:
        n, copy_bytes, repeats, sync = 8192, 1 << 30, 10, torch.cuda.synchronize
        conv_shape = (64, 256, 64, 64)
    kernels = {}
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    # Measured under the process's own TF32 settings, those the models below run with: torch's
    # defaults let cuDNN run fp32 convolutions in TF32. (Forcing true fp32 here, as this file once
    # did, put the compact and paper fp32 rows at 137-159 % of "peak" on an H100.)
    kernels[f"torch matmul {n}^2"] = 2 * n ** 3 / _best(lambda: torch.matmul(a, b, out=c), repeats, sync)
    x = torch.randn(*conv_shape, device=device, dtype=dtype)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1).to(device, dtype).eval()
    with torch.no_grad():
        conv_s = _best(lambda: conv(x), repeats, sync)
    bsz, ch, h, w = conv_shape
    kernels[f"torch conv 3x3 {ch}ch"] = 2 * bsz * h * w * ch * ch * 9 / conv_s
    if device == "cpu":
        kernels.update(_ort_kernels(n, conv_shape, repeats))
    src = torch.empty(copy_bytes // 4, device=device, dtype=torch.float32).fill_(1.0)
    dst = torch.empty_like(src)
    copy_s = _best(lambda: dst.copy_(src), repeats, sync)
    how = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in kernels.items())
    _PEAKS[key] = {"gflops": max(kernels.values()) / 1e9, "gbps": 2 * copy_bytes / copy_s / 1e9,
                   "how": f"best of {how} GFLOP/s ({dtype_name}); copy {copy_bytes >> 20} MiB; best of {repeats} runs"}
    return _PEAKS[key]


# -- cost of a model per image ------------------------------------------------------------

class _Traffic(TorchDispatchMode):
    """Bytes every non-view aten operator reads and writes."""

    def __init__(self):
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and func.__name__ not in ("detach.default", "lift_fresh.default"):
            tensors = [t for t in tree_flatten((args, kwargs, out))[0] if isinstance(t, torch.Tensor)]
            self.elements += sum(t.numel() for t in tensors)
        return out


def measure_cost(module: torch.nn.Module, image_size: int, channels: int, batch: int) -> Dict[str, float]:
    """FLOPs and fp32-element traffic per image of `module` (built on the meta device) on a pixel batch."""
    x = torch.full((batch, channels, image_size, image_size), 127.0, device="meta")
    flops, traffic = FlopCounterMode(display=False), _Traffic()
    with torch.no_grad(), flops, traffic:
        module(x)
    return {"gflops": flops.get_total_flops() / batch / 1e9, "elements": traffic.elements / batch}


# The dad_edge models of the benchmarks, 256x256 RGB: name -> (preset, its overrides). compact-seg is what the
# compact preset trains on a CPU (the segmentation net alone, training/recipe.py default_method).
MODEL_PRESETS = {"compact": ("compact", {}), "compact-seg": ("compact", {"method": "seg"}), "paper": ("paper", {})}


def model_config(model: str, **overrides):
    """The ModelConfig of a benchmark model named in MODEL_PRESETS."""
    from dad_edge.model.config import preset

    name, extra = MODEL_PRESETS[model]
    return preset(name, **extra, **overrides)


def cost(model: str, batch: int) -> Dict[str, float]:
    """{"gflops", "elements"} per image of a benchmark model: one of MODEL_PRESETS or "efficientad-s", at 256."""
    key = (model, batch)
    if key not in _COSTS:
        with torch.device("meta"):
            if model == "efficientad-s":
                from anchors import IMAGE_SIZE, EfficientADS

                module, size, channels = EfficientADS(), IMAGE_SIZE, 3
            else:
                from dad_edge.model.build import build_model
                from dad_edge.model.deploy_graph import DeployGraph

                cfg = model_config(model)
                module, size, channels = DeployGraph(build_model(cfg)), cfg.image_size, cfg.channels
        _COSTS[key] = measure_cost(module.to("meta").eval(), size, channels, batch)
    return _COSTS[key]


# -- the session's table ------------------------------------------------------------------

def record(row: Dict[str, Any]) -> None:
    RESULTS.append(row)


def _ratio(row: Dict[str, Any]) -> Optional[float]:
    """Time per image of this model / that of compact, same target and batch."""
    if row["model"] == "compact":
        return 1.0
    base = next((r for r in RESULTS if r["model"] == "compact" and r["target"] == row["target"]
                 and r["batch"] == row["batch"]), None)
    if base is None:
        return None
    if row["batch"] == 1:
        return row["p50_ms"] / base["p50_ms"]
    return base["images_per_s"] / row["images_per_s"]


def _fmt(v: Optional[float], spec: str) -> str:
    return "-" if v is None else format(v, spec)


def latency_table() -> List[str]:
    """The markdown table of every timed case, then the devices, peaks and versions it ran with."""
    if not RESULTS:
        return []
    lines = ["| model | backend | batch | p50 ms | p99 ms | images/s | time x compact | GFLOP/img | MB/img "
             "| GFLOP/s | % peak FLOP/s | GB/s | % peak GB/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = {"compact": 0, "compact-seg": 1, "efficientad-s": 2, "paper": 3}
    rows = sorted(RESULTS, key=lambda r: (r["batch"], r["order"], order.get(r["model"], 9)))
    for r in rows:
        ratio = _ratio(r)
        lines.append(
            f"| {r['model']} {r['image_size']} | {r['target']} | {r['batch']} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['images_per_s']:.1f} | {_fmt(ratio, '.2f')} | {r['gflops_per_image']:.1f} | "
            f"{r['mb_per_image']:.0f} | {r['achieved_gflops']:.0f} | {100 * r['peak_fraction']:.1f} | "
            f"{r['achieved_gbps']:.1f} | {100 * r['bandwidth_fraction']:.1f} |")
    lines.append("")
    for device in sorted({r["device"] for r in RESULTS}):
        lines.append(f"device {device}: {next(r['device_name'] for r in RESULTS if r['device'] == device)}")
    for (device, prec), p in sorted(_PEAKS.items()):
        lines.append(f"peak {device} {prec}: {p['gflops']:.0f} GFLOP/s, {p['gbps']:.1f} GB/s ({p['how']})")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in RESULTS[0]["versions"].items()))
    rounds = sorted({(r["model"], r["device"], r["batch"], r["rounds"], r["warmup"]) for r in RESULTS})
    lines.append("rounds (timed / warm-up): " + "; ".join(f"{m} {d} b{b}: {n}/{w}" for m, d, b, n, w in rounds))
    lines.append("batch 1: p50 / p99 of single calls, host to host (frame in, map and score on the host); "
                 "batch > 1: ms per call, images/s = batch / mean call time. time x compact: time per image "
                 "over compact's on the same backend and batch. MB/img: unfused traffic (see benchmarks/harness.py).")
    return lines


def parity_table() -> List[str]:
    if not PARITY:
        return []
    lines = ["| backend | image AUROC | pixel AUROC | d image | d pixel | max abs d map | max abs d score | tolerance | ok |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in PARITY:
        lines.append(f"| {r['target']} | {r['image_auroc']:.4f} | {r['pixel_auroc']:.4f} | {r['d_image']:+.1e} | "
                     f"{r['d_pixel']:+.1e} | {r['max_map_diff']:.2e} | {r['max_score_diff']:.2e} | "
                     f"{r['tolerance']:g} | {'yes' if r['ok'] else 'NO'} |")
    lines.append("")
    lines.append(PARITY[0]["about"])
    return lines
