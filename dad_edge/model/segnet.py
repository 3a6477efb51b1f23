"""The segmentation sub-network (DRAEM's discriminative U-Net).

Reads cat(x, x0_ng) (2C channels; the image alone, C channels, in method "seg") and returns
per-pixel anomaly logits (N, 1, H, W).
Encoder: [conv3x3-BN-ReLU] x 2 per width with a max-pool between; decoder: bilinear
up-sampling + conv-BN-ReLU, concatenation with the encoder skip, [conv-BN-ReLU] x 2.
With SegConfig.stride s > 1 the net reads its input average-pooled by s and its logits are
up-sampled back to the input's size (bilinear, half-pixel centres). `probabilities` is the deployed map:
sigmoid of the logits, averaged over SegConfig.map_strides when the config has them.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from dad_edge.model.config import SegConfig


def conv_bn_relu(cin: int, cout: int) -> list:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn_relu(cin, cout), *conv_bn_relu(cout, cout))


class UpBlock(nn.Module):
    """Up-sample the deeper map, conv it to the skip's output width, merge with the skip."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.up = nn.Sequential(*conv_bn_relu(cin, cout))
        self.merge = double_conv(cout + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True))
        return self.merge(torch.cat([x, skip], dim=1))


class SegNet(nn.Module):
    def __init__(self, cfg: SegConfig, channels: int, images: int = 2):
        """`images` of `channels` each, concatenated: 2 for cat(x, x0_ng), 1 for the image alone."""
        super().__init__()
        widths = list(cfg.widths)
        self.encoder = nn.ModuleList()
        cin = images * channels
        for w in widths:
            self.encoder.append(double_conv(cin, w))
            cin = w
        # Decoder, from the deepest block up: the block that merges skip i narrows to the
        # width of skip i-1 (DRAEM's layout), the top one stays at widths[0].
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(widths) - 1)):
            cout = widths[max(i - 1, 0)]
            self.decoder.append(UpBlock(cin, widths[i], cout))
            cin = cout
        self.head = nn.Conv2d(widths[0], 1, 3, padding=1)
        self.stride = cfg.stride
        self.map_strides = tuple(cfg.map_strides)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The anomaly map (N, 1, H, W) in [0, 1]: sigmoid of the logits, or their mean over map_strides."""
        if not self.map_strides:
            return torch.sigmoid(self(x))
        return torch.stack([torch.sigmoid(self(x, s)) for s in self.map_strides]).mean(dim=0)

    def forward(self, x: torch.Tensor, stride: Optional[int] = None) -> torch.Tensor:
        """Logits (N, 1, H, W), the net reading x pooled by `stride` (default: the config's)."""
        stride = self.stride if stride is None else stride
        if stride > 1:
            size = x.shape[-2:]
            x = F.avg_pool2d(x, stride)
            return F.interpolate(self._logits(x), size=size, mode="bilinear", align_corners=False)
        return self._logits(x)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in self.decoder:
            x = block(x, skips.pop())
        return self.head(x)  # (N, 1, H, W) logits
