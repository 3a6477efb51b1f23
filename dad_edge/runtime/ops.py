"""The operator seam: the memory-bound stages between the networks, in the fastest form here.

    preprocess_noise  frames (uint8) -> U-Net input (2B, C, S, S) and clean x (B, C, S, S)
    preprocess        frames (uint8) -> x (B, C, S, S), normalised or pixel values
    combine           x, U-Net output, fixed noise -> segmentation input cat(x, x0_ng)
    score             maps -> smoothing, top-k score, normalised score, mask
    groupnorm_silu    GroupNorm + SiLU (+ time embedding) of a U-Net res-block (torch only)

Each op is a table {form: function} (TABLES); `pick` chooses the form per call from where
the data lives and which forms the op's table has:
- CPU arrays (numpy, or torch CPU tensors): the C extension dad_edge._C when built, else
  the numpy reference;
- CUDA torch tensors: the Triton kernels when triton imports, else the reference.
Every form gives the reference's numbers to float rounding (tests hold them to it), and every
result leaves through one helper (`_output`: into `out=` when given, torch when torch came in).
`available()` reports what this machine has; `impl=` on each call forces a form
("c", "triton" or "reference"), e.g. for benchmarks. Nothing heavy is imported before use.

Callers: the Detector (`preprocess`, every backend: one call per batch), the fused torch
path dad_edge/runtime/fused.py (`preprocess_noise`; the torch backend's default on CUDA with
Triton), DiffusionAD's combine and score steps when its fused flag is on (`combine`, `score`;
DiffusionAD.use_fused), and the U-Net's res-blocks when their fused-norm flag is on
(`groupnorm_silu`, UNet.use_fused_norm). ONNX Runtime and TensorRT run the exported graph's
own ops after the Detector's pre-processing; the CUDA C forms (kernels/cuda_loader.py) are
called by benchmarks/gpu_kernels.py and their tests only.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any, Callable, Dict, Optional

import numpy as np

from dad_edge.data.preprocess import OFFSET, SCALE
from dad_edge.model.schedule import eval_coefficients

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


def _c_error() -> Optional[str]:
    from dad_edge.kernels import c_ext
    return c_ext.C_ERROR


_FORM_ERRORS = {"c": _c_error, "triton": _triton_error}


def _form_error(form: str) -> Optional[str]:
    """Why `form` cannot run on this machine, or None (the reference always can)."""
    check = _FORM_ERRORS.get(form)
    return None if check is None else check()


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
    """The form `op` runs in: "c", "triton" or "reference"; `impl` forces one (checked).

    Automatic: Triton for CUDA tensors, the C extension for CPU arrays, where the op's table
    has that form and the machine has it; else the reference."""
    if op not in TABLES:
        raise ValueError(f"unknown op {op!r}; one of {OPS}")
    forms = TABLES[op]
    if impl is not None:
        if impl not in FORMS:
            raise ValueError(f"impl={impl!r} must be one of {FORMS}")
        if impl not in forms:
            raise ValueError(f"{op} has no {impl!r} form; it has {sorted(forms)}")
        if impl == "c" and on_cuda:
            raise ValueError(f"the C extension runs {op} on CPU arrays only")
        reason = _form_error(impl)
        if reason:
            raise RuntimeError(reason)
        if impl == "triton" and not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(f"impl='triton' runs {op} on CUDA tensors; these are on the CPU (use device='cuda', "
                             "another impl, or Triton's interpreter: TRITON_INTERPRET=1 before triton is imported)")
        return impl
    for form in ("triton",) if on_cuda else ("c",):
        if form in forms and _form_error(form) is None:
            return form
    return "reference"


# -- the one way out, and the views in -----------------------------------------------------------


def _output(result, out=None, device=None):
    """A form's result as the caller asked for it (every op returns through here).

    `out` given: the result is written into it, unless the form wrote there already (same memory),
    and `out` is returned. Else a numpy result becomes a torch tensor on `device` when one is given
    (the caller passed torch tensors); anything else is returned as it is.
    """
    if result is None:
        return out
    if out is None:
        if device is None or hasattr(result, "detach"):
            return result
        import torch
        return torch.from_numpy(result).to(device)
    if not hasattr(out, "detach"):  # numpy out
        if not np.may_share_memory(out, result):
            out[...] = result
        return out
    import torch
    if hasattr(result, "detach"):
        if (result.data_ptr(), result.shape, result.stride()) == (out.data_ptr(), out.shape, out.stride()):
            return out
    elif not out.is_cuda and np.may_share_memory(out.detach().numpy(), result):
        return out
    else:
        result = torch.from_numpy(result)
    out.copy_(result)
    return out


def _device(a):
    """The torch device of `a`, None for numpy (results go back as the inputs came)."""
    return a.device if hasattr(a, "detach") else None


def _numpy(a):
    """numpy view of a numpy array or a CPU torch tensor (no copy); a CUDA tensor is copied to the host."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _numpy_or_none(a):
    return None if a is None else _numpy(a)


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
    """Frames as numpy arrays for the CPU forms (torch tensors copied to the host)."""
    if hasattr(frames, "detach") or (isinstance(frames, (list, tuple)) and frames and hasattr(frames[0], "detach")):
        frames = [f.cpu().numpy() for f in frames]
    return frames


