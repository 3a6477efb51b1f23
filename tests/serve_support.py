"""Helpers for the serving tests and benchmark: a real `dad-edge serve` subprocess on free loopback ports.

The server runs in its own process group (start_new_session): PyTriton's tritonserver and Python
stub are children of it, and killing the group is how a test makes the whole server vanish at once.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import List, Optional

import pytest

READY_TIMEOUT_S = 180  # a loaded 2-core machine: PyTriton copies tritonserver and starts the stub


def require_serving() -> None:
    """Skip the calling test module, with the reason, where the server or the client cannot run.

    The client (tritonclient) runs here; the server runs here too where numpy < 2, else in the Python
    named by DAD_EDGE_SERVE_PYTHON (`dad-edge serve` re-executes itself there; `.ci/run` builds it).
    A DAD_EDGE_SERVE_PYTHON that cannot serve is an error, not a skip: it was asked for."""
    from dad_edge.serving import relaunch

    pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install 'dad_edge[serve]')")
    why = relaunch.why_not_here()
    if why is None:
        return
    python = relaunch.serve_python()
    if python is None:
        pytest.skip(f"no server: {why}, and {relaunch.SERVE_PYTHON_ENV} names no other Python (bash .ci/run "
                    "builds one)", allow_module_level=True)
    other = relaunch.why_not_in(python)
    if other:
        pytest.fail(f"{relaunch.SERVE_PYTHON_ENV}={python} cannot run the server: {other}", pytrace=False)


def free_ports(n: int) -> List[int]:
    """n distinct ports free on 127.0.0.1 now (bound to port 0, read, released)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Server:
    """`python -m dad_edge serve MODEL` on the given ports; .start() waits for its ready line."""

    def __init__(self, model: Path, workdir: Path, http_port: int, grpc_port: int,
                 metrics_port: Optional[int] = None, extra: tuple = ()):
        self.model, self.workdir = model, workdir
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.extra = extra
        self.proc: Optional[subprocess.Popen] = None
        self.tmp: Optional[Path] = None
        self.lines: List[str] = []
        self.ready_s = 0.0

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}/dad_edge"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dad_edge"

    def start(self) -> "Server":
        cmd = [sys.executable, "-m", "dad_edge", "serve", str(self.model), "--http-port", str(self.http_port),
               "--grpc-port", str(self.grpc_port), *self.extra]
        if self.metrics_port is not None:
            cmd += ["--metrics-port", str(self.metrics_port)]
        # TMPDIR: the server's workspace (a copy of tritonserver, ~20 MB) lands in a folder of this Server,
        # removed by kill(), so a killed server leaves nothing behind. Not in pytest's folders themselves:
        # too deep for PyTriton's Unix sockets (the server would put its workspace in /tmp instead).
        if self.tmp is None:
            parent = self.workdir if len(str(self.workdir)) <= 24 else None
            self.tmp = Path(tempfile.mkdtemp(prefix="dds_", dir=parent))
        env = {**os.environ, "TMPDIR": str(self.tmp), "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        self.lines = []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     start_new_session=True)
        ready = threading.Event()

        def read():
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())
                if line.startswith("serving "):
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(READY_TIMEOUT_S) or self.proc.poll() is not None:
            self.kill()
            raise AssertionError("dad-edge serve did not become ready:\n" + "\n".join(self.lines[-30:]))
        self.ready_s = time.perf_counter() - t0
        return self

    def _leftovers(self) -> List[Path]:
        """What the server's processes made outside its TMPDIR and remove only on a clean exit: the model
        folders of Triton's Python-backend stubs (/tmp/folderXXXXXX, named on the stubs' command lines)
        and PyTriton's shared-memory blocks (/dev/shm/psm_*, mapped by its processes)."""
        found = set()
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if os.getpgid(int(proc.name)) != self.proc.pid:
                    continue
                args = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
                maps = (proc / "maps").read_text(errors="replace").split()
            except (OSError, ValueError):
                continue
            found |= {Path(a).parents[1] for a in args if a.startswith("/tmp/folder") and a.endswith("/model.py")}
            found |= {Path(m) for m in maps if m.startswith("/dev/shm/psm_")}
        return sorted(found)

    def kill(self) -> None:
        """The whole server gone at once (SIGKILL to its process group), its shared memory and folders removed."""
        if self.proc is not None and self.proc.poll() is None:
            leftovers = self._leftovers()
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            for path in leftovers:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        if self.proc is not None:
            for f in Path("/dev/shm").glob(f"*pytrtion{self.proc.pid}-*"):
                f.unlink(missing_ok=True)
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM to the server process alone, as systemd or docker stop would; -> its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.kill()
