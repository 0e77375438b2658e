"""Persistent state: one DuckDB file, one writer per file per process with group commit (docs/state.md)."""
from engine.state.cursors import compare_cursors, iso, now_iso
from engine.state.schema import migrate
from engine.state.store import METRIC_FIELDS, RUN_STATUSES, TASK_STATUSES, StateStore
from engine.state.writer import close_all

__all__ = ["METRIC_FIELDS", "RUN_STATUSES", "TASK_STATUSES", "StateStore", "close_all", "compare_cursors", "iso",
           "migrate", "now_iso"]
