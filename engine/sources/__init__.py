"""Source adapters: connect, introspect, count, and stream Arrow batches.

`open_source(cfg)` returns the adapter for `cfg.type`. PostgreSQL and MySQL/MariaDB read through DuckDB's
scanners (the measured fast path); native drivers do introspection, counts and server settings.
"""
from __future__ import annotations

from engine.config import SourceConfig, Tuning
from engine.sources.base import LOCKED, Source, SourceColumn  # noqa: F401


def source_class(kind: str) -> type[Source]:
    """The adapter class for a source type, importing its module (and its driver) on first use."""
    cls: type[Source]
    if kind == "postgres":
        from engine.sources.postgres import PostgresSource as cls
    elif kind == "mysql":
        from engine.sources.mysql import MySQLSource as cls
    elif kind == "mssql":
        from engine.sources.mssql import MssqlSource as cls
    else:  # config validation prevents this
        raise ValueError(kind)
    return cls


def open_source(cfg: SourceConfig, tuning: Tuning | None = None) -> Source:
    return source_class(cfg.type)(cfg, tuning or cfg.tuning)
