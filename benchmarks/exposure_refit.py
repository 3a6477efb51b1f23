"""Add the image score's exposure correction to a checkpoint trained without it, as training would have.

    python benchmarks/exposure_refit.py R/model.safetensors R/model_exposure.safetensors
    dad-edge eval R/model_exposure.safetensors --data ../shared/data/magnetic_tile

For measuring model/exposure_term.py on models that exist (benchmarks/README.md, session 13) without
retraining them: the networks are the checkpoint's, bit for bit; the run's own held-out good images
(its data folder, seed and val fraction, read from the checkpoint's training record: the same split
training made) fit the correction exactly as a save during training does
(training/map_statistics.calibrate_exposure_term, after the reconstruction term's statistics, which
are kept as stored), and the thresholds are set again on them, so the new file is what a run with the
correction would have written. The test split is never read.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from dad_edge.artifacts import metadata as md
from dad_edge.artifacts.checkpoint import load_model, save_model
from dad_edge.data.imageio import read_image
from dad_edge.data.layouts import open_category
from dad_edge.data.mvtec import load_images
from dad_edge.model.build import build_model
from dad_edge.runtime.detector import Detector
from dad_edge.training.map_statistics import calibrate_exposure_term
from dad_edge.training.thresholds import detector_thresholds


def refit(source: Path, out: Path, data=None) -> dict:
    model, meta = load_model(source, device="cpu")
    record = meta.get("training") or {}
    options = record.get("options") or {}
    data = Path(data or record.get("data") or options.get("data") or "")
    if not data.is_dir():
        raise SystemExit(f"{source}: its training data folder {str(data)!r} is not here; pass --data DIR")
    seed, fraction = int(options.get("seed", 0)), float(options.get("val_fraction", 0.1))
    quantile = float(options.get("threshold_quantile", 0.99))
    cfg = dataclasses.replace(model.cfg, exposure_correction=True)
    corrected = build_model(cfg).eval()
    missing, unexpected = corrected.load_state_dict(model.state_dict(), strict=False)
    if unexpected or set(missing) - {"exposure_term.coef"}:
        raise SystemExit(f"{source}: unexpected tensors {unexpected} / missing {missing}")
    _, val = open_category(data).train_val_split(fraction, seed)
    images = load_images(val, cfg.image_size, cfg.channels)
    fit = calibrate_exposure_term(corrected, images, torch.device("cpu"), batch_size=16)
    with Detector.from_module(corrected, color_order="RGB", batch_size=16) as det:
        thresholds = detector_thresholds(det, [read_image(s.path) for s in val], quantile)
    training = {**record, "exposure_fit": fit, "exposure_refit_from": str(source)}
    save_model(out, corrected, md.build_metadata(cfg, thresholds=thresholds, training=training))
    return fit


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a DiffusionAD checkpoint (.safetensors)")
    parser.add_argument("out", type=Path, help="where to write the checkpoint with the correction")
    parser.add_argument("--data", type=Path, help="the training data folder, where the record's is not here")
    args = parser.parse_args(argv)
    fit = refit(args.model, args.out, args.data)
    print(f"{args.out}: slope {fit['slope']:.5f} per unit of the input's mean ({'kept' if fit['kept'] else 'not kept'}; "
          f"r {fit['r']:.3f}, t {fit['t']:.2f}, {fit['images']} held-out good images)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
