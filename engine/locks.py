"""One writer per export across processes: an OS file lock beside the state file.

`flock` is released by the kernel when the holder dies (even by SIGKILL), so a crashed run never leaves a stale
lock. A second `rivet run` of the same export waits up to --lock-wait, then exits 2 naming the holder.
"""
from __future__ import annotations

import fcntl
import os
import re
import time
from contextlib import contextmanager
from pathlib import Path

from engine.errors import ExitClass, RivetError


@contextmanager
def export_lock(state_path: Path, export: str, wait_s: float):
    lock_dir = Path(state_path).parent / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", export) + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another rivet process"
                    raise RivetError("RIVET_RUN_BUSY", f"export {export!r} is being run by {holder}",
                                     "wait for it to finish (or raise --lock-wait); two writers never share an export",
                                     ExitClass.TRANSIENT) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} (rivet run since {time.strftime('%Y-%m-%d %H:%M:%S')})".encode(), 0)
        yield
    finally:
        os.close(fd)   # closing releases the lock
