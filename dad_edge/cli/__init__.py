"""The `dad-edge` command line. Errors a user can fix print as one line, exit code 2."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

from dad_edge.errors import DadEdgeError

DEMO_MINUTES = 4.0


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} must be a positive integer")
    return v


def add_runtime_arguments(p, precision: bool = True) -> None:
    """--backend and --device of a command that opens a model file; with `precision` also the
    torch backend's --half and --cuda-graphs (predict, stream). Read back with runtime_kwargs()."""
    from dad_edge.runtime.backends import BACKENDS

    p.add_argument("--backend", choices=sorted(BACKENDS), help="override the backend the suffix picks")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the GPU where the backend has one)")
    if precision:
        p.add_argument("--half", action="store_true", help="fp16 (torch backend on CUDA)")
        p.add_argument("--cuda-graphs", action="store_true",
                       help="replay the network from a CUDA graph per batch size (torch backend on CUDA)")


def runtime_kwargs(args) -> dict:
    """The Detector keyword arguments add_runtime_arguments(precision=True) parsed."""
    return dict(backend=args.backend, device=args.device, half=args.half, cuda_graphs=args.cuda_graphs)


def _channels(text: str) -> Optional[int]:
    if text == "auto":
        return None
    if text not in ("1", "3"):
        raise argparse.ArgumentTypeError(f"--channels {text}: choose auto, 1 or 3")
    return int(text)


# -- train ------------------------------------------------------------------------------------

def add_training_arguments(p, what: str = "training") -> None:
    """Options shared by `train` and `distill`: data, budget, optimiser, selection, anomalies."""
    p.add_argument("--data", required=True, help="category folder with train/good (MVTec AD layout)")
    p.add_argument("--out", required=True, help="run folder: model.safetensors, train_state.safetensors")
    p.add_argument("--epochs", type=_positive_int, help="stop after this many epochs")
    p.add_argument("--minutes", type=float, help=f"stop after this much {what} time")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--lr-unet", type=float, default=1e-4)
    p.add_argument("--lr-seg", type=float, default=1e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.1, help="good images held out for selection")
    p.add_argument("--select", choices=("val", "last"), default="val",
                   help="keep the lowest validation loss (default) or the last epoch; never the test set")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--texture-dir", help="folder of texture images (e.g. DTD) as anomaly sources")
    p.add_argument("--foreground", help="'otsu', or a folder of foreground masks named like the images")
    p.add_argument("--anomaly-prob", type=float, default=0.5, help="fraction of synthetic anomalous samples")
    p.add_argument("--threshold-quantile", type=float, default=0.99,
                   help="thresholds at this quantile of held-out good images")
    p.add_argument("--resume", action="store_true", help="go on from --out/train_state.safetensors")
    p.add_argument("--workers", type=int, default=None,
                   help="threads making synthetic anomalies (default: 0 on CPU, up to 8 on CUDA)")
    p.add_argument("--quiet", action="store_true")


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on the good images of an MVTec-layout folder")
    add_training_arguments(p)
    p.add_argument("--preset", default="compact", help="paper | compact | tiny (default compact)")
    p.add_argument("--image-size", type=_positive_int, help="override the preset's input size")
    p.add_argument("--channels", type=_channels, default=None, help="auto (default), 1 or 3")
    p.add_argument("--smoothing-sigma", type=float,
                   help="Gaussian smoothing of the anomaly map before scoring, in pixels (default: the preset's, off)")
    p.add_argument("--preview", type=_positive_int, metavar="N",
                   help="only write N synthetic training samples to --out/preview and exit")
    p.set_defaults(func=cmd_train)


def training_kwargs(args) -> dict:
    """The options add_training_arguments() parsed, as TrainOptions / DistillOptions fields."""
    return dict(
        data=args.data, out=args.out, epochs=args.epochs, minutes=args.minutes, batch_size=args.batch_size,
        lr_unet=args.lr_unet, lr_seg=args.lr_seg, seed=args.seed, val_fraction=args.val_fraction,
        select=args.select, device=args.device, amp=not args.no_amp, texture_dir=args.texture_dir,
        foreground=args.foreground, anomaly_prob=args.anomaly_prob, threshold_quantile=args.threshold_quantile,
        resume=args.resume, progress=not args.quiet, workers=args.workers)


def train_options(args):
    from dad_edge.training.train import TrainOptions

    return TrainOptions(
        **training_kwargs(args), preset=args.preset, image_size=args.image_size, channels=args.channels,
        model_overrides={} if args.smoothing_sigma is None else {"smoothing_sigma": args.smoothing_sigma})


def cmd_train(args) -> int:
    from dad_edge.training.train import preview, train

    opts = train_options(args)
    if args.preview:
        paths = preview(opts, args.preview)
        print(f"wrote {len(paths)} synthetic samples to {paths[0].parent}")
        return 0
    opts.validate()
    path = train(opts)
    print(f"model: {path}")
    return 0


# -- eval -------------------------------------------------------------------------------------

