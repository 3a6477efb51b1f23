import numpy as np, sys
from sklearn.metrics import roc_auc_score
for f in sys.argv[1:]:
    d = np.load(f); maps, scores, masks, labels, types = d["maps"], d["scores"], d["masks"], d["labels"], d["types"]
    S = maps.shape[-1]
    yy, xx = np.mgrid[:S, :S]; dist = np.minimum(np.minimum(yy, xx), np.minimum(S-1-yy, S-1-xx))
    print(f, "image AUROC (deployed score)", round(roc_auc_score(labels, scores), 4))
    g = labels == 0
    am = maps.reshape(len(maps), -1).argmax(1); dpk = dist.reshape(-1)[am]
    for name, sel in [("good", g), ("defect", ~g)]:
        print(f"  {name}: argmax dist-to-border quantiles", np.percentile(dpk[sel], [10, 25, 50, 75, 90]).round(1),
              "share<=4px", round(float((dpk[sel] <= 4).mean()), 3), "uniform share<=4px", round(float((dist <= 4).mean()), 3))
    # mean map by border distance on good images
    prof = [float(maps[g][:, dist == k].mean()) for k in range(0, 20, 2)]
    print("  good mean map by border distance 0,2,..18:", np.round(prof, 3))
    for b in [0, 2, 4, 8, 16]:
        inner = maps[:, b:S-b, b:S-b].reshape(len(maps), -1)
        mx = inner.max(1)
        k = max(1, int(0.01 * inner.shape[1])); topk = np.sort(inner, 1)[:, -k:].mean(1)
        per = {t: round(roc_auc_score(labels[(types == t) | g], topk[(types == t) | g]), 3) for t in sorted(set(types)) if t != "good"}
        print(f"  border {b:2d}: image AUROC max {roc_auc_score(labels, mx):.4f}  top1% {roc_auc_score(labels, topk):.4f}", per)
