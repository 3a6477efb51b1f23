"""What the field uses to run a convolutional net fast on a GPU, measured on the exported function (#14 item 3).

    python benchmarks/gpu_variants.py                          # compact, 256x256, batch 1 and 64
    python benchmarks/gpu_variants.py --preset compact --method seg --batch 1 64
    python benchmarks/gpu_variants.py --only fp16 fp16-cl      # some rows
    python benchmarks/gpu_variants.py --smoke                  # no GPU: the CPU-capable rows once, tiny preset

Every row runs DeployGraph (the function the ONNX export traces: pixels (B, C, S, S) 0..255 in, map and
score out) with the same random weights, inputs already on the GPU, each call followed by a synchronize:

  fp32                  float32, TF32 off (the reference every row's map and score are compared with)
  fp32-tf32             float32 with TF32 convolutions and matrix products
  fp16, bf16            the whole graph at half / bfloat16 precision
  fp16-cl               fp16, channels_last memory format (weights and input): NHWC cuDNN kernels
  fp16-cudnn-bench      fp16, cudnn.benchmark (each convolution's algorithm timed once per shape)
  fp16-cl-cudnn-bench   both
  *+graph               the row above captured in one CUDA graph per batch (torch.cuda.CUDAGraph), replayed
  fp16-compile          torch.compile (inductor, mode "max-autotune": Triton kernel search + CUDA graphs)
  fp16-compile-ro       torch.compile mode "reduce-overhead" (inductor kernels + CUDA graphs, no search)

Columns: images/s (batch / mean call time), p50 / p99 ms per call, achieved TFLOP/s (the model's FLOPs per
image, benchmarks/harness.py, x images/s) and % of the peak harness.peaks measures here at that precision
class, and the largest |map| / |score| difference from the fp32 row. Settings are process-wide in torch
(TF32, cudnn.benchmark): each row sets them and puts them back. Compile rows can take minutes; they run
last, and every row is printed (and flushed) as soon as it is measured, so a time limit keeps the rest.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from gpu_pipeline import capture, percentile, random_weights, time_calls


@dataclass(frozen=True)
class Variant:
    dtype: str = "fp32"  # "fp32", "fp16", "bf16"
    tf32: bool = False
    channels_last: bool = False
    cudnn_benchmark: bool = False
    graph: bool = False  # captured once per batch in a CUDA graph
    compile_mode: Optional[str] = None  # torch.compile mode
    cuda_only: bool = False


VARIANTS: Dict[str, Variant] = {
    "fp32": Variant(),
    "fp32-tf32": Variant(tf32=True, cuda_only=True),
    "fp16": Variant("fp16"),
    "bf16": Variant("bf16"),
    "fp16-cl": Variant("fp16", channels_last=True),
    "fp16-cudnn-bench": Variant("fp16", cudnn_benchmark=True, cuda_only=True),
    "fp16-cl-cudnn-bench": Variant("fp16", channels_last=True, cudnn_benchmark=True, cuda_only=True),
    "fp16+graph": Variant("fp16", graph=True, cuda_only=True),
    "fp16-cl-cudnn-bench+graph": Variant("fp16", channels_last=True, cudnn_benchmark=True, graph=True,
                                         cuda_only=True),
    "fp16-compile": Variant("fp16", compile_mode="max-autotune", cuda_only=True),
    "fp16-compile-ro": Variant("fp16", compile_mode="reduce-overhead", cuda_only=True),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="compact")
    p.add_argument("--method", default=None, help="model method override (diffusionad, seg, recon)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="these rows only (fp32 always runs)")
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--json", help="also write the rows to this file")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny preset, batch 2: each CPU-capable row once, "
                                                        "checked against fp32; nothing timed")
    p.add_argument("--cpu", action="store_true", help="time the CPU-capable rows on the CPU (checks the timed path "
                                                      "without a GPU; CPU figures are not what this script is for)")
    return p.parse_args(argv)


class Settings:
    """torch's process-wide switches for one row, put back on exit."""

    def __init__(self, torch, v: Variant):
        self.torch, self.v = torch, v

    def __enter__(self):
        b = self.torch.backends
        self.saved = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark)
        b.cuda.matmul.allow_tf32 = b.cudnn.allow_tf32 = self.v.tf32
        b.cudnn.benchmark = self.v.cudnn_benchmark
        return self

    def __exit__(self, *exc):
        b = self.torch.backends
        b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark = self.saved
        return False


