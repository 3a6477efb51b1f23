"""`--input-gain`: whether a run scales every frame to one brightness (ModelConfig.input_gain), decided
from its good training images.

"auto" (the default) turns the gain normalisation (model/input_gain.py) on where the good parts
themselves come in several brightnesses: when the spread of their mean grey, relative to its mean (the
coefficient of variation), is at least GAIN_VARIATION. There brightness tells nothing about defects, and
the networks would otherwise answer to it (magnetic tile: 0.30 over six lighting conditions; the score
of a good image followed its brightness). Where the good images are evenly lit (the demo's brick: 0.013)
it stays off, so a part that is too dark or too bright as a whole is still seen. The reference is the
good images' mean brightness, so a typical frame is not changed at all. The choice and the figures it
was made on are recorded in the checkpoint (training.input_gain).

With the gain on, the score's exposure correction (model/exposure_term.py) has nothing left to fit:
the recipe's correction is turned off, and asking for both is refused.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from dad_edge.errors import ConfigError

GAIN_VARIATION = 0.1  # the coefficient of variation of the good images' mean grey at which "auto" turns it on
SETTINGS = ("auto", "off")


def parse_input_gain(value: Union[None, str, float]) -> Union[str, float]:
    """'auto' (also None), 'off', or a mean brightness in (0, 1) of the pixel range -> that setting."""
    if value is None:
        return "auto"
    if isinstance(value, str) and value.strip().lower() in SETTINGS:
        return value.strip().lower()
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not 0 < number < 1:
        raise ConfigError(f"input_gain={value!r} must be 'auto', 'off' or a mean brightness in (0, 1) of the pixel "
                          "range (e.g. 0.45: every frame scaled to a mean grey of 115)")
    return number


def brightness(images: np.ndarray) -> Tuple[float, float]:
    """Good images (N, S, S, C) pixel values 0..255 -> (mean brightness in [0, 1], coefficient of variation of
    the images' mean brightness)."""
    means = np.asarray(images, np.float64).reshape(len(images), -1).mean(axis=1) / 255.0
    mean = float(means.mean()) if len(means) else 0.0
    return mean, (float(means.std() / mean) if mean > 0 else 0.0)


def choose_input_gain(setting: Union[None, str, float], images: np.ndarray) -> Dict[str, Any]:
    """The input gain for these good images -> {"setting", "brightness_mean", "brightness_cv", "input_gain"}
    (input_gain 0: off)."""
    setting = parse_input_gain(setting)
    mean, cv = brightness(images)
    if setting == "off":
        gain = 0.0
    elif setting == "auto":
        gain = round(mean, 6) if cv >= GAIN_VARIATION and mean > 0 else 0.0
    else:
        gain = float(setting)
    return {"setting": setting, "brightness_mean": round(mean, 6), "brightness_cv": round(cv, 6), "input_gain": gain}


def with_input_gain(cfg, recipe, opts, images: np.ndarray) -> Tuple[Any, Any, Optional[Dict[str, Any]]]:
    """(model config, recipe) of a run with its input gain chosen (choose_input_gain) -> (cfg, recipe, the
    choice to record, or None where there is nothing to choose: a recon model, or a config that sets it).
    DiffusionAD and the segmentation net alone (method "seg") both read the gain-normalised image."""
    if cfg.method == "recon" or "input_gain" in opts.model_overrides:
        return cfg, recipe, None
    choice = choose_input_gain(opts.input_gain, images)
    if choice["input_gain"] == 0:
        return cfg, recipe, choice
    if opts.exposure_correction:
        why = ("you asked for it" if choice["setting"] != "auto" else
               f"auto: the good images' brightness varies by {choice['brightness_cv']:.2f} >= {GAIN_VARIATION}")
        raise ConfigError(f"--exposure-correction on and the input gain ({why}) both take brightness out of the score; "
                          "pass --input-gain off to keep the exposure correction, or leave --exposure-correction out")
    return (cfg.replace(input_gain=choice["input_gain"], exposure_correction=False),
            replace(recipe, exposure_correction=False), choice)
