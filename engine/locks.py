"""One writer per export across processes: an OS file lock in a `locks/` directory beside the state file.

`flock` is released by the kernel when the holder dies (even by SIGKILL), so a crashed run never leaves a stale
lock. A second `rivet run` of the same export waits up to --lock-wait, then exits 2 naming the holder.
The directory is derived from the RESOLVED state path: two spellings of one state file (a symlink) share one lock.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from engine.errors import ExitClass, RivetError


def _lock_path(state_path: str | Path, export: str) -> Path:
    return Path(state_path).resolve().parent / "locks" / (re.sub(r"[^A-Za-z0-9_.-]", "_", export) + ".lock")


@contextmanager
def export_lock(state_path: str | Path, export: str, wait_s: float) -> Iterator[None]:
    path = _lock_path(state_path, export)
    path.parent.mkdir(parents=True, exist_ok=True)

    def record_holder(fd: int) -> None:   # read by the next waiter that gives up
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} (rivet run since {time.strftime('%Y-%m-%d %H:%M:%S')})".encode(), 0)

    # fallback_to_soft=False: never a marker file that a SIGKILLed holder would leave behind.
    lock = FileLock(path, timeout=max(0.0, wait_s), poll_interval=0.1, fallback_to_soft=False,
                    preserve_lock_file=True, on_acquired=record_holder)
    try:
        lock.acquire()
    except Timeout:
        holder = path.read_text(errors="replace").strip() or "another rivet process"
        raise RivetError("RIVET_RUN_BUSY", f"export {export!r} is being run by {holder}",
                         "wait for it to finish (or raise --lock-wait); two writers never share an export",
                         ExitClass.TRANSIENT) from None
    try:
        yield
    finally:
        lock.release()
