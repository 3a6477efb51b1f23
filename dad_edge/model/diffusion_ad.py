"""The DiffusionAD pipeline: the pure module that is trained, evaluated and exported.

In eval mode `forward(x)` runs the norm-guided one-step inference of the paper and
returns `PipelineOutput(anomaly_map, score)`; those field names become the ONNX and
TensorRT output names. Training wraps this module (see dad_edge/training/train.py), never the reverse.

Inputs are in [-1, 1] (see dad_edge/data/preprocess.py); every reconstruction is clamped to [-1, 1].
The noise is fixed: drawn once from `noise_seed`, stored in the checkpoint, and shared
by every image, so the same image always gets the same score on every backend.

`forward` is a sequence of named steps, the one model function every path runs:

    normalise x -> x at the config's mean brightness, when cfg.input_gain > 0 (model/input_gain.py)
    prepare   x -> U-Net input [x_s; x_l] (2B), or x_s (B) for a single-pass model  (spec step 1)
    networks  the U-Net at t_s (and t_l) -> eps [eps_s; eps_l], or x0 (single pass)
    combine   -> segmentation input cat(x, x0_ng)                                 (spec steps 2-5)
    segment   the segmentation net + sigmoid -> anomaly map
              (+ the standardised reconstruction error when cfg.recon_weight > 0: model/recon_term.py)
    score     smoothing + top-k mean -> (map, score[, mask])
              (- the exposure slope x the image's mean when cfg.exposure_correction: model/exposure_term.py)

The fused torch path (dad_edge/runtime/fused.py) calls the same steps (`run_steps`) on its
own buffers; with `use_fused(True)` combine and score run through dad_edge.runtime.ops (the
Triton kernels on CUDA) and the U-Net's GroupNorm + SiLU too, except while traced, exported
or compiled (unet.fusion_allowed): an exported graph is always the plain steps. The formulas
have one source each: step 1 is NoiseSchedule.add_noise with schedule.eval_coefficients,
steps 2-5 the kernels' reference combine_ref.guided_x0, the smoothing taps score_ref.gaussian_taps.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import nn

from dad_edge.errors import ConfigError
from dad_edge.kernels.combine_ref import combine_single_pass_ref, guided_x0
from dad_edge.kernels.score_ref import gaussian_taps
from dad_edge.model.config import ModelConfig
from dad_edge.model.dit import DiT
from dad_edge.model.recon_term import ReconTerm, blur
from dad_edge.model.exposure_term import ExposureTerm
from dad_edge.model.input_gain import normalise_gain
from dad_edge.model.schedule import NoiseSchedule, eval_coefficients
from dad_edge.model.segnet import SegNet
from dad_edge.model.unet import UNet, fusion_allowed

# The eps-predictor of each ModelConfig.backbone: one constructor signature (section, image_size, channels)
# and one interface (embed, forward_embedded, forward, use_fused_norm).
BACKBONES = {"unet": UNet, "dit": DiT}


class PipelineOutput(NamedTuple):
    # (B, 1, H, W) per-pixel anomaly score in [0, 1]: the segmentation net's probability, plus the
    # reconstruction-error term (clamped) when cfg.recon_weight > 0
    anomaly_map: torch.Tensor
    score: torch.Tensor  # (B,) image score: mean of the top-k map values


class ScoredMaps(NamedTuple):
    """The score step's result (the fused path's output, runtime.fused.FusedOutput)."""

    anomaly_map: torch.Tensor  # (B, 1, H, W), smoothed when the config smooths
    score: torch.Tensor  # (B,)
    mask: Optional[torch.Tensor]  # (B, 1, H, W) bool: map >= pixel threshold, when one is given


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
    """Normalised 1-D Gaussian of radius ceil(4 sigma), float32: the kernels' taps as a tensor."""
    return torch.from_numpy(gaussian_taps(sigma))


def expand(coef: torch.Tensor) -> torch.Tensor:
    """(B,) per-sample coefficients -> (B, 1, 1, 1) for broadcasting over images."""
    return coef.reshape(-1, 1, 1, 1)


def _sqrt_pair(abar: torch.Tensor):
    """abar_t (tensor) -> (sqrt(abar_t), sqrt(1 - abar_t)): add_noise's and guided_x0's coefficients."""
    return abar.sqrt(), (1 - abar).sqrt()


