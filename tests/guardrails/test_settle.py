"""Settle for incremental exports `settle = "1h"` (issue 15, docs/guardrails.md): rows whose cursor is younger
than now() - settle on the SOURCE's clock are held back, never skipped; the cursor never passes the horizon;
`rivet plan` shows the horizon. PostgreSQL and MariaDB."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from tests.helpers import export_config, read_table, rivet, run_json, write_config


def state_of(cfg) -> dict:
    return json.loads(rivet("state", "show", "-c", cfg, "--json", check=0).stdout)["exports"][0]


def as_utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class PgTable:
    type, now = "postgres", "now()"

    def __init__(self, db):
        self.db = db
        db.sql("DROP TABLE IF EXISTS settle_items")
        db.sql("CREATE TABLE settle_items (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL)")

    def insert(self, rid: int, age: str):       # age: an SQL interval body, e.g. '2 days'
        self.db.sql(f"INSERT INTO settle_items VALUES ({rid}, now() - interval '{age}')")

    def age(self, ids: str, age: str):
        self.db.sql(f"UPDATE settle_items SET updated_at = now() - interval '{age}' WHERE id IN ({ids})")


class MyTable:
    type = "mysql"

    def __init__(self, db):
        self.db = db
        db.sql("DROP TABLE IF EXISTS settle_items")
        db.sql("CREATE TABLE settle_items (id bigint PRIMARY KEY, updated_at datetime(6) NOT NULL)")

    def insert(self, rid: int, age: str):       # rivet's sessions run in UTC: so does this clock
        self.db.sql(f"INSERT INTO settle_items VALUES ({rid}, UTC_TIMESTAMP(6) - INTERVAL {age})")

    def age(self, ids: str, age: str):
        self.db.sql(f"UPDATE settle_items SET updated_at = UTC_TIMESTAMP(6) - INTERVAL {age} WHERE id IN ({ids})")


@pytest.fixture(params=["postgres", "mariadb"])
def table(request):
    if request.param == "postgres":
        return PgTable(request.getfixturevalue("pg"))
    return MyTable(request.getfixturevalue("mysql"))


def interval(t, text: str) -> str:
    if isinstance(t, PgTable):
        return text
    n, unit = text.split()
    return f"{n} {unit.rstrip('s').upper()}"


def test_rows_inside_the_settle_window_wait_and_are_not_skipped(tmp_path, table):
    for rid in (1, 2, 3):
        table.insert(rid, interval(table, "2 days"))
    for rid in (4, 5):
        table.insert(rid, interval(table, "10 minutes"))   # committed recently: inside the 1 h window
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        table.db.url, source_type=table.type, name="settle", table="settle_items", mode="incremental",
        extra='cursor_column = "updated_at"\n        settle = "1h"'))

    plan = json.loads(rivet("plan", "-c", cfg, "--json", check=0).stdout)["exports"][0]
    horizon = plan["diff"]["settle_horizon"]
    assert horizon is not None and plan["cursor"]["settle_horizon"] == horizon
    shown = re.search(r"settle  rows after (\S+) \(source clock\) held back", rivet("plan", "-c", cfg, check=0).stderr)
    assert shown and as_utc(shown.group(1)) >= as_utc(horizon)   # a later plan: a later horizon
    from rivet_tui.screens.plan import render_diff                # the TUI's plan screen says it too
    assert f"settle      rows after {horizon} (source clock) held back" in render_diff(plan["diff"], True).plain

    first = run_json(cfg)["exports"][0]
    assert first["status"] == "succeeded" and first["rows"] == 3
    cursor = state_of(cfg)["cursor"]
    assert as_utc(cursor) < as_utc(horizon)                 # the cursor stops at the newest settled row
    assert sorted(read_table(tmp_path / "out")["id"].to_pylist()) == [1, 2, 3]

    # still young: a second run exports nothing and the cursor stays
    assert run_json(cfg)["exports"][0]["rows"] == 0
    assert state_of(cfg)["cursor"] == cursor

    # a late commit whose cursor lies after the stored cursor but before the horizon is exported, not skipped;
    # rows 4 and 5 move outside the window (their cursor value updated to 2 hours ago): exported now
    table.insert(6, interval(table, "90 minutes"))
    table.age("4, 5", interval(table, "2 hours"))
    third = run_json(cfg)["exports"][0]
    assert third["rows"] == 3
    assert sorted(read_table(tmp_path / "out")["id"].to_pylist()) == [1, 2, 3, 4, 5, 6]


def test_settle_needs_an_incremental_timestamp_cursor(tmp_path, pg):
    pg.sql("DROP TABLE IF EXISTS settle_ids")
    pg.sql("CREATE TABLE settle_ids (id bigint PRIMARY KEY)")
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        pg.url, name="s", table="settle_ids", mode="incremental", extra='cursor_column = "id"\n        settle = "1h"'))
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", check=1)
    assert "RIVET_CONFIG_SETTLE_CURSOR" in proc.stdout
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        pg.url, name="s", table="settle_ids", mode="full", extra='settle = "1h"'))
    assert "settle applies to mode" in rivet("check", "-c", cfg, check=1).stderr
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        pg.url, name="s", table="settle_ids", mode="incremental", extra='cursor_column = "id"\n        settle = "1 hour"'))
    assert "is not a duration" in rivet("check", "-c", cfg, check=1).stderr
