"""Screening: does keeping each image's aspect ratio (pad to a square) instead of stretching it help?

    python benchmarks/letterbox_screen.py prepare ../shared/data/magnetic_tile /tmp/mt_square
    dad-edge train --data /tmp/mt_square --out R --epochs 20 --seed S --quiet
    python benchmarks/letterbox_screen.py eval R/model.safetensors /tmp/mt_square --original ../shared/data/magnetic_tile

Every path of the library stretches a frame to the model's square input. Magnetic-tile images run from
0.38 to 2.8 in height / width, so the stretch changes the spacing of their grinding lines by up to 6x
between images. `prepare` writes a copy of an MVTec-layout category (outside the repository) with every
image padded to a square with its own mean grey (masks with 0), centred, and boxes.json, the place of
the original in each padded image. `eval` runs a model trained on that copy through the Detector (the
deployed path), crops each map back to the original's box and stretches it to the model size, and scores
it against the ORIGINAL masks with `dad-edge eval`'s metrics and resolution, so that the padding (easy
normal pixels) counts nowhere. Given the original category itself (no boxes.json) it is `dad-edge eval`.
Results: benchmarks/README.md, session 13.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

BOXES = "boxes.json"


def prepare(src: Path, dst: Path) -> int:
    """Pad every image under `src` to a square into `dst`; return how many files were written."""
    boxes = {}
    for path in sorted(p for p in src.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")):
        rel = path.relative_to(src)
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise SystemExit(f"{path}: not a readable image")
        h, w = image.shape[:2]
        side = max(h, w)
        y0, x0 = (side - h) // 2, (side - w) // 2
        is_mask = rel.parts[0] == "ground_truth"
        value = 0 if is_mask else [float(v) for v in cv2.mean(image)[:1 if image.ndim == 2 else image.shape[2]]]
        square = cv2.copyMakeBorder(image, y0, side - h - y0, x0, side - w - x0, cv2.BORDER_CONSTANT, value=value)
        out = (dst / rel).with_suffix(".png")  # lossless: the padded copy holds the decoded pixels
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), square)
        boxes[str(rel.with_suffix(".png"))] = [y0, x0, h, w, side]
    (dst / BOXES).write_text(json.dumps(boxes))
    return len(boxes)


def crop_to_box(map_: np.ndarray, box, size: int) -> np.ndarray:
    """The part of a (size, size) map of a padded image that shows the original, stretched to (size, size)."""
    y0, x0, h, w, side = box
    f = size / side
    r0, c0 = int(round(y0 * f)), int(round(x0 * f))
    r1, c1 = max(int(round((y0 + h) * f)), r0 + 1), max(int(round((x0 + w) * f)), c0 + 1)
    return cv2.resize(np.ascontiguousarray(map_[r0:r1, c0:c1]), (size, size), interpolation=cv2.INTER_LINEAR)


def evaluate(model: Path, data: Path, original: Path) -> dict:
    from dad_edge.data.imageio import read_image
    from dad_edge.data.layouts import open_category
    from dad_edge.data.mvtec import load_masks
    from dad_edge.runtime.detector import Detector
    from dad_edge.training.metrics import compute_metrics

    boxes = json.loads((data / BOXES).read_text()) if (data / BOXES).is_file() else None
    by_key = {(s.defect_type, s.path.stem): s for s in open_category(original).test_samples()}
    samples = open_category(data).test_samples()
    maps, scores, originals = [], [], []
    with Detector(model) as detector:
        size = detector.config.image_size
        for i in range(0, len(samples), 16):
            chunk = samples[i:i + 16]
            batch_maps, batch_scores = detector.infer_batch([read_image(s.path) for s in chunk], "RGB")
            for s, m in zip(chunk, np.asarray(batch_maps, np.float32)):
                maps.append(crop_to_box(m, boxes[str(s.path.relative_to(data))], size) if boxes else m)
                originals.append(by_key[(s.defect_type, s.path.stem)])
            scores.append(np.asarray(batch_scores, np.float64))
    labels = np.array([s.label for s in originals])
    return compute_metrics(labels, np.concatenate(scores), load_masks(originals, size), np.stack(maps),
                           [s.defect_type for s in originals])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the padded copy")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    e = sub.add_parser("eval", help="score a model trained on the padded copy against the original masks")
    e.add_argument("model", type=Path)
    e.add_argument("data", type=Path, help="the padded copy (or the original category)")
    e.add_argument("--original", type=Path, required=True, help="the original category (its masks)")
    e.add_argument("--out", type=Path, help="also write the metrics as JSON here")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        print(f"{prepare(args.src, args.dst)} files written to {args.dst}")
        return 0
    metrics = evaluate(args.model, args.data, args.original)
    print("image AUROC {:.3f}  pixel AUROC {:.3f}  AU-PRO {:.3f}".format(
        metrics["image_auroc"], metrics["pixel_auroc"], metrics["au_pro"]))
    for name, m in sorted(metrics.get("per_type", {}).items()):
        print(f"  {name:10s} image {m['image_auroc']:.3f}  pixel {m.get('pixel_auroc') or float('nan'):.3f}")
    if args.out:
        args.out.write_text(json.dumps(metrics, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
