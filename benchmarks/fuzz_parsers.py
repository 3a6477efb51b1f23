"""The long fuzzing run of every parser (issue #17, part 2): tests/test_fuzz_parsers.py with many
more examples, random (not derandomized) inputs, and Hypothesis' statistics per parser.

    nice -n 19 python benchmarks/fuzz_parsers.py --examples 2000

Prints, per test (one per parser), how many cases ran and how they ended, then pytest's verdict:
a failure is a bug, with its shrunk falsifying input.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=2000, help="examples per parser (default 2000)")
    ap.add_argument("-k", default=None, help="only the tests matching this pytest -k expression")
    args = ap.parse_args()
    env = dict(os.environ, DAD_EDGE_FUZZ_EXAMPLES=str(args.examples), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics",
           "-W", "ignore::DeprecationWarning", str(REPO / "tests" / "test_fuzz_parsers.py")]
    if args.k:
        cmd += ["-k", args.k]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    text = done.stdout + done.stderr
    # Hypothesis' statistics: "test_x:" then "- during generate phase (...): N passing examples, M failing ..."
    for name, body in re.findall(r"^tests/test_fuzz_parsers\.py::(\w+):\n((?:\s+- .*\n|\s*\n)+)", text, re.M):
        counts = re.findall(r"- during (\w+) phase \(([\d.]+) seconds\):\n\s+- Typical runtimes: .*\n"
                            r"\s+- (\d+) passing examples?, (\d+) failing examples?, (\d+) invalid", body)
        summary = ", ".join(f"{phase}: {p} passing, {f} failing, {i} invalid ({float(s):.0f} s)"
                            for phase, s, p, f, i in counts)
        print(f"{name}: {summary or body.strip()}")
    print(text.strip().splitlines()[-1])
    failures = re.findall(r"Falsifying example: (.*?)\n\n", text, re.S)
    for f in failures:
        print("FOUND:", f.strip()[:500])
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
