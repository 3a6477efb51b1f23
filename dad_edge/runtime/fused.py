"""DiffusionAD's inference with its stages through the operator seam (dad_edge.runtime.ops): the fused torch path.

    frames (uint8, any sizes) --preprocess_noise--> U-Net input (2B, C, S, S), and x written
                                                    straight into the segmentation input
    then the model's own steps (DiffusionAD.run_steps) on those buffers:
    networks  U-Net on the batch of 2B with the t_s / t_l embeddings (GroupNorm + SiLU through
              ops.groupnorm_silu: the fused Triton kernel on float32 CUDA tensors)
    combine   --ops.combine--> segmentation input cat(x, x0_ng)  (x already there: not copied again)
    segment   segmentation net + sigmoid
    score     --ops.score--> smoothed map, top-k score (and the mask when a pixel threshold is given)

There is no second copy of the model here: the steps are DiffusionAD's, switched to their fused
ops by DiffusionAD.use_fused (an export traces the same steps in plain torch), and the noising
coefficients come from schedule.eval_coefficients as everywhere. What this module adds is the
pre-processing from uint8 frames (or pixels), the float32 copy of the fixed noise, the cached
timestep embeddings and the buffers. Tests hold it to the plain graph to 1e-5 on maps and 1e-6
on scores (the forms sum in other orders). Each stage runs in the form ops picks from where
the tensors live: Triton on CUDA, the C extension (or the numpy reference) on the CPU; `impl`
forces one form for every stage that has it (tests, benchmarks). Single-pass models take the
reference where no fused form exists (ops.combine does that). The networks run at the model's
dtype (fp16 with half=True); the kernels between them at float32.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from dad_edge.data.preprocess import OFFSET, SCALE
from dad_edge.errors import ConfigError
from dad_edge.model.diffusion_ad import ScoredMaps
from dad_edge.runtime import ops

# (anomaly_map (B, 1, S, S) float32 smoothed as DiffusionAD.forward's, score (B,) float32,
#  mask (B, 1, S, S) bool or None): the model's score step's result.
FusedOutput = ScoredMaps


class FusedPipeline:
    """`model`'s own steps with their fused ops, fed from uint8 frames (the model is shared, not copied).

    Build it while the model is still float32 (it keeps a float32 copy of the fixed noise);
    the model may be cast to half afterwards. `impl`: None (ops picks per stage), or a form
    forced on every stage: "triton", "c" (CPU only; GroupNorm stays torch's) or "reference".
    `fused_norm`: route the U-Net's GroupNorm + SiLU through ops.groupnorm_silu (on by default).
    The model's fused flags are set here (DiffusionAD.use_fused), so do not share the model with
    a training job; an export of it still traces the plain steps.
    """

    def __init__(self, model, impl: Optional[str] = None, fused_norm: bool = True):
        if impl is not None and impl not in ops.FORMS:
            raise ValueError(f"impl={impl!r} must be one of {ops.FORMS}")
        if model.cfg.method != "diffusionad":
            raise ConfigError(f"the fused path runs DiffusionAD's steps; this model's method is {model.cfg.method!r}: "
                              "run it with fused=False (the plain graph, which the automatic choice takes)")
        self.model = model.eval()
        self.cfg = model.cfg
        self.impl = impl
        self.two_pass = model.two_pass
        self.noise = model.noise.detach().float().contiguous()  # (2, C, S, S)
        self._emb = None  # (2 or 1, E) timestep embeddings, computed on the first call
        model.use_fused(True, impl=impl, norm=fused_norm)

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
                                          impl=self.impl)
        if self.cfg.input_gain > 0:  # each frame's gain needs its mean: applied to x, then noised again
            return self._normalised(seg_in)
        return unet_in, seg_in

    def _normalised(self, seg_in: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """seg_in's x normalised in place (the model's normalise step) -> (its U-Net input, seg_in)."""
        x = seg_in[:, :self.cfg.channels]
        x.copy_(self.model.normalise_input(x))
        return self.model.prepare(x, noise=self.noise), seg_in

    @torch.inference_mode()
    def from_pixels(self, pixels: torch.Tensor, pixel_threshold: Optional[float] = None) -> FusedOutput:
        """(B, C, S, S) pixel values 0..255 (the backends' input, see backends/base.py) -> FusedOutput.

        The normalisation is DeployGraph's torch arithmetic and the noising the model's prepare step
        (no fused form takes float pixels); the steps after them run their fused ops.
        """
        return self.stages(*self.prepare_pixels(pixels), pixel_threshold=pixel_threshold)

    @torch.inference_mode()
    def prepare_pixels(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, C, S, S) pixels 0..255 -> (U-Net input, segmentation input with x filled in):
        DeployGraph's normalisation, the model's normalise step (when it has one), then its prepare step."""
        c, s = self.cfg.channels, self.cfg.image_size
        b = pixels.shape[0]
        seg_in = torch.empty((b, 2 * c, s, s), device=self.device)
        x = seg_in[:, :c]
        torch.add(pixels.to(self.device, torch.float32) * SCALE, OFFSET, out=x)
        if self.cfg.input_gain > 0:
            return self._normalised(seg_in)
        return self.model.prepare(x, noise=self.noise), seg_in

    __call__ = from_frames

    # -- the model's steps after pre-processing ----------------------------------------------

    def _embeddings(self) -> torch.Tensor:
        """The model's timestep_embeddings(), computed once per dtype (they depend on the weights only)."""
        if self._emb is None or self._emb.dtype != self.dtype:
            self._emb = self.model.timestep_embeddings()
        return self._emb

    @torch.inference_mode()
    def stages(self, unet_in: torch.Tensor, seg_in: torch.Tensor,
               pixel_threshold: Optional[float] = None) -> FusedOutput:
        """The model's networks, combine, segment and score steps (DiffusionAD.run_steps) on prepared
        inputs (what a CUDA graph captures: fixed shapes, no host synchronisation).
        seg_in (B, 2C, S, S) holds x in its first C channels; the combine writes x0_ng beside it."""
        x = seg_in[:, :self.cfg.channels]
        return self.model.run_steps(x, unet_in, seg_in=seg_in, noise=self.noise, emb=self._embeddings(),
                                    pixel_threshold=pixel_threshold)


def fused_available(device) -> bool:
    """Whether the automatic choice (TorchBackend(fused=None)) takes the fused path on `device`:
    a CUDA device with Triton installed."""
    return torch.device(device).type == "cuda" and ops.available()["triton"]
