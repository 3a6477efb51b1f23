"""Achieved bandwidth of the fused kernels on a CUDA GPU: Triton and CUDA C, against a device copy.

    python benchmarks/gpu_kernels.py                        # batch 1 and 32, 256x256, frames 256x256
    python benchmarks/gpu_kernels.py --frame 1080 1920      # camera-sized frames
    python benchmarks/gpu_kernels.py --smoke                # no GPU: run each path once, interpreted

GB/s = the bytes a stage must move (inputs read once, outputs written once; the fixed
noise, shared by the batch, counted once) / its median time (triton.testing.do_bench,
CUDA events). The ceiling is a device-to-device copy of 256 MiB timed the same way
(read + write). The CUDA C kernels (kernels/*.cu, through cuda-python) run in torch's
primary context on torch's current stream. Device, precision and sizes are printed with
every figure. Needs torch with CUDA and triton; cuda-python for the CUDA C rows.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--size", type=int, default=256, help="model input side S")
    p.add_argument("--frame", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="camera frame size (default S x S)")
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--sigma", type=float, default=4.0, help="Gaussian smoothing of the map")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--smoke", action="store_true", help="CPU, Triton interpreter, tiny sizes: check paths, no timings")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
        args.batch, args.size, args.frame, args.top_k = [2], 32, (40, 30), 4
    import torch
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_kernels.py needs a CUDA GPU (torch.cuda.is_available() is False); "
              "--smoke checks the script on a CPU without timing anything", file=sys.stderr)
        return 2
    import triton.testing

    from dad_edge.kernels.combine_ref import combine_ref
    from dad_edge.kernels.combine_triton import combine_triton
    from dad_edge.kernels.groupnorm_silu_triton import groupnorm_silu_triton
    from dad_edge.kernels.preprocess_noise_ref import preprocess_noise_ref
    from dad_edge.kernels.preprocess_noise_triton import preprocess_noise_triton
    from dad_edge.kernels.score_ref import gaussian_taps, score_ref
    from dad_edge.kernels.score_triton import score_triton
    from dad_edge.data.preprocess import OFFSET, SCALE

    device = "cpu" if args.smoke else "cuda"
    name = "CPU (Triton interpreter, smoke run)" if args.smoke else torch.cuda.get_device_name()
    S, C = args.size, 3
    fh, fw = args.frame or (S, S)
    coefs = (0.8, 0.6, 0.5, 0.866)  # any valid values: speed does not depend on them
    rng = np.random.default_rng(0)

    cuda_kernels = None
    if not args.smoke:
        try:
            from dad_edge.kernels.cuda_loader import CudaKernels
            torch.cuda.init()
            cuda_kernels = CudaKernels(torch.cuda.current_device())
            print(f"CUDA C modules: {cuda_kernels.origin}")
        except Exception as exc:  # noqa: BLE001 - report and go on with the Triton rows
            print(f"CUDA C kernels unavailable ({type(exc).__name__}: {exc}); Triton rows only")

    def bench(fn):
        if args.smoke:
            fn()
            return float("nan")
        return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")  # ms

    rows = []

    def report(stage, form, batch, ms, nbytes, extra=""):
        gbs = nbytes / (ms * 1e-3) / 1e9 if ms == ms else float("nan")
        rows.append(dict(stage=stage, form=form, batch=batch, ms=ms, bytes=nbytes, gb_s=gbs, device=name,
                         precision="float32", size=S, frame=[fh, fw]))
        print(f"{stage:22}{form:10}{batch:>6}{ms:>10.4f}{gbs:>10.1f}   {extra}")

    # The ceiling: a device copy, read + write.
    src = torch.empty(64 * 2 ** 20 if not args.smoke else 1024, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    copy_ms = bench(lambda: dst.copy_(src))
    print(f"\n{name}, float32, model input {S}x{S}, frames {fh}x{fw} uint8 BGR")
    print(f"{'stage':22}{'form':10}{'batch':>6}{'ms':>10}{'GB/s':>10}")
    report("device copy", "torch", 1, copy_ms, 2 * src.numel() * 4, "ceiling")
    stream = 0 if args.smoke else torch.cuda.current_stream().cuda_stream

    for batch in args.batch:
        frames = torch.from_numpy(rng.integers(0, 256, (batch, fh, fw, 3), dtype=np.uint8)).to(device)
        noise = torch.from_numpy(rng.standard_normal((2, C, S, S), dtype=np.float32)).to(device)
        unet = torch.empty((2 * batch, C, S, S), device=device)
        seg = torch.empty((batch, 2 * C, S, S), device=device)
        x = seg[:, :C]  # x written straight into the segmentation input

        # 1. preprocess + noise
        nbytes = frames.numel() + noise.numel() * 4 + 3 * batch * C * S * S * 4

        def pre_triton():
            preprocess_noise_triton(frames, S, C, "BGR", noise, coefs, SCALE, OFFSET, x_out=x, unet_out=unet)
        report("preprocess+noise", "triton", batch, bench(pre_triton), nbytes)
        if args.smoke:
            expect, _ = preprocess_noise_ref(list(frames.numpy()), S, C, "BGR", noise.numpy(), coefs)
            assert np.allclose(unet.numpy(), expect, atol=1e-5)
        if cuda_kernels is not None:
            def pre_cuda():
                cuda_kernels.preprocess_noise(frames.data_ptr(), batch, fh, fw, 3, x.data_ptr(), x.stride(0), batch, 0,
                                              S, C, True, SCALE, OFFSET, noise.data_ptr(), unet.data_ptr(), coefs,
                                              stream=stream)
            report("preprocess+noise", "cuda", batch, bench(pre_cuda), nbytes)

        # 2. norm-guided combine, x already in seg[:, :C]
        eps = torch.randn((2 * batch, C, S, S), device=device)
        n = batch * C * S * S
        nbytes = (n + 2 * n + n) * 4 + noise.numel() * 4  # x, eps_s + eps_l read; x0_ng written

        def comb_triton():
            combine_triton(x, eps, noise, coefs, 1.0, out=seg)
        report("combine", "triton", batch, bench(comb_triton), nbytes)
        if args.smoke:
            expect = combine_ref(x.clone(), eps, noise, coefs, 1.0)
            assert torch.allclose(seg, expect, atol=1e-5)
        if cuda_kernels is not None:
            def comb_cuda():
                cuda_kernels.combine(x.data_ptr(), x.stride(0), eps.data_ptr(), noise.data_ptr(), seg.data_ptr(),
                                     batch, C, S, coefs, 1.0, copy_x=False, stream=stream)
            report("combine", "cuda", batch, bench(comb_cuda), nbytes)

        # 3. score: blur + top-k + normalised score + mask
        maps = torch.rand((batch, S, S), device=device)
        nbytes = batch * S * S * (4 + 4 + 1)  # map read, blurred map written, mask written

        def score_tr():
            return score_triton(maps, args.top_k, args.sigma, 0.5, 0.9)
        report("score", "triton", batch, bench(score_tr), nbytes, f"sigma {args.sigma}, top-{args.top_k}")
        if args.smoke:
            got, ref = score_tr(), score_ref(maps.numpy(), args.top_k, args.sigma, 0.5, 0.9)
            assert np.allclose(got.scores.numpy(), ref.scores, atol=1e-5)
        if cuda_kernels is not None:
            taps = torch.from_numpy(gaussian_taps(args.sigma)).to(device)
            tmp, out = torch.empty_like(maps), torch.empty_like(maps)
            scores, normalized = torch.empty(batch, device=device), torch.empty(batch, device=device)
            masks = torch.empty((batch, S, S), dtype=torch.uint8, device=device)

            def score_cuda():
                cuda_kernels.score(maps.data_ptr(), batch, S, S, args.top_k, scores.data_ptr(), normalized.data_ptr(),
                                   masks.data_ptr(), 0.9, 0.5,
                                   (taps.data_ptr(), (taps.numel() - 1) // 2, tmp.data_ptr(), out.data_ptr()), stream)
            report("score", "cuda", batch, bench(score_cuda), nbytes, f"sigma {args.sigma}, top-{args.top_k}")
            torch.cuda.synchronize()
            ref = score_ref(maps.cpu().numpy(), args.top_k, args.sigma, 0.5, 0.9)
            if not np.allclose(scores.cpu().numpy(), ref.scores, atol=1e-5):
                print("WARNING: CUDA C scores differ from the reference", file=sys.stderr)

        # 4. GroupNorm + SiLU + time embedding (compact preset's first level: 32 channels, 8 groups, S/4)
        hw = max(S // 4, 8)
        act = torch.randn((2 * batch, 32, hw, hw), device=device)
        emb = torch.randn((2 * batch, 32), device=device)
        weight, bias = torch.randn(32, device=device), torch.randn(32, device=device)
        nbytes = 2 * act.numel() * 4 + emb.numel() * 4
        report("groupnorm+silu+emb", "triton", batch,
               bench(lambda: groupnorm_silu_triton(act, 8, weight, bias, 1e-5, emb)), nbytes, f"(2B, 32, {hw}, {hw})")
        report("groupnorm+silu+emb", "torch", batch,
               bench(lambda: torch.nn.functional.silu(torch.nn.functional.group_norm(
                   act + emb[:, :, None, None], 8, weight, bias, 1e-5))), nbytes, "unfused: 3 kernels")

    if cuda_kernels is not None:
        cuda_kernels.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"copy_ms": copy_ms, "rows": rows}, f, indent=1)
    if args.smoke:
        print("smoke run: every path ran and matched its reference; no timings were taken")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