def build_call(torch, base, v: Variant, pixels) -> Callable:
    """-> fn() returning (map, score) of `base` (an fp32 DeployGraph) run as the variant asks."""
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[v.dtype]
    model = copy.deepcopy(base).to(dtype).eval()
    x = pixels.to(dtype)
    if v.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if v.compile_mode:
        model = torch.compile(model, mode=v.compile_mode, fullgraph=False)

    def fn():
        with torch.inference_mode():
            return model(x)

    if v.graph:
        replay, _ = capture(torch, fn)
        return replay
    return fn


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if not (args.smoke or args.cpu) and not torch.cuda.is_available():
        print("gpu_variants.py needs a CUDA GPU (torch.cuda.is_available() is False); --smoke checks the script on a "
              "CPU without timing anything", file=sys.stderr)
        return 2
    import numpy as np

    import harness
    from dad_edge.model.build import build_model
    from dad_edge.model.config import preset
    from dad_edge.model.deploy_graph import DeployGraph

    device = "cpu" if args.smoke or args.cpu else "cuda"
    if args.smoke:
        args.preset, args.batch = "tiny", [2]
    cfg = preset(args.preset, **({"method": args.method} if args.method else {}))
    torch.manual_seed(0)
    base = DeployGraph(random_weights(torch, build_model(cfg))).to(device).eval()
    with torch.device("meta"):
        meta_model = DeployGraph(build_model(cfg)).to("meta").eval()  # buffers made from host tensors too
    names = ["fp32"] + [n for n in VARIANTS if n != "fp32" and (not args.only or n in args.only)]
    if device == "cpu":
        names = [n for n in names if not VARIANTS[n].cuda_only]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name() if device == "cuda" else \
        ("CPU (smoke run: nothing timed)" if args.smoke else harness.device_name("cpu"))
    print(f"\n{name}, preset {args.preset} ({cfg.method}), {cfg.image_size}x{cfg.image_size}x{cfg.channels}, "
          f"torch {torch.__version__}", flush=True)
    print(f"{'variant':27}{'batch':>6}{'images/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'TFLOP/s':>9}{'% peak':>8}"
          f"{'d map':>10}{'d score':>10}", flush=True)
    rows: List[dict] = []
    rng = np.random.default_rng(0)
    for batch in args.batch:
        pixels = torch.from_numpy(rng.uniform(0, 255, (batch, cfg.channels, cfg.image_size, cfg.image_size))
                                  .astype(np.float32)).to(device)
        gflops = harness.measure_cost(meta_model, cfg.image_size, cfg.channels, batch)["gflops"]
        reference = None
        for label in names:
            v = VARIANTS[label]
            try:
                with Settings(torch, v):
                    fn = build_call(torch, base, v, pixels)
                    got_map, got_score = (t.float() for t in fn())
                    if reference is None:
                        reference = (got_map.clone(), got_score.clone())
                    d_map = float((got_map - reference[0]).abs().max())
                    d_score = float((got_score - reference[1]).abs().max())
                    times = [0.0] if args.smoke else time_calls(fn, sync, args.iters, args.warmup)
            except Exception as exc:  # noqa: BLE001 - a row that fails is reported, the others go on
                if device == "cuda":
                    torch.cuda.synchronize()
                print(f"{label:27}{batch:>6}   failed: {type(exc).__name__}: {str(exc).splitlines()[0][:150]}",
                      flush=True)
                rows.append(dict(variant=label, batch=batch, error=f"{type(exc).__name__}: {exc}"))
                continue
            row = dict(variant=label, batch=batch, device=name, max_map_diff=d_map, max_score_diff=d_score,
                       **vars(v))
            if args.smoke:
                print(f"{label:27}{batch:>6}   ran (smoke run: not timed); d map {d_map:.1e}, d score {d_score:.1e}",
                      flush=True)
            else:
                mean = sum(times) / len(times)
                rate = batch / (mean * 1e-3)
                peak = harness.peaks(device, "fp32" if v.dtype == "fp32" else "fp16")["gflops"]
                tflops = gflops * rate / 1e3
                row.update(images_per_s=rate, p50_ms=percentile(times, 50), p99_ms=percentile(times, 99),
                           tflops=tflops, percent_peak=100 * tflops * 1e3 / peak)
                print(f"{label:27}{batch:>6}{rate:>11.1f}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}{tflops:>9.2f}"
                      f"{row['percent_peak']:>7.1f}%{d_map:>10.1e}{d_score:>10.1e}", flush=True)
            rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "preset": args.preset, "method": cfg.method, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
