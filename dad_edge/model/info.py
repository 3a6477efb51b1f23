"""Size and cost of a configuration: parameters and FLOPs, counted without running it.

FLOPs are counted by torch's FlopCounterMode on the meta device (no memory, no compute):
2 FLOPs per multiply-add of convolutions, matrix products and attention; elementwise
work is not counted, as is usual in the field.
"""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch.utils.flop_counter import FlopCounterMode

from dad_edge.model.config import ModelConfig


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def model_info(cfg: ModelConfig) -> Dict[str, Any]:
    """Parameters and GFLOPs of one image through the whole pipeline of the config's method (a recon
    model: K passes of its eps-predictor, no segmentation net; a seg model: the segmentation net alone)."""
    model = _build_on_meta(cfg)
    x = torch.zeros(1, cfg.channels, cfg.image_size, cfg.image_size, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    per_module = counter.get_flop_counts()
    seg_flops = sum(per_module.get(f"{type(model).__name__}.segnet", {}).values())
    # The map's reconstruction-error term (its blur) is neither network's: in the total only.
    term_flops = sum(per_module.get(f"{type(model).__name__}.recon_term", {}).values())
    segnet, unet = getattr(model, "segnet", None), getattr(model, "unet", None)
    total = counter.get_total_flops()
    # The *_unet entries are the eps-predictor's, a U-Net or a DiT (`backbone`), as DiffusionAD.unet is.
    return {
        "image_size": cfg.image_size,
        "channels": cfg.channels,
        "backbone": None if unet is None else cfg.backbone,
        "method": cfg.method,
        "params": count_params(model),
        "params_unet": 0 if unet is None else count_params(unet),
        "params_seg": 0 if segnet is None else count_params(segnet),
        "gflops": total / 1e9,
        "gflops_unet": (total - seg_flops - term_flops) / 1e9,  # all U-Net passes (one for single_pass)
        "gflops_seg": seg_flops / 1e9,
        "unet_passes": 0 if unet is None else cfg.recon.steps if cfg.method == "recon" else
        1 if cfg.denoiser == "single_pass" else 2,
        "flops_counting": "2 per multiply-add; conv, matmul, attention; per image",
    }


def _build_on_meta(cfg: ModelConfig):
    from dad_edge.model.build import build_model

    # No memory and no weight init: the 160 M-parameter preset is counted in a second.
    with torch.device("meta"):
        model = build_model(cfg)
    return model.to("meta").eval()
