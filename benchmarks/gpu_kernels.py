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


def kernels():
    """The kernel functions, imported after TRITON_INTERPRET is set (Triton reads it at import)."""
    from types import SimpleNamespace

    from dad_edge.kernels.combine_ref import combine_ref
    from dad_edge.kernels.combine_triton import combine_triton
    from dad_edge.kernels.groupnorm_silu_triton import groupnorm_silu_triton
    from dad_edge.kernels.preprocess_noise_ref import preprocess_noise_ref
    from dad_edge.kernels.preprocess_noise_triton import preprocess_noise_triton
    from dad_edge.kernels.score_ref import gaussian_taps, score_ref
    from dad_edge.kernels.score_triton import score_triton

    return SimpleNamespace(**{f.__name__: f for f in (
        combine_ref, combine_triton, groupnorm_silu_triton, preprocess_noise_ref, preprocess_noise_triton,
        gaussian_taps, score_ref, score_triton)})


def load_cuda_kernels(torch):
    """The CUDA C kernels (cuda-python), or None with the reason printed: the Triton rows go on."""
    try:
        from dad_edge.kernels.cuda_loader import CudaKernels
        torch.cuda.init()
        cuda_kernels = CudaKernels(torch.cuda.current_device())
        print(f"CUDA C modules: {cuda_kernels.origin}")
        return cuda_kernels
    except Exception as exc:  # noqa: BLE001 - report and go on with the Triton rows
        print(f"CUDA C kernels unavailable ({type(exc).__name__}: {exc}); Triton rows only")
        return None


