"""Fit a classical baseline on the good images of a category (MVTec, VisA or DAGM layout): what
`dad-edge baseline` runs.

    path = fit_baseline("my_part", "iforest", "runs/if")      # -> runs/if/baseline.safetensors
    dad-edge eval runs/if/baseline.safetensors --data my_part  # the metrics every model gets

Every normal training image (MVTec: train/good) is used (no validation split: nothing is selected or thresholded).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from dad_edge.baselines.artifact import FILE_NAME, save_baseline
from dad_edge.baselines.base import fit_library
from dad_edge.baselines.features import DEFAULT_SIZE, PixelFeatures, check_shape, downsample
from dad_edge.baselines.methods import method_class
from dad_edge.data.imageio import read_image
from dad_edge.data.layouts import open_category
from dad_edge.data.mvtec import detect_channels
from dad_edge.errors import ConfigError, DataError

# Below this, per-pixel statistics are mostly noise and COPOD's tail probabilities cannot go
# under 1 / (n + 1), i.e. even an image unlike any seen scores little more than a normal one.
MIN_TRAIN_IMAGES = 10


@dataclass
class FitReport:
    path: Path
    method: str
    num_images: int
    image_size: int
    channels: int
    read_seconds: float  # decode + downsample every training image
    fit_seconds: float  # standardise + fit the detector


def output_path(out_dir) -> Path:
    """out_dir/baseline.safetensors; ConfigError, before any image is read, if out_dir or a folder above
    it is a file."""
    out = Path(out_dir)
    for folder in (out, *out.parents):
        if folder.is_file():
            raise ConfigError(f"--out {out}: {folder} is a file; the baseline is written into a folder "
                              f"({FILE_NAME}): give a folder")
    return out / FILE_NAME


def fit_baseline(data_root, method: str, out_dir, image_size: int = DEFAULT_SIZE, channels: Optional[int] = None,
                 seed: int = 0) -> FitReport:
    """Fit `method` on the normal training images of data_root and write out_dir/baseline.safetensors.

    channels None: gray unless the first images have colour (as `dad-edge train`)."""
    cls = method_class(method)
    check_shape(image_size, 1 if channels is None else channels)
    path = output_path(out_dir)
    samples = open_category(data_root).train_samples()
    if len(samples) < MIN_TRAIN_IMAGES:
        raise DataError(f"{data_root}: {len(samples)} images of good parts to fit on; a baseline needs at least "
                        f"{MIN_TRAIN_IMAGES} normal training images")
    if channels is None:
        channels = detect_channels(samples)
    t0 = time.perf_counter()
    # One image decoded at a time: only the (N, D) downsampled pixels stay in memory. Files decode as RGB.
    raw = np.concatenate([downsample([read_image(s.path)], image_size, channels, "RGB") for s in samples])
    if cls.fit_module:
        fit_library(cls.fit_module)  # imported before the clock: not part of the fit
    t1 = time.perf_counter()
    features = PixelFeatures.from_raw(raw, image_size, channels)
    detector = cls.fit(features.standardise(raw), seed=seed)
    t2 = time.perf_counter()
    training = {"data": str(Path(data_root).resolve()), "num_images": len(samples), "seed": seed,
                "read_seconds": round(t1 - t0, 3), "fit_seconds": round(t2 - t1, 3)}
    save_baseline(path, features, detector, training)
    return FitReport(path, cls.name, len(samples), image_size, channels, t1 - t0, t2 - t1)
