"""The inspection commands of `dad-edge`: eval (metrics on a test split) and info (size and cost)."""
from __future__ import annotations

import json
from pathlib import Path

from dad_edge.cli.args import add_batch_argument, add_data_arguments, add_runtime_arguments, channels, data_argument, \
    positive_int


# -- eval -------------------------------------------------------------------------------------

def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="image/pixel AUROC, AU-PRO, AP, F1-max on a test split")
    p.add_argument("model", help="model.safetensors (or an exported model)")
    add_data_arguments(p, "")
    p.add_argument("--out", help="write metrics.json, scores.csv (one row per image), roc.png and overlays/ here")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--report", nargs="?", const="", metavar="FILE",
                   help="write the inspection report, one self-contained HTML file (default: report.html in "
                        "--out, else here); needs pip install 'dad_edge[report]'")
    add_batch_argument(p, 16, "images per inference call")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_runtime_arguments(p, precision=False)
    p.add_argument("--overlays", type=int, default=4, help="overlays per defect type (with --out)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from dad_edge.training.evaluate import evaluate_model

    report = None
    if args.report is not None:
        from dad_edge.report import require_matplotlib

        require_matplotlib()  # before the test set is scored, not after
        report = Path(args.report) if args.report else Path(args.out or ".") / "report.html"
    # Through a Detector on the model (closed at the end): eval's scores are the Detector's.
    metrics = evaluate_model(args.model, data_argument(args), out_dir=args.out, backend=args.backend,
                             device=args.device, batch_size=args.batch_size, overlays_per_type=args.overlays,
                             progress=not (args.json or args.quiet),
                             report=report)
    if args.json:
        print(json.dumps(metrics))
    else:
        print_metrics(metrics)
        if args.out:
            out = Path(args.out)
            written = [out / "metrics.json", out / "scores.csv", out / "roc.png"]
            if (out / "overlays").is_dir():  # a baseline has no maps, so no overlays
                written.append(f"{out / 'overlays'}/")
            print("report: " + ", ".join(str(w) for w in written))
        if report is not None:
            print(f"inspection report: {report}")
    return 0


def _pct(v) -> str:
    return "   -  " if v is None else f"{100 * v:6.2f}"


def print_metrics(m) -> None:
    columns = (("image_auroc", "image_auroc"), ("pixel_auroc", "pixel_auroc"), ("au_pro", "au_pro"),
               ("pixel_ap", "pixel_ap"), ("f1_max", "f1_max"), ("pixel_auroc_in_image", "px_in_image"))
    print(f"{'':12s}" + "".join(f"{label:>13s}" for _, label in columns) + "   images")
    rows = [("all", m)] + sorted(m.get("per_type", {}).items())
    for name, r in rows:
        print(f"{name:12s}" + "".join(f"{_pct(r.get(k)):>13s}" for k, _ in columns) + f"   {r.get('num_images')}")
    print(f"(percent; AU-PRO: {m.get('au_pro_definition')}; px_in_image: each defect image's own pixel AUROC, "
          "its defect against the rest of it, averaged)")
    if m.get("image_level_only"):
        print(m["image_level_only"])
    missing = m.get("images_without_masks") or {}
    if missing:
        where = ", ".join(f"{folder} ({n})" for folder, n in sorted(missing.items()))
        print(f"pixel metrics not computed: {sum(missing.values())} defect images have no ground-truth mask: "
              f"{where}; add ground_truth/<defect>/<stem>_mask.png for each to get them")


# -- info -------------------------------------------------------------------------------------

def add_info(sub) -> None:
    p = sub.add_parser("info", help="parameters and GFLOPs of a preset or a model file")
    p.add_argument("model", nargs="?", help="a model.safetensors (default: --preset)")
    p.add_argument("--preset", default="compact")
    p.add_argument("--backbone", help="unet | dit: the preset's variant with this eps-predictor (NAME-dit)")
    p.add_argument("--image-size", type=positive_int)
    p.add_argument("--channels", type=channels, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)


def cmd_info(args) -> int:
    from dad_edge.model.config import backbone_variant, preset
    from dad_edge.model.info import model_info

    if args.model:
        from dad_edge.artifacts.checkpoint import read_tensors
        from dad_edge.artifacts.metadata import model_config

        _, meta = read_tensors(args.model)
        cfg, name = model_config(meta), args.model
    else:
        changes = {}
        if args.image_size:
            changes["image_size"] = args.image_size
        if args.channels:
            changes["channels"] = args.channels
        if args.backbone:
            changes["backbone"] = args.backbone
        cfg = preset(args.preset, **changes)
        name = backbone_variant(args.preset, args.backbone) if args.backbone else args.preset
    info = {"model": name, **model_info(cfg), "config": cfg.to_dict()}
    if args.json:
        print(json.dumps(info))
    else:
        if cfg.method == "seg":
            print(f"{name}: {info['params'] / 1e6:.2f} M parameters (the segmentation net alone, no denoiser); "
                  f"{info['gflops']:.2f} GFLOPs per {cfg.image_size}x{cfg.image_size} image ({info['flops_counting']})")
            return 0
        net = "DiT" if cfg.backbone == "dit" else "U-Net"
        print(f"{name}: {info['params'] / 1e6:.2f} M parameters ({net} {info['params_unet'] / 1e6:.2f} M, "
              f"segmentation {info['params_seg'] / 1e6:.2f} M); {info['gflops']:.2f} GFLOPs per "
              f"{cfg.image_size}x{cfg.image_size} image ({net} x{info['unet_passes']} "
              f"{info['gflops_unet']:.2f} + segmentation {info['gflops_seg']:.2f}; "
              f"{info['flops_counting']})")
    return 0
