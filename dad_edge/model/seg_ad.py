"""The segmentation net alone (ModelConfig.method "seg"): the pure module.

DiffusionAD's segmentation net, trained on the same synthetic anomalies with the same loss (focal +
smooth L1 on the mask), but reading the image alone: no eps-predictor, no noise, no x0_ng. It is
DRAEM's discriminative net without its reconstruction, and the issue-12 ablation "segmentation net
alone" made a method of its own: on a CPU budget it trains about 7x the epochs of the two-pass
pipeline in the same time (benchmarks/README.md, session 20). At inference:

    1. x scaled to the config's mean brightness (cfg.input_gain, model/input_gain.py), as DiffusionAD
    2. map = sigmoid(segnet(x)) (B, 1, S, S), averaged over the config's seg.map_strides when it has them
    3. the map smoothed (cfg.smoothing_sigma), image score = mean of its top_k values, less the
       exposure correction when the config has one (model/exposure_term.py) -- DiffusionAD's score

`forward(x)` (x in [-1, 1]) returns the same PipelineOutput(anomaly_map, score) as DiffusionAD and
ReconAD, so DeployGraph, export, every backend and the Detector take it unchanged. The checkpoint
holds `segnet.*` (and the exposure term's coefficients), nothing else.
"""
from __future__ import annotations

import torch
from torch import nn

from dad_edge.errors import ConfigError
from dad_edge.model.config import ModelConfig
from dad_edge.model.diffusion_ad import PipelineOutput, gaussian_kernel
from dad_edge.model.exposure_term import ExposureTerm
from dad_edge.model.input_gain import normalise_gain
from dad_edge.model.recon_term import blur
from dad_edge.model.segnet import SegNet


class SegAD(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg.validate()
        if cfg.method != "seg":
            raise ConfigError(f"SegAD builds method='seg' models; this config's method is {cfg.method!r} "
                              "(dad_edge.model.build.build_model picks the module of a config)")
        self.segnet = SegNet(cfg.seg, cfg.channels, images=1)
        if cfg.smoothing_sigma > 0:
            self.register_buffer("smoothing", gaussian_kernel(cfg.smoothing_sigma), persistent=False)
        else:
            self.smoothing = None
        self.exposure_term = ExposureTerm() if cfg.exposure_correction else None

    @property
    def dtype(self) -> torch.dtype:
        """The network's dtype (float16 after .half())."""
        return self.segnet.head.weight.dtype

    def seg_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Training: x (B, C, S, S) in [-1, 1], already at the model's gain -> logits (B, 1, S, S)."""
        return self.segnet(x)

    def segmentation_input(self, x: torch.Tensor) -> torch.Tensor:
        """Step 1 on x (B, C, S, S) in [-1, 1]: the net's input, the image at the config's gain (DiffusionAD's
        method of the same name gives cat(x, x0_ng); map tools such as benchmarks/map_rules.py take either)."""
        return normalise_gain(x, self.cfg.input_gain)

    def segment(self, seg_in: torch.Tensor) -> torch.Tensor:
        """Step 2: the net + sigmoid -> anomaly map (B, 1, S, S), unsmoothed."""
        return self.segnet.probabilities(seg_in.to(self.dtype)).float()

    def forward(self, x: torch.Tensor) -> PipelineOutput:
        """x (B, C, S, S) in [-1, 1] -> PipelineOutput(map (B, 1, S, S) in [0, 1], score (B,))."""
        x = self.segmentation_input(x)
        maps = self.segment(x)
        if self.smoothing is not None:
            maps = blur(maps, self.smoothing)
        score = maps.flatten(1).topk(self.cfg.top_k, dim=1).values.mean(dim=1)
        if self.exposure_term is not None:
            score = self.exposure_term(score, x)
        return PipelineOutput(maps, score)
