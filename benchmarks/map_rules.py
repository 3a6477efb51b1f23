"""Map and score rules on trained DiffusionAD (or --method seg) checkpoints: what each would give, on the same weights.

    python benchmarks/map_rules.py R1/model.safetensors R2/model.safetensors --data ../shared/data/magnetic_tile

For every checkpoint the segmentation maps and the segmentation input cat(x, x0_ng) of the test split
(and of the held-out good images of the checkpoint's own training split, which set the statistics)
are computed once; each rule is then a function of those arrays:

  seg top-k        the segmentation map, image score = mean of the model's top_k values (the paper's rule)
  seg max / k50 / k200 / mean   other image scores on the same map
  seg blur 2 / 4   the map Gaussian-smoothed (sigma px) before scoring
  seg flips        the mean map over the 4 flips of the input (test-time augmentation, 4x the cost)
  recon            the reconstruction-error term alone (model/recon_term.py's standardised error)
  seg + W recon    the deployed map with ModelConfig.recon_weight = W (model/recon_term.py)

A model with an exposure correction (model/exposure_term.py) has it applied to every rule's image score.
A `--method seg` model (the net on the image alone) has no reconstruction: its rows are the seg rules only.

Every rule is scored with the metrics `dad-edge eval` uses. The test split selects nothing here: this
is a report of what the rules would have given (benchmarks/README.md, session 10); the library's
default came from it and was then checked on seeds trained afterwards with `dad-edge eval`.
The printed table is per checkpoint, then the mean difference to `seg top-k` with its min and max.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from dad_edge.artifacts.checkpoint import load_model
from dad_edge.data.imageio import read_image
from dad_edge.data.layouts import open_category
from dad_edge.data.mvtec import load_masks
from dad_edge.model.recon_term import ReconTerm, blur
from dad_edge.model.diffusion_ad import gaussian_kernel
from dad_edge.runtime import ops
from dad_edge.training.metrics import au_pro, roc_auc

FLIPS = ((), (3,), (2,), (2, 3))
WEIGHTS = (0.25, 0.5, 1.0)


@torch.no_grad()
def maps_and_inputs(model, frames: List[np.ndarray], flips=((),),
                    batch: int = 32) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(segmentation maps (N, 1, S, S), the same averaged over `flips`, seg_in (N, 2C, S, S)) from one pass
    per flip; flips[0] must be () (the unflipped input)."""
    cfg, plain, averaged, inputs = model.cfg, [], [], []
    for i in range(0, len(frames), batch):
        x = torch.from_numpy(ops.preprocess(frames[i:i + batch], cfg.image_size, cfg.channels, "RGB"))
        acc = 0
        for dims in flips:
            seg_in = model.segmentation_input(torch.flip(x, dims) if dims else x)
            m = model.segment(seg_in).float()  # seg method: seg_in is the image at its gain
            acc = acc + (torch.flip(m, dims) if dims else m)
            if not dims:
                plain.append(m)
                inputs.append(seg_in.float())
        averaged.append(acc / len(flips))
    return torch.cat(plain), torch.cat(averaged), torch.cat(inputs)


def top_k(maps: np.ndarray, k: int) -> np.ndarray:
    return np.sort(maps.reshape(len(maps), -1), axis=1)[:, -k:].mean(axis=1)


