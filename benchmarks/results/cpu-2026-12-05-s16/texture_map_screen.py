"""Screen: per-image centred local texture statistics as a map, alone and added to deployed maps."""
import sys, json
import numpy as np, cv2, torch
from dad_edge.artifacts.checkpoint import load_model
from dad_edge.data.imageio import read_image
from dad_edge.data.layouts import open_category
from dad_edge.data.mvtec import load_masks
from dad_edge.runtime import ops
from dad_edge.training.metrics import au_pro, roc_auc

DATA = "/work/shared/data/magnetic_tile"
cat = open_category(DATA)
test = cat.test_samples()
labels = np.array([s.label for s in test]); types = np.array([s.defect_type for s in test])
models = sys.argv[1:]
model, meta = load_model(models[0])
cfg = model.cfg
masks = load_masks(test, cfg.image_size).astype(np.int64)
train, val = cat.train_val_split(meta["training"]["options"]["val_fraction"], meta["training"]["options"]["seed"])


def inputs(samples):
    out = []
    for i in range(0, len(samples), 64):
        x = torch.from_numpy(ops.preprocess([read_image(s.path) for s in samples[i:i + 64]], cfg.image_size, cfg.channels, "RGB"))
        with torch.no_grad():
            out.append(model.normalise_input(x)[:, 0].numpy())
    return np.concatenate(out) * 0.5 + 0.5


def feats(x, s):
    b = lambda a, sg: cv2.GaussianBlur(a, (0, 0), sg, borderType=cv2.BORDER_REFLECT)
    x = x.astype(np.float32)
    hp = x - b(x, 1.0)
    xs = b(x, 0.7)
    gx = cv2.Sobel(xs, cv2.CV_32F, 1, 0); gy = cv2.Sobel(xs, cv2.CV_32F, 0, 1)
    e = 1e-5
    return np.stack([b(x, s), np.log(b(hp * hp, s) + e), np.log(b(gx * gx, s) + e), np.log(b(gy * gy, s) + e)])


def all_feats(X, s):
    return np.stack([feats(x, s) for x in X])  # (N, F, S, S)


def maps_from(F, scale, centre, how):
    if isinstance(centre, str):
        d = F - np.median(F.reshape(F.shape[0], F.shape[1], -1), axis=2)[:, :, None, None]
    else:
        d = F - centre[None, :, None, None]
    z = d / scale[None, :, None, None]
    return np.sqrt((z ** 2).mean(1)) if how == "rms" else np.abs(z).max(1)


def metrics(m):
    m = np.ascontiguousarray(m, np.float32)
    k = cfg.top_k
    sc = np.sort(m.reshape(len(m), -1), 1)[:, -k:].mean(1)
    un = (types == "good") | (types == "uneven")
    return (roc_auc(labels, sc), roc_auc(masks.reshape(-1), m.reshape(-1)), au_pro(masks, m),
            roc_auc(masks[un].reshape(-1), m[un].reshape(-1)))


Xt = inputs(test)
Xv = inputs(train[::4])  # fit set: a quarter of the training images
rows = {}
for s in (4, 8):
    Ft, Fv = all_feats(Xt, s), all_feats(Xv, s)
    for centre_kind in ("image", "global"):
        if centre_kind == "image":
            dv = Fv - np.median(Fv.reshape(Fv.shape[0], Fv.shape[1], -1), axis=2)[:, :, None, None]
            centre = "image"
        else:
            centre = np.median(Fv.transpose(1, 0, 2, 3).reshape(Fv.shape[1], -1), axis=1)
            dv = Fv - centre[None, :, None, None]
        scale = 1.4826 * np.median(np.abs(dv.transpose(1, 0, 2, 3).reshape(Fv.shape[1], -1)), axis=1)
        for how in ("rms", "max"):
            m = maps_from(Ft, scale, centre, how)
            mv = maps_from(Fv, scale, centre, how)
            name = f"tex s{s} {centre_kind} {how}"
            r = metrics(m)
            rows[name] = (m, mv)
            print(f"{name:28s} " + " ".join(f"{v:.3f}" for v in r), flush=True)

# Combine with the deployed map of each model: deployed + w * standardised texture (val stats)
for path in models:
    model, meta = load_model(path)
    with torch.no_grad():
        dm = []
        for i in range(0, len(test), 32):
            x = torch.from_numpy(ops.preprocess([read_image(s.path) for s in test[i:i + 32]], cfg.image_size, cfg.channels, "RGB"))
            dm.append(model(x).anomaly_map[:, 0].float().numpy())
        dm = np.concatenate(dm)
        dv = []
        for i in range(0, len(val), 32):
            x = torch.from_numpy(ops.preprocess([read_image(s.path) for s in val[i:i + 32]], cfg.image_size, cfg.channels, "RGB"))
            dv.append(model(x).anomaly_map[:, 0].float().numpy())
        dv = np.concatenate(dv)
    base = metrics(dm)
    print(f"{path[-30:]} deployed " + " ".join(f"{v:.3f}" for v in base), flush=True)
    spread = dv.std()
    for name, (m, mv) in rows.items():
        if "rms" not in name:
            continue
        t = (m - mv.mean()) / mv.std()
        for w in (0.25, 0.5, 1.0):
            comb = dm + w * spread * np.clip(t, 0, None)
            r = metrics(comb)
            print(f"   + {w} {name:28s} " + " ".join(f"{v:+.3f}" for v in np.subtract(r, base)), flush=True)
