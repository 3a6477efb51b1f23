"""The whole torch pipeline on a CUDA GPU: plain graph vs fused kernels, each with and without CUDA graphs.

    python benchmarks/gpu_pipeline.py                          # compact preset, 256x256, batch 1 and 64
    python benchmarks/gpu_pipeline.py --half --batch 1 8 64     # fp16 networks
    python benchmarks/gpu_pipeline.py --frame 1080 1920         # camera-sized frames into the fused path
    python benchmarks/gpu_pipeline.py --smoke                   # no GPU: run every path once on the CPU

Rows, per batch size:
  plain          DeployGraph (what export traces): pixels (B, C, S, S) float 0..255 on the GPU in,
                 (map, score) out; torch ops only
  fused          dad_edge.runtime.fused.FusedPipeline: uint8 frames (B, H, W, C) on the GPU in;
                 pre-processing + noise, combine and score as Triton kernels, GroupNorm + SiLU fused
                 in the U-Net (the torch backend's default on CUDA)
  plain+graph    the plain forward captured once in a torch.cuda.CUDAGraph at that batch, replayed
  fused+graph    the same for the fused forward
Inputs stay on the GPU (no host copies timed); each timed call ends with a synchronize.
images/s = batch / mean call time; p50 / p99 = percentiles of the call times (ms). Random
weights: speed does not depend on them. Device name, precision and resolution are printed
with the table (and written with --json). Needs torch with CUDA and triton.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="compact", help="model preset (default compact)")
    p.add_argument("--size", type=int, default=None, help="model input side S (default: the preset's)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    p.add_argument("--frame", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="frame size fed to the fused path (default S x S)")
    p.add_argument("--half", action="store_true", help="fp16 networks (the kernels between them stay float32)")
    p.add_argument("--iters", type=int, default=100, help="timed calls per row")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls per row")
    p.add_argument("--no-graphs", action="store_true", help="skip the CUDA graph rows")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--smoke", action="store_true",
                   help="CPU, tiny preset, Triton interpreter: run each path once and check it against "
                        "the plain forward; no timings")
    return p.parse_args(argv)


def percentile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, max(0, round(q / 100 * (len(v) - 1))))]


def time_calls(fn, sync, iters, warmup):
    """-> list of call times in ms (each call followed by a synchronize)."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def capture(torch, fn, warmup=3):
    """fn() captured in a CUDA graph (warmed up on a side stream first, as torch's docs ask).
    -> (replay, outputs): replay() re-runs the captured work into the same output tensors and
    returns them, as fn() does."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()

    def replay():
        graph.replay()
        return outputs

    return replay, outputs


def random_weights(torch, model, seed=0, std=0.05):
    """Perturb every parameter (the zero-initialised output convolutions would make maps flat)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(std * torch.randn(p.shape, generator=gen).to(p.device))
    return model


def build_paths(torch, args, device: str):
    """-> (config, plain DeployGraph, FusedPipeline): the same random weights in two copies (the
    fused pipeline sets the U-Net's fused-norm flag on its own), the networks at fp16 with --half."""
    from dad_edge.model.config import preset
    from dad_edge.model.deploy_graph import DeployGraph
    from dad_edge.model.diffusion_ad import DiffusionAD
    from dad_edge.runtime.fused import FusedPipeline

    cfg = preset(args.preset, **({"image_size": args.size} if args.size else {}))
    dtype = torch.float16 if args.half else torch.float32
    torch.manual_seed(0)
    plain_model = random_weights(torch, DiffusionAD(cfg)).to(device).eval()
    fused_model = DiffusionAD(cfg).to(device).eval()
    fused_model.load_state_dict(plain_model.state_dict())
    fused = FusedPipeline(fused_model, impl="triton" if args.smoke else None)
    fused_model.to(dtype)
    plain = DeployGraph(plain_model).to(dtype).eval()
    return cfg, plain, fused