def _scale_offset(normalize: bool):
    return (SCALE, OFFSET) if normalize else (1.0, 0.0)


# -- pre-processing + noise ------------------------------------------------------------------------
# Each form: (frames, cfg, noise, color_order, out, x_out) -> (unet_in, x).


def _preprocess_noise_triton(frames, cfg, noise, color_order, out, x_out):
    from dad_edge.kernels.preprocess_noise_triton import preprocess_noise_triton
    return preprocess_noise_triton(_frames_to(frames, noise.device), cfg.image_size, cfg.channels, color_order,
                                   noise.contiguous(), eval_coefficients(cfg), SCALE, OFFSET, x_out=x_out,
                                   unet_out=out, two_pass=cfg.denoiser == "two_pass")


def _preprocess_noise_c(frames, cfg, noise, color_order, out, x_out):
    from dad_edge.kernels.c_ext import preprocess_noise_c
    # The C kernel writes straight into out / x_out (CPU memory).
    return preprocess_noise_c(_frames_cpu(frames), cfg.image_size, cfg.channels, color_order, _numpy(noise),
                              eval_coefficients(cfg), SCALE, OFFSET, x_out=_numpy_or_none(x_out),
                              unet_out=_numpy_or_none(out), two_pass=cfg.denoiser == "two_pass")


def _preprocess_noise_reference(frames, cfg, noise, color_order, out, x_out):
    from dad_edge.kernels.c_ext import as_frames
    from dad_edge.kernels.preprocess_noise_ref import preprocess_noise_ref
    return preprocess_noise_ref(as_frames(_frames_cpu(frames)), cfg.image_size, cfg.channels, color_order, _numpy(noise),
                                eval_coefficients(cfg), cfg.denoiser == "two_pass")


def preprocess_noise(frames, cfg, noise, color_order: str = "BGR", *, out=None, x_out=None,
                     impl: Optional[str] = None):
    """Frames -> (unet_in (2B, C, S, S), x (B, C, S, S)) float32: spec step 1 on pre-processed frames.

    unet_in = [x_s; x_l]; for a single-pass model (cfg.denoiser) it is x_s alone, (B, C, S, S).
    `frames`: a list of (H, W) or (H, W, C) uint8 arrays of any sizes, or a (B, H, W, C) array;
    C is 1, 3 or 4 in `color_order`. `noise`: the model's fixed noise (2, C, S, S); the outputs
    live where it lives (numpy, CPU tensor or CUDA tensor). `out`/`x_out` receive the results
    when given; x_out may be seg_in[:, :C] so that combine need not copy x again.
    """
    form = pick("preprocess_noise", _on_cuda(noise), impl)
    unet, x = TABLES["preprocess_noise"][form](frames, cfg, noise, color_order, out, x_out)
    return _output(unet, out, _device(noise)), _output(x, x_out, _device(noise))


