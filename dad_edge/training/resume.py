"""`--resume`: an interrupted run goes on with the recipe it was started with.

The recipe's defaults change between versions of the library (the learning-rate schedule, the input
gain's choice) and with the data (`--input-gain auto`). A resumed run that filled its unset options
from today's defaults would change its schedule or its model half-way, or be refused for a model
config that differs from its own state. So every recipe option the user leaves unset on `--resume`
is taken from the state file's record (training.recipe, and the model's input gain); an option the
user sets still wins, and the model-config check in Trainer.load_state still refuses a real clash.
"""
from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Dict

from dad_edge.artifacts.checkpoint import read_metadata
from dad_edge.artifacts.metadata import model_config
from dad_edge.training.options import TrainOptions
from dad_edge.training.recipe import UNUSED_BY_METHOD, Recipe

STATE_FILE = "train_state.safetensors"  # the run folder's resumable state (training/train.py)
# Recipe fields a resumed run keeps; processes is left out (how many processes run is this start's choice).
KEPT = tuple(f.name for f in fields(Recipe) if f.name != "processes")
# Those each method keeps: not the fields its training does not use (recipe.UNUSED_BY_METHOD), whose options it refuses.
KEPT_BY_METHOD = {method: tuple(name for name in KEPT if name not in unused)
                  for method, unused in UNUSED_BY_METHOD.items()}


def resumed_options(opts: TrainOptions) -> TrainOptions:
    """opts with its unset recipe options (and `--input-gain auto`) taken from the run it resumes.

    Unchanged when opts.resume is off or there is no state file yet (load_state then says so)."""
    path = Path(opts.out) / STATE_FILE
    if not opts.resume or not path.is_file():
        return opts
    meta = read_metadata(path)
    training = meta.get("training", {})
    if training.get("options", {}).get("preset", opts.preset) != opts.preset:
        return opts  # another network altogether: Trainer.load_state refuses it by name
    recipe = dict(training.get("recipe", {}))
    # What the model itself records wins for the fields it carries: a state written before a field
    # joined the recipe record still says what its networks are.
    cfg = model_config(meta)
    if not opts.model_overrides.get("method"):  # not today's default method: the run's own
        opts = replace(opts, model_overrides={**opts.model_overrides, "method": cfg.method})
    if cfg.method in ("diffusionad", "seg"):
        recipe.setdefault("line_prob", 0.0)  # a run started before line anomalies joined the recipe drew none
        recipe.setdefault("full_res_fraction", 0.0)  # nor a switch to full resolution (training/full_resolution.py)
        recipe.update(image_size=cfg.image_size, recon_weight=cfg.recon_weight, exposure_correction=cfg.exposure_correction)
        if not recipe["full_res_fraction"] > 0:  # else a state written after the switch records stride 1, not the recipe's
            recipe["seg_stride"] = cfg.seg.stride
    gain_unset = opts.input_gain in (None, "auto") and "input_gain" not in opts.model_overrides
    if not gain_unset:  # the user's gain decides the exposure correction too (training/brightness.py)
        recipe.pop("exposure_correction", None)
    kept = KEPT_BY_METHOD[cfg.method]
    changes: Dict[str, Any] = {name: recipe[name] for name in kept if name in recipe and getattr(opts, name) is None}
    if cfg.method != "recon" and gain_unset:
        changes["input_gain"] = cfg.input_gain if cfg.input_gain > 0 else "off"
    return replace(opts, **changes).validate()
