"""Why crack image AUROC stays low while cracks are found inside their images: for one model, the deployed
image score (top-k) of good and crack images, and the map's value inside the crack against the good images'
scores. Session 18 screening script (not a test):
    OMP_NUM_THREADS=1 python benchmarks/results/cpu-2026-12-05-s18/crack_score_check.py MODEL --data ../shared/data/magnetic_tile
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from learning_curve import load_frames, maps_of  # noqa: E402

from dad_edge.artifacts.checkpoint import load_model  # noqa: E402
from dad_edge.data.mvtec import MVTecCategory, load_masks  # noqa: E402
from dad_edge.training.metrics import compute_metrics  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("model", type=Path)
p.add_argument("--data", type=Path, required=True)
a = p.parse_args()
model, _ = load_model(a.model)
model.eval()
samples = [s for s in MVTecCategory(a.data).test_samples() if s.defect_type in ("good", "crack")]
frames = load_frames([s.path for s in samples])
masks = load_masks(samples, model.cfg.image_size) != 0
full, _, scores = maps_of(model, frames)
good = np.array([s.label == 0 for s in samples])
crack = ~good
area = masks[crack].reshape(crack.sum(), -1).mean(axis=1)
inside_max = np.array([full[i][masks[i]].max() for i in np.flatnonzero(crack)])
outside_max = np.array([full[i][~masks[i]].max() for i in np.flatnonzero(crack)])
q = lambda v: " / ".join(f"{x:.3f}" for x in np.quantile(v, [0.1, 0.5, 0.9]))
print(f"{a.model}: {good.sum()} good, {crack.sum()} crack images; crack area {q(area)} of the image (p10 / median / p90)")
print(f"image score, good:                {q(scores[good])}")
print(f"image score, crack:               {q(scores[crack])}")
print(f"map max inside the crack:         {q(inside_max)}")
print(f"map max outside it (same images): {q(outside_max)}")
print(f"map max of good images:           {q(full[good].reshape(good.sum(), -1).max(axis=1))}")
print(f"crack images whose in-crack max exceeds the good images' median score: {(inside_max > np.median(scores[good])).mean():.2f}")
labels = np.array([s.label for s in samples])
types = [s.defect_type for s in samples]
maxes = full.reshape(len(full), -1).max(axis=1)
oracle = maxes.copy()
oracle[crack] = inside_max  # the crack's own peak; good images keep their peak anywhere
for name, sc in (("deployed top-k score", scores), ("map max", maxes), ("max inside the mask (oracle location)", oracle)):
    print(f"crack image AUROC by {name}: {compute_metrics(labels, sc, masks, full, types)['image_auroc']:.3f}")