def add_eval(sub) -> None:
    p = sub.add_parser("eval", help="image/pixel AUROC, AU-PRO, AP, F1-max on a test split")
    p.add_argument("model", help="model.safetensors (or an exported model)")
    p.add_argument("--data", required=True, help="category folder with test/ and ground_truth/")
    p.add_argument("--out", help="write metrics.json, roc.png and overlays/ here")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--batch-size", type=_positive_int, default=16)
    p.add_argument("--backend", choices=("torch", "onnxruntime", "tensorrt"),
                   help="default: from the file suffix (.safetensors, .onnx, .plan/.engine)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the backend's choice)")
    p.add_argument("--overlays", type=int, default=4, help="overlays per defect type (with --out)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from dad_edge.training.evaluate import backend_infer_fn, evaluate

    infer, size = backend_infer_fn(args.model, args.backend, args.device)
    metrics = evaluate(infer, size, args.data, out_dir=args.out, batch_size=args.batch_size,
                       overlays_per_type=args.overlays, progress=not args.json)
    if args.json:
        print(json.dumps(metrics))
    else:
        print_metrics(metrics)
        if args.out:
            print(f"report: {Path(args.out) / 'metrics.json'}, {Path(args.out) / 'roc.png'}, "
                  f"{Path(args.out) / 'overlays'}/")
    return 0


def _pct(v) -> str:
    return "   -  " if v is None else f"{100 * v:6.2f}"


def print_metrics(m) -> None:
    keys = ("image_auroc", "pixel_auroc", "au_pro", "pixel_ap", "f1_max")
    print(f"{'':12s}" + "".join(f"{k:>13s}" for k in keys) + "   images")
    rows = [("all", m)] + sorted(m.get("per_type", {}).items())
    for name, r in rows:
        print(f"{name:12s}" + "".join(f"{_pct(r.get(k)):>13s}" for k in keys) + f"   {r.get('num_images')}")
    print(f"(percent; AU-PRO: {m.get('au_pro_definition')})")


# -- info -------------------------------------------------------------------------------------

def add_info(sub) -> None:
    p = sub.add_parser("info", help="parameters and GFLOPs of a preset or a model file")
    p.add_argument("model", nargs="?", help="a model.safetensors (default: --preset)")
    p.add_argument("--preset", default="compact")
    p.add_argument("--image-size", type=_positive_int)
    p.add_argument("--channels", type=_channels, default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)


def cmd_info(args) -> int:
    from dad_edge.model.config import preset
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
        cfg, name = preset(args.preset, **changes), args.preset
    info = {"model": name, **model_info(cfg), "config": cfg.to_dict()}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"{name}: {info['params'] / 1e6:.2f} M parameters (U-Net {info['params_unet'] / 1e6:.2f} M, "
              f"segmentation {info['params_seg'] / 1e6:.2f} M); {info['gflops']:.2f} GFLOPs per "
              f"{cfg.image_size}x{cfg.image_size} image (U-Net x{info['unet_passes']} "
              f"{info['gflops_unet']:.2f} + segmentation {info['gflops_seg']:.2f}; "
              f"{info['flops_counting']})")
    return 0


# -- demo -------------------------------------------------------------------------------------

def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="build a small real-photo data set, train, evaluate (CPU, minutes)")
    p.add_argument("--out", default="runs/demo", help="where data, model and report go (default runs/demo)")
    p.add_argument("--texture", default="brick", help="brick | grass | gravel (scikit-image photographs)")
    p.add_argument("--minutes", type=float, default=DEMO_MINUTES, help="training time budget")
    p.add_argument("--epochs", type=_positive_int, default=200, help="upper bound on epochs")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from dad_edge.data.demo import build_demo_dataset
    from dad_edge.training.evaluate import backend_infer_fn, evaluate
    from dad_edge.training.train import TrainOptions, train

    out = Path(args.out)
    t0 = time.time()
    data = build_demo_dataset(out / "data", texture=args.texture, size=128)
    print(f"[1/3] data set: {data} (real {args.texture} photographs; test defects: scratches, spots, cracks)")
    # A short CPU run: larger learning rates than the paper's 3000-epoch schedule.
    opts = TrainOptions(data=str(data), out=str(out / "model"), preset="compact", image_size=128,
                        epochs=args.epochs, minutes=args.minutes, batch_size=8, lr_unet=1e-3, lr_seg=1e-3,
                        device=args.device, progress=not args.quiet)
    print(f"[2/3] training compact at 128x128 for up to {args.minutes:g} min ...", flush=True)
    model_path = train(opts)
    print(f"[3/3] evaluating {model_path} on the test split ...", flush=True)
    infer, size = backend_infer_fn(model_path, device=None if args.device == "auto" else args.device)
    report = out / "report"
    metrics = evaluate(infer, size, data, out_dir=report)
    print_metrics(metrics)
    print(f"\ndone in {(time.time() - t0) / 60:.1f} min")
    print(f"  model:    {model_path}")
    print(f"  metrics:  {report / 'metrics.json'}")
    print(f"  ROC:      {report / 'roc.png'}")
    print(f"  overlays: {report / 'overlays'}/")
    print(f"  next:     dad-edge predict {model_path} {data / 'test' / 'crack'} --save {out / 'predictions'}")
    return 0


# -- main -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from dad_edge.cli.deploy import add_commands as add_deploy
    from dad_edge.cli.distill import add_command as add_distill
    from dad_edge.cli.stream import add_command as add_stream
    from dad_edge.version import __version__

    parser = argparse.ArgumentParser(prog="dad-edge", description="DiffusionAD anomaly detection, train to edge")
    parser.add_argument("--version", action="version", version=f"dad_edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_demo(sub)
    add_train(sub)
    add_eval(sub)
    add_info(sub)
    add_deploy(sub)
    add_distill(sub)
    add_stream(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DadEdgeError as exc:
        print(f"dad-edge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dad-edge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
