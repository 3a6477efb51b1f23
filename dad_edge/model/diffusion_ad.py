"""The DiffusionAD pipeline: the pure module that is trained, evaluated and exported.

In eval mode `forward(x)` runs the norm-guided one-step inference of the paper and
returns `PipelineOutput(anomaly_map, score)`; those field names become the ONNX and
TensorRT output names. Training wraps this module (see dad_edge/training/train.py), never the reverse.

Inputs are in [-1, 1] (see dad_edge/data/preprocess.py); every reconstruction is clamped to [-1, 1].
The noise is fixed: drawn once from `noise_seed`, stored in the checkpoint, and shared
by every image, so the same image always gets the same score on every backend.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dad_edge.model.config import ModelConfig
from dad_edge.errors import ConfigError
from dad_edge.model.schedule import NoiseSchedule
from dad_edge.model.segnet import SegNet
from dad_edge.model.unet import UNet


class PipelineOutput(NamedTuple):
    anomaly_map: torch.Tensor  # (B, 1, H, W) per-pixel anomaly probability
    score: torch.Tensor  # (B,) image score: mean of the top-k map values


class Reconstruction(NamedTuple):
    eps_small: torch.Tensor  # (B, C, H, W) noise predicted at t_s
    eps_large: torch.Tensor  # (B, C, H, W) noise predicted at t_l
    x0_guided: torch.Tensor  # (B, C, H, W) norm-guided reconstruction x0_ng
    seg_logits: torch.Tensor  # (B, 1, H, W)


def fixed_noise(cfg: ModelConfig) -> torch.Tensor:
    """(2, C, H, W) standard normal noise from the seed; numpy's PCG64 is platform-stable."""
    rng = np.random.Generator(np.random.PCG64(cfg.noise_seed))
    noise = rng.standard_normal((2, cfg.channels, cfg.image_size, cfg.image_size), dtype=np.float32)
    return torch.from_numpy(noise)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius ceil(4 sigma)."""
    radius = max(1, int(np.ceil(4 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return torch.tensor(k / k.sum(), dtype=torch.float32)


def expand(coef: torch.Tensor) -> torch.Tensor:
    """(B,) per-sample coefficients -> (B, 1, 1, 1) for broadcasting over images."""
    return coef.reshape(-1, 1, 1, 1)


class DiffusionAD(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.unet = UNet(cfg.unet, cfg.image_size, cfg.channels)
        self.segnet = SegNet(cfg.seg, cfg.channels)
        schedule = NoiseSchedule.from_config(cfg)
        # Persistent: the fixed noise travels with the weights in every checkpoint.
        self.register_buffer("noise", fixed_noise(cfg))
        # Derived from the config, so not saved.
        self.register_buffer("alphas_cumprod", torch.tensor(schedule.alphas_cumprod, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("eval_timesteps", torch.tensor([cfg.t_small, cfg.t_large], dtype=torch.float32),
                             persistent=False)
        # abar at t_s and t_l as tensors made once (not in forward: a host-to-device copy there
        # would keep a CUDA graph from capturing the forward).
        cs, cl = schedule.coefficients(cfg.t_small), schedule.coefficients(cfg.t_large)
        self.register_buffer("eval_abar", torch.tensor([cs.sqrt_abar ** 2, cl.sqrt_abar ** 2], dtype=torch.float32),
                             persistent=False)
        if cfg.smoothing_sigma > 0:
            self.register_buffer("smoothing", gaussian_kernel(cfg.smoothing_sigma), persistent=False)
        else:
            self.smoothing = None

    # -- the norm-guided reconstruction (spec steps 1-5) ---------------------------------

    def reconstruct(self, x: torch.Tensor, t_small: torch.Tensor, t_large: torch.Tensor,
                    noise_small: torch.Tensor, noise_large: torch.Tensor) -> Reconstruction:
        """x (B, C, H, W) in [-1, 1]; t_* (B,) integer timesteps; noise_* broadcastable to x."""
        if self.cfg.denoiser != "two_pass":
            raise ConfigError(f"reconstruct() is the two-pass training path; this model's denoiser is "
                              f"{self.cfg.denoiser!r}: single-pass models are made by `dad-edge distill --single-pass`")
        b = x.shape[0]
        abar_s = expand(self.alphas_cumprod[t_small])
        abar_l = expand(self.alphas_cumprod[t_large])
        # 1. Noise x to both scales; both U-Net passes as one batch of 2B.
        x_s = abar_s.sqrt() * x + (1 - abar_s).sqrt() * noise_small
        x_l = abar_l.sqrt() * x + (1 - abar_l).sqrt() * noise_large
        emb = self.unet.embed(torch.cat([t_small, t_large]).float())
        eps = self.unet.forward_embedded(torch.cat([x_s, x_l]), emb)
        eps_s, eps_l = eps[:b], eps[b:]
        x0_ng = self.norm_guided_x0(x_s, x_l, eps_s, eps_l, abar_s, abar_l)
        seg_logits = self.segnet(torch.cat([x, x0_ng], dim=1))
        return Reconstruction(eps_s, eps_l, x0_ng, seg_logits)

    def denoise(self, x: torch.Tensor, t_small: torch.Tensor, t_large: torch.Tensor,
                noise_small: torch.Tensor, noise_large: torch.Tensor):
        """As reconstruct() without the segmentation net -> (eps_s, eps_l, x0_ng); for distillation."""
        b = x.shape[0]
        abar_s = expand(self.alphas_cumprod[t_small])
        abar_l = expand(self.alphas_cumprod[t_large])
        x_s = abar_s.sqrt() * x + (1 - abar_s).sqrt() * noise_small
        x_l = abar_l.sqrt() * x + (1 - abar_l).sqrt() * noise_large
        eps = self.unet(torch.cat([x_s, x_l]), torch.cat([t_small, t_large]).float())  # (2B, C, H, W)
        return eps[:b], eps[b:], self.norm_guided_x0(x_s, x_l, eps[:b], eps[b:], abar_s, abar_l)

    def single_pass_x0(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Single-pass denoiser: noise x to t (B,), one U-Net pass read as x0 (unclamped)."""
        abar = expand(self.alphas_cumprod[t])
        return self.unet(abar.sqrt() * x + (1 - abar).sqrt() * noise, t.float())

    def norm_guided_x0(self, x_s, x_l, eps_s, eps_l, abar_s, abar_l) -> torch.Tensor:
        """Spec steps 2-5: pure elementwise work (one fused kernel on the GPU paths)."""
        w = self.cfg.guidance_w
        # 2. One-step x0 from the large scale: anomalies washed out.
        x0_l = ((x_l - (1 - abar_l).sqrt() * eps_l) / abar_l.sqrt()).clamp(-1, 1)
        # 3. Re-noise that guide to t_s with the small-scale noise prediction.
        x_s_guide = abar_s.sqrt() * x0_l + (1 - abar_s).sqrt() * eps_s
        # 4. Correct the small-scale noise towards the guide.
        eps_guided = eps_s - (1 - abar_s).sqrt() * w * (x_s_guide - x_s)
        # 5. One-step x0 at the small scale with the corrected noise.
        return ((x_s - (1 - abar_s).sqrt() * eps_guided) / abar_s.sqrt()).clamp(-1, 1)

    # -- inference ----------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> PipelineOutput:
        """x (B, C, H, W) in [-1, 1] -> PipelineOutput, with the fixed noise and t_s, t_l."""
        b = x.shape[0]
        cfg = self.cfg
        sched = NoiseSchedule.from_config(cfg)
        cs, cl = sched.coefficients(cfg.t_small), sched.coefficients(cfg.t_large)
        # Python floats: they become constants of an exported graph.
        x_s = cs.sqrt_abar * x + cs.sqrt_one_minus_abar * self.noise[0]
        if cfg.denoiser == "single_pass":
            # One U-Net pass at t_s; its output is x0_ng itself (the branch is static: traceable).
            emb1 = self.unet.embed(self.eval_timesteps[:1])  # (1, E): t_s
            x0_ng = self.unet.forward_embedded(x_s, emb1.expand(b, emb1.shape[1])).clamp(-1, 1)
        else:
            x_l = cl.sqrt_abar * x + cl.sqrt_one_minus_abar * self.noise[1]
            emb2 = self.unet.embed(self.eval_timesteps)  # (2, E): t_s, t_l
            emb = emb2[:, None, :].expand(2, b, emb2.shape[1]).reshape(2 * b, emb2.shape[1])
            eps = self.unet.forward_embedded(torch.cat([x_s, x_l]), emb)
            abar = self.eval_abar.to(x.dtype)
            abar_s, abar_l = abar[0], abar[1]
            x0_ng = self.norm_guided_x0(x_s, x_l, eps[:b], eps[b:], abar_s, abar_l)
        anomaly_map = torch.sigmoid(self.segnet(torch.cat([x, x0_ng], dim=1)))
        if self.smoothing is not None:
            anomaly_map = self.smooth(anomaly_map)
        score = anomaly_map.flatten(1).topk(cfg.top_k, dim=1).values.mean(dim=1)
        return PipelineOutput(anomaly_map, score)

    def smooth(self, m: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur of (B, 1, H, W) with edge replication."""
        k = self.smoothing
        r = (k.numel() - 1) // 2
        m = F.conv2d(F.pad(m, (r, r, 0, 0), mode="replicate"), k.reshape(1, 1, 1, -1))
        return F.conv2d(F.pad(m, (0, 0, r, r), mode="replicate"), k.reshape(1, 1, -1, 1))
