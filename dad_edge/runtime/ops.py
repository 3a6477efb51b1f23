"""The operator seam: the memory-bound stages between the networks, in the fastest form here.

    preprocess_noise  frames (uint8) -> U-Net input (2B, C, S, S) and clean x (B, C, S, S)
    preprocess        frames (uint8) -> x (B, C, S, S), normalised or pixel values
    combine           x, U-Net output, fixed noise -> segmentation input cat(x, x0_ng)
    score             maps -> smoothing, top-k score, normalised score, mask
    groupnorm_silu    GroupNorm + SiLU (+ time embedding) of a U-Net res-block (torch only)

Forms, picked per call from where the data lives (`pick`):
- CPU arrays (numpy, or torch CPU tensors): the C extension dad_edge._C when built, else
  the numpy reference;
- CUDA torch tensors: the Triton kernels when triton imports, else the reference.
Every form gives the reference's numbers to float rounding (tests hold them to it).
`available()` reports what this machine has; `impl=` on each call forces a form
("c", "triton" or "reference"), e.g. for benchmarks. Nothing heavy is imported before use.

Callers: the Detector (`preprocess`, every backend: one call per batch), the fused torch
path dad_edge/runtime/fused.py (`preprocess_noise`, `combine`, `score`; the torch backend's
default on CUDA with Triton), and the U-Net's res-blocks when their fused-norm flag is on
(`groupnorm_silu`, UNet.use_fused_norm). ONNX Runtime and TensorRT run the exported graph's
own ops after the Detector's pre-processing; the CUDA C forms (kernels/cuda_loader.py) are
called by benchmarks/gpu_kernels.py and their tests only.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any, Dict, Optional

import numpy as np

from dad_edge.data.preprocess import OFFSET, SCALE

OPS = ("preprocess", "preprocess_noise", "combine", "score", "groupnorm_silu")
FORMS = ("c", "triton", "reference")


@functools.lru_cache(maxsize=None)
def _missing(module: str, what: str) -> Optional[str]:
    """Why `module` cannot be used, or None; looks it up without importing it (triton is heavy).

    Cached: a fused fp16 forward asks once per GroupNorm, and the installed packages do not
    change while the process runs (`_missing.cache_clear()` forgets)."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        found = False
    return None if found else f"{what} is not installed (pip install {what})"


def _triton_error() -> Optional[str]:
    return _missing("triton", "triton")


def _cuda_python_error() -> Optional[str]:
    return _missing("cuda.bindings", "cuda-python")


def available() -> Dict[str, Any]:
    """What this machine has: {"c": bool, "c_threads": int, "triton": bool, "cuda_python": bool,
    "reasons": {form: why it is missing}}."""
    from dad_edge.kernels import c_ext

    reasons = {k: v for k, v in (("c", c_ext.C_ERROR), ("triton", _triton_error()),
                                 ("cuda_python", _cuda_python_error())) if v}
    return {"c": c_ext.C_ERROR is None, "c_threads": c_ext.num_threads() if c_ext.C_ERROR is None else 0,
            "triton": _triton_error() is None, "cuda_python": _cuda_python_error() is None, "reasons": reasons}


def _on_cuda(*arrays) -> bool:
    return any(getattr(a, "is_cuda", False) for a in arrays)


def pick(op: str, on_cuda: bool = False, impl: Optional[str] = None) -> str:
    """The form `op` runs in: "c", "triton" or "reference"; `impl` forces one (checked)."""
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; one of {OPS}")
    if impl is not None:
        if impl not in FORMS:
            raise ValueError(f"impl={impl!r} must be one of {FORMS}")
        if impl == "c" and (on_cuda or op == "groupnorm_silu"):
            raise ValueError(f"the C extension runs {op} on CPU arrays only")
        have = available()
        if impl != "reference" and not have[impl]:
            raise RuntimeError(have["reasons"][impl])
        if impl == "triton" and not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(f"impl='triton' runs {op} on CUDA tensors; these are on the CPU (use device='cuda', "
                             "another impl, or Triton's interpreter: TRITON_INTERPRET=1 before triton is imported)")
        return impl
    if on_cuda:
        return "triton" if _triton_error() is None else "reference"
    if op != "groupnorm_silu":
        from dad_edge.kernels import c_ext
        if c_ext.C_ERROR is None:
            return "c"
    return "reference"


def _numpy(a):
    """numpy view of a numpy array or a CPU torch tensor (no copy)."""
    if hasattr(a, "detach"):
        a = a.detach().numpy()
    return np.asarray(a)


def _deliver(result, out, template):
    """`result` (numpy) written into `out` if given (unless it is out's memory), else as `template` is."""
    if out is None:
        return _like(result, template)
    target = out.detach().cpu().numpy() if not _on_cuda(out) and hasattr(out, "detach") else out
    if isinstance(target, np.ndarray):
        if not np.may_share_memory(target, result):
            target[...] = result
    else:
        import torch
        out.copy_(torch.from_numpy(result))
    return out