# -- pre-processing alone ----------------------------------------------------------------------
# Each form: (frames, size, channels, color_order, normalize, device) -> x.


def _preprocess_triton(frames, size, channels, color_order, normalize, device):
    from dad_edge.kernels.preprocess_noise_triton import preprocess_noise_triton
    return preprocess_noise_triton(_frames_to(frames, device), size, channels, color_order, None, None,
                                   *_scale_offset(normalize))[1]


def _preprocess_c(frames, size, channels, color_order, normalize, device):
    from dad_edge.kernels.c_ext import preprocess_noise_c
    return preprocess_noise_c(_frames_cpu(frames), size, channels, color_order, None, None,
                              *_scale_offset(normalize))[1]


def _preprocess_reference(frames, size, channels, color_order, normalize, device):
    from dad_edge.kernels.c_ext import as_frames
    from dad_edge.kernels.preprocess_noise_ref import preprocess_ref
    return preprocess_ref(as_frames(_frames_cpu(frames)), size, channels, color_order, normalize)


def preprocess(frames, size: int, channels: int, color_order: str = "BGR", *, normalize: bool = True,
               device=None, impl: Optional[str] = None):
    """Frames -> (B, C, S, S) float32: in [-1, 1], or pixel values 0..255 with normalize=False
    (what exported graphs take). numpy unless `device` names a torch device."""
    on_cuda = device is not None and str(device).startswith("cuda")
    form = pick("preprocess", on_cuda, impl)
    return _output(TABLES["preprocess"][form](frames, size, channels, color_order, normalize, device),
                   device=device)


# -- norm-guided combine ---------------------------------------------------------------------
# Each form: (x, eps, noise, coefs, w, out) -> seg_in.


def _combine_triton(x, eps, noise, coefs, w, out):
    from dad_edge.kernels.combine_triton import combine_triton
    return combine_triton(x, eps.contiguous(), noise.contiguous(), coefs, w, out=out)


def _combine_c(x, eps, noise, coefs, w, out):
    from dad_edge.kernels.c_ext import combine_c
    return combine_c(_numpy(x), _numpy(eps), _numpy(noise), coefs, w, out=_numpy_or_none(out))


def _combine_reference(x, eps, noise, coefs, w, out):
    from dad_edge.kernels.combine_ref import combine_ref
    return combine_ref(x, eps, noise, coefs, w)  # numpy or torch, on the inputs' device


def combine(x, eps, noise, cfg, *, out=None, impl: Optional[str] = None):
    """x (B, C, S, S), U-Net output eps (2B, C, S, S) = [eps_s; eps_l], fixed noise (2, C, S, S)
    -> segmentation input (B, 2C, S, S) = cat(x, x0_ng), spec steps 2-5 with the clamps.

    x_s and x_l are recomputed from x and the noise (cheaper than reading them back).
    A single-pass model's U-Net output (B, C, S, S) is x0_ng itself: it is clamped and
    concatenated by the reference (two small framework ops; no fused form).
    """
    form = pick("combine", _on_cuda(x, eps, noise), impl)
    if cfg.denoiser != "two_pass":
        from dad_edge.kernels.combine_ref import combine_single_pass_ref
        return _output(combine_single_pass_ref(x, eps), out)
    seg = TABLES["combine"][form](x, eps, noise, eval_coefficients(cfg), cfg.guidance_w, out)
    return _output(seg, out, _device(x))


# -- scoring ---------------------------------------------------------------------------------
# Each form: (maps, top_k, sigma, image threshold, pixel threshold) -> ScoreResult.


