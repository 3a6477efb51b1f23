"""Reference of the norm-guided combine: spec steps 2-5, written into the segmentation input.

    x_s   = sqrt(abar_s) x + sqrt(1 - abar_s) noise[0]          (recomputed, see below)
    x_l   = sqrt(abar_l) x + sqrt(1 - abar_l) noise[1]
    x0_l  = clamp((x_l - sqrt(1 - abar_l) eps_l) / sqrt(abar_l), -1, 1)        (2)
    x_s~  = sqrt(abar_s) x0_l + sqrt(1 - abar_s) eps_s                          (3)
    eps~  = eps_s - sqrt(1 - abar_s) w (x_s~ - x_s)                             (4)
    x0_ng = clamp((x_s - sqrt(1 - abar_s) eps~) / sqrt(abar_s), -1, 1)          (5)
    seg_in = cat(x, x0_ng) along channels                                       (B, 2C, S, S)

x_s and x_l are recomputed from x and the fixed noise rather than read back from the U-Net
input: the noise (2, C, S, S) is shared by the whole batch and stays in cache, so this reads
4 bytes per element of x where reading x_s and x_l back would read 8.
Bytes moved per element of x: x 4 + eps_s 4 + eps_l 4 (read) + x 4 + x0_ng 4 (write) = 20;
16 when x already sits in seg_in[:, :C] (the preprocess kernel can write it there).

Written with arithmetic and `.clip` only, so it runs unchanged on numpy arrays and torch tensors.
`guided_x0` (steps 2-5) is the formula itself: DiffusionAD calls it in training (per-sample
coefficient tensors) and inference (Python floats), so the model and every kernel form are
checked against one source; step 1 is dad_edge.model.schedule.add_noise.
"""
from __future__ import annotations

from dad_edge.model.schedule import add_noise


def guided_x0(x_s, x_l, eps_s, eps_l, coefs, w: float):
    """Spec steps 2-5 -> x0_ng; coefs = (sqrt(abar_s), sqrt(1 - abar_s), sqrt(abar_l), sqrt(1 - abar_l)),
    Python floats or arrays / tensors broadcastable to x_s."""
    sa_s, sb_s, sa_l, sb_l = coefs
    x0_l = ((x_l - sb_l * eps_l) / sa_l).clip(-1, 1)  # (2) one-step x0 at t_l: anomalies washed out
    x_s_guide = sa_s * x0_l + sb_s * eps_s  # (3) re-noised to t_s with the small-scale prediction
    eps_guided = eps_s - sb_s * w * (x_s_guide - x_s)  # (4) the noise corrected towards the guide
    return ((x_s - sb_s * eps_guided) / sa_s).clip(-1, 1)  # (5) one-step x0 at t_s


def norm_guided_x0_ref(x, eps, noise, coefs, w: float):
    """x (B, C, S, S), eps (2B, C, S, S) = U-Net output [eps_s; eps_l], noise (2, C, S, S) -> x0_ng."""
    b = x.shape[0]
    x_s = add_noise(x, coefs[:2], noise[0])
    x_l = add_noise(x, coefs[2:], noise[1])
    return guided_x0(x_s, x_l, eps[:b], eps[b:], coefs, w)


def _cat(x, x0):
    """cat(x, x0) along channels, numpy or torch like the inputs."""
    if hasattr(x, "new_empty"):  # torch
        import torch
        return torch.cat([x, x0], dim=1)
    import numpy as np
    return np.concatenate([x, x0], axis=1)


def combine_ref(x, eps, noise, coefs, w: float):
    """-> seg_in (B, 2C, S, S) = cat(x, x0_ng), numpy or torch like the inputs."""
    return _cat(x, norm_guided_x0_ref(x, eps, noise, coefs, w))


def combine_single_pass_ref(x, x0):
    """Single-pass models: the U-Net output (B, C, S, S) is x0_ng itself -> cat(x, clamp(x0))."""
    return _cat(x, x0.clip(-1, 1))
