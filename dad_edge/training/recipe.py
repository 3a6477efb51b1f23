"""The default training recipe: what `dad-edge train --data DIR --minutes N` does with no other flag.

The paper's rates (Adam 1e-4 U-Net, 1e-5 segmentation, constant, 3000 epochs at 256x256) assume
days of GPU time. A CPU run of half an hour sees about 15,000 images, so the defaults depend on the
device: smaller images and larger rates on a CPU, after a short warm-up. A cosine decay over the
whole budget (in epochs or minutes, whichever ends first) is an option (`--lr-schedule cosine`);
it is not the default because on the magnetic-tile learning curves (benchmarks/README.md) the
constant rate was as good or better at CPU budgets: the models are still learning when the
budget ends, and decaying the rate slows them. Every field an option leaves unset is filled here,
and the filled-in
recipe is recorded in the checkpoint (`training.recipe`), so a run says how it was trained.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, List, Optional, Tuple, Union

from dad_edge.errors import ConfigError
from dad_edge.model.config import PRESETS, SEG_STRIDES
from dad_edge.training.processes import check_processes, resolve_processes

LR_SCHEDULES = ("cosine", "constant")
# What the large-scale U-Net pass learns on an anomalous sample (normal samples: the drawn noise).
# "noise": nothing (the paper: its noise loss covers normal samples only, so removing anomalies is
# left to the denoiser's prior, which a short run has not formed: |x - x0_ng| stays at chance).
# "clean": the noise that turns x_t back into the clean image, so the large scale learns to remove
# anomalies outright (as DRAEM's reconstruction net does). The small scale always keeps "noise".
# "clean" is the default of the compact and tiny presets: on magnetic tile (30 CPU minutes, seed 0)
# it lifted image AUROC 0.730 -> 0.781 and fray's pixel AUROC 0.61 -> 0.84 (benchmarks/README.md).
LARGE_TARGETS = ("noise", "clean")


@dataclass(frozen=True)
class Recipe:
    image_size: int
    batch_size: int
    lr_unet: float
    lr_seg: float
    lr_schedule: str  # "cosine": warm-up, then cosine to 0 at the end of the budget; "constant": warm-up only
    warmup_fraction: float  # of the budget, linear from 0
    ema_decay: float  # exponential moving average of the weights for validation and the saved model; 0 = off
    channels_last: bool  # NHWC activations: faster convolutions with oneDNN on the CPU
    large_target: str = "noise"  # one of LARGE_TARGETS
    # The segmentation net reads its input pooled by this factor (SegConfig.stride). 2 on a CPU:
    # full-resolution layers with few channels are memory-bound there, and a step is 1.42x faster
    # (benchmarks/profile_train_step.py) at the same or better AUROC per epoch on magnetic tile
    # (benchmarks/README.md, session 6). 1 on CUDA and for the paper presets: not measured there.
    seg_stride: int = 1
    # Training processes on a CPU, each taking a share of every batch (training/processes.py). 1 by
    # default: two single-thread processes were only 1.07x one process with two threads on the 2-core
    # VM (benchmarks/cpu_processes.py; 1.08x for the seg method, session 25). 1 on CUDA (torchrun starts
    # one process per GPU instead).
    processes: int = 1
    # ModelConfig.recon_weight of the trained model: the standardised reconstruction error added to the
    # segmentation map (model/recon_term.py). 0.5 for the compact / tiny presets: on magnetic tile it lifted
    # pixel AUROC and AU-PRO on each of 9 models, image AUROC -0.005 in the mean (benchmarks/README.md,
    # session 10); 0 for the paper presets, which reproduce the paper.
    recon_weight: float = 0.0
    # ModelConfig.exposure_correction of the trained model: the image score less its dependence on the
    # frame's brightness, fitted on the held-out good images and kept only where significant
    # (model/exposure_term.py). On for the compact / tiny presets (benchmarks/README.md, session 13);
    # off for the paper presets, which reproduce the paper, and wherever the data turn the input gain on
    # (training/brightness.py: frames at one brightness leave no slope to fit).
    exposure_correction: bool = False
    # Share of the synthetic anomalies that are thin lines, cracks and scratches (data/line_anomaly.py).
    # LINE_PROB for the compact / tiny presets on a CPU (benchmarks/README.md, session 19); 0 for the paper
    # presets, which keep the paper's anomalies, and on CUDA (not measured there).
    line_prob: float = 0.0
    # With seg_stride > 1: the last fraction of the budget trains the segmentation net at full resolution
    # (stride 1; the weights serve both) and the saved model runs at stride 1 (training/full_resolution.py).
    # FULL_RES_FRACTION for method "seg" with the compact / tiny presets on a CPU (benchmarks/README.md,
    # session 22); 0 elsewhere: for DiffusionAD one seed pair traded pixel AUROC (-0.027) for image AUROC (+0.029,
    # session 23), and on CUDA the stride is 1 already.
    full_res_fraction: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def record(self, method: str) -> Dict[str, Any]:
        """The fields that act in `method`'s training, for the checkpoint: a reader of a seg model's record
        should not find a U-Net rate that trained nothing."""
        return {k: v for k, v in asdict(self).items() if k not in UNUSED_BY_METHOD[method]}


# Recipe fields that do nothing in a method's training: its record leaves them out and its options refuse
# them (options.py). seg has no denoiser; recon has no segmentation net, map terms or synthetic anomalies.
UNUSED_BY_METHOD: Dict[str, Tuple[str, ...]] = {
    "diffusionad": (),
    "seg": ("lr_unet", "large_target", "recon_weight"),
    "recon": ("lr_seg", "large_target", "seg_stride", "recon_weight", "exposure_correction", "line_prob",
              "full_res_fraction"),
}


SIZE_STEP = 32  # every preset's networks take multiples of 32
CPU_SEG_STRIDE = 2  # Recipe.seg_stride of the compact / tiny presets on a CPU


RECON_WEIGHT = 0.5  # Recipe.recon_weight of the compact / tiny presets
# Recipe.ema_decay of the compact / tiny presets on a CPU: the saved model and validation use the weights
# averaged over about the last 200 steps. On magnetic tile (41 epochs, seeds 1 and 2, the same training
# steps with and without it) image AUROC +0.007 / +0.032 and AU-PRO +0.025 / +0.024 (benchmarks/README.md,
# session 15). CUDA runs keep 0: not measured there.
CPU_EMA_DECAY = 0.995
LINE_PROB = 0.3  # Recipe.line_prob of the compact / tiny presets on a CPU
# Recipe.full_res_fraction of method "seg" with the compact / tiny presets on a CPU: two thirds of the budget
# at stride 2 (3.5x the epochs), the last third at full resolution, where thin defects are seen.
FULL_RES_FRACTION = 1 / 3

SMALL_DATA = 256  # fewer training images than this: batches of 8, for twice the optimizer steps

# The detection method of a run that names none (`--method`). On a CPU the compact / tiny presets train the
# segmentation net alone ("seg", model/seg_ad.py): in half an hour the denoiser barely trains and costs 7x the
# epochs. At `dad-edge train --data magnetic_tile --minutes 30` seg reached image / pixel AUROC / AU-PRO
# 0.884 / 0.808 / 0.769 (four seeds) where DiffusionAD reached 0.817 / 0.698 / 0.702 (three seeds, session 15)
# and 0.802 / 0.645 / 0.701 (one seed, session 23); at the demo's budget seg was level or ahead on its bricks, ahead
# in pixel AUROC and AU-PRO on its gravel (image AUROC +0.01 / -0.08, two seeds), and far behind on its grass (image
# AUROC 0.59-0.65 against 0.69-0.74, two seeds; there the pooled net, --full-res-fraction 0, reached 0.87-0.88)
# (benchmarks/README.md, sessions 15-24). The real data decide (issue 12): seg. DiffusionAD everywhere else: on
# CUDA (seg is not measured against it there), for the paper presets (a reproduction) and the DiT ones (a denoiser
# is what they are), and when a run sets an option of the denoiser (its rate, target, reconstruction weight or
# backbone).
SEG_BY_DEFAULT = ("compact", "tiny")


def default_method(preset_name: str, device_type: str, denoiser_asked: bool = False) -> str:
    """The method of a run on `device_type` ("cpu" or "cuda") that sets no --method; denoiser_asked: it
    sets an option only the denoiser takes."""
    if device_type == "cpu" and preset_name in SEG_BY_DEFAULT and not denoiser_asked:
        return "seg"
    return "diffusionad"


def default_recipe(preset_name: str, preset_size: int, device_type: str,
                   data_side: Optional[int] = None, num_images: Optional[int] = None,
                   method: str = "diffusionad") -> Recipe:
    """The recipe for a preset and method on a device ("cpu" or "cuda") when no option overrides it.

    data_side: the typical longer side of the training images; the networks never run larger
    than the images are (upsampling adds cost and no detail), down to 64 pixels.
    num_images: training images; a small set trains in batches of 8 (more steps per minute)."""
    batch = 8 if num_images is not None and num_images < SMALL_DATA else 16
    if data_side is not None:
        preset_size = min(preset_size, max(64, data_side // SIZE_STEP * SIZE_STEP))
    if preset_name in ("paper", "paper-dit"):
        # 131.7 M + 28.4 M parameters: the paper's rates are the stable ones at this width.
        # The paper's objective too (noise target on normal samples only): a reproduction stays one.
        return Recipe(preset_size, batch, 1e-4, 1e-4, "constant", 0.02, 0.0, device_type == "cpu", "noise", 1)
    if device_type == "cpu":
        # 128x128 is what a 2-core CPU trains for enough epochs in half an hour (4x fewer pixels than 256).
        size = min(preset_size, 128)
        return Recipe(size, batch, 1e-3, 1e-3, "constant", 0.02, CPU_EMA_DECAY, True, "clean", CPU_SEG_STRIDE,
                      recon_weight=RECON_WEIGHT, exposure_correction=True, line_prob=LINE_PROB,
                      full_res_fraction=FULL_RES_FRACTION if method == "seg" else 0.0)
    return Recipe(preset_size, batch, 1e-3, 1e-3, "constant", 0.02, 0.0, False, "clean", 1, recon_weight=RECON_WEIGHT,
                  exposure_correction=True)


def resolve_recipe(preset_name: str, preset_size: int, device_type: str, data_side: Optional[int] = None,
                   num_images: Optional[int] = None, image_size: Optional[int] = None,
                   batch_size: Optional[int] = None, lr_unet: Optional[float] = None,
                   lr_seg: Optional[float] = None, lr_schedule: Optional[str] = None,
                   warmup_fraction: Optional[float] = None, ema_decay: Optional[float] = None,
                   channels_last: Optional[bool] = None, large_target: Optional[str] = None,
                   seg_stride: Optional[int] = None, processes: Optional[Union[int, str]] = None,
                   recon_weight: Optional[float] = None, exposure_correction: Optional[bool] = None,
                   line_prob: Optional[float] = None, full_res_fraction: Optional[float] = None,
                   method: str = "diffusionad") -> Recipe:
    """The default recipe with every option the user set (not None) taking its place, validated."""
    base = default_recipe(preset_name, preset_size, device_type, data_side, num_images, method)
    given = dict(image_size=image_size, batch_size=batch_size, lr_unet=lr_unet, lr_seg=lr_seg,
                 lr_schedule=lr_schedule, warmup_fraction=warmup_fraction, ema_decay=ema_decay,
                 channels_last=channels_last, large_target=large_target, seg_stride=seg_stride,
                 recon_weight=recon_weight, exposure_correction=exposure_correction, line_prob=line_prob,
                 full_res_fraction=full_res_fraction)
    recipe = Recipe(**{k: (getattr(base, k) if v is None else v) for k, v in given.items()})
    if seg_stride is None and not seg_stride_fits(preset_name, recipe.image_size, recipe.seg_stride):
        recipe = replace(recipe, seg_stride=1)  # e.g. 96 px: the pooled input would not halve 5 times
    if recipe.seg_stride == 1 and full_res_fraction is None:
        recipe = replace(recipe, full_res_fraction=0.0)  # at full resolution throughout: nothing to switch
    # After the batch size is known: the processes divide it.
    recipe = replace(recipe, processes=resolve_processes(processes, recipe.batch_size, device_type))
    validate_recipe(recipe)
    check_processes(recipe.processes, recipe.batch_size, device_type)
    return recipe


def optimizer_groups(model, recipe: Recipe) -> Tuple[Tuple[float, ...], List[Dict[str, Any]]]:
    """(base rates, Adam's parameter groups): the eps-predictor at lr_unet, the segmentation net at lr_seg;
    a network the model lacks (recon: no segmentation net; seg: no denoiser) has no group."""
    nets = [(net, lr) for net, lr in ((getattr(model, "unet", None), recipe.lr_unet),
                                      (getattr(model, "segnet", None), recipe.lr_seg)) if net is not None]
    return tuple(lr for _, lr in nets), [{"params": net.parameters(), "lr": lr} for net, lr in nets]


def seg_stride_fits(preset_name: str, image_size: int, stride: int) -> bool:
    """Whether the preset's segmentation net can read an image_size input pooled by `stride`."""
    seg = PRESETS[preset_name].seg if preset_name in PRESETS else None
    return seg is None or image_size % (stride * 2 ** (len(seg.widths) - 1)) == 0


def validate_recipe(r: Recipe) -> None:
    checks = [
        (r.batch_size >= 2, f"batch_size={r.batch_size} must be >= 2 (the segmentation net has BatchNorm)"),
        (r.lr_unet > 0 and r.lr_seg > 0, f"learning rates must be > 0 (lr_unet={r.lr_unet}, lr_seg={r.lr_seg})"),
        (r.lr_schedule in LR_SCHEDULES, f"lr_schedule={r.lr_schedule!r} must be one of {LR_SCHEDULES}"),
        (0 <= r.warmup_fraction < 1, f"warmup_fraction={r.warmup_fraction} must be in [0, 1)"),
        (r.large_target in LARGE_TARGETS, f"large_target={r.large_target!r} must be one of {LARGE_TARGETS}"),
        (r.seg_stride in SEG_STRIDES, f"seg_stride={r.seg_stride} must be one of {SEG_STRIDES}"),
        (r.ema_decay == 0 or 0.5 <= r.ema_decay < 1, f"ema_decay={r.ema_decay} must be 0 (off) or in [0.5, 1)"),
        (0 <= r.recon_weight < float("inf"), f"recon_weight={r.recon_weight} must be a number >= 0 (0 = off)"),
        (isinstance(r.exposure_correction, bool), f"exposure_correction={r.exposure_correction!r} must be true or false"),
        (0 <= r.line_prob <= 1, f"line_prob={r.line_prob} must be in [0, 1]"),
        (0 <= r.full_res_fraction < 1, f"full_res_fraction={r.full_res_fraction} must be in [0, 1): the share of the "
                                       "budget at full resolution after the pooled net (0 = off)"),
        (r.full_res_fraction == 0 or r.seg_stride > 1,
         f"full_res_fraction={r.full_res_fraction} switches a pooled segmentation net to full resolution, but this "
         f"run's seg_stride is {r.seg_stride} (full resolution throughout): leave it out, or set --seg-stride 2"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def lr_factor(progress: float, schedule: str, warmup_fraction: float) -> float:
    """Multiplier of the base learning rates at `progress` in [0, 1] of the training budget."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup_fraction > 0 and progress < warmup_fraction:
        return max(progress / warmup_fraction, 1e-3)  # never exactly 0: the first step still moves
    if schedule == "constant":
        return 1.0
    rest = (progress - warmup_fraction) / max(1.0 - warmup_fraction, 1e-12)
    return 0.5 * (1.0 + math.cos(math.pi * rest))
