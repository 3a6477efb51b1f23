"""Screen: held-out signals (run's validation split + its synthetic anomalies) for the full-res third vs stride 2."""
import sys, json
import numpy as np, torch
from dad_edge.training.options import TrainOptions
from dad_edge.training.train import Trainer
from dad_edge.artifacts.checkpoint import load_model
from dad_edge.training.metrics import au_pro, roc_auc

def signals(data, seed, paths, reps=2):
    opts = TrainOptions(data=data, out="/tmp/s25/none", seed=seed, progress=False, minutes=1)
    tr = Trainer(opts)
    out = {}
    for name, p in paths.items():
        model = load_model(p)[0]
        model.eval()
        maps, masks, normal, cleanscores = [], [], [], []
        with torch.no_grad():
            for ep in range(reps):
                for b in tr.val.epoch(ep):
                    o = model(b.image)
                    maps.append(o.anomaly_map[:, 0].numpy()); masks.append(b.mask[:, 0].numpy())
                    normal.append(b.normal.numpy())
                    cleanscores.append(model(b.clean).score.numpy())
                    if ep == 0: pass
        maps, masks, normal = np.concatenate(maps), np.concatenate(masks), np.concatenate(normal)
        clean = np.concatenate(cleanscores)
        k = model.cfg.top_k
        sc = np.sort(maps.reshape(len(maps), -1), 1)[:, -k:].mean(1)
        an = ~normal
        r = {"px": roc_auc(masks[an].ravel() > 0, maps[an].ravel()),
             "px_all": roc_auc(masks.ravel() > 0, maps.ravel()),
             "aupro": au_pro(masks[an] > 0, maps[an]),
             "img_clean_vs_synth": roc_auc(np.r_[np.zeros(len(clean)), np.ones(an.sum())], np.r_[clean, sc[an]]),
             "clean_p50": float(np.median(clean)), "clean_p95": float(np.percentile(clean, 95)),
             "good_px_p99": float(np.percentile(maps[normal], 99.9))}
        out[name] = r
        print(name, json.dumps({a: round(b, 4) for a, b in r.items()}), flush=True)
    return out

if __name__ == "__main__":
    cfg = json.loads(sys.argv[1])
    signals(cfg["data"], cfg["seed"], cfg["paths"])
