"""Learning curves and scoring ablations: every snapshot of a training run, evaluated on the test split.

For the report only: selection (checkpoint, thresholds) never sees the test set; the snapshots are
written by `dad-edge train --snapshot-minutes M` and this script reads them afterwards.

Each snapshot is scored three ways from one pass of its networks (same pre-processing as the
Detector, maps at the model's resolution as `dad-edge eval` reports them):
  full   the model's own map (segmentation net on cat(x, x0_ng), with its reconstruction-error term when
         the model has one) and top-k score, less the exposure correction when the model has one: the
         deployed output
  recon  reconstruction error alone: mean over channels of |x - x0_ng|, Gaussian-smoothed (sigma 2 px),
         top-k score
  mixed  full * (1 + recon / r99), r99 the 99th percentile of the recon map on training images:
         the segmentation map, sharpened where the reconstruction disagrees
A model of another method (`--method seg`: no denoiser; `--method recon`: no segmentation net) has
its deployed map and score (its own forward) as "full" and no "recon" / "mixed" rows (null in the JSON).
The full row of the run's final model is checked against `evaluate_model` (the Detector path).

    python benchmarks/learning_curve.py runs/a runs/b --data ../shared/data/magnetic_tile \
        --out benchmarks/results/learning_curve/NAME.json
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from dad_edge.artifacts.checkpoint import load_model
from dad_edge.data.imageio import read_image
from dad_edge.data.mvtec import MVTecCategory, load_masks
from dad_edge.model.diffusion_ad import gaussian_kernel
from dad_edge.model.recon_term import reconstruction_error
from dad_edge.runtime import ops
from dad_edge.training.localisation import add_in_image_auroc, in_image_auroc
from dad_edge.training.metrics import compute_metrics

SCORINGS = ("full", "recon", "mixed")
RECON_SIGMA = 2.0
NORM_IMAGES = 48  # training images that set the recon map's scale for "mixed"


def snapshot_minutes(path: Path) -> float:
    m = re.match(r"model_([0-9.]+)min", path.stem)
    return float(m.group(1)) if m else float("inf")


def snapshots(run: Path) -> List[Path]:
    found = sorted((run / "snapshots").glob("model_*min*.safetensors"), key=lambda p: (snapshot_minutes(p), p.stem))
    return found + ([run / "model.safetensors"] if (run / "model.safetensors").is_file() else [])


def load_frames(paths) -> List[np.ndarray]:
    return [read_image(p) for p in paths]


@torch.no_grad()
def maps_of(model, frames: List[np.ndarray], batch: int = 32):
    """(full map, recon map) (N, S, S) float32 and the deployed image scores (N,) for RGB/gray frames,
    as the model sees them."""
    cfg = model.cfg
    taps = gaussian_kernel(RECON_SIGMA)
    full, recon, scores = [], [], []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(ops.preprocess(frames[i:i + batch], cfg.image_size, cfg.channels, "RGB"))
        if cfg.method != "diffusionad":  # no x0_ng to take apart: the deployed forward, nothing else
            out = model(x)
            full.append(out.anomaly_map[:, 0].numpy())
            scores.append(out.score.numpy())
            continue
        x = model.normalise_input(x)  # the model's input gain, when it has one (model/input_gain.py)
        b = x.shape[0]
        t_s = torch.full((b,), cfg.t_small, dtype=torch.long)
        t_l = torch.full((b,), cfg.t_large, dtype=torch.long)
        rec = model.reconstruct(x, t_s, t_l, model.noise[0], model.noise[1])
        m = torch.sigmoid(rec.seg_logits)
        if getattr(model, "recon_term", None) is not None:  # the deployed map's reconstruction-error term
            m = model.recon_term(m, torch.cat([x, rec.x0_guided], dim=1))
        if model.smoothing is not None:
            m = model.smooth(m)
        full.append(m[:, 0].numpy())
        score = torch.from_numpy(top_k_scores(full[-1], cfg.top_k))
        if getattr(model, "exposure_term", None) is not None:  # the score less its brightness slope
            score = model.exposure_term(score, x)
        scores.append(score.numpy())
        r = reconstruction_error(x, rec.x0_guided, taps)
        recon.append(r[:, 0].numpy())
    return np.concatenate(full), (np.concatenate(recon) if recon else None), np.concatenate(scores)


def top_k_scores(maps: np.ndarray, k: int) -> np.ndarray:
    flat = maps.reshape(len(maps), -1)
    return np.sort(flat, axis=1)[:, -k:].mean(axis=1)


def summary(metrics: Dict) -> Dict[str, float]:
    keys = ("image_auroc", "pixel_auroc", "au_pro", "pixel_ap", "f1_max")
    out = {k: metrics[k] for k in keys}
    out["per_type_pixel_auroc"] = {t: v["pixel_auroc"] for t, v in metrics["per_type"].items()}
    out["per_type_image_auroc"] = {t: v["image_auroc"] for t, v in metrics["per_type"].items()}
    # Each defect image's own pixel AUROC: does the map find the defect at all (training/localisation.py)
    out["pixel_auroc_in_image"] = metrics["pixel_auroc_in_image"]
    out["per_type_pixel_auroc_in_image"] = {t: v["pixel_auroc_in_image"] for t, v in metrics["per_type"].items()}
    return out


def evaluate_snapshot(path: Path, test, masks, norm_frames) -> Dict:
    model, meta = load_model(path)
    model.eval()
    k = model.cfg.top_k
    full, recon, full_scores = maps_of(model, test["frames"])
    mixed = None
    if recon is not None:
        _, recon_train, _ = maps_of(model, norm_frames)
        r99 = float(np.quantile(recon_train, 0.99)) or 1.0
        mixed = full * (1.0 + recon / r99)
    row = {"file": str(path), "method": model.cfg.method,
           "training": {key: meta["training"].get(key) for key in
                        ("epochs", "steps", "train_seconds", "snapshot_minutes", "weights")}}
    for name, maps in (("full", full), ("recon", recon), ("mixed", mixed)):
        if maps is None:
            row[name] = None
            continue
        scores = full_scores if name == "full" else top_k_scores(maps, k)
        if name == "full":
            row["full_scores"] = scores
        metrics = compute_metrics(test["labels"], scores, masks, maps, test["types"])
        add_in_image_auroc(metrics, in_image_auroc(masks, maps), test["types"])
        row[name] = summary(metrics)
    return row


def check_against_detector(path: Path, data: Path, row: Dict) -> float:
    """Largest |score difference| between this script's full scores and `dad-edge eval`'s."""
    from dad_edge.training.evaluate import predict_test_set
    from dad_edge.runtime.detector import Detector

    with Detector(str(path), device="cpu") as det:
        preds = predict_test_set(det, MVTecCategory(data).test_samples())
    return float(np.abs(preds.scores - row["full_scores"]).max())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="JSON with every row")
    p.add_argument("--every", type=int, default=1, help="evaluate every N-th snapshot (the final model always)")
    p.add_argument("--last-only", action="store_true", help="only the last snapshot (and the final model)")
    p.add_argument("--weights", choices=("all", "last", "average"), default="all",
                   help="which snapshots of an EMA run to evaluate (file suffix _ema = average)")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    category = MVTecCategory(args.data)
    samples = category.test_samples()
    test = {"frames": load_frames([s.path for s in samples]), "labels": np.array([s.label for s in samples]),
            "types": [s.defect_type for s in samples]}
    train_samples, _ = category.train_val_split(0.1, 0)
    norm_frames = load_frames([s.path for s in train_samples[:NORM_IMAGES]])
    rows = []
    for run in args.runs:
        paths = snapshots(run)
        if args.weights != "all":
            paths = [q for q in paths if q.stem.endswith("_ema") == (args.weights == "average")
                     or q.name == "model.safetensors"]
        plain = [q for q in paths if q.name != "model.safetensors"]
        chosen = (plain[-1:] if args.last_only else plain[::args.every]) + \
            [q for q in paths if q.name == "model.safetensors"]
        masks_cache = {}
        for path in chosen:
            t0 = time.time()
            model_size = load_model(path)[0].cfg.image_size
            if model_size not in masks_cache:
                masks_cache[model_size] = load_masks(samples, model_size)
            row = evaluate_snapshot(path, test, masks_cache[model_size], norm_frames)
            row["run"] = run.name
            if path.name == "model.safetensors":
                row["max_abs_score_diff_vs_detector"] = check_against_detector(path, args.data, row)
            row.pop("full_scores")
            rows.append(row)
            f = row["full"]
            tr = row["training"]
            print(f"{run.name:>16} {path.stem:>22} ep {tr['epochs']:>3} steps {tr['steps']!s:>5} | "
                  + " | ".join(f"{name} " + (f"{m['image_auroc']:.3f} {m['pixel_auroc']:.3f} {m['au_pro']:.3f}"
                                             if m is not None else "-")
                               for name, m in ((s, row[s]) for s in SCORINGS))
                  + " | in image "
                  + " ".join(f"{t} {v:.3f}" for t, v in f["per_type_pixel_auroc_in_image"].items() if v is not None)
                  + f" ({time.time() - t0:.0f} s)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
