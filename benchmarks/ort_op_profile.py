"""Where an ONNX Runtime CPU session spends its time, per operator type, for several .onnx files side by side.

    python benchmarks/ort_op_profile.py compact.onnx compact-int8.onnx [--batch 1] [--runs 30] [--rounds 15]

Each file is opened with the Detector's own session settings (dad_edge/runtime/backends/onnxruntime_backend.py,
SESSION), so the graph optimisations (QDQ fusion into QLinearConv, the NHWC layout pass) are the deployed ones.
Two readings:

1. ONNX Runtime's profiler (SessionOptions.enable_profiling): the kernel time of every node over `--runs`
   runs, summed per operator type and divided by the runs. Profiling adds a little per node, so this says
   where the time goes, not how long a call takes.
2. Plain session.run timings without the profiler, interleaved: `--rounds` rounds, each running every file
   5 times in turn, so that a machine's drift hits all files alike; p50 and each file's speed relative to
   the first file.

It explains the INT8 rows of test_latency.py (benchmarks/README.md, "CPU INT8 and OpenVINO"): which float
operators and layout steps are left around the integer convolutions.
"""
from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path
from typing import Dict, List

import numpy as np


def _session(ort, path: Path, profile_prefix=None):
    from dad_edge.runtime.backends.onnxruntime_backend import SESSION, session_options

    options = session_options(ort, dict(SESSION))
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _input(session, batch: int) -> Dict[str, np.ndarray]:
    inp = session.get_inputs()[0]
    _, channels, height, width = inp.shape  # the batch is dynamic; the rest is fixed by the export
    x = np.random.default_rng(0).uniform(0, 255, (batch, channels, height, width)).astype(np.float32)
    return {inp.name: x}


def op_times(ort, path: Path, batch: int, runs: int, folder: Path) -> Dict[str, tuple]:
    """{operator type: (ms per run, nodes per run)} from ONNX Runtime's profiler."""
    session = _session(ort, path, folder / path.stem)
    feed = _input(session, batch)
    for _ in range(runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    total: Dict[str, float] = collections.Counter()
    count: Dict[str, int] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            total[event["args"]["op_name"]] += event["dur"]  # microseconds
            count[event["args"]["op_name"]] += 1
    return {op: (us / runs / 1e3, count[op] // runs) for op, us in total.items()}


def interleaved_p50(ort, paths: List[Path], batch: int, rounds: int) -> List[float]:
    sessions = [_session(ort, p) for p in paths]
    feeds = [_input(s, batch) for s in sessions]
    for s, f in zip(sessions, feeds):
        for _ in range(3):  # warm-up: the arena and the first-run allocations
            s.run(None, f)
    times: List[List[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for i, (s, f) in enumerate(zip(sessions, feeds)):
            for _ in range(5):
                t0 = time.perf_counter()
                s.run(None, f)
                times[i].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", nargs="+", type=Path, help=".onnx files (the first is the reference for ratios)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30, help="profiled runs per file")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (5 runs per file each)")
    parser.add_argument("--top", type=int, default=14, help="operator types listed per file")
    parser.add_argument("--profile-dir", type=Path, default=Path("."), help="where ONNX Runtime writes its JSON")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.onnx if not p.is_file()]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}; give .onnx files written by `dad-edge export`")
    import onnxruntime as ort

    args.profile_dir.mkdir(parents=True, exist_ok=True)
    print(f"onnxruntime {ort.__version__}, batch {args.batch}")
    for path in args.onnx:
        ops = op_times(ort, path, args.batch, args.runs, args.profile_dir)
        print(f"{path.name}: kernels {sum(ms for ms, _ in ops.values()):.1f} ms per run (profiled)")
        for op, (ms, n) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:args.top]:
            print(f"  {op:26s} {ms:7.2f} ms  {n:4d} nodes")
    p50 = interleaved_p50(ort, args.onnx, args.batch, args.rounds)
    print("interleaved session.run, no profiler:")
    for path, t in zip(args.onnx, p50):
        print(f"  {path.name:32s} p50 {1e3 * t:7.1f} ms   {p50[0] / t:4.2f}x {args.onnx[0].name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
