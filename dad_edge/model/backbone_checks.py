"""The field checks of the eps-predictor's config sections (UNetConfig, DiTConfig): (ok, message) pairs
that ModelConfig.validate raises the first failing one of, naming the field and what it must be."""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Tuple

if TYPE_CHECKING:
    from dad_edge.model.config import DiTConfig, UNetConfig


def unet_checks(u: "UNetConfig") -> List[Tuple[bool, str]]:
    return [
        (u.patch_size in (1, 2, 4, 8), f"unet.patch_size={u.patch_size} must be 1, 2, 4 or 8"),
        (u.base_channels > 0 and len(u.channel_mult) >= 1 and all(m > 0 for m in u.channel_mult),
         f"unet.base_channels={u.base_channels} and channel_mult={u.channel_mult} must be positive"),
        (u.groups >= 1 and all((u.base_channels * m) % u.groups == 0 for m in u.channel_mult),
         f"unet.groups={u.groups} must divide every U-Net width {[u.base_channels * m for m in u.channel_mult]}"),
        (u.num_res_blocks >= 1, f"unet.num_res_blocks={u.num_res_blocks} must be >= 1"),
        (u.num_heads >= 1 and all((u.base_channels * m) % u.num_heads == 0 for m in u.channel_mult),
         f"unet.num_heads={u.num_heads} must divide every U-Net width"),
        (all(r > 0 for r in u.attention_resolutions),
         f"unet.attention_resolutions={u.attention_resolutions} must be positive sizes"),
        (u.time_embed_dim > 0, f"unet.time_embed_dim={u.time_embed_dim} must be positive"),
        (0.0 <= u.dropout < 1.0, f"unet.dropout={u.dropout} must be in [0, 1)"),
    ]


def dit_checks(d: "DiTConfig") -> List[Tuple[bool, str]]:
    return [
        (d.patch_size in (1, 2, 4, 8, 16), f"dit.patch_size={d.patch_size} must be 1, 2, 4, 8 or 16"),
        (d.hidden > 0 and d.hidden % 4 == 0,
         f"dit.hidden={d.hidden} must be a positive multiple of 4 (the 2-D sin-cos position embedding)"),
        (d.depth >= 1, f"dit.depth={d.depth} must be >= 1"),
        (d.heads >= 1 and d.hidden % d.heads == 0, f"dit.heads={d.heads} must divide dit.hidden={d.hidden}"),
        (0 < d.mlp_ratio <= 64 and round(d.hidden * d.mlp_ratio) >= 1,
         f"dit.mlp_ratio={d.mlp_ratio} must be > 0"),
    ]
