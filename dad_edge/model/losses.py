"""DiffusionAD's training loss: L_noise + 5 * Focal(alpha 0.5, gamma 4) + SmoothL1(mask); method "seg" the last two."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

FOCAL_WEIGHT = 5.0


class LossTerms(NamedTuple):
    total: torch.Tensor
    noise: torch.Tensor
    focal: torch.Tensor
    smooth_l1: torch.Tensor


def noise_mse(pred: torch.Tensor, target: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
    """MSE over the normal samples only; exactly 0 (not NaN) when the batch has none.

    pred, target (B, C, H, W); normal (B,) bool. A noise target on an anomalous image
    would teach the U-Net to reconstruct the anomaly, so those samples are left out.
    """
    per_sample = (pred.float() - target.float()).square().flatten(1).mean(dim=1)  # (B,)
    weight = normal.to(per_sample.dtype)
    return (per_sample * weight).sum() / weight.sum().clamp_min(1.0)


def clean_noise_target(noise: torch.Tensor, x: torch.Tensor, clean: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """The noise that one-step denoising of x_t = sqrt(abar) x + sqrt(1 - abar) noise turns into `clean`.

    x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar) equals `clean` for
    eps = noise + sqrt(abar / (1 - abar)) (x - clean); on a normal sample (x == clean) it is the
    noise itself. abar (B,) or broadcastable to x. Used at the large scale only: there
    sqrt(abar / (1 - abar)) <= 0.81 (t >= 300), so the target stays of the noise's size.
    """
    abar = abar.reshape(-1, *([1] * (x.dim() - 1))) if abar.dim() == 1 else abar
    return noise + torch.sqrt(abar / (1 - abar)) * (x - clean)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.5, gamma: float = 4.0) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017) from logits, mean over pixels; stable in fp16."""
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)  # probability given to the true class
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * (1 - p_t).pow(gamma) * bce).mean()


def diffusion_ad_loss(eps_small, eps_large, noise_small, noise_large, seg_logits, mask, normal,
                      large_on_all: bool = False) -> LossTerms:
    """All terms of the paper's loss; `mask` (B, 1, H, W) in {0, 1}, `normal` (B,) bool.

    large_on_all: the large-scale target `noise_large` is defined for every sample (clean_noise_target),
    so its MSE covers the anomalous samples too."""
    large_weight = torch.ones_like(normal) if large_on_all else normal
    l_noise = noise_mse(eps_small, noise_small, normal) + noise_mse(eps_large, noise_large, large_weight)
    seg = segmentation_loss(seg_logits, mask)
    return LossTerms(l_noise + seg.total, l_noise, seg.focal, seg.smooth_l1)


def segmentation_loss(seg_logits, mask) -> LossTerms:
    """The segmentation net's terms alone, 5 * Focal + SmoothL1 (method "seg": no denoiser, noise term 0)."""
    l_focal = focal_loss(seg_logits, mask)
    l_smooth = F.smooth_l1_loss(torch.sigmoid(seg_logits.float()), mask.float())
    return LossTerms(FOCAL_WEIGHT * l_focal + l_smooth, torch.zeros((), device=l_focal.device), l_focal, l_smooth)
