"""`dad-edge distill`: a compact student from a trained teacher (see distill.py)."""
from __future__ import annotations

from .cli import _positive_int


def add_command(sub) -> None:
    p = sub.add_parser("distill", help="distil a compact (optionally single-pass) student from a trained teacher")
    p.add_argument("--teacher", required=True, help="the teacher's model.safetensors (a two-pass model)")
    p.add_argument("--data", required=True, help="category folder with train/good (MVTec AD layout)")
    p.add_argument("--out", required=True, help="run folder: model.safetensors, train_state.safetensors")
    p.add_argument("--preset", default="compact",
                   help="the student's networks: paper | compact | tiny (default compact)")
    p.add_argument("--image-size", type=_positive_int, help="the student's input size (default: the teacher's)")
    p.add_argument("--single-pass", action="store_true",
                   help="one U-Net pass (reads x0_ng directly) instead of the two norm-guided passes")
    p.add_argument("--segmentation", choices=("train", "distill"), default="train",
                   help="train the segmentation net on the synthetic masks (default), or also match the teacher's map")
    p.add_argument("--epochs", type=_positive_int, help="stop after this many epochs")
    p.add_argument("--minutes", type=float, help="stop after this much distillation time")
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
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_distill)


def distill_options(args):
    from .distill import DistillOptions

    return DistillOptions(
        teacher=args.teacher, data=args.data, out=args.out, preset=args.preset, image_size=args.image_size,
        single_pass=args.single_pass, segmentation=args.segmentation, epochs=args.epochs, minutes=args.minutes,
        batch_size=args.batch_size, lr_unet=args.lr_unet, lr_seg=args.lr_seg, seed=args.seed,
        val_fraction=args.val_fraction, select=args.select, device=args.device, amp=not args.no_amp,
        texture_dir=args.texture_dir, foreground=args.foreground, anomaly_prob=args.anomaly_prob,
        threshold_quantile=args.threshold_quantile, resume=args.resume, progress=not args.quiet)


def cmd_distill(args) -> int:
    from .distill import distill

    path = distill(distill_options(args))
    print(f"model: {path}")
    return 0
