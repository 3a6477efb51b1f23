"""The reconstruction-error detector (ModelConfig.method "recon", issue 13; the method of
"Anomaly detection using diffusion-based methods", arXiv 2412.07539): the pure module.

A plain DDPM eps-predictor (a U-Net or a DiT, cfg.backbone) trained on good images only
(noise MSE, no synthetic anomalies, no segmentation net). At inference, with the fixed noise
that travels with the weights (as DiffusionAD's):

    1. x_t = sqrt(abar_t) x + sqrt(1 - abar_t) noise               schedule (3), t = recon.t
    2. K = recon.steps deterministic DDIM passes on ddim_timesteps(t, K) (schedule (4), (5)):
       x0_hat = clamp((x_t - sqrt(1 - abar) eps) / sqrt(abar), -1, 1), re-noised to the next
       timestep with the same eps; the last x0_hat is the reconstruction x0 (K = 1: step (4) alone)
    3. map = per-pixel error of x and x0 (recon_error: squared, or (1 - SSIM) / 2), in [0, 1]
    4. the map smoothed as DiffusionAD's (cfg.smoothing_sigma), image score = mean of its top_k
       values ("topk") or of the whole map ("mean")

`forward(x)` (x in [-1, 1]) returns the same PipelineOutput(anomaly_map, score) as DiffusionAD,
so DeployGraph, export (the K passes unrolled into one graph), every backend and the Detector
take it unchanged. The eps-predictor is named `unet` as in DiffusionAD, whichever it is: the
checkpoint holds `unet.*` and the fixed `noise` (1, C, S, S), nothing else.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from dad_edge.errors import ConfigError
from dad_edge.model.config import ModelConfig
from dad_edge.model.diffusion_ad import BACKBONES, PipelineOutput, expand, fixed_noise, gaussian_kernel
from dad_edge.model.recon_error import gaussian_blur, squared_error_map, ssim_taps, structural_error_map
from dad_edge.model.schedule import NoiseSchedule, ddim_steps


class NoiseTerms(NamedTuple):
    """The recon method's training loss, named as DiffusionAD's LossTerms where the loop reads them."""

    total: torch.Tensor
    noise: torch.Tensor  # the noise MSE itself (= total)


class ReconAD(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        if cfg.method != "recon":
            raise ConfigError(f"ReconAD builds method='recon' models; this config's method is {cfg.method!r} "
                              "(dad_edge.model.build.build_model picks the module of a config)")
        self.unet = BACKBONES[cfg.backbone](getattr(cfg, cfg.backbone), cfg.image_size, cfg.channels)
        self.schedule = NoiseSchedule.from_config(cfg)
        # Python floats: constants of the exported graph, the same on every backend.
        self.steps = ddim_steps(self.schedule, cfg.recon.t, cfg.recon.steps)
        # Persistent: the fixed noise travels with the weights (the first image of DiffusionAD's pair).
        self.register_buffer("noise", fixed_noise(cfg)[:1].clone())
        # Derived from the config, so not saved.
        self.register_buffer("alphas_cumprod", torch.tensor(self.schedule.alphas_cumprod, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("step_timesteps", torch.tensor([s.t for s in self.steps], dtype=torch.float32),
                             persistent=False)
        self.register_buffer("ssim_window", ssim_taps(), persistent=False)
        if cfg.smoothing_sigma > 0:
            self.register_buffer("smoothing", gaussian_kernel(cfg.smoothing_sigma), persistent=False)
        else:
            self.smoothing = None

    @property
    def dtype(self) -> torch.dtype:
        """The network's dtype (float16 after .half())."""
        return self.noise.dtype

    # -- training: the plain DDPM objective -----------------------------------------------------

    def noise_loss(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> NoiseTerms:
        """x (B, C, S, S) good images in [-1, 1], t (B,) integer timesteps, noise like x -> the MSE of
        the predicted noise (Ho et al. 2020, L_simple)."""
        c = self.alphas_cumprod[t]
        x_t = self.schedule.add_noise(x, (expand(c.sqrt()), expand((1 - c).sqrt())), noise)
        mse = (self.unet(x_t, t.float()).float() - noise.float()).square().mean()
        return NoiseTerms(mse, mse)

    # -- inference -------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> PipelineOutput:
        """x (B, C, S, S) in [-1, 1] -> PipelineOutput(map (B, 1, S, S) in [0, 1], score (B,))."""
        return self.score(self.error_map(x, self.reconstruct(x)))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Steps 1-2: x noised to recon.t with the fixed noise, denoised back in K DDIM passes -> x0 (clamped)."""
        b = x.shape[0]
        emb = self.unet.embed(self.step_timesteps)  # (K, E): one embedding per pass
        first = self.steps[0]
        x_t = self.schedule.add_noise(x, (first.sqrt_abar, first.sqrt_one_minus_abar), self.noise)  # (B, C, S, S)
        for i, s in enumerate(self.steps):  # unrolled when traced: K passes in one graph
            eps = self.unet.forward_embedded(x_t.to(self.dtype), emb[i:i + 1].expand(b, emb.shape[1]))
            x0 = (s.sqrt_recip_abar * x_t - s.sqrt_recip_abar_minus_one * eps).clamp(-1, 1)  # (4)
            if i + 1 < len(self.steps):
                x_t = s.sqrt_abar_next * x0 + s.sqrt_one_minus_abar_next * eps  # (5), eta = 0
        return x0

    def error_map(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Step 3: the per-pixel error of the reconstruction (B, 1, S, S), in [0, 1], at float32 whatever
        the network's dtype: SSIM's variances are differences of nearly equal moments, lost at float16."""
        x, x0 = x.float(), x0.float()
        if self.cfg.recon.error == "ssim":
            return structural_error_map(x, x0, self.ssim_window)
        return squared_error_map(x, x0)

    def score(self, maps: torch.Tensor) -> PipelineOutput:
        """Step 4: smoothing (cfg.smoothing_sigma, DiffusionAD's taps and edge replication), image score."""
        if self.smoothing is not None:
            maps = gaussian_blur(maps, self.smoothing)
        flat = maps.flatten(1)  # (B, S * S)
        if self.cfg.recon.image_score == "mean":
            return PipelineOutput(maps, flat.mean(dim=1))
        return PipelineOutput(maps, flat.topk(self.cfg.top_k, dim=1).values.mean(dim=1))
