"""The Diffusion Transformer eps-predictor (DiT, Peebles & Xie 2023), a drop-in for the U-Net.

On pixels, not latents: the image is cut into p x p patches, each a token of width `hidden`
(a conv of stride p), plus a fixed 2-D sin-cos position embedding. The timestep embedding
conditions every block through adaLN-Zero: from it, a zero-initialised linear layer gives a
shift, a scale and a gate for the attention and for the MLP, so each block starts as the identity
(DiT's best conditioning, Table 4 of the paper). A final adaLN layer and a zero-initialised
linear map each token back to its p*p*C values (unpatchify). At initialisation the output is
exactly zero, as the U-Net's zero-initialised output conv makes its own.

The interface is the U-Net's (dad_edge/model/unet.py): `embed(t)`, `forward_embedded(x, emb)`,
`forward(x, t)` and `use_fused_norm`, so DiffusionAD, training, distillation, export and the
fused path take either. Attention is torch's scaled_dot_product_attention, which the ONNX
exporter writes as MatMul + Softmax (as for the U-Net's attention blocks).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dad_edge.model.config import DiTConfig
from dad_edge.model.unet import timestep_embedding, zero_init


def sincos_position_embedding(hidden: int, grid: int) -> torch.Tensor:
    """(grid*grid, hidden) fixed 2-D position embedding (MAE / DiT): the first half of the width
    encodes the row, the second the column, each as [sin, cos] at hidden/4 frequencies."""
    quarter = hidden // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)  # (hidden/4,)
    pos = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(pos, pos, indexing="ij")  # (grid, grid) each, row-major tokens

    def axis(coord: torch.Tensor) -> torch.Tensor:
        angles = coord.reshape(-1, 1) * omega[None]  # (L, hidden/4)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (L, hidden/2)

    return torch.cat([axis(rows), axis(cols)], dim=1).float()


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (N, L, D) * (1 + scale) + shift, with (N, D) shift and scale from the conditioning."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head self-attention over the tokens."""

    def __init__(self, hidden: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, d = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (N, heads, L, d/heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (N, heads, L, d/heads)
        return self.proj(out.transpose(1, 2).reshape(n, length, d))


class DiTBlock(nn.Module):
    """adaLN-Zero block: x + gate * attn(modulate(norm(x))), then the same with the MLP."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float):
        super().__init__()
        # No affine parameters: the conditioning supplies every scale and shift.
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        width = round(hidden * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.GELU(approximate="tanh"), nn.Linear(width, hidden))
        # Zero: every gate starts at 0, so the block starts as the identity (the "Zero" of adaLN-Zero).
        self.modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(hidden, 6 * hidden)))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.modulation(c).chunk(6, dim=1)  # each (N, D)
        x = x + gate_a[:, None] * self.attn(modulate(self.norm1(x), shift_a, scale_a))
        return x + gate_m[:, None] * self.mlp(modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    """adaLN (shift and scale, no gate) and a zero-initialised linear to the p*p*C values of each patch."""

    def __init__(self, hidden: int, out_per_token: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(hidden, 2 * hidden)))
        self.linear = zero_init(nn.Linear(hidden, out_per_token))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig, image_size: int, channels: int):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.hidden, cfg.patch_size
        self.grid = image_size // p
        self.patch_embed = nn.Conv2d(channels, d, kernel_size=p, stride=p)
        # Computed from the config, not learned and not saved: any image size the config allows.
        self.register_buffer("pos_embed", sincos_position_embedding(d, self.grid)[None], persistent=False)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(DiTBlock(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.final = FinalLayer(d, p * p * channels)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT's initialisation: Xavier-uniform linears and patch embedding, N(0, 0.02) timestep MLP;
        the adaLN modulations and the output linear stay zero (set in their constructors)."""
        zeroed = {m.modulation[1] for m in self.blocks} | {self.final.modulation[1], self.final.linear}
        for m in self.modules():
            if isinstance(m, nn.Linear) and m not in zeroed:
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a linear over the flattened patch
        nn.init.zeros_(self.patch_embed.bias)
        for layer in (self.time_mlp[0], self.time_mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)

    def use_fused_norm(self, on: bool = True, impl=None) -> "DiT":
        """DiffusionAD.use_fused asks every backbone; the DiT has no GroupNorm + SiLU to fuse (its
        LayerNorms stay torch's), so its numbers are the same either way."""
        return self

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) timesteps -> (N, hidden) conditioning, at the dtype of the weights (sinusoids in float32)."""
        weight = self.time_mlp[0].weight
        return self.time_mlp(timestep_embedding(t, self.cfg.hidden).to(weight.dtype))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W), t (N,) timesteps -> predicted noise (N, C, H, W)."""
        return self.forward_embedded(x, self.embed(t))

    def forward_embedded(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """As forward, with the conditioning (N, hidden) from embed() computed already."""
        n, channels, p, g = x.shape[0], x.shape[1], self.cfg.patch_size, self.grid
        h = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (N, L, D), L = g*g
        for block in self.blocks:
            h = block(h, emb)
        out = self.final(h, emb)  # (N, L, p*p*C), each token's values in (C, p, p) order
        # Unpatchify: tokens back onto the grid, then each token's p*p values into its patch.
        out = out.transpose(1, 2).reshape(n, channels * p * p, g, g)  # (N, C*p*p, g, g)
        return F.pixel_shuffle(out, p) if p > 1 else out  # (N, C, H, W)
