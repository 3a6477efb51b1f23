"""Per-pixel reconstruction errors of the recon method, as torch ops that export to ONNX.

Both maps lie in [0, 1] for images in [-1, 1], as every dad_edge anomaly map does (thresholds are
validated in [0, 1] and the normalised score assumes it):

    squared     ((x - x0) / 2)^2, the squared error in units of the [0, 1] pixel range, mean over channels
    ssim        the structural dissimilarity (1 - SSIM) / 2, SSIM of Wang et al. 2004 (eq. 13) with
                their 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, on the [0, 1] range,
                mean over channels. It compares local means, contrast and correlation rather than
                values, so a change of structure weighs more than a uniform shift of brightness.

Windows reach past the border by edge replication (as the map smoothing does), so only pixels
within 5 of the border differ from scikit-image's mirrored SSIM.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5  # Wang et al. 2004
SSIM_RADIUS = 5  # their 11x11 window (scikit-image: truncate 3.5 -> radius int(3.5 * 1.5 + 0.5) = 5)
SSIM_K1, SSIM_K2 = 0.01, 0.03  # stabilisers C1 = (K1 L)^2, C2 = (K2 L)^2 with L = 1, the dynamic range


def ssim_taps() -> torch.Tensor:
    """The normalised 1-D Gaussian of the SSIM window, float32 (11,)."""
    r = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    w = np.exp(-0.5 * (r / SSIM_SIGMA) ** 2)
    return torch.from_numpy((w / w.sum()).astype(np.float32))


def gaussian_blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable blur of every channel of x (B, N, H, W) by the 1-D `taps`, with edge replication."""
    # int(): the channel count is a constant of the graph (a traced size would leave the kernel shape unknown).
    n, r = int(x.shape[1]), (taps.numel() - 1) // 2
    k = taps.to(x.dtype)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.reshape(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.reshape(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n)


def squared_error_map(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """x, x0 (B, C, H, W) in [-1, 1] -> (B, 1, H, W) in [0, 1]."""
    return ((x - x0) * 0.5).square().mean(dim=1, keepdim=True)


def ssim_map(a: torch.Tensor, b: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Local SSIM of a and b (B, C, H, W) in [0, 1], per channel -> (B, C, H, W) in [-1, 1]."""
    c = a.shape[1]
    # The five local moments in one grouped convolution: (B, 5C, H, W) -> five (B, C, H, W).
    mu_a, mu_b, e_aa, e_bb, e_ab = gaussian_blur(torch.cat([a, b, a * a, b * b, a * b], dim=1), taps).split(c, dim=1)
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    var_a, var_b, cov = e_aa - mu_a * mu_a, e_bb - mu_b * mu_b, e_ab - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2))


def structural_error_map(x: torch.Tensor, x0: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """x, x0 (B, C, H, W) in [-1, 1] -> (1 - SSIM) / 2 (B, 1, H, W) in [0, 1], mean over channels."""
    s = ssim_map((x + 1) * 0.5, (x0 + 1) * 0.5, taps)
    return ((1 - s) * 0.5).mean(dim=1, keepdim=True).clamp(0, 1)  # clamp: rounding of the variances
