"""`dad-edge serve`: a model on NVIDIA Triton Inference Server (PyTriton), for many cameras or clients.

    dad-edge serve model.onnx --http-port 8000 --grpc-port 8001 --max-batch 32
    dad-edge serve engine.plan --host 0.0.0.0 --metrics-port 8002      # listen beyond this machine

Clients: dad_edge.Detector("grpc://HOST:8001/dad_edge"), `dad-edge stream grpc://HOST:8001/dad_edge ...`,
or any Triton client (wire format: dad_edge/serving/protocol.py). Registered by dad_edge/cli/__init__.py.
The server needs numpy<2 (nvidia-pytriton 0.7): under numpy 2 the command runs itself in the Python named
by DAD_EDGE_SERVE_PYTHON (dad_edge/serving/relaunch.py).
"""
from __future__ import annotations

import argparse
import logging

from dad_edge.cli.args import positive_int


def add_command(sub) -> None:
    p = sub.add_parser("serve", help="serve a model on Triton Inference Server (HTTP + gRPC, dynamic batching)")
    p.add_argument("model", help="model.safetensors, .onnx or .plan / .engine (anything a Detector loads)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, help="Prometheus metrics on this port (default: none)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--max-batch", type=positive_int, default=32, help="largest dynamic batch (default 32)")
    p.add_argument("--queue-delay-us", type=int, default=2000,
                   help="how long a request may wait for others to batch with (default 2000 us)")
    p.add_argument("--name", default="dad_edge", help="model name clients ask for (default dad_edge)")
    p.add_argument("--version", type=positive_int, default=1, help="model version (default 1)")
    p.add_argument("--device", help="cpu, cuda, cuda:N (default: the GPU where the backend has one)")
    p.set_defaults(func=cmd_serve)


def server_argv(args: argparse.Namespace) -> list:
    """The `dad-edge serve` command line that gives `args` (for the run in another Python)."""
    argv = ["serve", args.model, "--http-port", str(args.http_port), "--grpc-port", str(args.grpc_port),
            "--host", args.host, "--max-batch", str(args.max_batch), "--queue-delay-us", str(args.queue_delay_us),
            "--name", args.name, "--version", str(args.version)]
    if args.metrics_port is not None:
        argv += ["--metrics-port", str(args.metrics_port)]
    if args.device:
        argv += ["--device", args.device]
    return argv


def cmd_serve(args: argparse.Namespace) -> int:
    from dad_edge.serving import relaunch

    python = relaunch.serve_python()
    if python and relaunch.why_not_here():
        # PyTriton cannot serve under this Python (numpy 2: relaunch.py); the one named by
        # DAD_EDGE_SERVE_PYTHON runs this same command on this same dad_edge, in this process's place.
        relaunch.exec_in(python, server_argv(args))

    from dad_edge.serving.server import ServeOptions, serve

    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO)
    logging.getLogger("pytriton").setLevel(logging.WARNING)  # its start-up chatter is not the user's business
    options = ServeOptions(model=args.model, name=args.name, version=args.version, host=args.host,
                           http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                           max_batch=args.max_batch, queue_delay_us=args.queue_delay_us, device=args.device)
    return serve(options, ready=lambda line: print(line, flush=True))