def rules(model, test_frames, val_frames) -> Dict[str, Callable[[], Tuple[np.ndarray, np.ndarray]]]:
    k = model.cfg.top_k
    seg, flipped, seg_in = maps_and_inputs(model, test_frames, FLIPS)
    m = seg[:, 0].numpy()

    def blurred(sigma):
        return blur(seg, gaussian_kernel(sigma))[:, 0].numpy()

    out = {"seg top-k": lambda: (m, top_k(m, k)), "seg max": lambda: (m, top_k(m, 1)),
           "seg k50": lambda: (m, top_k(m, 50)), "seg k200": lambda: (m, top_k(m, 200)),
           "seg mean": lambda: (m, m.reshape(len(m), -1).mean(axis=1))}
    for sigma in (2, 4):
        out[f"seg blur {sigma}"] = lambda s=sigma: (lambda b: (b, top_k(b, k)))(blurred(s))
    f = flipped[:, 0].numpy()
    out["seg flips"] = lambda: (f, top_k(f, k))
    if model.cfg.method == "seg":  # no x0_ng: no reconstruction-error rule
        return _with_exposure(model, out, seg_in)
    val_seg, _, val_in = maps_and_inputs(model, val_frames)  # the reconstruction term's statistics

    def with_term(weight):
        term = ReconTerm(weight, 2.0, model.cfg.channels)
        term.calibrate([(val_seg, val_in)])
        return term(seg, seg_in)[:, 0].numpy()

    # The standardised error alone (the term before its weight, unclamped).
    alone = ReconTerm(1.0, 2.0, model.cfg.channels)
    _, mean, std = alone.calibrate([(val_seg, val_in)])
    r = ((alone.error(seg_in) - mean) / std)[:, 0].numpy()
    out["recon"] = lambda: (r, top_k(r, k))
    for w in WEIGHTS:
        out[f"seg + {w:g} recon"] = lambda w=w: (lambda t: (t, top_k(t, k)))(with_term(w))
    return _with_exposure(model, out, seg_in)


def _with_exposure(model, out, seg_in):
    """The rules with the model's exposure correction on their image scores, when it has one."""
    if getattr(model, "exposure_term", None) is None:
        return out
    x = seg_in[:, :model.cfg.channels]  # the model's input, after its input gain

    def corrected(rule):  # every image score less the model's brightness slope, as the deployed score is
        maps, image_scores = rule()
        return maps, model.exposure_term(torch.from_numpy(np.asarray(image_scores, np.float32)), x).numpy()

    return {name: (lambda rule=rule: corrected(rule)) for name, rule in out.items()}


def scores(maps, image_scores, labels, masks, types) -> Tuple[float, float, float, float]:
    """(image AUROC, pixel AUROC, AU-PRO, pixel AUROC on the `uneven` images + good, or nan)."""
    maps = np.ascontiguousarray(maps, np.float32)
    uneven = (types == "good") | (types == "uneven")
    pu = roc_auc(masks[uneven].reshape(-1), maps[uneven].reshape(-1)) if (types == "uneven").any() else float("nan")
    return roc_auc(labels, image_scores), roc_auc(masks.reshape(-1), maps.reshape(-1)), au_pro(masks, maps), pu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--data", required=True)
    p.add_argument("--out", type=Path, help="write every row as JSON here")
    args = p.parse_args(argv)
    category = open_category(args.data)
    test = category.test_samples()
    test_frames = [read_image(s.path) for s in test]
    labels = np.array([s.label for s in test])
    types = np.array([s.defect_type for s in test])
    rows: Dict[str, Dict[str, List[float]]] = {}
    for path in args.models:
        model, meta = load_model(path)
        opts = meta["training"]["options"]
        _, val = category.train_val_split(opts["val_fraction"], opts["seed"])  # the run's own held-out images
        masks = load_masks(test, model.cfg.image_size).astype(np.int64)
        for name, rule in rules(model, test_frames, [read_image(s.path) for s in val]).items():
            result = scores(*rule(), labels, masks, types)
            rows.setdefault(name, {})[str(path)] = list(result)
            print(f"{str(path)[-40:]:>40} {name:16s} " + " ".join(f"{v:.3f}" for v in result), flush=True)
    print("\nrule             mean difference to seg top-k (image AUROC, pixel AUROC, AU-PRO, uneven pixel AUROC)"
          "  [min .. max over checkpoints]")
    base = rows["seg top-k"]
    for name, per_model in rows.items():
        d = np.array([np.subtract(per_model[m], base[m]) for m in base])
        print(f"{name:16s} " + " ".join(f"{v:+.3f}" for v in d.mean(0)) + "  [" +
              " ".join(f"{a:+.3f}..{b:+.3f}" for a, b in zip(d.min(0), d.max(0))) + "]")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
