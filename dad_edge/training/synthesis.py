"""A training run's synthetic anomalies: the synthesizer its options make, and a preview of its samples.

Training (train.py) and `dad-edge train --preview` build the synthesizer here, so a preview shows the
anomalies that training with the same flags draws.
"""
from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np

from dad_edge.data.augment import parse_augment
from dad_edge.data.layouts import open_category
from dad_edge.data.mvtec import detect_channels, load_images
from dad_edge.data.synthetic import AnomalySynthesizer
from dad_edge.errors import ConfigError
from dad_edge.training.batches import sample_key, sample_view
from dad_edge.training.options import TrainOptions


def synthesizer(opts: TrainOptions, size: int, channels: int, images: np.ndarray,
                anomalies: bool = True, line_prob: float = 0.0) -> AnomalySynthesizer:
    """The training run's anomaly synthesizer; bands and patches come from the other `images`.
    line_prob: the recipe's (Recipe.line_prob)."""
    synth = AnomalySynthesizer(size, channels, texture_dir=opts.texture_dir, foreground=opts.foreground,
                               anomaly_prob=opts.anomaly_prob if anomalies else 0.0, band_prob=opts.band_prob,
                               patch_prob=opts.patch_prob, line_prob=line_prob)
    if (opts.band_prob > 0 or opts.patch_prob > 0) and len(images) >= 2:
        synth.use_donors(images)
    return synth


def preview(opts: TrainOptions, n: int) -> List[Path]:
    """Write n synthetic training samples (image beside mask) to out/preview/."""
    from dad_edge.training.train import resolve_device, typical_side  # train.py imports this module
    category = open_category(opts.data)
    samples, _ = category.train_val_split(opts.val_fraction, opts.seed)
    channels = opts.channels or detect_channels(samples)
    device_type = resolve_device(opts.device).type
    opts = opts.with_method(device_type)  # the method the run would train: its recipe's anomalies
    recipe = opts.recipe(device_type, typical_side(samples), len(samples))
    cfg = opts.model_config(channels, recipe.image_size, recipe.seg_stride)
    if cfg.method == "recon":
        raise ConfigError("--preview shows synthetic anomalies; the recon method trains on the good images alone")
    chosen = samples[:n]
    images = load_images(chosen, cfg.image_size, channels)
    synth = synthesizer(opts, cfg.image_size, channels, images, line_prob=recipe.line_prob)
    # With --augment, sample i is taken through the view training draws for image i in its first epoch.
    augment = parse_augment(opts.augment)
    views = [sample_view(augment, sample_key(opts.seed, 0, i % len(chosen))) for i in range(n)] if augment else None
    return synth.preview(images, n, Path(opts.out) / "preview", seed=opts.seed, stems=[s.path.stem for s in chosen],
                         views=views)