def _score_triton(maps, top_k, sigma, image_t, pixel_t):
    from dad_edge.kernels.score_triton import score_triton
    return score_triton(maps.contiguous(), top_k, sigma, image_t, pixel_t)


def _score_c(maps, top_k, sigma, image_t, pixel_t):
    from dad_edge.kernels.c_ext import score_c
    return score_c(_numpy(maps), top_k, sigma, image_t, pixel_t)


def _score_reference(maps, top_k, sigma, image_t, pixel_t):
    from dad_edge.kernels.score_ref import score_ref
    return score_ref(_numpy(maps), top_k, sigma, image_t, pixel_t)


def score(maps, cfg, thresholds=None, *, smooth: bool = True, impl: Optional[str] = None):
    """Anomaly maps (B, H, W) or (B, 1, H, W) -> ScoreResult(scores, normalized, masks, maps).

    Smoothing by cfg.smoothing_sigma (skip with smooth=False when the maps are smoothed
    already), the mean of the cfg.top_k largest values, the score normalised so that the
    image threshold lands on 0.5 (raw if none), and masks = map >= pixel threshold (None if none).
    `thresholds` is a metadata.Thresholds (or anything with .image and .pixel), or None.
    """
    from dad_edge.kernels.score_ref import ScoreResult

    sigma = cfg.smoothing_sigma if smooth else 0.0
    form = pick("score", _on_cuda(maps), impl)
    result = TABLES["score"][form](maps, cfg.top_k, sigma, getattr(thresholds, "image", None),
                                   getattr(thresholds, "pixel", None))
    return ScoreResult(*(_output(r, device=_device(maps)) for r in result))


# -- U-Net res-block normalisation (torch path) ------------------------------------------------
# Each form: (x, norm, emb) -> silu(norm(x + emb)).


def _groupnorm_silu_triton(x, norm, emb):
    from dad_edge.kernels.groupnorm_silu_triton import groupnorm_silu_triton
    return groupnorm_silu_triton(x.contiguous(), norm.num_groups, norm.weight, norm.bias, norm.eps,
                                 None if emb is None else emb.contiguous())


def _groupnorm_silu_reference(x, norm, emb):
    from dad_edge.kernels.groupnorm_silu_ref import groupnorm_silu_ref
    return groupnorm_silu_ref(x, norm.num_groups, norm.weight, norm.bias, norm.eps, emb)


def groupnorm_silu(x, norm, emb=None, *, impl: Optional[str] = None):
    """silu(norm(x + emb[:, :, None, None])) for an nn.GroupNorm `norm`; emb (N, C) or None.

    The fused Triton kernel runs on float32 CUDA tensors when no gradient is being recorded;
    anything else (CPU, half precision, training) takes the torch reference.
    """
    import torch

    needs_grad = torch.is_grad_enabled() and (x.requires_grad or norm.weight.requires_grad)
    usable = x.is_cuda and x.dtype == torch.float32 and not needs_grad and norm.affine
    form = pick("groupnorm_silu", x.is_cuda, impl if impl is not None or usable else "reference")
    return TABLES["groupnorm_silu"][form](x, norm, emb)


# op -> {form: function}: what `pick` chooses among, and what each op calls.
TABLES: Dict[str, Dict[str, Callable]] = {
    "preprocess": {"c": _preprocess_c, "triton": _preprocess_triton, "reference": _preprocess_reference},
    "preprocess_noise": {"c": _preprocess_noise_c, "triton": _preprocess_noise_triton,
                         "reference": _preprocess_noise_reference},
    "combine": {"c": _combine_c, "triton": _combine_triton, "reference": _combine_reference},
    "score": {"c": _score_c, "triton": _score_triton, "reference": _score_reference},
    "groupnorm_silu": {"triton": _groupnorm_silu_triton, "reference": _groupnorm_silu_reference},
}
OPS = tuple(TABLES)
