"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The new content goes to a temporary file beside the target, `.NAME.PID.XXXXXXXX.tmp`, which is
fsynced and renamed over NAME. A process killed mid-write leaves that temporary file behind (and
NAME untouched); the PID in its name lets remove_stale_temps(), which a writer of a folder calls
when it starts (training, the stream's anomaly folder), tell it from the temporary file of a
writer that is still running.

A write that fails (full disk, file-size limit, read-only folder) raises OutputError naming the
file, and leaves the previous version in place.
"""
from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Optional

from dad_edge.errors import OutputError

TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[a-z0-9_]+\.tmp$")
# Test hook, for the fault-injection tests only: seconds to sleep between writing the temporary
# file and renaming it, so that a test's SIGKILL can land inside a checkpoint write. It only delays.
WRITE_DELAY_ENV = "DAD_EDGE_TEST_WRITE_DELAY_S"


def publish(tmp, path) -> None:
    """Make a finished file `tmp` appear as `path`: fsync it, rename it over `path`, fsync the folder
    (so the new name survives a power cut). OutputError naming `path` if the disk refuses."""
    path = Path(path)
    try:
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _final_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    os.close(fd)
    try:
        try:
            yield Path(tmp)
            _test_delay()
            # mkstemp makes the file 0600 (and a writer may replace it with a 0600 file of its
            # own): give it the mode a plain open() would give, or
            # the replaced file's, so that a model trained by one user can be served by another.
            os.chmod(tmp, mode)
        except OSError as exc:  # the writer's or ours: full disk, file-size limit (EFBIG), permissions
            raise write_error(path, exc) from None
        publish(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_error(path: Path, exc: BaseException) -> OutputError:
    """The one-line OutputError for a failed write of `path` (an OutputError passes through)."""
    if isinstance(exc, OutputError):
        return exc
    reason = getattr(exc, "strerror", None) or str(exc)
    return OutputError(f"cannot write {path}: {reason}; the previous {path.name}, if any, is unchanged: free "
                       f"disk space, raise the file-size limit (ulimit -f) or make {path.parent} writable, then "
                       "run again (training: with --resume)")


def remove_stale_temps(folder, name: Optional[str] = None) -> List[Path]:
    """Delete the temporary files that killed writers left in `folder` (only those of `name` when given);
    the temporary files of processes still running are kept. Returns what was deleted."""
    if os.name != "posix":  # the liveness check below is POSIX's kill(pid, 0)
        return []
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            m = _TEMP_NAME.match(entry.name)
            if m is None or (name is not None and m["name"] != name) or _alive(int(m["pid"])):
                continue
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def is_temp_file(path) -> bool:
    """Whether `path` is the temporary file of an atomic write (running or left by a killed one)."""
    return _TEMP_NAME.match(Path(path).name) is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, under another user
        return True
    return True


def _test_delay() -> None:
    delay = os.environ.get(WRITE_DELAY_ENV)
    if delay:
        time.sleep(float(delay))


def _final_mode(path: Path) -> int:
    """Permission bits for the new file: the existing file's, else 0o666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)  # the only portable way to read the umask is to set it
        os.umask(umask)
        return 0o666 & ~umask


def write_bytes_atomic(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
