"""The `dad-edge` command line: builds the parser from the command modules and runs one command.
Errors a user can fix print as one line, exit code 2.

    cli/args.py      argument helpers shared by the commands
    cli/train.py     train, distill, demo
    cli/evaluate.py  eval, info
    cli/deploy.py    export, calibrate, predict
    cli/stream.py    stream
    cli/baseline.py  baseline (classical image-level detectors)
    cli/compare.py   compare (several methods on one data set, one table)
    cli/serve.py     serve (a model on Triton Inference Server)
    cli/benchmark.py benchmark (latency and images/s of a model on this machine)
    cli/help.py      what --help shows: defaults and examples
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from dad_edge.errors import DadEdgeError


def build_parser() -> argparse.ArgumentParser:
    from dad_edge.cli import baseline, benchmark, compare, deploy, evaluate, serve, stream, train
    from dad_edge.cli.help import apply_help
    from dad_edge.version import __version__

    parser = argparse.ArgumentParser(prog="dad-edge", description="DiffusionAD anomaly detection, train to edge")
    parser.add_argument("--version", action="version", version=f"dad_edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_demo(sub)
    train.add_train(sub)
    evaluate.add_eval(sub)
    evaluate.add_info(sub)
    deploy.add_commands(sub)
    train.add_distill(sub)
    stream.add_command(sub)
    baseline.add_command(sub)
    compare.add_command(sub)
    benchmark.add_command(sub)
    serve.add_command(sub)
    apply_help(sub)
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
