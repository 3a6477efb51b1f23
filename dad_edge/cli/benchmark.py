"""`dad-edge benchmark`: p50 / p99 latency and images/s of a model on this machine, through the Detector.

    dad-edge benchmark engine.plan --batch 1 8 32 --json bench.json

The same code as `dad_edge.benchmark` (dad_edge/runtime/benchmark.py); registered by
dad_edge/cli/__init__.py through add_command().
"""
from __future__ import annotations

import argparse
import json

from dad_edge.cli.args import add_runtime_arguments, positive_int, runtime_kwargs


def frame_size(text: str):
    """HxW, e.g. 1080x1920 -> (1080, 1920)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"{text}: give the frame size as HEIGHTxWIDTH, e.g. 1080x1920")
    return int(parts[0]), int(parts[1])


def add_command(sub) -> None:
    p = sub.add_parser("benchmark", help="p50/p99 latency and images/s of a model on this machine")
    p.add_argument("model", help="model.safetensors, .onnx or .plan / .engine")
    p.add_argument("--batch", type=positive_int, nargs="+", default=[1], metavar="N", dest="batch_size",
                   help="batch sizes to time, each one Detector call")
    p.add_argument("--batch-size", type=positive_int, nargs="+", dest="batch_size", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    add_runtime_arguments(p)
    p.add_argument("--frame-size", type=frame_size, metavar="HxW",
                   help="size of the frames (default: the model's input size; a camera's adds the resize)")
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per batch size (at least 10 calls)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first, per batch size")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE (- for stdout only)")
    p.set_defaults(func=cmd_benchmark)


def cmd_benchmark(args: argparse.Namespace) -> int:
    from dad_edge.artifacts.atomic import write_bytes_atomic
    from dad_edge.runtime.benchmark import benchmark_model, format_table

    report = benchmark_model(args.model, args.batch_size, frame_size=args.frame_size, seconds=args.seconds,
                             warmup=args.warmup, **runtime_kwargs(args))
    text = json.dumps(report, indent=2)
    if args.json == "-":
        print(text)
        return 0
    print(format_table(report))
    if args.json:
        write_bytes_atomic(args.json, (text + "\n").encode())
        print(f"wrote {args.json}")
    return 0
