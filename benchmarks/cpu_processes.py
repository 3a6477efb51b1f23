"""Processes vs threads for CPU training, side by side (issue #12 part 2): `dad-edge train` as a user runs it,
in interleaved rounds, each variant for the same epochs on the same data.

    python benchmarks/cpu_processes.py --data ../shared/data/magnetic_tile --epochs 1 --rounds 2

Variants: one process with torch's threads = cores (the default, `--processes 1`), one process with 1
thread, and one process per core (`--processes N`, training/processes.py). Printed per variant: the
train images/s of every epoch line (the Trainer's own count: whole batches over training time, not
validation) and the wall time of the command. Needs a quiet machine: every variant uses all cores.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EPOCH_LINE = re.compile(r"epoch (\d+): .* ([0-9.]+) img/s")


def run(data: str, epochs: int, processes: int, threads: int, out: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DAD_EDGE_CPU_PROCESSES"}
    env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "dad_edge", "train", "--data", data, "--out", str(out), "--epochs", str(epochs),
           "--processes", str(processes)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    rates = [float(m.group(2)) for m in EPOCH_LINE.finditer(r.stdout)]
    return {"images_per_s": rates, "wall_s": round(wall, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/magnetic_tile")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    # The recipe's default is one process with torch's threads (Recipe.processes); --processes N is the option.
    default = f"1 process x {cores} threads (default)"
    variants = {default: (1, cores), "1 process x 1 thread": (1, 1), f"{cores} processes x 1 thread": (cores, 1)}
    rows = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for name, (procs, threads) in variants.items():
                res = run(args.data, args.epochs, procs, threads, Path(tmp) / f"{rnd}_{procs}_{threads}")
                rows[name].append(res)
                print(f"round {rnd + 1} {name}: {res['images_per_s']} img/s, {res['wall_s']} s", flush=True)
    base = statistics.median(r for res in rows[default] for r in res["images_per_s"])
    print(f"\n{'variant':<36} {'median img/s':>12} {'x threads':>9}")
    for name, res in rows.items():
        med = statistics.median(r for x in res for r in x["images_per_s"])
        print(f"{name:<36} {med:>12.1f} {med / base:>9.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps({"cores": cores, "epochs": args.epochs, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
