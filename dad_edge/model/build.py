"""The module of a model config: DiffusionAD, ReconAD or SegAD, by ModelConfig.method.

Everything that makes a model from a config (checkpoint loading, training, model_info) goes
through build_model, so a new method needs one entry here. The modules share the inference
interface (forward(x in [-1, 1]) -> PipelineOutput(anomaly_map, score), `cfg`), which is all DeployGraph,
export and the torch backend use (the fused path, DiffusionAD's alone, also its `unet` and fixed `noise`).
"""
from __future__ import annotations

from torch import nn

from dad_edge.model.config import ModelConfig
from dad_edge.model.diffusion_ad import DiffusionAD
from dad_edge.model.recon_ad import ReconAD
from dad_edge.model.seg_ad import SegAD

MODULES = {"diffusionad": DiffusionAD, "recon": ReconAD, "seg": SegAD}


def build_model(cfg: ModelConfig) -> nn.Module:
    """A new module for `cfg` (validated: an unknown method is a ConfigError naming it)."""
    return MODULES[cfg.validate().method](cfg)