def _like(result, template):
    """Hand numpy results back as torch tensors when the caller gave torch tensors."""
    if result is None or not hasattr(template, "detach"):
        return result
    import torch
    return torch.from_numpy(result).to(template.device)


# -- pre-processing --------------------------------------------------------------------------


def _frames_to(frames, device):
    """Frames as uint8 torch tensors on `device`: one (B, H, W, C) tensor or a list of (H, W, C)."""
    import torch

    from dad_edge.kernels.c_ext import as_frames
    if isinstance(frames, torch.Tensor):
        return (frames if frames.dim() == 4 else frames[:, :, :, None]).to(device).contiguous()
    if isinstance(frames, (list, tuple)) and frames and isinstance(frames[0], torch.Tensor):
        return [(f if f.dim() == 3 else f[:, :, None]).to(device).contiguous() for f in frames]
    # Upload uint8 (a quarter of the bytes of float32); one stacked copy when sizes agree.
    frames = as_frames(frames)
    if len({f.shape for f in frames}) == 1:
        return torch.from_numpy(np.stack(frames)).to(device)
    return [torch.from_numpy(f).to(device) for f in frames]


def _frames_cpu(frames):
    if hasattr(frames, "detach") or (isinstance(frames, (list, tuple)) and frames and hasattr(frames[0], "detach")):
        frames = [f.cpu().numpy() for f in frames]
    return frames


def preprocess_noise(frames, cfg, noise, color_order: str = "BGR", *, out=None, x_out=None,
                     impl: Optional[str] = None):
    """Frames -> (unet_in (2B, C, S, S), x (B, C, S, S)) float32: spec step 1 on pre-processed frames.

    unet_in = [x_s; x_l]; for a single-pass model (cfg.denoiser) it is x_s alone, (B, C, S, S).
    `frames`: a list of (H, W) or (H, W, C) uint8 arrays of any sizes, or a (B, H, W, C) array;
    C is 1, 3 or 4 in `color_order`. `noise`: the model's fixed noise (2, C, S, S); the outputs
    live where it lives (numpy, CPU tensor or CUDA tensor). `out`/`x_out` receive the results
    when given; x_out may be seg_in[:, :C] so that combine need not copy x again.
    """
    from dad_edge.kernels.preprocess_noise_ref import noise_coefficients, preprocess_noise_ref

    coefs = noise_coefficients(cfg)
    size, channels = cfg.image_size, cfg.channels
    two_pass = cfg.denoiser == "two_pass"
    form = pick("preprocess_noise", _on_cuda(noise), impl)
    if form == "triton":
        from dad_edge.kernels.preprocess_noise_triton import preprocess_noise_triton
        return preprocess_noise_triton(_frames_to(frames, noise.device), size, channels, color_order,
                                       noise.contiguous(), coefs, SCALE, OFFSET, x_out=x_out, unet_out=out,
                                       two_pass=two_pass)
    frames = _frames_cpu(frames)
    if form == "c":
        from dad_edge.kernels.c_ext import preprocess_noise_c
        # The C kernel writes straight into out / x_out (CPU memory).
        unet, x = preprocess_noise_c(frames, size, channels, color_order, _numpy(noise), coefs, SCALE, OFFSET,
                                     x_out=None if x_out is None else _numpy(x_out),
                                     unet_out=None if out is None else _numpy(out), two_pass=two_pass)
    else:
        from dad_edge.kernels.c_ext import as_frames
        unet, x = preprocess_noise_ref(as_frames(frames), size, channels, color_order,
                                       _numpy(noise.cpu() if _on_cuda(noise) else noise), coefs, two_pass)
    return _deliver(unet, out, noise), _deliver(x, x_out, noise)


def preprocess(frames, size: int, channels: int, color_order: str = "BGR", *, normalize: bool = True,
               device=None, impl: Optional[str] = None):
    """Frames -> (B, C, S, S) float32: in [-1, 1], or pixel values 0..255 with normalize=False
    (what exported graphs take). numpy unless `device` names a torch device."""
    on_cuda = device is not None and str(device).startswith("cuda")
    form = pick("preprocess", on_cuda, impl)
    scale, offset = (SCALE, OFFSET) if normalize else (1.0, 0.0)
    if form == "triton":
        from dad_edge.kernels.preprocess_noise_triton import preprocess_noise_triton
        return preprocess_noise_triton(_frames_to(frames, device), size, channels, color_order, None, None,
                                       scale, offset)[1]
    frames = _frames_cpu(frames)
    if form == "c":
        from dad_edge.kernels.c_ext import preprocess_noise_c
        x = preprocess_noise_c(frames, size, channels, color_order, None, None, scale, offset)[1]
    else:
        from dad_edge.kernels.c_ext import as_frames
        from dad_edge.kernels.preprocess_noise_ref import preprocess_ref
        x = preprocess_ref(as_frames(frames), size, channels, color_order, normalize)
    if device is None:
        return x
    import torch
    return torch.from_numpy(x).to(device)


