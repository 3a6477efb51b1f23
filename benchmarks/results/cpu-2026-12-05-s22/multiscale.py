"""Screen: the full-resolution-finished seg models' maps at stride 1 (deployed), at stride 2 (same weights), and their mean."""
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "/work/main/benchmarks")
from map_rules import maps_and_inputs, top_k, _with_exposure, scores
from dad_edge.artifacts.checkpoint import load_model
from dad_edge.data.imageio import read_image
from dad_edge.data.layouts import open_category
from dad_edge.data.mvtec import load_masks

category = open_category("/work/shared/data/magnetic_tile")
test = category.test_samples()
frames = [read_image(s.path) for s in test]
labels = np.array([s.label for s in test]); types = np.array([s.defect_type for s in test])
diffs = {}
for path in sys.argv[1:]:
    model, meta = load_model(path)
    k = model.cfg.top_k
    masks = load_masks(test, model.cfg.image_size).astype(np.int64)
    m1, _, seg_in = maps_and_inputs(model, frames)
    model.segnet.stride = 2
    m2, _, _ = maps_and_inputs(model, frames)
    a, b = m1[:, 0].numpy(), m2[:, 0].numpy()
    out = {"stride 1 (deployed)": lambda: (a, top_k(a, k)), "stride 2": lambda: (b, top_k(b, k)),
           "mean 1+2": lambda: ((a + b) / 2, top_k((a + b) / 2, k)), "max 1,2": lambda: (np.maximum(a, b), top_k(np.maximum(a, b), k))}
    res = {}
    for name, rule in _with_exposure(model, out, seg_in).items():
        res[name] = scores(*rule(), labels, masks, types)
        print(f"{path[-40:]:>40} {name:20s} " + " ".join(f"{v:.3f}" for v in res[name]), flush=True)
    for name in res:
        diffs.setdefault(name, []).append(np.subtract(res[name], res["stride 1 (deployed)"]))
print("mean difference to the deployed stride-1 map (image, pixel, AU-PRO, uneven pixel) [min..max]")
for name, d in diffs.items():
    d = np.array(d); print(f"{name:20s} " + " ".join(f"{v:+.3f}" for v in d.mean(0)) + "  [" + " ".join(f"{x:+.3f}..{y:+.3f}" for x, y in zip(d.min(0), d.max(0))) + "]")
