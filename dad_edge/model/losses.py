"""DiffusionAD's training loss: L_noise + 5 * Focal(alpha 0.5, gamma 4) + SmoothL1(mask)."""
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


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.5, gamma: float = 4.0) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017) from logits, mean over pixels; stable in fp16."""
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)  # probability given to the true class
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * (1 - p_t).pow(gamma) * bce).mean()


def diffusion_ad_loss(eps_small, eps_large, noise_small, noise_large, seg_logits, mask, normal) -> LossTerms:
    """All terms of the paper's loss; `mask` (B, 1, H, W) in {0, 1}, `normal` (B,) bool."""
    l_noise = noise_mse(eps_small, noise_small, normal) + noise_mse(eps_large, noise_large, normal)
    l_focal = focal_loss(seg_logits, mask)
    l_smooth = F.smooth_l1_loss(torch.sigmoid(seg_logits.float()), mask.float())
    return LossTerms(l_noise + FOCAL_WEIGHT * l_focal + l_smooth, l_noise, l_focal, l_smooth)