# -- norm-guided combine ---------------------------------------------------------------------


def combine(x, eps, noise, cfg, *, out=None, impl: Optional[str] = None):
    """x (B, C, S, S), U-Net output eps (2B, C, S, S) = [eps_s; eps_l], fixed noise (2, C, S, S)
    -> segmentation input (B, 2C, S, S) = cat(x, x0_ng), spec steps 2-5 with the clamps.

    x_s and x_l are recomputed from x and the noise (cheaper than reading them back).
    A single-pass model's U-Net output (B, C, S, S) is x0_ng itself: it is clamped and
    concatenated by the reference (two small framework ops; no fused form).
    """
    from dad_edge.kernels.combine_ref import combine_ref, combine_single_pass_ref
    from dad_edge.kernels.preprocess_noise_ref import noise_coefficients

    coefs, w = noise_coefficients(cfg), cfg.guidance_w
    form = pick("combine", _on_cuda(x, eps, noise), impl)
    if cfg.denoiser != "two_pass":
        seg = combine_single_pass_ref(x, eps)
        if out is None:
            return seg
        out[...] = seg
        return out
    if form == "triton":
        from dad_edge.kernels.combine_triton import combine_triton
        return combine_triton(x, eps.contiguous(), noise.contiguous(), coefs, w, out=out)
    if form == "c":
        from dad_edge.kernels.c_ext import combine_c
        seg = combine_c(_numpy(x), _numpy(eps), _numpy(noise), coefs, w, out=None if out is None else _numpy(out))
        return _deliver(seg, out, x)
    seg = combine_ref(x, eps, noise, coefs, w)  # numpy or torch, on the inputs' device
    if out is None:
        return seg
    out[...] = seg
    return out


# -- scoring ---------------------------------------------------------------------------------


def score(maps, cfg, thresholds=None, *, smooth: bool = True, impl: Optional[str] = None):
    """Anomaly maps (B, H, W) or (B, 1, H, W) -> ScoreResult(scores, normalized, masks, maps).

    Smoothing by cfg.smoothing_sigma (skip with smooth=False when the maps are smoothed
    already), the mean of the cfg.top_k largest values, the score normalised so that the
    image threshold lands on 0.5 (raw if none), and masks = map >= pixel threshold (None if none).
    `thresholds` is a metadata.Thresholds (or anything with .image and .pixel), or None.
    """
    from dad_edge.kernels.score_ref import ScoreResult, score_ref

    image_t = getattr(thresholds, "image", None)
    pixel_t = getattr(thresholds, "pixel", None)
    sigma = cfg.smoothing_sigma if smooth else 0.0
    form = pick("score", _on_cuda(maps), impl)
    if form == "triton":
        from dad_edge.kernels.score_triton import score_triton
        return score_triton(maps.contiguous(), cfg.top_k, sigma, image_t, pixel_t)
    if form == "c":
        from dad_edge.kernels.c_ext import score_c
        result = score_c(_numpy(maps), cfg.top_k, sigma, image_t, pixel_t)
    else:
        result = score_ref(_numpy(maps.cpu() if _on_cuda(maps) else maps), cfg.top_k, sigma, image_t, pixel_t)
    return ScoreResult(*(_like(r, maps) for r in result))


# -- U-Net res-block normalisation (torch path) ------------------------------------------------


def groupnorm_silu(x, norm, emb=None, *, impl: Optional[str] = None):
    """silu(norm(x + emb[:, :, None, None])) for an nn.GroupNorm `norm`; emb (N, C) or None.

    The fused Triton kernel runs on float32 CUDA tensors when no gradient is being recorded;
    anything else (CPU, half precision, training) takes the torch reference.
    """
    import torch

    from dad_edge.kernels.groupnorm_silu_ref import groupnorm_silu_ref

    needs_grad = torch.is_grad_enabled() and (x.requires_grad or norm.weight.requires_grad)
    usable = x.is_cuda and x.dtype == torch.float32 and not needs_grad and norm.affine
    form = pick("groupnorm_silu", x.is_cuda, impl if impl is not None or usable else "reference")
    if form == "triton":
        from dad_edge.kernels.groupnorm_silu_triton import groupnorm_silu_triton
        return groupnorm_silu_triton(x.contiguous(), norm.num_groups, norm.weight, norm.bias, norm.eps,
                                     None if emb is None else emb.contiguous())
    return groupnorm_silu_ref(x, norm.num_groups, norm.weight, norm.bias, norm.eps, emb)
