"""The training commands of `dad-edge`: train, distill (a compact student from a trained teacher,
see dad_edge/training/distill.py) and demo (data set, training and evaluation in one go)."""
from __future__ import annotations

import time
from pathlib import Path

from dad_edge.cli.args import add_training_arguments, channels, finite_float, positive_int, training_kwargs
from dad_edge.cli.config import add_config_arguments, resolve_config
from dad_edge.cli.evaluate import print_metrics

DEMO_MINUTES = 4.0


def processes_arg(text: str):
    """--processes: 'auto' or a whole number >= 1."""
    import argparse

    from dad_edge.errors import ConfigError
    from dad_edge.training.processes import read_processes

    try:
        return read_processes(text, "--processes")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- train ------------------------------------------------------------------------------------

def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on the good images of an MVTec-layout folder")
    add_training_arguments(p)
    p.add_argument("--preset", default="compact", help="paper | compact | tiny (default compact), or NAME-dit")
    p.add_argument("--backbone", help="unet | dit: the preset's eps-predictor (default: the preset's; dit = NAME-dit)")
    p.add_argument("--image-size", type=positive_int, help="override the preset's input size")
    p.add_argument("--channels", type=channels, default=None, help="auto (default), 1 or 3")
    p.add_argument("--method", help="diffusionad: norm-guided denoising + segmentation net | recon: a plain DDPM's "
                                    "reconstruction error (arXiv 2412.07539), no segmentation net | seg: the "
                                    "segmentation net alone on the image, no denoiser (about 7x the epochs of "
                                    "diffusionad per CPU minute). Default: seg for compact / tiny on a CPU (better "
                                    "in a CPU budget), diffusionad on CUDA, for other presets and when a denoiser "
                                    "option (--lr-unet, --large-target, --recon-weight, --backbone) is set")
    p.add_argument("--recon-t", type=int, help="recon: noise level t, 1..999 (default 250: removes small defects, "
                                               "keeps the part)")
    p.add_argument("--recon-steps", type=int, help="recon: DDIM steps from t back to 0 (default 1: one network pass, "
                                                   "the cost of one DiffusionAD U-Net pass)")
    p.add_argument("--recon-error", help="recon: the map, squared (default) | ssim (structural, (1 - SSIM) / 2)")
    p.add_argument("--recon-score", help="recon: image score, topk (default: mean of the top-k map values, as "
                                         "DiffusionAD; small defects count) | mean (the whole map)")
    p.add_argument("--seg-stride", type=int, choices=(1, 2, 4),
                   help="the segmentation net reads its input pooled by this factor (1: full resolution; 2: about "
                        "4x less work in that net, a 2x coarser map; default: the recipe's, 2 on a CPU, 1 on CUDA)")
    p.add_argument("--full-res-fraction", type=finite_float, metavar="FRACTION",
                   help="with a segmentation stride > 1: the last FRACTION of the budget trains that net at full "
                        "resolution, and the model is saved at stride 1 (default: the recipe's, 1/3 for --method seg "
                        "on a CPU, else 0 = off)")
    p.add_argument("--processes", type=processes_arg,
                   help="CPU training processes, each with one share of every batch: N, or auto (one per core, up "
                        "to 8); default 1 (one process with torch's threads); GPUs: use torchrun")
    p.add_argument("--smoothing-sigma", type=float,
                   help="Gaussian smoothing of the anomaly map before scoring, in pixels (default: the preset's, off)")
    p.add_argument("--preview", type=positive_int, metavar="N",
                   help="only write N synthetic training samples to --out/preview and exit")
    add_config_arguments(p)  # last: --config FILE / --print-config over every option above
    p.set_defaults(func=cmd_train)


def train_options(args):
    from dad_edge.cli.config import Unset
    from dad_edge.training.train import TrainOptions

    if any(isinstance(v, Unset) for v in vars(args).values()):  # parsed but not yet resolved (--config)
        resolve_config(args)
    overrides = {} if args.smoothing_sigma is None else {"smoothing_sigma": args.smoothing_sigma}
    if args.backbone is not None:
        overrides["backbone"] = args.backbone  # preset(): the preset's variant with that backbone
    recon = {k: v for k, v in (("t", args.recon_t), ("steps", args.recon_steps), ("error", args.recon_error),
                               ("image_score", args.recon_score)) if v is not None}
    if args.method is not None or recon:  # preset(): settings without --method recon are an error there
        overrides.update(method=args.method or "diffusionad", recon=recon or None)
    return TrainOptions(**training_kwargs(args), preset=args.preset, image_size=args.image_size,
                        channels=args.channels, seg_stride=args.seg_stride, processes=args.processes,
                        full_res_fraction=args.full_res_fraction,
                        model_overrides=overrides)


