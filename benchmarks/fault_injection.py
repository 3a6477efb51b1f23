"""Many SIGKILLs of `dad-edge train`, then --resume (issue #17, part 1; the short version is
tests/test_fault_injection.py).

    nice -n 19 python benchmarks/fault_injection.py --kills 40

Each cycle trains the tiny preset on a tiny demo category into a new folder and kills the run
again and again until one run finishes. Each kill lands, with equal odds, inside a model write,
inside a training-state write (the atomic writer sleeps there: DAD_EDGE_TEST_WRITE_DELAY_S), or
at a uniformly random moment of a run (imports included). A kill is survived when, after it,
every file in the folder loads (a killed write's temporary file aside, which the next run
removes) and the training state has not gone back; a cycle ends bit-exact when its final
weights equal those of an uninterrupted run. Prints the counts.
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

# The helpers the tests use (tests/fault_support.py); this script runs outside pytest.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from dad_edge.data.demo import build_demo_dataset  # noqa: E402
from fault_support import (MODEL, STATE, check_folder, launch, sigkill, state_epoch,  # noqa: E402
                           wait_for_temp, weight_differences)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=40, help="kills to try in all (default 40)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write-delay", type=float, default=0.3, help="seconds the writer sleeps in a write-kill run")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="dad_edge_faults_"))
    data = build_demo_dataset(tmp / "data", size=32, n_train=12, n_test_good=1, n_test_per_defect=1)

    t0 = time.monotonic()
    reference = tmp / "reference"
    proc = launch(data, reference, args.epochs)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"uninterrupted run failed: {err.decode()}")
    run_s = time.monotonic() - t0
    print(f"uninterrupted run: {run_s:.1f} s wall, {args.epochs} epochs", flush=True)

    tried = survived = 0
    by_mode = {"model write": [0, 0], "state write": [0, 0], "random": [0, 0]}
    missed = cycles = exact = 0
    while tried < args.kills:
        cycles += 1
        out = tmp / f"cycle{cycles}"
        while tried < args.kills:
            mode = rng.choice(list(by_mode))
            before = state_epoch(out)
            proc = launch(data, out, args.epochs, write_delay_s=0.0 if mode == "random" else args.write_delay)
            if mode == "random":
                deadline = time.monotonic() + rng.uniform(0.0, run_s)
                while proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.005)
            else:  # inside the k-th such write of this run, k at random among the epochs left
                for k in range(rng.randint(1, max(1, args.epochs - before)), 0, -1):
                    temp = wait_for_temp(proc, out, MODEL if mode == "model write" else STATE)
                    while k > 1 and temp is not None and temp.exists() and proc.poll() is None:
                        time.sleep(0.005)  # let this write finish; the kill goes into a later one
            if not sigkill(proc):  # the run finished first: the cycle is complete
                missed += 1
                break
            tried += 1
            by_mode[mode][1] += 1
            try:
                check_folder(out)
                after = state_epoch(out)
                ok = after >= before
                problem = "" if ok else f"state went back from epoch {before} to {after}"
            except AssertionError as exc:
                ok, problem = False, str(exc)
            survived += ok
            by_mode[mode][0] += ok
            print(f"kill {tried:3d} ({mode}): {'survived' if ok else 'LOST: ' + problem}; state at epoch "
                  f"{state_epoch(out) if ok else '?'}", flush=True)
        # Finish the cycle and compare with the uninterrupted run.
        proc = launch(data, out, args.epochs)
        _, err = proc.communicate()
        try:
            same = proc.returncode == 0 and not check_folder(out) and not weight_differences(reference, out)
        except AssertionError as exc:  # a file left unreadable
            same, err = False, str(exc).encode()
        exact += same
        print(f"cycle {cycles}: resumed to the end {'bit-exact' if same else 'DIFFERENT: ' + err.decode()[-300:]}",
              flush=True)

    print(f"\nkills survived / tried: {survived} / {tried} ("
          + ", ".join(f"{m}: {s}/{t}" for m, (s, t) in by_mode.items())
          + f"); cycles ending bit-exact with the uninterrupted run: {exact} / {cycles}; "
          f"runs that finished before their kill: {missed}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if survived == tried and exact == cycles else 1


if __name__ == "__main__":
    sys.exit(main())
