"""The options of a training run: what `dad-edge train` parses, validated before any data is read."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch

from dad_edge.data.augment import parse_augment
from dad_edge.errors import ConfigError
from dad_edge.model.config import ModelConfig, preset
from dad_edge.training.brightness import parse_input_gain
from dad_edge.training.recipe import UNUSED_BY_METHOD, Recipe, default_method, resolve_recipe


# The denoiser's recipe options, which a --method seg run refuses (and a resumed one does not take back).
SEG_REFUSED = UNUSED_BY_METHOD["seg"]


def resolve_device(name: str) -> torch.device:
    """"auto": CUDA where torch sees a GPU, else the CPU; any other name as given."""
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


@dataclass
class TrainOptions:
    data: str
    out: str
    preset: str = "compact"
    image_size: Optional[int] = None  # None: the recipe's for the device (training/recipe.py)
    channels: Optional[int] = None  # None: detected from the data (1 if all gray)
    epochs: Optional[int] = None  # at least one of epochs / minutes must be set
    minutes: Optional[float] = None
    # None: the default recipe for the preset and device (training/recipe.py), recorded in the checkpoint.
    batch_size: Optional[int] = None
    lr_unet: Optional[float] = None
    lr_seg: Optional[float] = None
    lr_schedule: Optional[str] = None  # "cosine" | "constant"
    warmup_fraction: Optional[float] = None
    ema_decay: Optional[float] = None  # 0: off
    channels_last: Optional[bool] = None
    large_target: Optional[str] = None  # "noise" | "clean" (training/recipe.py LARGE_TARGETS)
    seg_stride: Optional[int] = None  # the segmentation net's input pooling (SegConfig.stride); None: the recipe's
    recon_weight: Optional[float] = None  # the map's reconstruction-error term (ModelConfig.recon_weight); None: the recipe's
    exposure_correction: Optional[bool] = None  # the score's exposure correction (ModelConfig.exposure_correction); None: the recipe's
    input_gain: Union[None, str, float] = None  # 'auto' (None), 'off' or a mean brightness (training/brightness.py)
    processes: Optional[Union[int, str]] = None  # CPU training processes, N or 'auto' (training/processes.py); None: 1
    seed: int = 0
    val_fraction: float = 0.1
    select: str = "val"  # "val": lowest validation loss; "last": the last epoch
    device: str = "auto"
    amp: bool = True  # mixed precision on CUDA and on CPUs with AMX (training/precision.py)
    texture_dir: Optional[str] = None
    foreground: Optional[str] = None
    anomaly_prob: float = 0.5
    band_prob: float = 0.0  # share of anomalies that are a large band with a changed finish (data/synthetic.py)
    patch_prob: float = 0.0  # share of anomalies that are another good image's patch, Poisson-blended (data/poisson_patch.py)
    line_prob: Optional[float] = None  # share of anomalies that are thin lines (data/line_anomaly.py); None: the recipe's
    full_res_fraction: Optional[float] = None  # last share of the budget at seg stride 1 (training/full_resolution.py); None: the recipe's
    augment: str = "none"  # views of the good images that are good parts too: "none" or e.g. "hflip,vflip" (data/augment.py)
    threshold_quantile: float = 0.99
    resume: bool = False
    progress: bool = True
    workers: Optional[int] = None  # threads making synthetic anomalies; None: 0 on CPU, up to 8 on CUDA
    snapshot_minutes: Optional[float] = None  # also write snapshots/model_<M>min.safetensors every M minutes
    model_overrides: Dict[str, Any] = field(default_factory=dict)  # other top-level ModelConfig fields

    def validate(self) -> "TrainOptions":
        if self.epochs is None and self.minutes is None:
            raise ConfigError("set --epochs or --minutes (or both) to say when training stops")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs={self.epochs} must be >= 1")
        if self.minutes is not None and self.minutes <= 0:
            raise ConfigError(f"minutes={self.minutes} must be > 0")
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out}: is a file; the run writes a folder there (model.safetensors, "
                              "train_state.safetensors, ...): pass a new or existing folder")
        blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ConfigError(f"--out {out}: {blocking} is a file, so the folder cannot be made there; "
                              "pass a path under a folder")
        if self.snapshot_minutes is not None and not self.snapshot_minutes > 0:
            raise ConfigError(f"snapshot_minutes={self.snapshot_minutes} must be > 0")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device={self.device!r} must be auto, cpu, cuda or cuda:N")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={self.device!r} asked for but torch sees no CUDA device")
        chosen = self.with_method(resolve_device(self.device).type)
        chosen.recipe("cpu")  # the recipe's own checks (batch size, rates, schedule, EMA)
        method = chosen.model_config(3).method  # the preset and overrides (e.g. --backbone), before any data is read
        if method == "recon":
            self._check_recon()
        elif method == "seg":
            self._check_seg()
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction={self.val_fraction} must be in (0, 1): selection needs held-out data")
        if self.select not in ("val", "last"):
            raise ConfigError(f"select={self.select!r} must be 'val' or 'last'")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers={self.workers} must be >= 0 (0: make batches in the training thread)")
        self.augment = ",".join(parse_augment(self.augment)) or "none"  # checked, and recorded in one spelling
        parse_input_gain(self.input_gain)
        if not 0.5 <= self.threshold_quantile < 1:
            raise ConfigError(f"threshold_quantile={self.threshold_quantile} must be in [0.5, 1)")
        return self

    def _check_recon(self) -> None:
        """The recon method trains a plain DDPM on the good images: options of the synthetic anomalies and
        of the segmentation net would do nothing, so they are refused rather than ignored."""
        for name, default in (("texture_dir", None), ("foreground", None), ("anomaly_prob", 0.5), ("band_prob", 0.0),
                              ("patch_prob", 0.0), ("line_prob", None), ("full_res_fraction", None),
                              ("lr_seg", None), ("large_target", None), ("seg_stride", None),
                              ("recon_weight", None), ("exposure_correction", None), ("input_gain", None)):
            if getattr(self, name) != default and not (name == "input_gain" and self.input_gain in ("auto", "off")):
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)} does not apply to --method recon "
                                  "(a plain DDPM on the good images: no synthetic anomalies, no segmentation net); "
                                  "leave it out")

    def _check_seg(self) -> None:
        """The seg method has no denoiser: its options are refused rather than ignored."""
        for name in SEG_REFUSED:
            if getattr(self, name) is not None:
                raise ConfigError(f"--{name.replace('_', '-')} {getattr(self, name)} does not apply to --method seg "
                                  "(the segmentation net alone: no denoiser, no reconstruction); leave it out")
        if "backbone" in self.model_overrides:
            raise ConfigError(f"--backbone {self.model_overrides['backbone']} does not apply to --method seg "
                              "(no denoiser); leave it out")

    def method(self, device_type: str) -> str:
        """The detection method: --method's, else the default for the preset on `device_type`
        (recipe.default_method: seg for compact / tiny on a CPU unless a denoiser option is set)."""
        given = self.model_overrides.get("method")
        if given:
            return given
        asked = any(getattr(self, name) is not None for name in SEG_REFUSED) or any(
            key in self.model_overrides for key in ("backbone", "recon"))
        return default_method(self.preset, device_type, asked)

    def with_method(self, device_type: str) -> "TrainOptions":
        """These options with the method named (model_overrides["method"]): what the run trains and records."""
        return replace(self, model_overrides={**self.model_overrides, "method": self.method(device_type)})

    def method_line(self, device_type: str) -> str:
        """What a run says of its method as it starts (after with_method)."""
        method = self.method(device_type)
        if method == "seg" == default_method(self.preset, device_type):
            return (f"method seg: the segmentation net alone, the default for {self.preset} on a CPU "
                    "(--method diffusionad adds the denoiser; training/recipe.py says why)")
        return f"method {method}"

    def recipe(self, device_type: str, data_side: Optional[int] = None, num_images: Optional[int] = None) -> Recipe:
        """The default recipe for this preset on `device_type` (and images of about `data_side`
        pixels), with every option set here in its place."""
        return resolve_recipe(
            self.preset, preset(self.preset).image_size, device_type, data_side, num_images, image_size=self.image_size,
            batch_size=self.batch_size, lr_unet=self.lr_unet, lr_seg=self.lr_seg, lr_schedule=self.lr_schedule,
            warmup_fraction=self.warmup_fraction, ema_decay=self.ema_decay, channels_last=self.channels_last,
            large_target=self.large_target, seg_stride=self.seg_stride, processes=self.processes,
            recon_weight=self.recon_weight, exposure_correction=self.exposure_correction, line_prob=self.line_prob,
            full_res_fraction=self.full_res_fraction, method=self.method(device_type))

    def model_config(self, channels: int, image_size: Optional[int] = None,
                     seg_stride: Optional[int] = None, recon_weight: Optional[float] = None,
                     exposure_correction: Optional[bool] = None) -> ModelConfig:
        """The preset with the overrides; image_size, seg_stride, recon_weight and exposure_correction (the
        recipe's) where no override sets them."""
        changes = dict(self.model_overrides)
        changes["channels"] = channels
        size = image_size or self.image_size
        if size is not None and "image_size" not in changes:
            changes["image_size"] = size
        # DiffusionAD's settings (a recon model has no segmentation net to pool for, no map or score terms):
        # the recipe's value given here, else this run's option, unless an override sets it.
        for name, recipe_value in (("seg_stride", seg_stride), ("recon_weight", recon_weight),
                                   ("exposure_correction", exposure_correction)):
            value = recipe_value if recipe_value is not None else getattr(self, name)
            method = changes.get("method", "diffusionad")  # a seg model has no reconstruction to add to its map
            if value is not None and name not in changes and method != "recon" and not (
                    method == "seg" and name == "recon_weight"):
                changes[name] = value
        return preset(self.preset, **changes)
