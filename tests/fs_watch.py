"""Names of the files created in a folder while a function runs, seen by Linux inotify.

A writer's temporary file that lives for microseconds (and is renamed away before a listing could
see it) is still an IN_CREATE event, whether Python or a native library (safetensors' Rust code)
made it: the tests use this to check that every file a save creates is one remove_stale_temps()
can recognise after a SIGKILL.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import sys
from typing import Callable, List

import pytest

IN_CREATE = 0x00000100
IN_MOVED_TO = 0x00000080
IN_NONBLOCK = 0o4000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then `len` bytes of NUL-padded name


def created_names(folder, fn: Callable[[], object]) -> List[str]:
    """Run fn(); return the names created in `folder` (not recursive) meanwhile, in order."""
    if not sys.platform.startswith("linux"):
        pytest.skip("inotify is Linux only")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = libc.inotify_init1(IN_NONBLOCK)
    if fd < 0:
        pytest.skip(f"inotify_init1 failed: {os.strerror(ctypes.get_errno())}")
    try:
        if libc.inotify_add_watch(fd, os.fsencode(str(folder)), IN_CREATE | IN_MOVED_TO) < 0:
            pytest.skip(f"inotify_add_watch failed: {os.strerror(ctypes.get_errno())}")
        fn()
        names, data = [], b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        offset = 0
        while offset < len(data):
            _wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset:offset + length].rstrip(b"\0").decode()
            offset += length
            if mask & IN_CREATE:
                names.append(name)
        return names
    finally:
        os.close(fd)
