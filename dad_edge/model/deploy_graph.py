"""The deployed graph: pixel values in, (anomaly_map, score) out.

Exactly what `dad-edge export` traces and what the torch backend runs, so that every
backend computes the same function: normalisation x * scale + offset, both noised inputs
from the fixed noise, both U-Net passes as one batch, the norm-guided combine, the
segmentation net, the optional smoothing and the top-k score (all in DiffusionAD.forward).
Resizing is not in the graph: the runtime does it once per frame, at any frame size.
"""
from __future__ import annotations

import torch
from torch import nn

from dad_edge.model.diffusion_ad import DiffusionAD, PipelineOutput
from dad_edge.data.preprocess import OFFSET, SCALE


class DeployGraph(nn.Module):
    def __init__(self, model: DiffusionAD):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> PipelineOutput:
        """image (B, C, S, S) float pixel values 0..255 in model colour order."""
        # The same float32 arithmetic as preprocess(): identical to the training-time input.
        return self.model(image * SCALE + OFFSET)
