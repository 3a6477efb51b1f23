import sys, numpy as np, torch
from dad_edge.artifacts.checkpoint import load_model
from dad_edge.data.imageio import read_image
from dad_edge.data.layouts import open_category
from dad_edge.data.mvtec import load_masks
from dad_edge.runtime import ops
from dad_edge.training.metrics import roc_auc
cat = open_category("/work/shared/data/magnetic_tile"); test = cat.test_samples()
types = np.array([s.defect_type for s in test])
for path in sys.argv[1:]:
    model, meta = load_model(path); cfg = model.cfg
    masks = load_masks(test, cfg.image_size).astype(np.int64)
    with torch.no_grad():
        dm = np.concatenate([model(torch.from_numpy(ops.preprocess([read_image(s.path) for s in test[i:i+32]], cfg.image_size, cfg.channels, "RGB"))).anomaly_map[:, 0].float().numpy() for i in range(0, len(test), 32)])
    np.save(path.replace('/model.safetensors', '/testmaps.npy'), dm)
    good = types == "good"
    for t in ("uneven", "fray", "break", "crack", "blowhole"):
        sel = types == t
        per = [roc_auc(masks[i].reshape(-1), dm[i].reshape(-1)) for i in np.where(sel)[0] if 0 < masks[i].mean() < 1]
        inside = np.concatenate([dm[i][masks[i] > 0] for i in np.where(sel)[0]])
        outside_anom = np.concatenate([dm[i][masks[i] == 0] for i in np.where(sel)[0]])
        gpx = dm[good].reshape(-1)
        print(f"{t:9s} within-image AUROC mean {np.mean(per):.3f}  pooled(good+{t}) {roc_auc(masks[good|sel].reshape(-1), dm[good|sel].reshape(-1)):.3f}  "
              f"defect px median {np.median(inside):.3f}  non-defect px in defect imgs median {np.median(outside_anom):.3f}  good px median {np.median(gpx):.3f} p95 {np.quantile(gpx,0.95):.3f}")
