"""Alarms: a Python callback or a shell command when a frame is anomalous, at most one per
`min_interval_s`, run on a worker thread so that a slow siren or PLC call never stalls the stream.

    alarm = Alarm(command="notify-line --station 3", min_interval_s=10)
    for r in stream:
        if r.label:
            alarm(r, record)        # record: the event's JSON-ready dict
    alarm.close()

A command is split like a shell would (shlex) and run without a shell: no quoting or
injection surprises. It gets the event in its environment: DAD_EDGE_EVENT (the JSON line),
DAD_EDGE_FRAME, DAD_EDGE_SCORE and DAD_EDGE_SOURCE. While one alarm is still running,
further ones are counted as suppressed, never queued up.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import shlex
import shutil
import subprocess
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from dad_edge.errors import ConfigError

log = logging.getLogger("dad_edge.stream.alarms")


class Alarm:
    def __init__(self, callback: Optional[Callable[[Any], None]] = None, command: Optional[str] = None,
                 min_interval_s: float = 10.0, timeout_s: float = 30.0):
        """callback(result) or command (a string, split with shlex); min_interval_s between two alarms;
        timeout_s: a command running longer is killed (and logged)."""
        if (callback is None) == (command is None):
            raise ConfigError("an Alarm needs exactly one of callback= or command=")
        if min_interval_s < 0:
            raise ConfigError(f"min_interval_s={min_interval_s} must be >= 0")
        self.argv: Optional[List[str]] = None
        if command is not None:
            try:
                self.argv = shlex.split(command)
            except ValueError as exc:
                raise ConfigError(f"alarm command {command!r}: {exc}") from None
            if not self.argv:
                raise ConfigError("the alarm command is empty")
            if shutil.which(self.argv[0]) is None:
                raise ConfigError(f"alarm command {self.argv[0]!r}: not found or not executable "
                                  "(give its full path, or check PATH)")
        self.callback, self.min_interval_s, self.timeout_s = callback, min_interval_s, timeout_s
        self.fired = 0  # alarms started
        self.suppressed = 0  # anomalies inside the interval, or while the previous alarm still ran
        self.failed = 0  # callbacks that raised, commands that failed or timed out
        self._last: Optional[float] = None
        self._jobs: "queue.Queue[Any]" = queue.Queue(maxsize=1)
        self._idle = threading.Event()
        self._idle.set()
        self._worker: Optional[threading.Thread] = None

    def __call__(self, result, record: Optional[Dict[str, Any]] = None) -> bool:
        """Raise the alarm for `result` unless one was raised less than min_interval_s ago; never blocks."""
        now = time.monotonic()
        if (self._last is not None and now - self._last < self.min_interval_s) or not self._idle.is_set():
            self.suppressed += 1
            return False
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="dad_edge-alarm", daemon=True)
            self._worker.start()
        self._idle.clear()
        self._jobs.put_nowait((result, record))  # room is certain: the worker is idle
        self._last = now
        self.fired += 1
        return True

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._run(*job)
            except Exception as exc:  # an alarm failing must not end the stream: log it and count it
                self.failed += 1
                log.error("alarm failed: %s: %s", type(exc).__name__, exc)
            finally:
                self._idle.set()

    def _run(self, result, record: Optional[Dict[str, Any]]) -> None:
        if self.callback is not None:
            self.callback(result)
            return
        record = record if record is not None else {"frame": getattr(result, "frame", None), "score": result.score,
                                                    "label": result.label, "source": result.source}
        env = dict(os.environ, DAD_EDGE_EVENT=json.dumps(record), DAD_EDGE_FRAME=str(record.get("frame")),
                   DAD_EDGE_SCORE=str(record.get("score")), DAD_EDGE_SOURCE=str(record.get("source")))
        try:
            done = subprocess.run(self.argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            self.failed += 1
            log.error("alarm command %s ran longer than %g s and was killed", self.argv[0], self.timeout_s)
            return
        if done.returncode != 0:
            self.failed += 1
            tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            log.error("alarm command %s exited with %d: %s", self.argv[0], done.returncode, tail[0])

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until no alarm is running; False on timeout."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Let a running alarm finish (up to `timeout`), then stop the worker."""
        if self._worker is None:
            return
        if not self.wait(timeout):
            log.warning("an alarm still runs after %g s; leaving it behind", timeout)
        try:
            self._jobs.put(None, timeout=timeout)
        except queue.Full:  # the worker is stuck in a callback; it is a daemon thread
            return
        self._worker.join(timeout)
        self._worker = None
