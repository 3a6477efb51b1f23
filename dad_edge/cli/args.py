"""Argument helpers shared by the `dad-edge` commands (no command imports another's module)."""
from __future__ import annotations

import argparse
import math
from typing import Optional


def finite_float(text: str) -> float:
    """A float option: nan and inf are refused here (they pass every `x < 0` check after)."""
    v = float(text)
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number")
    return v


def positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} must be a positive integer")
    return v


def add_runtime_arguments(p, precision: bool = True) -> None:
    """--backend and --device of a command that opens a model file; with `precision` also the
    torch backend's --half, --cuda-graphs and --resident (predict, stream, benchmark). Read back with runtime_kwargs()."""
    from dad_edge.runtime.backends import BACKENDS

    p.add_argument("--backend", choices=sorted(BACKENDS), help="override the backend the suffix picks")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the GPU where the backend has one)")
    if precision:
        p.add_argument("--half", action="store_true", help="fp16 (torch backend on CUDA)")
        p.add_argument("--cuda-graphs", action="store_true",
                       help="replay the network from a CUDA graph per batch size (torch backend on CUDA)")
        p.add_argument("--resident", action="store_true",
                       help="uint8 frames through fixed pinned buffers, one copy each way per batch, resized on the "
                            "GPU (torch: two batches in flight, one graph with --cuda-graphs; TensorRT: one graph)")


def runtime_kwargs(args) -> dict:
    """The Detector keyword arguments add_runtime_arguments(precision=True) parsed."""
    return dict(backend=args.backend, device=args.device, half=args.half, cuda_graphs=args.cuda_graphs,
                resident=args.resident)


def add_batch_argument(p, default: Optional[int], help: str) -> None:
    """--batch N: one name for every command; --batch-size stays as a hidden alias (older commands)."""
    p.add_argument("--batch", type=positive_int, default=default, dest="batch_size", metavar="N", help=help)
    p.add_argument("--batch-size", type=positive_int, dest="batch_size", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)


def add_data_arguments(p, what: str) -> None:
    """--data DIR, or --good DIR --bad DIR (two folders without masks: image-level only), of eval and
    calibrate. Read back with data_argument()."""
    p.add_argument("--data", help=f"category folder (MVTec AD, VisA object or DAGM class layout){what}")
    p.add_argument("--good", metavar="DIR", help="instead of --data: a folder of good images (with --bad)")
    p.add_argument("--bad", metavar="DIR",
                   help="instead of --data: a folder of defective images, no masks: image-level only")


def data_argument(args):
    """The --data folder, or a GoodBadFolders from --good and --bad; ConfigError for any other mix."""
    from dad_edge.errors import ConfigError

    pair = (args.good is not None, args.bad is not None)
    if args.data is not None and any(pair):
        raise ConfigError("give --data DIR, or --good DIR --bad DIR, not both")
    if args.data is not None:
        return args.data
    if pair == (True, True):
        from dad_edge.data.good_bad import GoodBadFolders

        return GoodBadFolders(args.good, args.bad)
    if any(pair):
        raise ConfigError(f"--{'good' if pair[0] else 'bad'} needs --{'bad' if pair[0] else 'good'} too "
                          "(or give --data DIR)")
    raise ConfigError("give the data: --data DIR, or --good DIR --bad DIR")


def add_threshold_arguments(p) -> None:
    """--threshold, --pixel-threshold, --sensitivity of a command that runs a Detector (predict, stream):
    decide with these instead of the file's thresholds, without changing the file. Read back with
    threshold_kwargs()."""
    g = p.add_argument_group("thresholds at run time (the model file is not changed; `calibrate` stores new ones)")
    g.add_argument("--threshold", type=finite_float, metavar="T",
                   help="image threshold: a raw score in [0, 1] (default: the model's)")
    g.add_argument("--pixel-threshold", type=finite_float, metavar="T",
                   help="pixel threshold: a raw map value in [0, 1] (default: the model's)")
    g.add_argument("--sensitivity", type=finite_float, metavar="S",
                   help="in [0, 1]: 0.5 = the calibrated thresholds, higher flags more; moves both along "
                        "the calibrated scale (a --threshold / --pixel-threshold given wins for its level)")


def threshold_kwargs(args) -> dict:
    """The Detector keyword arguments add_threshold_arguments() parsed."""
    return dict(image_threshold=args.threshold, pixel_threshold=args.pixel_threshold, sensitivity=args.sensitivity)


def channels(text: str) -> Optional[int]:
    if text == "auto":
        return None
    if text not in ("1", "3"):
        raise argparse.ArgumentTypeError(f"--channels {text}: choose auto, 1 or 3")
    return int(text)


