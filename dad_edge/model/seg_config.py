"""The segmentation net's config (model/segnet.py) and its own checks; ModelConfig (model/config.py) holds one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

SEG_STRIDES = (1, 2, 4)


@dataclass(frozen=True)
class SegConfig:
    """The DRAEM-style segmentation U-Net that reads cat(x, x0_ng)."""

    widths: Tuple[int, ...] = (64, 128, 256, 512, 512, 512)  # encoder widths, one max-pool between
    # 1: the net reads cat(x, x0_ng) at full resolution (the paper). 2 or 4: it reads that input
    # average-pooled by this factor and its logits are up-sampled back (bilinear), for 4x or 16x
    # less work in a net whose full-resolution layers cost as much as both U-Net passes on a CPU
    # (benchmarks/profile_train_step.py); the map is coarser by the same factor.
    stride: int = 1
    # The deployed map: the mean of the net's probability maps at each of these strides, the same weights
    # reading the input pooled by each; () = at `stride` alone. A net trained pooled and then at full
    # resolution (training/full_resolution.py) keeps (1, 2): the full-resolution map outlines thin defects,
    # the pooled one sees large regions, and their mean did better than either (benchmarks/README.md, session 22).
    map_strides: Tuple[int, ...] = ()


def seg_checks(s: SegConfig) -> List[Tuple[bool, str]]:
    """(ok, message) per field; the image size's divisibility is ModelConfig's (it needs the size)."""
    return [
        (s.stride in SEG_STRIDES, f"seg.stride={s.stride} must be one of {SEG_STRIDES}"),
        (s.map_strides == () or (len(set(s.map_strides)) == len(s.map_strides) >= 2
                                 and all(m in SEG_STRIDES for m in s.map_strides)),
         f"seg.map_strides={s.map_strides} must be () (the map at seg.stride) or two or more different strides "
         f"of {SEG_STRIDES}"),
        (len(s.widths) >= 2 and all(w > 0 for w in s.widths), f"seg.widths={s.widths} needs >= 2 positive widths"),
    ]
