"""DiffusionAD's inference as stages through the operator seam (dad_edge.runtime.ops): the fused torch path.

    frames (uint8, any sizes) --preprocess_noise--> U-Net input (2B, C, S, S), and x written
                                                    straight into the segmentation input
    U-Net on the batch of 2B with the t_s / t_l embeddings (GroupNorm + SiLU through
    ops.groupnorm_silu: the fused Triton kernel on float32 CUDA tensors)
    --combine--> segmentation input cat(x, x0_ng)  (x already there: not copied again)
    segmentation net + sigmoid
    --score--> smoothed map, top-k score (and the mask when a pixel threshold is given)

The same function as DiffusionAD.forward (tests hold the two to 1e-5 on maps, 1e-6 on
scores). Each stage runs in the form ops picks from where the tensors live: Triton on CUDA,
the C extension (or the numpy reference) on the CPU; `impl` forces one form for every
stage that has it (tests, benchmarks). Single-pass models take the reference where no fused
form exists (ops.combine does that). The networks run at the model's dtype (fp16 with
half=True); the kernels between them at float32.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch

from dad_edge.runtime import ops
from dad_edge.data.preprocess import OFFSET, SCALE
from dad_edge.model.schedule import NoiseSchedule


class FusedOutput(NamedTuple):
    anomaly_map: torch.Tensor  # (B, 1, S, S) float32, smoothed as DiffusionAD.forward's
    score: torch.Tensor  # (B,) float32
    mask: Optional[torch.Tensor]  # (B, 1, S, S) bool: map >= pixel threshold, when one is given


class FusedPipeline:
    """The stages of DiffusionAD.forward around `model`'s networks (the model is shared, not copied).

    Build it while the model is still float32 (it keeps a float32 copy of the fixed noise);
    the model may be cast to half afterwards. `impl`: None (ops picks per stage), or a form
    forced on every stage: "triton", "c" (CPU only; GroupNorm stays torch's) or "reference".
    `fused_norm`: route the U-Net's GroupNorm + SiLU through ops.groupnorm_silu (on by default;
    the model's flag is set here, so do not share the model with a training or export job).
    """

    def __init__(self, model, impl: Optional[str] = None, fused_norm: bool = True):
        if impl is not None and impl not in ops.FORMS:
            raise ValueError(f"impl={impl!r} must be one of {ops.FORMS}")
        self.model = model.eval()
        self.cfg = model.cfg
        self.impl = impl
        self.two_pass = self.cfg.denoiser == "two_pass"
        self.noise = model.noise.detach().float().contiguous()  # (2, C, S, S)
        sched = NoiseSchedule.from_config(self.cfg)
        cs, cl = sched.coefficients(self.cfg.t_small), sched.coefficients(self.cfg.t_large)
        self._coefs = (cs.sqrt_abar, cs.sqrt_one_minus_abar, cl.sqrt_abar, cl.sqrt_one_minus_abar)
        self._emb = None  # (2 or 1, E) timestep embeddings, computed on the first call
        model.unet.use_fused_norm(fused_norm, impl=impl if impl in ("triton", "reference") else None)

    @property
    def device(self) -> torch.device:
        return self.noise.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.noise.dtype

    def to(self, device) -> "FusedPipeline":
        """Move the model and the noise (as nn.Module.to, for the device only)."""
        self.model.to(device)
        self.noise = self.noise.to(device)
        self._emb = None
        return self

    # -- entry points -------------------------------------------------------------------

    @torch.inference_mode()
    def from_frames(self, frames, color_order: str = "BGR", pixel_threshold: Optional[float] = None) -> FusedOutput:
        """Frames -> FusedOutput: a list of (H, W[, C]) uint8 arrays or tensors of any sizes, or
        one (B, H, W, C) uint8 array / tensor (on the GPU already: nothing is uploaded)."""
        return self.stages(*self.prepare_frames(frames, color_order), pixel_threshold=pixel_threshold)

    @torch.inference_mode()
    def prepare_frames(self, frames, color_order: str = "BGR") -> Tuple[torch.Tensor, torch.Tensor]:
        """Frames -> (U-Net input, segmentation input with x filled in): the fused pre-processing."""
        c, s = self.cfg.channels, self.cfg.image_size
        b = len(frames)
        seg_in = torch.empty((b, 2 * c, s, s), device=self.device)
        unet_in, _ = ops.preprocess_noise(frames, self.cfg, self.noise, color_order, x_out=seg_in[:, :c],
                                          impl=self._form("preprocess_noise"))
        return unet_in, seg_in

    @torch.inference_mode()
    def from_pixels(self, pixels: torch.Tensor, pixel_threshold: Optional[float] = None) -> FusedOutput:
        """(B, C, S, S) pixel values 0..255 (the backends' input, see backends/base.py) -> FusedOutput.

        The normalisation and noising are DeployGraph's and DiffusionAD.forward's torch arithmetic
        (no fused form takes float pixels); the stages after them are the fused ones.
        """
        return self.stages(*self.prepare_pixels(pixels), pixel_threshold=pixel_threshold)

    @torch.inference_mode()
    def prepare_pixels(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, C, S, S) pixels 0..255 -> (U-Net input, segmentation input with x filled in)."""
        c, s = self.cfg.channels, self.cfg.image_size
        b = pixels.shape[0]
        seg_in = torch.empty((b, 2 * c, s, s), device=self.device)
        x = seg_in[:, :c]
        torch.add(pixels.to(self.device, torch.float32) * SCALE, OFFSET, out=x)
        sa_s, sb_s, sa_l, sb_l = self._coefs
        x_s = sa_s * x + sb_s * self.noise[0]
        unet_in = torch.cat([x_s, sa_l * x + sb_l * self.noise[1]]) if self.two_pass else x_s
        return unet_in, seg_in

    __call__ = from_frames

    # -- the stages after pre-processing ---------------------------------------------------

    def _form(self, op: str) -> Optional[str]:
        if self.impl == "c" and op == "groupnorm_silu":
            return None
        return self.impl

    def _embedding(self, b: int) -> torch.Tensor:
        """The timestep embeddings of one batch: (2B, E) = [t_s] * B + [t_l] * B, or (B, E) at t_s."""
        m = self.model
        if self._emb is None or self._emb.dtype != self.dtype:
            ts = m.eval_timesteps if self.two_pass else m.eval_timesteps[:1]
            self._emb = m.unet.embed(ts)
        e = self._emb
        if self.two_pass:
            return e[:, None, :].expand(2, b, e.shape[1]).reshape(2 * b, e.shape[1])
        return e.expand(b, e.shape[1])

    @torch.inference_mode()
    def stages(self, unet_in: torch.Tensor, seg_in: torch.Tensor,
               pixel_threshold: Optional[float] = None) -> FusedOutput:
        """The networks, combine and score on prepared inputs (what a CUDA graph captures: fixed
        shapes, no host synchronisation). seg_in (B, 2C, S, S) holds x in its first C channels."""
        m, cfg, dtype = self.model, self.cfg, self.dtype
        x = seg_in[:, :cfg.channels]
        b = x.shape[0]
        out = m.unet.forward_embedded(unet_in.to(dtype), self._embedding(b))  # eps (2B, ...) or x0 (B, ...)
        seg_in = ops.combine(x, out.float().contiguous(), self.noise, cfg, out=seg_in, impl=self._form("combine"))
        maps = torch.sigmoid(m.segnet(seg_in.to(dtype))).float().contiguous()  # (B, 1, S, S)
        thresholds = None if pixel_threshold is None else _Thresholds(None, pixel_threshold)
        result = ops.score(maps, cfg, thresholds, smooth=cfg.smoothing_sigma > 0, impl=self._form("score"))
        return FusedOutput(result.maps, result.scores, result.masks)


class _Thresholds(NamedTuple):
    image: Optional[float]
    pixel: Optional[float]


def fused_available(device) -> bool:
    """Whether the automatic choice (TorchBackend(fused=None)) takes the fused path on `device`:
    a CUDA device with Triton installed."""
    return torch.device(device).type == "cuda" and ops.available()["triton"]