class Run:
    """One benchmark run: the sizes, the timer, the table rows, and one method per stage."""

    def __init__(self, args, torch, k, cuda_kernels):
        import triton.testing

        self.args, self.torch, self.k, self.cuda = args, torch, k, cuda_kernels
        self.do_bench = triton.testing.do_bench
        self.device = "cpu" if args.smoke else "cuda"
        self.name = "CPU (Triton interpreter, smoke run)" if args.smoke else torch.cuda.get_device_name()
        self.S, self.C = args.size, 3
        self.fh, self.fw = args.frame or (self.S, self.S)
        self.coefs = (0.8, 0.6, 0.5, 0.866)  # any valid values: speed does not depend on them
        self.rng = np.random.default_rng(0)
        self.stream = 0 if args.smoke else torch.cuda.current_stream().cuda_stream
        self.rows = []

    def bench(self, fn) -> float:
        if self.args.smoke:
            fn()
            return float("nan")
        return self.do_bench(fn, warmup=25, rep=200, return_mode="median")  # ms

    def report(self, stage, form, batch, ms, nbytes, extra=""):
        gbs = nbytes / (ms * 1e-3) / 1e9 if ms == ms else float("nan")
        self.rows.append(dict(stage=stage, form=form, batch=batch, ms=ms, bytes=nbytes, gb_s=gbs, device=self.name,
                              precision="float32", size=self.S, frame=[self.fh, self.fw]))
        print(f"{stage:22}{form:10}{batch:>6}{ms:>10.4f}{gbs:>10.1f}   {extra}")

    def ceiling(self) -> float:
        """A device copy, read + write: the bandwidth ceiling; prints the table header."""
        torch = self.torch
        src = torch.empty(64 * 2 ** 20 if not self.args.smoke else 1024, dtype=torch.float32, device=self.device)
        dst = torch.empty_like(src)
        copy_ms = self.bench(lambda: dst.copy_(src))
        print(f"\n{self.name}, float32, model input {self.S}x{self.S}, frames {self.fh}x{self.fw} uint8 BGR")
        print(f"{'stage':22}{'form':10}{'batch':>6}{'ms':>10}{'GB/s':>10}")
        self.report("device copy", "torch", 1, copy_ms, 2 * src.numel() * 4, "ceiling")
        return copy_ms

    def preprocess(self, batch):
        """1. preprocess + noise -> (noise, segmentation input, x: its first C channels)."""
        from dad_edge.data.preprocess import OFFSET, SCALE

        torch, k, S, C, fh, fw = self.torch, self.k, self.S, self.C, self.fh, self.fw
        frames = torch.from_numpy(self.rng.integers(0, 256, (batch, fh, fw, 3), dtype=np.uint8)).to(self.device)
        noise = torch.from_numpy(self.rng.standard_normal((2, C, S, S), dtype=np.float32)).to(self.device)
        unet = torch.empty((2 * batch, C, S, S), device=self.device)
        seg = torch.empty((batch, 2 * C, S, S), device=self.device)
        x = seg[:, :C]  # x written straight into the segmentation input
        nbytes = frames.numel() + noise.numel() * 4 + 3 * batch * C * S * S * 4

        def pre_triton():
            k.preprocess_noise_triton(frames, S, C, "BGR", noise, self.coefs, SCALE, OFFSET, x_out=x, unet_out=unet)
        self.report("preprocess+noise", "triton", batch, self.bench(pre_triton), nbytes)
        if self.args.smoke:
            expect, _ = k.preprocess_noise_ref(list(frames.numpy()), S, C, "BGR", noise.numpy(), self.coefs)
            assert np.allclose(unet.numpy(), expect, atol=1e-5)
        if self.cuda is not None:
            def pre_cuda():
                self.cuda.preprocess_noise(frames.data_ptr(), batch, fh, fw, 3, x.data_ptr(), x.stride(0), batch, 0,
                                           S, C, True, SCALE, OFFSET, noise.data_ptr(), unet.data_ptr(), self.coefs,
                                           stream=self.stream)
            self.report("preprocess+noise", "cuda", batch, self.bench(pre_cuda), nbytes)
        return noise, seg, x

    def combine(self, batch, noise, seg, x):
        """2. norm-guided combine, x already in seg[:, :C]."""
        torch, k, S, C = self.torch, self.k, self.S, self.C
        eps = torch.randn((2 * batch, C, S, S), device=self.device)
        n = batch * C * S * S
        nbytes = (n + 2 * n + n) * 4 + noise.numel() * 4  # x, eps_s + eps_l read; x0_ng written

        def comb_triton():
            k.combine_triton(x, eps, noise, self.coefs, 1.0, out=seg)
        self.report("combine", "triton", batch, self.bench(comb_triton), nbytes)
        if self.args.smoke:
            expect = k.combine_ref(x.clone(), eps, noise, self.coefs, 1.0)
            assert torch.allclose(seg, expect, atol=1e-5)
        if self.cuda is not None:
            def comb_cuda():
                self.cuda.combine(x.data_ptr(), x.stride(0), eps.data_ptr(), noise.data_ptr(), seg.data_ptr(),
                                  batch, C, S, self.coefs, 1.0, copy_x=False, stream=self.stream)
            self.report("combine", "cuda", batch, self.bench(comb_cuda), nbytes)

    def score(self, batch):
        """3. score: blur + top-k + normalised score + mask."""
        torch, k, S, args = self.torch, self.k, self.S, self.args
        maps = torch.rand((batch, S, S), device=self.device)
        nbytes = batch * S * S * (4 + 4 + 1)  # map read, blurred map written, mask written
        about = f"sigma {args.sigma}, top-{args.top_k}"

        def score_tr():
            return k.score_triton(maps, args.top_k, args.sigma, 0.5, 0.9)
        self.report("score", "triton", batch, self.bench(score_tr), nbytes, about)
        if args.smoke:
            got, ref = score_tr(), k.score_ref(maps.numpy(), args.top_k, args.sigma, 0.5, 0.9)
            assert np.allclose(got.scores.numpy(), ref.scores, atol=1e-5)
        if self.cuda is not None:
            taps = torch.from_numpy(k.gaussian_taps(args.sigma)).to(self.device)
            tmp, out = torch.empty_like(maps), torch.empty_like(maps)
            scores, normalized = torch.empty(batch, device=self.device), torch.empty(batch, device=self.device)
            masks = torch.empty((batch, S, S), dtype=torch.uint8, device=self.device)

            def score_cuda():
                self.cuda.score(maps.data_ptr(), batch, S, S, args.top_k, scores.data_ptr(), normalized.data_ptr(),
                                masks.data_ptr(), 0.9, 0.5,
                                (taps.data_ptr(), (taps.numel() - 1) // 2, tmp.data_ptr(), out.data_ptr()), self.stream)
            self.report("score", "cuda", batch, self.bench(score_cuda), nbytes, about)
            torch.cuda.synchronize()
            ref = k.score_ref(maps.cpu().numpy(), args.top_k, args.sigma, 0.5, 0.9)
            if not np.allclose(scores.cpu().numpy(), ref.scores, atol=1e-5):
                print("WARNING: CUDA C scores differ from the reference", file=sys.stderr)

    def groupnorm(self, batch):
        """4. GroupNorm + SiLU + time embedding (compact preset's first level: 32 channels, 8 groups, S/4)."""
        torch, dev = self.torch, self.device
        F = torch.nn.functional
        hw = max(self.S // 4, 8)
        act = torch.randn((2 * batch, 32, hw, hw), device=dev)
        emb = torch.randn((2 * batch, 32), device=dev)
        weight, bias = torch.randn(32, device=dev), torch.randn(32, device=dev)
        nbytes = 2 * act.numel() * 4 + emb.numel() * 4
        self.report("groupnorm+silu+emb", "triton", batch,
                    self.bench(lambda: self.k.groupnorm_silu_triton(act, 8, weight, bias, 1e-5, emb)), nbytes,
                    f"(2B, 32, {hw}, {hw})")
        self.report("groupnorm+silu+emb", "torch", batch,
                    self.bench(lambda: F.silu(F.group_norm(act + emb[:, :, None, None], 8, weight, bias, 1e-5))),
                    nbytes, "unfused: 3 kernels")


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
    run = Run(args, torch, kernels(), None if args.smoke else load_cuda_kernels(torch))
    copy_ms = run.ceiling()
    for batch in args.batch:
        noise, seg, x = run.preprocess(batch)
        run.combine(batch, noise, seg, x)
        run.score(batch)
        run.groupnorm(batch)
    if run.cuda is not None:
        run.cuda.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"copy_ms": copy_ms, "rows": run.rows}, f, indent=1)
    if args.smoke:
        print("smoke run: every path ran and matched its reference; no timings were taken")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
