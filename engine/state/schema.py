"""The state file's schema: numbered, additive SQL migrations in engine/state/migrations/NNN_*.sql."""
from __future__ import annotations

import re
from importlib import resources

import duckdb

from engine.state.cursors import now_iso


def _migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every migrations/NNN_*.sql, in order."""
    found = []
    for entry in resources.files("engine.state").joinpath("migrations").iterdir():
        m = re.fullmatch(r"(\d{3})_\w+\.sql", entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    return found


def migrate(con: duckdb.DuckDBPyConnection, upto: int | None = None) -> list[int]:
    """Apply the migrations newer than the file's schema_version (up to `upto`), each in its own transaction.

    Returns the versions applied. Migrations are additive only, so an older rivet can still read a newer file.
    """
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TEXT NOT NULL)")
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    current = row[0] if row else 0
    applied = []
    for version, name, sql in _migrations():
        if version <= current or (upto is not None and version > upto):
            continue
        con.begin()
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [version, name, now_iso()])
            con.commit()
        except BaseException:
            con.rollback()
            raise
        applied.append(version)
    return applied
