"""Exponential moving average of a model's weights, used for validation and the saved model.

A short CPU run ends while the weights still move step to step; their average over the last few
hundred steps is a smoother, usually better model at no cost per step beyond one lerp.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow: Dict[str, torch.Tensor] = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def _decay(self) -> float:
        # Early on the average would be dominated by the random initialisation: ramp the decay up.
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self._decay()
        self.updates += 1
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point:
                s.lerp_(v.detach(), 1.0 - d)
            else:  # BatchNorm's step counter
                s.copy_(v)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """The model with the averaged weights in place; its own weights come back afterwards."""
        own = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            model.load_state_dict(own)

    def state(self) -> Dict[str, torch.Tensor]:
        return self.shadow

    def load(self, tensors: Dict[str, torch.Tensor], updates: int) -> None:
        for k, v in tensors.items():
            self.shadow[k].copy_(v)
        self.updates = updates
