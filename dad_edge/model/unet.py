"""The epsilon-predicting U-Net of DiffusionAD (guided-diffusion style).

Levels of res-blocks with GroupNorm + SiLU, a timestep embedding added in every
res-block, self-attention at the configured feature-map sizes, BigGAN-style res-block
down/up-sampling, zero-initialised output convolutions (each block starts as identity).

`UNet.use_fused_norm(True)` routes every GroupNorm + SiLU (+ time embedding) of the
res-blocks and of the output head through `dad_edge.runtime.ops.groupnorm_silu`: the fused Triton
kernel on float32 CUDA tensors in inference, torch's own ops otherwise (same numbers).
It is off by default, so training and export run plain torch; export never traces it
(a trace or an ONNX export always takes the plain ops).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dad_edge.model.config import UNetConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (N,) timesteps -> (N, dim), cos half first (guided diffusion)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def fusion_allowed() -> bool:
    """Whether a fused op may run now: never while traced, exported or compiled (those see torch's
    own ops, so an exported graph is always the plain one). DiffusionAD's steps use it too."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    return not torch.onnx.is_in_onnx_export()


def _fused(module: nn.Module) -> bool:
    """Whether `module` takes the fused GroupNorm + SiLU now: its flag, and fusion_allowed()."""
    return module.fused_norm and fusion_allowed()


def norm_silu(module: nn.Module, norm: nn.GroupNorm, x: torch.Tensor, emb: torch.Tensor = None) -> torch.Tensor:
    """silu(norm(x + emb[:, :, None, None])): through the operator seam when `module`'s flag is on."""
    if _fused(module):
        from dad_edge.runtime import ops

        # A forced form applies to float32 (the kernels' type); fp16 takes torch's ops.
        return ops.groupnorm_silu(x, norm, emb, impl=module.fused_impl if x.dtype == torch.float32 else None)
    if emb is not None:
        x = x + emb[:, :, None, None]
    return F.silu(norm(x))


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN-SiLU-conv, + time embedding, GN-SiLU-dropout-conv(zero), + skip; optional up/down."""

    fused_norm = False  # set by UNet.use_fused_norm; a plain attribute, not in the state dict
    fused_impl = None

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int, dropout: float, resample: str = "none"):
        super().__init__()
        self.resample = resample  # "none" | "up" | "down"
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = norm_silu(self, self.norm1, x)
        # Resample between the activation and the conv (BigGAN), and the skip alike.
        h = self.conv1(self._resample(h))
        x = self._resample(x)
        # The time embedding is added before norm2 (one fused kernel with it when fused).
        h = self.conv2(self.dropout(norm_silu(self, self.norm2, h, self.emb(F.silu(emb)))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, zero-initialised output."""

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(b, c, h * w))  # (B, 3C, L)
        q, k, v = qkv.reshape(b, 3, self.num_heads, c // self.num_heads, h * w).unbind(1)  # each (B, heads, d, L)
        # (B, heads, L, d) with d contiguous: torch's fused (flash) attention needs the last dimension
        # dense and otherwise falls back to the unfused math path, which on a CPU took a fifth of a
        # training step (benchmarks/README.md, session 19). Same function; the copies are small.
        q, k, v = (t.transpose(-1, -2).contiguous() for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h * w)  # (B, C, L)
        return x + self.proj(out).reshape(b, c, h, w)


class Level(nn.Module):
    """One res-block, optionally followed by attention: the unit both paths repeat."""

    def __init__(self, res: ResBlock, attn: nn.Module):
        super().__init__()
        self.res = res
        self.attn = attn

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attn(self.res(x, emb))


class UNet(nn.Module):
    fused_norm = False  # see use_fused_norm
    fused_impl = None

    def __init__(self, cfg: UNetConfig, image_size: int, channels: int):
        super().__init__()
        self.cfg = cfg
        ch0, g, drop = cfg.base_channels, cfg.groups, cfg.dropout
        emb = cfg.time_embed_dim
        self.time_mlp = nn.Sequential(nn.Linear(ch0, emb), nn.SiLU(), nn.Linear(emb, emb))
        # Pixel-unshuffle: the U-Net runs on an (H/p, W/p) grid of p*p*C channels.
        self.patch = cfg.patch_size
        image_size //= self.patch
        self.conv_in = nn.Conv2d(channels * self.patch ** 2, ch0, 3, padding=1)

        def attn(ch: int, size: int) -> nn.Module:
            return AttentionBlock(ch, cfg.num_heads, g) if size in cfg.attention_resolutions else nn.Identity()

        def resample_block(ch: int, kind: str) -> ResBlock:
            return ResBlock(ch, ch, emb, g, drop, resample=kind)

        self.down = nn.ModuleList()
        skip_channels = [ch0]
        ch, size = ch0, image_size
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(Level(ResBlock(ch, ch0 * mult, emb, g, drop), attn(ch0 * mult, size)))
                ch = ch0 * mult
                skip_channels.append(ch)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(Level(resample_block(ch, "down"), nn.Identity()))
                skip_channels.append(ch)
                size //= 2

        self.middle = nn.ModuleList([
            Level(ResBlock(ch, ch, emb, g, drop), AttentionBlock(ch, cfg.num_heads, g)),
            Level(ResBlock(ch, ch, emb, g, drop), nn.Identity()),
        ])

        # Each up block consumes one skip; the last block of a level (but the top one)
        # is followed by an up-sampling res-block.
        self.up = nn.ModuleList()
        self.up_resample = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                cin = ch + skip_channels.pop()
                ch = ch0 * mult
                self.up.append(Level(ResBlock(cin, ch, emb, g, drop), attn(ch, size)))
                if level > 0 and i == cfg.num_res_blocks:
                    self.up_resample[str(len(self.up) - 1)] = resample_block(ch, "up")
                    size *= 2
        self.norm_out = nn.GroupNorm(g, ch)
        self.conv_out = zero_init(nn.Conv2d(ch, channels * self.patch ** 2, 3, padding=1))

    def use_fused_norm(self, on: bool = True, impl=None) -> "UNet":
        """Route GroupNorm + SiLU through dad_edge.runtime.ops.groupnorm_silu (`impl` forces a form, e.g.
        "triton" in tests); off (the default) is plain torch, for training and export."""
        for m in self.modules():
            if isinstance(m, (UNet, ResBlock)):
                m.fused_norm, m.fused_impl = bool(on), (impl if on else None)
        return self

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """(N,) timesteps -> (N, time_embed_dim), at the dtype of the network's weights (the sinusoids
        are computed in float32: the model may have been cast to half for inference)."""
        weight = self.time_mlp[0].weight
        return self.time_mlp(timestep_embedding(t, self.cfg.base_channels).to(weight.dtype))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (N, C, H, W), t (N,) timesteps -> predicted noise (N, C, H, W)."""
        return self.forward_embedded(x, self.embed(t))

    def forward_embedded(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """As forward, with the timestep embedding (N, time_embed_dim) computed already."""
        if self.patch > 1:
            x = F.pixel_unshuffle(x, self.patch)  # (N, C*p*p, H/p, W/p)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = block(h, emb)
            skips.append(h)
        for block in self.middle:
            h = block(h, emb)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if str(i) in self.up_resample:
                h = self.up_resample[str(i)](h, emb)
        out = self.conv_out(norm_silu(self, self.norm_out, h))
        return F.pixel_shuffle(out, self.patch) if self.patch > 1 else out
