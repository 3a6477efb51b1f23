"""`dad-edge distill`: a compact student from a trained teacher (see dad_edge/training/distill.py)."""
from __future__ import annotations

from dad_edge.cli import _positive_int, add_training_arguments, training_kwargs


def add_command(sub) -> None:
    p = sub.add_parser("distill", help="distil a compact (optionally single-pass) student from a trained teacher")
    p.add_argument("--teacher", required=True, help="the teacher's model.safetensors (a two-pass model)")
    add_training_arguments(p, what="distillation")
    p.add_argument("--preset", default="compact",
                   help="the student's networks: paper | compact | tiny (default compact)")
    p.add_argument("--image-size", type=_positive_int, help="the student's input size (default: the teacher's)")
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
