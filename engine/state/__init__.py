"""Persistent state: one DuckDB file, opened per transaction (SPEC §4, ADR-0008 for progression)."""
from engine.state.store import (
    METRIC_FIELDS,
    RUN_STATUSES,
    TASK_STATUSES,
    StateStore,
    compare_cursors,
    iso,
    migrate,
    now_iso,
)

__all__ = ["METRIC_FIELDS", "RUN_STATUSES", "TASK_STATUSES", "StateStore", "compare_cursors", "iso", "migrate",
           "now_iso"]
