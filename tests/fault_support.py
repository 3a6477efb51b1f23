"""Fault injection for `dad-edge train`, shared by tests/test_fault_injection.py and
benchmarks/fault_injection.py: run it as a subprocess, SIGKILL it at a chosen moment (inside a
checkpoint write, or at random), check the output folder, resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

from dad_edge.artifacts.atomic import WRITE_DELAY_ENV, is_temp_file
from dad_edge.artifacts.checkpoint import read_tensors
from training_support import DIFFUSIONAD

# The options of tests/test_train.py (CPU, constant rate: bit-exact resume), as CLI flags.
TRAIN_FLAGS = ["--preset", "tiny", "--method", "diffusionad", "--batch-size", "4", "--device", "cpu",
               "--lr-schedule", "constant", "--warmup", "0", "--seed", "0"]
TRAIN_KWARGS = dict(preset="tiny", batch_size=4, device="cpu", lr_schedule="constant", warmup_fraction=0.0,
                    seed=0, progress=False, model_overrides=DIFFUSIONAD)
STATE, MODEL = "train_state.safetensors", "model.safetensors"


def train_argv(data: Path, out: Path, epochs: int, resume: bool) -> List[str]:
    return [sys.executable, "-m", "dad_edge", "train", "--data", str(data), "--out", str(out),
            "--epochs", str(epochs), *TRAIN_FLAGS] + (["--resume"] if resume else [])


def child_env(write_delay_s: float = 0.0) -> Dict[str, str]:
    """One torch thread, as the tests' own process (conftest.py): the same arithmetic, bit for bit."""
    env = dict(os.environ, OMP_NUM_THREADS="1", DAD_EDGE_TEST_THREADS="1")
    env.pop(WRITE_DELAY_ENV, None)
    if write_delay_s:
        env[WRITE_DELAY_ENV] = str(write_delay_s)
    return env


def launch(data: Path, out: Path, epochs: int, write_delay_s: float = 0.0, log: Optional[Path] = None,
           preexec_fn=None, prefix: List[str] = ()) -> subprocess.Popen:
    """Start `dad-edge train`, resuming when the folder holds a training state."""
    resume = (out / STATE).is_file()
    stdout = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen([*prefix, *train_argv(data, out, epochs, resume)], env=child_env(write_delay_s),
                                stdout=stdout, stderr=subprocess.PIPE, preexec_fn=preexec_fn)
    finally:
        if log is not None:
            stdout.close()


def wait_for_temp(proc: subprocess.Popen, out: Path, target: str, timeout_s: float = 120.0) -> Optional[Path]:
    """Poll until the atomic writer's temporary file of `target` appears (a write in progress); None when
    the process ends first."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and proc.poll() is None:
        names = os.listdir(out) if out.is_dir() else []
        for name in names:
            if is_temp_file(name) and name.startswith(f".{target}."):
                return out / name
        time.sleep(0.005)
    return None


def sigkill(proc: subprocess.Popen) -> bool:
    """SIGKILL and reap (a zombie would still look alive to the stale-temp check); False when it had ended."""
    alive = proc.poll() is None
    if alive:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()
    return alive


def check_folder(out: Path) -> List[Path]:
    """Every file under `out` loads, except temporary files of killed writes (returned: the next run removes
    them). Raises AssertionError naming any other file that does not load."""
    leftovers = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if is_temp_file(path):
            leftovers.append(path)
            continue
        try:
            read_tensors(path)
        except Exception as exc:
            raise AssertionError(f"{path} is left unreadable: {exc}") from None
    return leftovers


def state_epoch(out: Path) -> int:
    """Finished epochs recorded in the training state (0 when there is none yet)."""
    if not (out / STATE).is_file():
        return 0
    return int(read_tensors(out / STATE)[1]["train_state"]["epoch"])


def weight_differences(a: Path, b: Path) -> List[str]:
    """Tensors (of the model and the training state) that differ between two run folders."""
    different = []
    for name in (MODEL, STATE):
        ta, _ = read_tensors(a / name)
        tb, _ = read_tensors(b / name)
        if ta.keys() != tb.keys():
            different.append(f"{name}: keys differ")
            continue
        different += [f"{name}:{k}" for k in ta if not torch.equal(ta[k], tb[k])]
    return different
