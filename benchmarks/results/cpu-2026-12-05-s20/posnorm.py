import numpy as np, sys
from sklearn.metrics import roc_auc_score
from scipy.ndimage import gaussian_filter
def topk(m, frac=0.01):
    f = m.reshape(len(m), -1); k = max(1, int(frac * f.shape[1])); return np.sort(f, 1)[:, -k:].mean(1)
for s in sys.argv[1:]:
    d = np.load(f"/tmp/s20/maps_s{s}.npz"); v = np.load(f"/tmp/s20/val_s{s}.npz")
    maps, scores, masks, labels, types = d["maps"], d["scores"], d["masks"], d["labels"], d["types"]
    vm = v["maps"]
    mu = vm.mean(0); sd = vm.std(0)
    print(f"seed {s}: deployed score AUROC {roc_auc_score(labels, scores):.4f}; val mean map border {mu[0].mean():.3f} centre {mu[40:88,40:88].mean():.3f}")
    variants = {"raw": maps}
    for sig in [0, 2, 4]:
        mus = gaussian_filter(mu, sig) if sig else mu
        sds = gaussian_filter(sd, sig) if sig else sd
        variants[f"minus mu s{sig}"] = maps - mus[None]
        variants[f"z s{sig}"] = (maps - mus[None]) / (sds[None] + 0.02)
        variants[f"ratio s{sig}"] = maps / (mus[None] + 0.02)
    g = labels == 0
    for name, m in variants.items():
        px = roc_auc_score(masks.reshape(-1), m.reshape(-1))
        sc = topk(m)
        per = " ".join(f"{t[:4]} {roc_auc_score(labels[(types == t) | g], sc[(types == t) | g]):.3f}" for t in sorted(set(types)) if t != "good")
        print(f"  {name:14s} image top1% {roc_auc_score(labels, sc):.4f} max {roc_auc_score(labels, m.reshape(len(m),-1).max(1)):.4f} pixel {px:.4f} | {per}")
