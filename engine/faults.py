"""Test-only fault injection: `RIVET_FAULT_AT=<point>` kills this process with SIGKILL at that commit point.

Points (in commit order): after_part_upload, after_file_log, after_manifest, after_success, after_cursor,
after_progression; mid_upload (inside a part's upload, after half of it is sent). `RIVET_FAULT_AFTER=N` fires on
the N-th time the point is reached (default 1). Used by tests/reliability to prove a crash anywhere loses nothing.
"""
from __future__ import annotations

import os
import signal
import threading

POINTS = ("after_part_upload", "after_file_log", "after_manifest", "after_success", "after_cursor",
          "after_progression", "mid_upload")
_counts: dict[str, int] = {}
_lock = threading.Lock()


def armed(point: str) -> bool:
    return os.environ.get("RIVET_FAULT_AT") == point


def fault(point: str) -> None:
    if not armed(point):
        return
    with _lock:
        _counts[point] = _counts.get(point, 0) + 1
        if _counts[point] < int(os.environ.get("RIVET_FAULT_AFTER", "1")):
            return
    os.kill(os.getpid(), signal.SIGKILL)
