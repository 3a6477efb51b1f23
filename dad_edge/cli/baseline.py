"""`dad-edge baseline`: fit a classical image-level detector (IForest, OCSVM, COPOD) on downsampled pixels.

    dad-edge baseline --data my_part --method iforest --out runs/if
    dad-edge eval runs/if/baseline.safetensors --data my_part
"""
from __future__ import annotations

from dad_edge.cli.args import channels, positive_int


def add_command(sub) -> None:
    from dad_edge.baselines.methods import METHODS

    p = sub.add_parser("baseline", help="fit a classical baseline (Isolation Forest, One-Class SVM, COPOD) "
                                        "on downsampled pixels of the good images")
    p.add_argument("--data", required=True, help="category folder (MVTec AD, VisA object or DAGM class layout)")
    p.add_argument("--method", required=True, metavar="|".join(METHODS),  # no choices=: an unknown one is one line
                   help="iforest: Isolation Forest; ocsvm: One-Class SVM (RBF); copod: COPOD")
    p.add_argument("--out", required=True, help="folder for baseline.safetensors")
    p.add_argument("--size", type=positive_int, default=32, help="downsample every image to SIZE x SIZE (default 32)")
    p.add_argument("--channels", type=channels, default=None, help="auto (default), 1 (gray) or 3 (RGB)")
    p.add_argument("--seed", type=int, default=0, help="random state of the Isolation Forest")
    p.set_defaults(func=cmd_baseline)


def cmd_baseline(args) -> int:
    from dad_edge.baselines.fit import fit_baseline

    r = fit_baseline(args.data, args.method, args.out, image_size=args.size, channels=args.channels, seed=args.seed)
    pixels = f"{r.image_size}x{r.image_size} {'gray' if r.channels == 1 else 'RGB'}"
    print(f"{r.method} on {r.num_images} images ({pixels} pixels): read {r.read_seconds:.1f} s, "
          f"fit {r.fit_seconds:.2f} s -> {r.path}")
    print(f"evaluate: dad-edge eval {r.path} --data {args.data}")
    return 0
