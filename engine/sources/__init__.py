"""Source adapters: connect, introspect, count, and stream Arrow batches.

`open_source(cfg)` returns the adapter for `cfg.type`. PostgreSQL and MySQL/MariaDB read through DuckDB's
scanners (the measured fast path); native drivers do introspection, counts and server settings.
"""
from __future__ import annotations

from engine.config import SourceConfig, Tuning
from engine.sources.base import LOCKED, Source, SourceColumn  # noqa: F401


def open_source(cfg: SourceConfig, tuning: Tuning | None = None) -> Source:
    cls: type[Source]
    if cfg.type == "postgres":
        from engine.sources.postgres import PostgresSource as cls
    elif cfg.type == "mysql":
        from engine.sources.mysql import MySQLSource as cls
    elif cfg.type == "mssql":
        from engine.sources.mssql import MssqlSource as cls
    else:  # config validation prevents this
        raise ValueError(cfg.type)
    return cls(cfg, tuning or cfg.tuning)