def graph_paths(torch, candidates, batch: int, rows):
    """The CUDA graph rows: each path of `candidates` captured once; a failed capture is a row with its error."""
    graphs = []
    for label, fn in ((f"{label}+graph", fn) for label, fn in candidates):
        try:
            with torch.inference_mode():
                replay, _ = capture(torch, fn)
            graphs.append((label, replay))
        except Exception as exc:  # noqa: BLE001 - report the row, go on with the others
            torch.cuda.synchronize()
            print(f"{label:14}{batch:>6}   capture failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            rows.append(dict(path=label, batch=batch, error=f"{type(exc).__name__}: {exc}"))
    return graphs


def smoke_rows(candidates, run_plain, run_fused, sync, batch: int, about):
    """Each path once, checked against the plain forward; nothing timed (the timing code runs once)."""
    ref_map, ref_score = run_plain()
    got_map, got_score = run_fused()
    diff = float((ref_map.float() - got_map.float()).abs().max())
    assert diff <= 1e-5, f"fused map differs from the plain forward by {diff}"
    assert float((ref_score.float() - got_score.float()).abs().max()) <= 1e-6
    times = time_calls(run_plain, sync, 1, 0)
    assert percentile(times, 50) == percentile(times, 99) == times[0]
    rows = []
    for label, _ in candidates:
        note = f"; max |map diff| vs plain {diff:.1e}" if label == "fused" else ""
        print(f"{label:14}{batch:>6}   ran (smoke run: not timed){note}")
        rows.append(dict(path=label, batch=batch, device=about["device"], precision=about["precision"],
                         size=about["size"], smoke=True))
    return rows


def timed_rows(torch, candidates, run_plain, sync, args, batch: int, about):
    """The paths must agree before their speeds mean anything: each map against the plain one, then timings."""
    with torch.inference_mode():
        ref_map = run_plain()[0].float()
        diffs = {label: float((fn()[0].float() - ref_map).abs().max()) for label, fn in candidates}
    rows = []
    for label, fn in candidates:
        times = time_calls(fn, sync, args.iters, args.warmup)
        mean = sum(times) / len(times)
        row = dict(path=label, batch=batch, images_per_s=batch / (mean * 1e-3), p50_ms=percentile(times, 50),
                   p99_ms=percentile(times, 99), device=about["device"], precision=about["precision"],
                   size=about["size"], channels=about["channels"], frame=about["frame"], preset=args.preset,
                   iters=args.iters, max_map_diff_vs_plain=diffs[label])
        rows.append(row)
        print(f"{label:14}{batch:>6}{row['images_per_s']:>11.1f}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}"
              f"{diffs[label]:>12.1e}")
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
        args.preset, args.batch = "tiny", [2]
        args.frame = args.frame or (40, 30)
    import torch
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_pipeline.py needs a CUDA GPU (torch.cuda.is_available() is False); "
              "--smoke checks the script on a CPU without timing anything", file=sys.stderr)
        return 2
    import numpy as np

    from dad_edge.runtime import ops

    if not args.smoke and not ops.available()["triton"]:
        print(f"gpu_pipeline.py needs triton for the fused rows: {ops.available()['reasons']['triton']}",
              file=sys.stderr)
        return 2
    device = "cpu" if args.smoke else "cuda"
    cfg, plain, fused = build_paths(torch, args, device)
    S, C = cfg.image_size, cfg.channels
    fh, fw = args.frame or (S, S)
    dtype = torch.float16 if args.half else torch.float32
    precision = "fp16 networks, float32 kernels" if args.half else "float32"
    name = "CPU (smoke run: Triton interpreter)" if args.smoke else torch.cuda.get_device_name()
    about = dict(device=name, precision=precision, size=S, channels=C, frame=[fh, fw])
    sync = torch.cuda.synchronize if not args.smoke else (lambda: None)

    print(f"\n{name}, {precision}, preset {args.preset}, model input {S}x{S}x{C}, "
          f"fused-path frames {fh}x{fw} uint8 BGR, torch {torch.__version__}")
    print(f"{'path':14}{'batch':>6}{'images/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'map diff':>12}")
    rows = []
    rng = np.random.default_rng(0)
    for batch in args.batch:
        frames = torch.from_numpy(rng.integers(0, 256, (batch, fh, fw, 3 if C == 3 else 1), dtype=np.uint8)).to(device)
        # The plain graph's input: the same frames resized on the host (the Detector's work), uploaded once.
        pixels = torch.from_numpy(ops.preprocess(frames.cpu().numpy(), S, C, "BGR", normalize=False))
        pixels = pixels.to(device, dtype)

        def run_plain():
            with torch.inference_mode():
                return plain(pixels)

        def run_fused():
            out = fused.from_frames(frames, "BGR")
            return out.anomaly_map, out.score

        candidates = [("plain", run_plain), ("fused", run_fused)]
        if args.smoke:
            rows += smoke_rows(candidates, run_plain, run_fused, sync, batch, about)
            continue
        if not args.no_graphs:
            candidates += graph_paths(torch, list(candidates), batch, rows)
        rows += timed_rows(torch, candidates, run_plain, sync, args, batch, about)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "precision": precision, "rows": rows}, f, indent=1)
    if args.smoke:
        print("smoke run: plain and fused paths ran and agree; CUDA graph rows need a GPU; no timings were taken")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