class DiffusionAD(nn.Module):
    fused_ops = False  # see use_fused; plain attributes, not in the state dict
    fused_impl = None

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        # The eps-predictor, a U-Net or a DiT (cfg.backbone); named `unet` whichever it is, as in
        # every checkpoint's tensor names and every caller.
        self.unet = BACKBONES[cfg.backbone](getattr(cfg, cfg.backbone), cfg.image_size, cfg.channels)
        self.segnet = SegNet(cfg.seg, cfg.channels)
        self.schedule = NoiseSchedule.from_config(cfg)
        # Python floats (constants of an exported graph; no host-to-device copy in forward, so a
        # CUDA graph can capture it): the same scalars every kernel form takes.
        self.eval_coefs = eval_coefficients(cfg)
        # Persistent: the fixed noise travels with the weights in every checkpoint.
        self.register_buffer("noise", fixed_noise(cfg))
        # Derived from the config, so not saved.
        self.register_buffer("alphas_cumprod", torch.tensor(self.schedule.alphas_cumprod, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("eval_timesteps", torch.tensor([cfg.t_small, cfg.t_large], dtype=torch.float32),
                             persistent=False)
        if cfg.smoothing_sigma > 0:
            self.register_buffer("smoothing", gaussian_kernel(cfg.smoothing_sigma), persistent=False)
        else:
            self.smoothing = None
        # Its statistics are a persistent buffer, so only a model with the term has them (older files load).
        self.recon_term = ReconTerm(cfg.recon_weight, cfg.recon_sigma, cfg.channels) if cfg.recon_weight > 0 else None
        # Likewise the image score's exposure correction (model/exposure_term.py).
        self.exposure_term = ExposureTerm() if cfg.exposure_correction else None

    @property
    def two_pass(self) -> bool:
        return self.cfg.denoiser == "two_pass"

    @property
    def dtype(self) -> torch.dtype:
        """The networks' dtype (float16 after .half())."""
        return self.noise.dtype

    # -- the norm-guided reconstruction in training (per-sample timesteps and noise) ----------

    def _noised(self, x, t_small, t_large, noise_small, noise_large):
        """Spec step 1 at per-sample (B,) timesteps -> (x_s, x_l, coefficients for guided_x0)."""
        c_s = _sqrt_pair(expand(self.alphas_cumprod[t_small]))
        c_l = _sqrt_pair(expand(self.alphas_cumprod[t_large]))
        x_s = self.schedule.add_noise(x, c_s, noise_small)
        x_l = self.schedule.add_noise(x, c_l, noise_large)
        return x_s, x_l, c_s + c_l

    def reconstruct(self, x: torch.Tensor, t_small: torch.Tensor, t_large: torch.Tensor,
                    noise_small: torch.Tensor, noise_large: torch.Tensor) -> Reconstruction:
        """x (B, C, H, W) in [-1, 1]; t_* (B,) integer timesteps; noise_* broadcastable to x."""
        if not self.two_pass:
            raise ConfigError(f"reconstruct() is the two-pass training path; this model's denoiser is "
                              f"{self.cfg.denoiser!r}: single-pass models are made by `dad-edge distill --single-pass`")
        b = x.shape[0]
        # 1. Noise x to both scales; both U-Net passes as one batch of 2B.
        x_s, x_l, coefs = self._noised(x, t_small, t_large, noise_small, noise_large)
        emb = self.unet.embed(torch.cat([t_small, t_large]).float())
        eps = self.unet.forward_embedded(torch.cat([x_s, x_l]), emb)
        eps_s, eps_l = eps[:b], eps[b:]
        x0_ng = guided_x0(x_s, x_l, eps_s, eps_l, coefs, self.cfg.guidance_w)
        seg_logits = self.segnet(torch.cat([x, x0_ng], dim=1))
        return Reconstruction(eps_s, eps_l, x0_ng, seg_logits)

    def denoise(self, x: torch.Tensor, t_small: torch.Tensor, t_large: torch.Tensor,
                noise_small: torch.Tensor, noise_large: torch.Tensor):
        """As reconstruct() without the segmentation net -> (eps_s, eps_l, x0_ng); for distillation."""
        b = x.shape[0]
        x_s, x_l, coefs = self._noised(x, t_small, t_large, noise_small, noise_large)
        eps = self.unet(torch.cat([x_s, x_l]), torch.cat([t_small, t_large]).float())  # (2B, C, H, W)
        return eps[:b], eps[b:], guided_x0(x_s, x_l, eps[:b], eps[b:], coefs, self.cfg.guidance_w)

    def single_pass_x0(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Single-pass denoiser: noise x to t (B,), one U-Net pass read as x0 (unclamped)."""
        c = _sqrt_pair(expand(self.alphas_cumprod[t]))
        return self.unet(self.schedule.add_noise(x, c, noise), t.float())

    def norm_guided_x0(self, x_s, x_l, eps_s, eps_l, abar_s, abar_l) -> torch.Tensor:
        """Spec steps 2-5 with abar_t tensors (kernels/combine_ref.guided_x0, the one formula)."""
        return guided_x0(x_s, x_l, eps_s, eps_l, _sqrt_pair(abar_s) + _sqrt_pair(abar_l), self.cfg.guidance_w)

    # -- inference: forward and its steps ---------------------------------------------------

    def forward(self, x: torch.Tensor) -> PipelineOutput:
        """x (B, C, H, W) in [-1, 1] -> PipelineOutput, with the fixed noise and t_s, t_l."""
        x = self.normalise_input(x)
        anomaly_map, score, _ = self.run_steps(x, self.prepare(x))
        return PipelineOutput(anomaly_map, score)

    def run_steps(self, x: torch.Tensor, x_t: torch.Tensor, *, seg_in: Optional[torch.Tensor] = None,
                  noise: Optional[torch.Tensor] = None, emb: Optional[torch.Tensor] = None,
                  pixel_threshold: Optional[float] = None) -> ScoredMaps:
        """The steps after prepare: networks -> combine -> segment -> score.

        x (B, C, S, S) in [-1, 1] and x_t = prepare(x) (or the fused pre-processing's equal);
        seg_in: a (B, 2C, S, S) buffer for the combine (x may lie in its first C channels);
        noise: the fixed noise at float32 when the networks run at half; emb: timestep_embeddings()
        computed already; pixel_threshold: also return map >= it.
        """
        out = self.networks(x_t, self.step_embeddings(x.shape[0], emb))
        scored = self.score(self.anomaly_maps(self.combine(x, out, x_t, noise=noise, seg_in=seg_in)), pixel_threshold)
        if self.exposure_term is None:
            return scored
        return scored._replace(score=self.exposure_term(scored.score, x))

    def segmentation_input(self, x: torch.Tensor) -> torch.Tensor:
        """prepare, networks and combine on x (B, C, S, S) in [-1, 1] -> cat(x, x0_ng) (B, 2C, S, S)."""
        x = self.normalise_input(x)
        x_t = self.prepare(x)
        return self.combine(x, self.networks(x_t, self.step_embeddings(x.shape[0])), x_t)

    def anomaly_maps(self, seg_in: torch.Tensor) -> torch.Tensor:
        """segment, with the reconstruction-error term added when the config has one -> (B, 1, S, S)."""
        maps = self.segment(seg_in)
        return maps if self.recon_term is None else self.recon_term(maps, seg_in)

    def normalise_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input step: each image scaled to the config's mean brightness (model/input_gain.py), or x itself
        when cfg.input_gain is 0. forward and segmentation_input run it; callers of prepare / run_steps run it
        first (the fused path does), and training applies the same gain to the clean target."""
        return normalise_gain(x, self.cfg.input_gain)

    def prepare(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Spec step 1 with the fixed noise: the U-Net input [x_s; x_l] (2B, C, S, S), or x_s (B, ...)
        for a single-pass model. `noise` replaces the model's (e.g. its float32 copy)."""
        noise = self.noise if noise is None else noise
        x_s = self.schedule.add_noise(x, self.eval_coefs.small, noise[0])
        if not self.two_pass:
            return x_s
        return torch.cat([x_s, self.schedule.add_noise(x, self.eval_coefs.large, noise[1])])

    def timestep_embeddings(self) -> torch.Tensor:
        """The U-Net's embeddings of t_s and t_l (2, E), or of t_s alone (1, E) for a single-pass model."""
        return self.unet.embed(self.eval_timesteps if self.two_pass else self.eval_timesteps[:1])

    def step_embeddings(self, b: int, emb: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Embeddings of a batch of B: (2B, E) = [t_s] * B + [t_l] * B, or (B, E) at t_s.
        `emb`: timestep_embeddings() computed already (the fused path keeps them)."""
        e = self.timestep_embeddings() if emb is None else emb
        if self.two_pass:
            return e[:, None, :].expand(2, b, e.shape[1]).reshape(2 * b, e.shape[1])
        return e.expand(b, e.shape[1])

    def networks(self, x_t: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The U-Net on prepare's batch with step_embeddings -> eps [eps_s; eps_l] (2B, ...), or x0 (B, ...)
        for a single-pass model; at the networks' dtype."""
        return self.unet.forward_embedded(x_t if x_t.dtype == self.dtype else x_t.to(self.dtype), emb)

    def combine(self, x: torch.Tensor, out: torch.Tensor, x_t: torch.Tensor, *,
                noise: Optional[torch.Tensor] = None, seg_in: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Spec steps 2-5 on the networks' output -> segmentation input cat(x, x0_ng) (B, 2C, S, S).

        Plain: combine_ref.guided_x0 on x_t's halves (a single-pass model's output is x0_ng, clamped);
        fused: ops.combine (x_s and x_l recomputed from x and the float32 noise in the kernel).
        The result is written into `seg_in` when it is given.
        """
        if self._fused():
            from dad_edge.runtime import ops

            noise = (self.noise if noise is None else noise).float().contiguous()
            x = x if x.dtype == torch.float32 else x.float()
            return ops.combine(x, out.float().contiguous(), noise, self.cfg, out=seg_in, impl=self.fused_impl)
        if self.two_pass:
            b = x.shape[0]
            x0_ng = guided_x0(x_t[:b], x_t[b:], out[:b], out[b:], self.eval_coefs, self.cfg.guidance_w)
            result = torch.cat([x, x0_ng], dim=1)
        else:
            result = combine_single_pass_ref(x, out)
        if seg_in is None:
            return result
        return seg_in.copy_(result)

    def segment(self, seg_in: torch.Tensor) -> torch.Tensor:
        """The segmentation net on cat(x, x0_ng) + sigmoid -> anomaly map (B, 1, S, S), unsmoothed."""
        return self.segnet.probabilities(seg_in if seg_in.dtype == self.dtype else seg_in.to(self.dtype))

    def score(self, maps: torch.Tensor, pixel_threshold: Optional[float] = None) -> ScoredMaps:
        """Smoothing (cfg.smoothing_sigma) and the mean of the cfg.top_k largest values -> ScoredMaps;
        the mask is map >= pixel_threshold when one is given. Fused: ops.score at float32."""
        if self._fused():
            from dad_edge.runtime import ops

            thresholds = None if pixel_threshold is None else SimpleNamespace(image=None, pixel=pixel_threshold)
            r = ops.score(maps.float().contiguous(), self.cfg, thresholds, smooth=self.smoothing is not None,
                          impl=self.fused_impl)
            return ScoredMaps(r.maps, r.scores, r.masks)
        if self.smoothing is not None:
            maps = self.smooth(maps)
        score = maps.flatten(1).topk(self.cfg.top_k, dim=1).values.mean(dim=1)
        return ScoredMaps(maps, score, None if pixel_threshold is None else maps >= pixel_threshold)

    def smooth(self, m: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur of (B, 1, H, W) with edge replication."""
        return blur(m, self.smoothing)

    # -- the fused ops ----------------------------------------------------------------------

    def use_fused(self, on: bool = True, impl: Optional[str] = None, norm: bool = True) -> "DiffusionAD":
        """Run combine and score through dad_edge.runtime.ops, and with `norm` the U-Net's GroupNorm + SiLU
        (UNet.use_fused_norm), whenever the module is not traced, exported or compiled. `impl` forces
        a form ("triton", "c", "reference"; GroupNorm has no "c" form and keeps torch's ops then).
        Off by default: training and export run plain torch. The flags are plain attributes, so do not
        share a fused model with a training job."""
        self.fused_ops, self.fused_impl = bool(on), (impl if on else None)
        self.unet.use_fused_norm(bool(on and norm), impl=impl if impl in ("triton", "reference") else None)
        return self

    def _fused(self) -> bool:
        return self.fused_ops and fusion_allowed()
