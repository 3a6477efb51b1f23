"""`dad-edge compare`: several methods on one data set under one budget, one table.

    dad-edge compare --data digits --methods diffusionad,recon,dit,iforest,ocsvm,copod --minutes 1
    dad-edge compare --data ../shared/data/magnetic_tile --methods diffusionad,iforest --minutes 10

Prints the table (Markdown) and writes --out/compare.json, compare.csv and compare.png; every
run stays in --out/runs/<class>/<method>/, ready for `dad-edge export`.
"""
from __future__ import annotations

from dad_edge.cli.args import positive_int


def add_command(sub) -> None:
    from dad_edge.training.compare import METHOD_NAMES

    p = sub.add_parser("compare", help="train and evaluate several methods on one data set under one budget: "
                                       "one table of AUROC, training time, latency, parameters and GFLOPs")
    p.add_argument("--data", required=True, help="digits (built in), a one-class data set folder (CIFAR-10, "
                                                 "MNIST, class folders) or one category (MVTec, VisA, DAGM layout)")
    p.add_argument("--methods", required=True, metavar=",".join(METHOD_NAMES),  # no choices: one line per bad name
                   help="comma list: diffusionad, recon (reconstruction error), dit (DiffusionAD with a DiT), "
                        "iforest, ocsvm, copod (classical, on downsampled pixels)")
    p.add_argument("--out", default="runs/compare", help="folder for runs/, data/ and compare.* "
                                                         "(default runs/compare)")
    p.add_argument("--classes", help="comma list of normal classes to run (one-class data; default all)")
    p.add_argument("--minutes", type=float, help="training budget per method per class")
    p.add_argument("--epochs", type=positive_int, help="or an epoch budget per method per class")
    p.add_argument("--preset", default="compact", help="the trained methods' networks (default compact)")
    p.add_argument("--image-size", type=positive_int, help="the models' input side (default: the recipe's)")
    p.add_argument("--baseline-size", type=positive_int, default=32,
                   help="the baselines' downsampled side (default 32)")
    p.add_argument("--max-test", type=positive_int,
                   help="at most this many anomalous test images per class (one-class data; for speed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (models; baselines run on the CPU)")
    p.set_defaults(func=cmd_compare)


def cmd_compare(args) -> int:
    from dad_edge.training.compare import CompareOptions, compare, parse_methods
    from dad_edge.training.compare_report import best_method, format_table, write_report

    classes = None if args.classes is None else [c.strip() for c in args.classes.split(",") if c.strip()]
    opts = CompareOptions(data=args.data, out=args.out, methods=parse_methods(args.methods), classes=classes,
                          minutes=args.minutes, epochs=args.epochs, seed=args.seed, max_test=args.max_test,
                          preset=args.preset, image_size=args.image_size, baseline_size=args.baseline_size,
                          device=args.device)
    result = compare(opts, log=lambda line: print(line, flush=True))
    header, rows = write_report(result, args.out)
    print()
    print(format_table(header, rows))
    print(f"\nmachine: {result.machine}")
    method, auroc, path = best_method(header, rows)
    print(f"best mean image AUROC: {method} ({auroc:.3f}), {path}")
    print(f"wrote {args.out}/compare.json, compare.csv, compare.png")
    return 0