def add_training_arguments(p, what: str = "training") -> None:
    """Options shared by `train` and `distill`: data, budget, optimiser, selection, anomalies."""
    p.add_argument("--data", required=True, help="category folder with train/good (MVTec AD layout)")
    p.add_argument("--out", required=True, help="run folder: model.safetensors, train_state.safetensors")
    p.add_argument("--epochs", type=positive_int, help="stop after this many epochs")
    p.add_argument("--minutes", type=finite_float, help=f"stop after this much {what} time")
    add_batch_argument(p, None, "images per training step (default: the recipe's, 16; 8 for small sets)")
    p.add_argument("--lr-unet", type=finite_float, help="U-Net learning rate (default: the recipe's for the preset "
                   "and device, see training/recipe.py)")
    p.add_argument("--lr-seg", type=finite_float, help="segmentation-net learning rate (default: the recipe's)")
    p.add_argument("--lr-schedule", choices=("cosine", "constant"),
                   help="after a short warm-up: constant (default) or a cosine decay to 0 over the budget")
    p.add_argument("--warmup", type=finite_float, dest="warmup_fraction", metavar="FRACTION",
                   help="linear warm-up over this fraction of the budget (default 0.02)")
    p.add_argument("--ema", type=finite_float, dest="ema_decay", metavar="DECAY",
                   help="validate and save an exponential moving average of the weights (0: off)")
    p.add_argument("--large-target", choices=("noise", "clean"),
                   help="what the large-noise U-Net pass learns on a synthetic anomaly: nothing (noise, the "
                        "paper's) or to reconstruct the clean image (clean); default: the recipe's")
    p.add_argument("--recon-weight", type=finite_float, metavar="W",
                   help="add the reconstruction error |x - x0|, smoothed and standardised on held-out good images, "
                        "to the segmentation map with this weight (0: the segmentation map alone); default: the "
                        "recipe's, 0.5 (0 for the paper presets)")
    p.add_argument("--exposure-correction", choices=("on", "off"),
                   help="take the image score's dependence on the frame's brightness out of it, fitted on held-out "
                        "good images and kept only where significant; default: the recipe's, on (off for the paper "
                        "presets)")
    p.add_argument("--input-gain", metavar="auto|off|R",
                   help="scale every frame to one mean brightness before the networks: auto (default) where the good "
                        "images' brightness varies by 10%% or more (then without --exposure-correction), off, or the "
                        "brightness R in (0, 1) itself")
    p.add_argument("--snapshot-minutes", type=finite_float, metavar="M",
                   help="also write --out/snapshots/model_<M>min.safetensors every M training minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=finite_float, default=0.1, help="good images held out for selection")
    p.add_argument("--select", choices=("val", "last"), default="val",
                   help="keep the lowest validation loss (default) or the last epoch; never the test set")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--no-amp", action="store_true",
                   help="train in float32 (default: bfloat16 / float16 autocast on CUDA, bfloat16 on CPUs with AMX)")
    p.add_argument("--texture-dir", help="folder of texture images (e.g. DTD) as anomaly sources")
    p.add_argument("--foreground", help="'otsu', or a folder of foreground masks named like the images")
    p.add_argument("--anomaly-prob", type=finite_float, default=0.5, help="fraction of synthetic anomalous samples")
    p.add_argument("--band-prob", type=finite_float, default=0.0,
                   help="share of synthetic anomalies that are a large band of changed surface finish "
                        "(large-area, low-contrast defects) instead of a Perlin blob (default 0)")
    p.add_argument("--patch-prob", type=finite_float, default=0.0,
                   help="share of synthetic anomalies that are a patch of another good image, Poisson-blended "
                        "elsewhere (NSA-style natural anomalies) instead of a Perlin blob (default 0)")
    p.add_argument("--line-prob", type=finite_float, default=None,
                   help="share of synthetic anomalies that are a thin line, a crack or scratch a pixel or two "
                        "wide, instead of a Perlin blob (default: the recipe's; 0.3 for compact and tiny on a CPU)")
    p.add_argument("--augment", default="none", metavar="VIEWS",
                   help="views of the good images that are good parts too, comma-separated: hflip, vflip, "
                        "rot90 (e.g. a ground or woven surface); default none: an object may not allow them")
    p.add_argument("--threshold-quantile", type=finite_float, default=0.99,
                   help="thresholds at this quantile of held-out good images")
    p.add_argument("--resume", action="store_true", help="go on from --out/train_state.safetensors")
    p.add_argument("--workers", type=int, default=None,
                   help="threads making synthetic anomalies (default: 0 on CPU, up to 8 on CUDA)")
    p.add_argument("--quiet", action="store_true")


def training_kwargs(args) -> dict:
    """The options add_training_arguments() parsed, as TrainOptions / DistillOptions fields."""
    return dict(
        data=args.data, out=args.out, epochs=args.epochs, minutes=args.minutes, batch_size=args.batch_size,
        lr_unet=args.lr_unet, lr_seg=args.lr_seg, lr_schedule=args.lr_schedule,
        warmup_fraction=args.warmup_fraction, ema_decay=args.ema_decay,
        large_target=args.large_target, recon_weight=args.recon_weight, snapshot_minutes=args.snapshot_minutes,
        exposure_correction=None if args.exposure_correction is None else args.exposure_correction == "on",
        input_gain=args.input_gain,
        seed=args.seed, val_fraction=args.val_fraction,
        select=args.select, device=args.device, amp=not args.no_amp, texture_dir=args.texture_dir,
        foreground=args.foreground, anomaly_prob=args.anomaly_prob, band_prob=args.band_prob,
        patch_prob=args.patch_prob, line_prob=args.line_prob,
        augment=args.augment, threshold_quantile=args.threshold_quantile,
        resume=args.resume, progress=not args.quiet, workers=args.workers)