def cmd_train(args) -> int:
    from dad_edge.training.synthesis import preview
    from dad_edge.training.train import train

    if resolve_config(args):  # --print-config: printed, nothing to train
        return 0
    opts = train_options(args)
    if args.preview:
        paths = preview(opts, args.preview)
        print(f"wrote {len(paths)} synthetic samples to {paths[0].parent}")
        return 0
    opts.validate()
    path = train(opts)
    print(f"model: {path}")
    return 0


# -- distill ----------------------------------------------------------------------------------


def add_distill(sub) -> None:
    p = sub.add_parser("distill", help="distil a compact (optionally single-pass) student from a trained teacher")
    p.add_argument("--teacher", required=True, help="the teacher's model.safetensors (a two-pass model)")
    add_training_arguments(p, what="distillation")
    p.add_argument("--preset", default="compact",
                   help="the student's networks: paper | compact | tiny (default compact)")
    p.add_argument("--image-size", type=positive_int, help="the student's input size (default: the teacher's)")
    p.add_argument("--single-pass", action="store_true",
                   help="one U-Net pass (reads x0_ng directly) instead of the two norm-guided passes")
    p.add_argument("--segmentation", choices=("train", "distill"), default="train",
                   help="train the segmentation net on the synthetic masks (default), or also match the teacher's map")
    p.set_defaults(func=cmd_distill)


def distill_options(args):
    from dad_edge.training.distill import DistillOptions

    return DistillOptions(**training_kwargs(args), teacher=args.teacher, preset=args.preset,
                          image_size=args.image_size, single_pass=args.single_pass, segmentation=args.segmentation)


def cmd_distill(args) -> int:
    from dad_edge.training.distill import distill

    path = distill(distill_options(args))
    print(f"model: {path}")
    return 0


# -- demo -------------------------------------------------------------------------------------

def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="build a small real-photo data set, train, evaluate (CPU, minutes)")
    p.add_argument("--out", default="runs/demo", help="where data, model and report go (default runs/demo)")
    p.add_argument("--texture", default="brick", help="brick | grass | gravel (scikit-image photographs)")
    p.add_argument("--minutes", type=float, default=DEMO_MINUTES, help="training time budget")
    p.add_argument("--epochs", type=positive_int, default=200, help="upper bound on epochs")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from dad_edge.data.demo import build_demo_dataset
    from dad_edge.training.evaluate import evaluate_model
    from dad_edge.training.train import TrainOptions, resolve_device, train

    out = Path(args.out)
    t0 = time.time()
    data = build_demo_dataset(out / "data", texture=args.texture, size=128)
    print(f"[1/3] data set: {data} (real {args.texture} photographs; test defects: scratches, spots, cracks)")
    # A short CPU run: larger learning rates than the paper's 3000-epoch schedule.
    # The defaults of `dad-edge train` (training/recipe.py): 128 px images, a small set in batches of 8.
    opts = TrainOptions(data=str(data), out=str(out / "model"), preset="compact", epochs=args.epochs,
                        minutes=args.minutes, device=args.device, progress=not args.quiet)
    method = opts.validate().method(resolve_device(args.device).type)
    print(f"[2/3] training compact ({method}) with the default recipe for up to {args.minutes:g} min ...", flush=True)
    model_path = train(opts)
    print(f"[3/3] evaluating {model_path} on the test split ...", flush=True)
    report = out / "report"
    metrics = evaluate_model(model_path, data, out_dir=report, device=None if args.device == "auto" else args.device)
    print_metrics(metrics)
    print(f"\ndone in {(time.time() - t0) / 60:.1f} min")
    print(f"  model:    {model_path}")
    print(f"  metrics:  {report / 'metrics.json'}")
    print(f"  ROC:      {report / 'roc.png'}")
    print(f"  overlays: {report / 'overlays'}/")
    print(f"  next:     dad-edge predict {model_path} {data / 'test' / 'crack'} --save {out / 'predictions'}")
    return 0
