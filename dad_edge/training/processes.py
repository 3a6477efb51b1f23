"""CPU training in several processes on one machine, each taking a share of every batch (opt-in).

    dad-edge train --data DIR --minutes 30 --processes 2      # 2 processes of 1 thread each
    dad-edge train --data DIR --minutes 30 --processes auto   # one per core, up to 8

Why it exists, and why it is not the default: the compact nets' convolutions are small, and one
might expect them not to split well across threads inside one operator. Measured side by side on the
2-core development VM (benchmarks/cpu_processes.py, compact 128x128 gray, magnetic tile, 2 rounds):
one process with 2 threads 22.6 train images/s, two single-thread processes 24.1 (1.07x), one
process with 1 thread 12.6. A 7 % gain does not pay for the second process's start-up, the gloo
all-reduce and BatchNorm statistics over half batches by default; `--processes` is there for machines
where it measures better (more cores than one process uses well).

How: DistributedDataParallel over gloo (training/distributed.py); each rank takes its share of every
batch (`split` in RankBatches), so the batch size, steps per epoch and synthetic anomalies stay those
of one process; gradients are averaged over the ranks; BatchNorm normalises each rank's share
(rank 0's running statistics are saved). The launcher is ours, not torchrun's, so that the user
sees one process's output and errors: rank 0's stdout and stderr are the user's, the other ranks'
stderr is kept in a temporary file and printed only if that rank fails; a rank's DadEdgeError comes
back as the same error from `train()`. The ranks die with the launcher (PR_SET_PDEATHSIG): a killed
`dad-edge train` never leaves a rank writing on.

DAD_EDGE_CPU_PROCESSES=N|auto sets the default (unset: 1); `--processes` (TrainOptions.processes)
overrides it.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional, Sequence, Union

from dad_edge import errors
from dad_edge.artifacts.atomic import TEMP_SUFFIX
from dad_edge.errors import ConfigError, TrainingError

ENV_DEFAULT = "DAD_EDGE_CPU_PROCESSES"  # the default process count on a CPU: N or auto (unset: 1)
ENV_SPLIT = "DAD_EDGE_SPLIT_RANKS"  # set by launch(): the ranks split each batch (vs torchrun: a batch each)
ENV_ERROR_FILE = "DAD_EDGE_RANK_ERROR_FILE"
ENV_PARENT = "DAD_EDGE_RANK_PARENT"
MAX_CPU_PROCESSES = 8  # beyond this the all-reduce of the weights per step costs more than a rank adds
MIN_RANK_BATCH = 4  # images per rank and step: BatchNorm statistics need a few
STOP_GRACE_S = 20.0


def usable_cores() -> int:
    """Cores this process may run on (its affinity: `taskset`, a container's cpuset), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def per_core_processes(batch_size: int, cores: Optional[int] = None) -> int:
    """One process per usable core, at most MAX_CPU_PROCESSES, each with at least MIN_RANK_BATCH
    images per step, and a count that divides the batch."""
    cores = usable_cores() if cores is None else cores
    for n in range(min(cores, MAX_CPU_PROCESSES, batch_size // MIN_RANK_BATCH), 1, -1):
        if batch_size % n == 0:
            return n
    return 1


def read_processes(text: str, name: str = "processes") -> Union[int, str]:
    """'auto' or a whole number >= 1 from `text` (a CLI value, an environment variable called `name`)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{name} {text}: choose auto (one per core) or a whole number >= 1")
    return n


def default_processes(batch_size: int) -> int:
    """The CPU recipe's process count: DAD_EDGE_CPU_PROCESSES (a number or 'auto') if set, else 1."""
    env = os.environ.get(ENV_DEFAULT)
    if env is None:
        return 1
    n = read_processes(env, ENV_DEFAULT)
    n = per_core_processes(batch_size) if n == "auto" else n
    return n if batch_size % n == 0 and batch_size // n >= 2 else 1


def resolve_processes(value: Optional[Union[int, str]], batch_size: int, device_type: str) -> int:
    """The process count for an option's value (None: the default; 'auto': one per core) on a device."""
    if device_type != "cpu" and (value is None or value == "auto"):
        return 1
    if value is None:
        return default_processes(batch_size)
    return per_core_processes(batch_size) if value == "auto" else value


def check_processes(processes: int, batch_size: int, device_type: str) -> None:
    if processes < 1:
        raise ConfigError(f"processes={processes} must be >= 1")
    if processes > 1 and device_type != "cpu":
        raise ConfigError(f"processes={processes}: several training processes are for CPUs; on GPUs start one "
                          "process per GPU with torchrun (README: multi-process training)")
    if batch_size % processes or batch_size // processes < 2:
        raise ConfigError(f"processes={processes} must divide the batch size ({batch_size}) into shares of at "
                          "least 2 images (BatchNorm); change --processes or --batch-size")


def launched_here() -> bool:
    """Whether this process is a rank started by launch() (each rank takes a share of every batch)."""
    return os.environ.get(ENV_SPLIT) == "1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _core_sets(processes: int) -> List[List[int]]:
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return [[] for _ in range(processes)]
    per = max(1, len(cores) // processes)
    return [cores[(r * per) % len(cores):(r * per) % len(cores) + per] for r in range(processes)]


def planned(opts) -> int:
    """How many processes `train(opts)` runs in: the recipe's on a CPU, else 1."""
    from dad_edge.data.layouts import open_category
    from dad_edge.training.train import resolve_device, typical_side

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or resolve_device(opts.device).type != "cpu":
        return 1  # already one rank of a job (ours or torchrun's), or a GPU
    if opts.processes is None and ENV_DEFAULT not in os.environ:
        return 1  # the default: no need to read the data to size the batch
    samples, _ = open_category(opts.data).train_val_split(opts.val_fraction, opts.seed)
    return opts.recipe("cpu", typical_side(samples), len(samples)).processes


def launch(opts, processes: int) -> Path:
    """Train `opts` in `processes` ranks on this machine; -> rank 0's model.safetensors."""
    payload = json.dumps(asdict(opts))
    port = _free_port()
    cores = _core_sets(processes)
    threads = max(1, len(cores[0]))
    procs: List[subprocess.Popen] = []
    logs = []
    error_files = []
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        for rank in range(processes):
            # In the run's folder, named as atomic.py names temporary files (with this launcher's PID):
            # if the launcher is SIGKILLed before its `finally`, the next run there removes them
            # (Trainer.run's remove_stale_temps) instead of leaving them in /tmp for good.
            fd, name = tempfile.mkstemp(prefix=f".rank{rank}-error.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=out)
            os.close(fd)
            error_files.append(name)
            env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(processes),
                   "LOCAL_WORLD_SIZE": str(processes), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                   "OMP_NUM_THREADS": str(threads), ENV_SPLIT: "1", ENV_ERROR_FILE: name,
                   ENV_PARENT: str(os.getpid()), "DAD_EDGE_RANK_CORES": ",".join(map(str, cores[rank]))}
            log = None if rank == 0 else tempfile.TemporaryFile(mode="w+")
            logs.append(log)
            procs.append(subprocess.Popen([sys.executable, "-m", "dad_edge.training.processes", payload], env=env,
                                          stdout=None if rank == 0 else subprocess.DEVNULL,
                                          stderr=None if rank == 0 else log))
        codes = _wait(procs)
    except BaseException:  # Ctrl-C, or an error here: the ranks stop with us
        _stop(procs)
        raise
    finally:
        messages = [_read_error(path) for path in error_files]
        tails = [_tail(log) for log in logs]
        for path in error_files:
            try:
                os.unlink(path)
            except OSError:
                pass
    # The rank that failed first, not the ones stopped because of it (SIGTERM: 143 / -15).
    failed = [r for r, c in enumerate(codes) if c != 0]
    failed.sort(key=lambda r: (messages[r] is None, codes[r] in (143, -signal.SIGTERM, -signal.SIGKILL)))
    for rank in failed[:1]:
        code = codes[rank]
        if messages[rank] is not None:
            kind, message = messages[rank]
            cls = getattr(errors, kind, None)
            if not (isinstance(cls, type) and issubclass(cls, errors.DadEdgeError)):
                cls = TrainingError
            raise cls(message)
        tail = tails[rank]
        sys.stderr.write(tail)
        raise TrainingError(f"training process {rank} of {processes} stopped with exit code {code}"
                            f"{' (its last lines are above)' if tail or rank == 0 else ''}; "
                            f"--processes 1 trains in one process")
    return Path(opts.out) / "model.safetensors"


def _tail(log, lines: int = 15) -> str:
    """The last lines a rank wrote to its stderr file (closed here); '' for rank 0 (the user's stderr)."""
    if log is None:
        return ""
    with log:
        log.seek(0)
        return "".join(log.readlines()[-lines:])


def _wait(procs: Sequence[subprocess.Popen]) -> List[int]:
    """Wait for every rank; when one fails, the others are stopped (they would wait for it forever)."""
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            return codes  # type: ignore[return-value]
        if any(c not in (None, 0) for c in codes):
            _stop(procs)
            return [p.wait() for p in procs]
        time.sleep(0.2)


def _stop(procs: Sequence[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.time() + STOP_GRACE_S
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _read_error(path: str):
    try:
        text = Path(path).read_text()
        if not text:
            return None
        data = json.loads(text)
        return str(data["kind"]), str(data["message"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this rank when the launcher dies (a killed `dad-edge train` leaves no rank)."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    parent = os.environ.get(ENV_PARENT)
    if parent is not None and os.getppid() != int(parent):  # the launcher died before prctl took effect
        os._exit(1)


def _rank_main(argv: Sequence[str]) -> int:
    _die_with_parent()
    cores = [int(c) for c in os.environ.get("DAD_EDGE_RANK_CORES", "").split(",") if c]
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)  # one rank per core: no migrations, no two ranks on one core
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the launcher stops us: unwind, close gloo
    from dad_edge.training.options import TrainOptions
    from dad_edge.training.train import train

    try:
        train(TrainOptions(**json.loads(argv[0])))
    except errors.DadEdgeError as exc:
        Path(os.environ[ENV_ERROR_FILE]).write_text(json.dumps({"kind": type(exc).__name__, "message": str(exc)}))
        return 2
    return 0


def _rank_process(argv: Sequence[str]) -> None:
    """A rank's whole life: _rank_main, then os._exit with its code. Python's normal exit would run
    the C++ destructors of gloo's threads while a peer may still use them and abort (exit -6, CI saw
    it); os._exit runs none, so the output is flushed by hand first."""
    try:
        code = _rank_main(argv)
    except SystemExit as exc:  # SIGTERM from the launcher (143), or sys.exit inside
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # a bug, not a DadEdgeError: its traceback reaches the launcher's log
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    _rank_process(sys.argv[1:])
