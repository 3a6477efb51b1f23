"""Screen (report only): a seg model's map as the mean over other sets of strides than the deployed (1, 2)."""
import sys
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
SETS = [(1, 2), (1,), (2,), (4,), (1, 2, 4), (2, 4), (1, 4)]
diffs = {}
for path in sys.argv[1:]:
    model, meta = load_model(path)
    k = model.cfg.top_k
    masks = load_masks(test, model.cfg.image_size).astype(np.int64)
    probs = {}
    for s in (1, 2, 4):
        model.segnet.map_strides = (s,)
        m, _, seg_in = maps_and_inputs(model, frames)
        probs[s] = m[:, 0].numpy()
    out = {}
    for st in SETS:
        mp = np.mean([probs[s] for s in st], axis=0)
        out[str(st)] = (lambda mp=mp: (mp, top_k(mp, k)))
    res = {}
    for name, rule in _with_exposure(model, out, seg_in).items():
        res[name] = scores(*rule(), labels, masks, types)
        print(f"{path[-45:]:>45} {name:12s} " + " ".join(f"{v:.3f}" for v in res[name]), flush=True)
    for name in res:
        diffs.setdefault(name, []).append(np.subtract(res[name], res["(1, 2)"]))
print("mean difference to the deployed (1, 2) map (image, pixel, AU-PRO, uneven pixel) [min..max]")
for name, d in diffs.items():
    d = np.array(d); print(f"{name:12s} " + " ".join(f"{v:+.3f}" for v in d.mean(0)) + "  [" + " ".join(f"{x:+.3f}..{y:+.3f}" for x, y in zip(d.min(0), d.max(0))) + "]")
