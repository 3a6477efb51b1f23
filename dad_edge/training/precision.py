"""Which mixed precision a training run uses (`--no-amp` turns it off).

- CUDA: bfloat16 where the GPU supports it, else float16 (with a gradient scaler in the Trainer).
- CPUs with AMX tiles (Intel Xeon since Sapphire Rapids): bfloat16. oneDNN runs the convolutions
  and products of a bfloat16 autocast region on the tile units (measured: benchmarks/README.md,
  session 11).
- Other CPUs: float32, as before. Without AMX tiles bfloat16 is emulated or runs on the vector
  units, where a gain was not measured; the rounding is only worth taking for a measured speed-up.

Only the networks' forward runs in the lower precision (the Trainer's autocast region); weights,
optimizer state, losses and everything evaluated or saved stay float32.
"""
from __future__ import annotations

from typing import Optional

import torch


def cpu_has_amx() -> bool:
    """True when this CPU has AMX tile units that PyTorch (oneDNN) can use."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # torch >= 2.3; absent: assume none
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def autocast_dtype(device: torch.device, amp: bool) -> Optional[torch.dtype]:
    """The dtype of the training forward's autocast region, or None for plain float32."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_amx():
        return torch.bfloat16
    return None


def describe(dtype: Optional[torch.dtype]) -> str:
    """'bfloat16', 'float16' or 'float32': what the checkpoint records."""
    return str(dtype or torch.float32).replace("torch.", "")
