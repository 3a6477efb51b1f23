"""The segmentation net's last share of training at full resolution (Recipe.full_res_fraction).

On a CPU the net reads its input pooled by 2 (Recipe.seg_stride): a step costs about a quarter, so it trains
several times the epochs in a budget, but its map is up-sampled from half resolution and thin defects
(cracks a pixel or two wide) are averaged away. Pooling adds no parameters: the same weights run at stride 1.
So the pooled net trains for most of the budget, and the last `full_res_fraction` of it goes on at stride 1
with the same weights, optimizer and weight average. The saved model's map is the mean of the net's maps at
stride 1 and at the pooled stride (SegConfig.map_strides): the full-resolution map outlines thin defects, the
pooled one sees large regions. On magnetic tile (three seeds, benchmarks/README.md, session 22) the seg
method's AU-PRO rose from 0.686 to 0.760 with that map; the stride-1 map alone reached 0.749 but lost 0.046
of pixel AUROC (large `uneven` regions), which the mean gives back but for 0.010; the 30-minute aim command with this
switch inside the run (session 23, three seeds): AU-PRO 0.772, +0.086 on stride 2 throughout, pixel AUROC -0.019.

Selection restarts at the switch: a validation loss at stride 2 says nothing of the net at stride 1, and the
model saved must be one that runs at the resolution its config records.
"""
from __future__ import annotations

import dataclasses
import math

from dad_edge.model.config import ModelConfig


def pooled_until(cfg: ModelConfig, full_res_fraction: float) -> float:
    """The fraction of the budget after which the net trains at stride 1 (1.0: never, nothing to switch)."""
    if cfg.seg is None or cfg.seg.stride == 1 or full_res_fraction <= 0:
        return 1.0
    return 1.0 - full_res_fraction


def at_full_resolution(cfg: ModelConfig) -> ModelConfig:
    """cfg with its segmentation net at stride 1 and its map the mean of the maps at stride 1 and the pooled stride."""
    return cfg.replace(seg=dataclasses.replace(cfg.seg, stride=1, map_strides=(1, cfg.seg.stride)))


def follow(trainer, progress: float) -> None:
    """Switch `trainer` (training/train.py Trainer) to full resolution once `progress` of its budget is done."""
    limit = pooled_until(trainer.cfg, trainer.recipe.full_res_fraction)  # 1.0 once switched
    if limit < 1.0 and progress >= limit:
        switch(trainer)
        trainer.best_val = math.inf  # selection among the full-resolution epochs only


def switch(trainer) -> None:
    """The model, its config and the trainer's config at stride 1 (weights unchanged)."""
    trainer.cfg = at_full_resolution(trainer.cfg)
    trainer.model.cfg = trainer.cfg
    trainer.model.segnet.stride, trainer.model.segnet.map_strides = 1, trainer.cfg.seg.map_strides


def match_stored(trainer, stored: ModelConfig) -> None:
    """Resume: a state written after the switch holds the switched config; the rebuilt trainer switches too."""
    if (pooled_until(trainer.cfg, trainer.recipe.full_res_fraction) < 1.0
            and stored == at_full_resolution(trainer.cfg)):
        switch(trainer)
