"""The reconstruction-error term of DiffusionAD's anomaly map (ModelConfig.recon_weight > 0).

    map = clamp(seg + recon_weight * seg_std * (e - e_mean) / e_std, 0, 1),
    e = Gaussian(recon_sigma) of mean_c |x - x0_ng|

Why: the segmentation net learns only the synthetic anomalies it is shown; the error between the
image and its norm-guided reconstruction (already computed: the segmentation net's input) sees
what the denoiser cannot rebuild, whatever its shape. Alone it is a weak map on magnetic tile
(pixel AUROC 0.019 below the segmentation map's), but added to it with weight 0.5 it lifted pixel
AUROC and AU-PRO on each of 11 checkpoints (benchmarks/README.md, session 10). The two maps live on different scales, so
the error is standardised with statistics of held-out good images (`calibrate`, run by training
before the thresholds are set): `recon_weight` is in units of the segmentation map's spread on good
pixels, whatever the product. The statistics are a persistent buffer: they travel in the
checkpoint and become constants of an exported graph, so every backend computes the same map.
The clamp keeps maps and scores in [0, 1], where thresholds, normalised scores and heat maps live;
it changed no metric beyond the fifth decimal on the first seven checkpoints.
"""
from __future__ import annotations

from typing import Iterable, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from dad_edge.kernels.score_ref import gaussian_taps


def blur(m: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (B, 1, H, W) with edge replication (taps: odd 1-D kernel)."""
    r = (taps.numel() - 1) // 2
    m = F.conv2d(F.pad(m, (r, r, 0, 0), mode="replicate"), taps.reshape(1, 1, 1, -1))
    return F.conv2d(F.pad(m, (0, 0, r, r), mode="replicate"), taps.reshape(1, 1, -1, 1))


def reconstruction_error(x: torch.Tensor, x0: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Mean over channels of |x - x0| (B, C, H, W), blurred with `taps` -> (B, 1, H, W) float32."""
    return blur((x.float() - x0.float()).abs().mean(dim=1, keepdim=True), taps.float())


class ReconTerm(nn.Module):
    def __init__(self, weight: float, sigma: float, channels: int):
        super().__init__()
        self.weight = float(weight)
        self.channels = channels
        self.register_buffer("taps", torch.from_numpy(gaussian_taps(sigma)), persistent=False)
        # (seg_std, error_mean, error_std) on held-out good images. Until `calibrate` runs, seg_std 0
        # makes the term exactly 0 (the map is the segmentation map's).
        self.register_buffer("stats", torch.tensor([0.0, 0.0, 1.0]))

    @property
    def calibrated(self) -> bool:
        return bool(self.stats[0] > 0)

    def error(self, seg_in: torch.Tensor) -> torch.Tensor:
        """seg_in = cat(x, x0_ng) (B, 2C, H, W) -> smoothed per-pixel error (B, 1, H, W) float32."""
        c = self.channels
        return reconstruction_error(seg_in[:, :c], seg_in[:, c:2 * c], self.taps)

    def forward(self, maps: torch.Tensor, seg_in: torch.Tensor) -> torch.Tensor:
        """The segmentation maps (B, 1, H, W) with the standardised error added, in [0, 1], float32."""
        stats = self.stats.float()
        scale = self.weight * stats[0] / stats[2]
        return (maps.float() + scale * (self.error(seg_in) - stats[1])).clamp(0.0, 1.0)

    @torch.no_grad()
    def calibrate(self, pairs: Iterable[Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[float, float, float]:
        """Set the statistics from (segmentation maps, seg_in) batches of good images -> (seg_std, mean, std)."""
        seg, err = [], []
        for maps, seg_in in pairs:
            seg.append(maps.float().flatten())
            err.append(self.error(seg_in).flatten())
        if not seg:
            raise ValueError("calibrating the reconstruction term needs at least one good image")
        seg_all, err_all = torch.cat(seg).double(), torch.cat(err).double()
        # A floor on both spreads: a constant map (a net that has not learned yet) must not divide by 0.
        values = (max(float(seg_all.std()), 1e-6), float(err_all.mean()), max(float(err_all.std()), 1e-6))
        self.stats.copy_(torch.tensor(values, dtype=self.stats.dtype))
        return values
