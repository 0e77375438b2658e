"""Incremental exports (issue 3): strict `>` cursor, coalesce, cursor types, owner mismatch, accept/reset."""
from __future__ import annotations

import json

import pytest

from tests.helpers import export_config, manifest, read_table, rivet, run_json, write_config


def cfg_text(url, source_type="postgres", table="events", cursor="updated_at", extra="", name="events"):
    return export_config(url, source_type=source_type, name=name, table=table, mode="incremental",
                         extra=f'cursor_column = "{cursor}"\n        {extra}')


@pytest.fixture()
def events_pg(pg):
    pg.sql("DROP TABLE IF EXISTS events")
    pg.sql("CREATE TABLE events (id bigint PRIMARY KEY, updated_at timestamptz, created_at timestamptz NOT NULL, v text)")
    pg.sql("""INSERT INTO events SELECT g, timestamptz '2024-05-01 10:00:00.000001+02' + g * interval '1 minute',
              timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute', 'v' || g FROM generate_series(1, 100) g""")
    return pg


def test_incremental_pg_exports_only_new_rows(tmp_path, events_pg):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(events_pg.url))
    first = run_json(cfg)["exports"][0]
    assert first["rows"] == 100
    m1 = manifest(tmp_path / "out")
    assert m1["cursor_low"] is None and m1["cursor_high"] == "2024-05-01T09:40:00.000001+00:00"
    # nothing new: still succeeds, a manifest with 0 parts
    second = run_json(cfg)["exports"][0]
    assert second["status"] == "succeeded" and second["rows"] == 0
    m2 = manifest(tmp_path / "out")
    assert m2["part_count"] == 0 and m2["cursor_low"] == m1["cursor_high"]
    # rows with the exact stored microsecond are not re-read (strict >), later ones are
    events_pg.sql("INSERT INTO events VALUES (101, timestamptz '2024-05-01 09:40:00.000001+00', now(), 'same'),"
                  " (102, timestamptz '2024-05-01 09:40:00.000002+00', now(), 'later')")
    third = run_json(cfg)["exports"][0]
    assert third["rows"] == 1
    table = read_table(tmp_path / "out")
    assert sorted(table.column("id").to_pylist()) == list(range(1, 101)) + [102]
    state = json.loads(rivet("state", "show", "-c", cfg, "--json", check=0).stdout)["exports"][0]
    assert state["cursor"] == "2024-05-01T09:40:00.000002+00:00"


def test_skip_empty_records_skipped(tmp_path, events_pg):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(events_pg.url, extra="skip_empty = true"))
    run_json(cfg)
    again = run_json(cfg)["exports"][0]
    assert again["status"] == "skipped"
    runs = json.loads(rivet("metrics", "-c", cfg, "--json", check=0).stdout)["runs"]
    assert runs[0]["status"] == "skipped"


def test_coalesce_cursor_never_reaches_output(tmp_path, events_pg):
    events_pg.sql("UPDATE events SET updated_at = NULL WHERE id > 90")
    extra = 'incremental_cursor_mode = "coalesce"\n        cursor_fallback_column = "created_at"'
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(events_pg.url, extra=extra))
    run_json(cfg)
    table = read_table(tmp_path / "out")
    assert table.num_rows == 100
    assert table.column_names == ["id", "updated_at", "created_at", "v"]
    events_pg.sql("INSERT INTO events VALUES (200, NULL, timestamptz '2030-01-01 00:00:00+00', 'new')")
    assert run_json(cfg)["exports"][0]["rows"] == 1


def test_null_cursor_in_newest_row_does_not_crash(tmp_path, events_pg):
    events_pg.sql("INSERT INTO events VALUES (500, NULL, now(), 'null cursor')")
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(events_pg.url))
    first = run_json(cfg)["exports"][0]
    assert first["rows"] == 101  # first run is unfiltered: the NULL-cursor row is exported once
    assert run_json(cfg)["exports"][0]["rows"] == 0  # NULL never compares > cursor: documented


@pytest.mark.parametrize("coltype,values,expected_cursor", [
    ("bigint", ["1", "9", "10"], "10"),
    ("numeric(20,6)", ["1.000001", "9.5", "10.25"], "10.250000"),
    ("text", ["a'b", "b\\\\c", "c;--"], "c;--"),
    ("date", ["2024-01-01", "2024-02-29", "2024-03-01"], "2024-03-01"),
    ("timestamp", ["2024-01-01 00:00:00.000001", "2024-01-01 00:00:00.999999", "2024-01-02 00:00:00.5"],
     "2024-01-02T00:00:00.500000"),
])
def test_cursor_types_round_trip_through_state(tmp_path, pg, coltype, values, expected_cursor):
    pg.sql("DROP TABLE IF EXISTS cur")
    pg.sql(f"CREATE TABLE cur (id serial PRIMARY KEY, c {coltype})")
    for v in values:
        pg.sql("INSERT INTO cur (c) VALUES (%s)", (v,))
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(pg.url, table="cur", cursor="c", name="cur"))
    assert run_json(cfg)["exports"][0]["rows"] == 3
    state = json.loads(rivet("state", "show", "-c", cfg, "-e", "cur", "--json", check=0).stdout)["exports"][0]
    assert state["cursor"] == expected_cursor
    assert run_json(cfg)["exports"][0]["rows"] == 0   # the stored text compares equal to the max: nothing re-read


def test_cursor_with_quotes_is_bound_not_pasted(tmp_path, pg):
    pg.sql("DROP TABLE IF EXISTS q")
    pg.sql("CREATE TABLE q (id int PRIMARY KEY, c text)")
    pg.sql("INSERT INTO q VALUES (1, $$x'); DROP TABLE q; --$$)")
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(pg.url, table="q", cursor="c", name="q"))
    run_json(cfg)
    pg.sql("INSERT INTO q VALUES (2, 'z')")
    assert run_json(cfg)["exports"][0]["rows"] == 1
    assert pg.sql("SELECT count(*) FROM q") == [(2,)]


def test_changed_cursor_column_is_refused_until_accept_or_reset(tmp_path, events_pg):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(events_pg.url))
    run_json(cfg)
    write_config(cfg, cfg_text(events_pg.url, cursor="created_at"))
    proc = rivet("run", "-c", cfg, "--no-tui", "--json")
    assert proc.returncode == 5
    assert json.loads(proc.stdout)["exports"][0]["error"]["code"] == "RIVET_CURSOR_OWNER_MISMATCH"
    rivet("state", "accept", "-c", cfg, "-e", "events", check=0)
    # accepted: the old cursor (an updated_at value in May) now filters created_at (January): nothing new
    assert run_json(cfg)["exports"][0]["rows"] == 0
    rivet("state", "reset", "-c", cfg, "-e", "events", check=0)
    assert run_json(cfg)["exports"][0]["rows"] == 100


def test_incremental_mariadb(tmp_path, mysql):
    mysql.sql("DROP TABLE IF EXISTS ev")
    mysql.sql("CREATE TABLE ev (id BIGINT PRIMARY KEY, updated_at DATETIME(6) NOT NULL, v VARCHAR(20))")
    mysql.sql("INSERT INTO ev SELECT seq, TIMESTAMP'2024-01-01 00:00:00.000001' + INTERVAL seq SECOND, "
              "CONCAT('v', seq) FROM seq_1_to_50")
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(mysql.url, "mysql", table="ev", name="ev"))
    assert run_json(cfg)["exports"][0]["rows"] == 50
    mysql.sql("INSERT INTO ev VALUES (51, '2024-01-01 00:00:50.000001', 'same'), (52, '2024-01-01 00:00:50.000002', 'new')")
    assert run_json(cfg)["exports"][0]["rows"] == 1
    mysql.sql("INSERT INTO ev VALUES (9007199254740993, '2030-01-01', 'big')")
    cfg2 = write_config(tmp_path / "big.toml", cfg_text(mysql.url, "mysql", table="ev", cursor="id", name="evid"))
    assert run_json(cfg2)["exports"][0]["rows"] == 53
    mysql.sql("INSERT INTO ev VALUES (9007199254740994, '2030-01-02', 'big+1')")
    assert run_json(cfg2)["exports"][0]["rows"] == 1   # bigint cursor compared exactly, not as a double


def test_progression_after_incremental_runs(tmp_path, events_pg):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(events_pg.url))
    empty = rivet("state", "progression", "-c", cfg, check=0)
    assert "No progression boundaries recorded yet." in empty.stderr
    run = run_json(cfg)["exports"][0]
    rows = json.loads(rivet("state", "progression", "-c", cfg, "--json", check=0).stdout)["progression"]
    assert rows[0]["last_committed_strategy"] == "incremental"
    assert rows[0]["last_committed_cursor"] == "2024-05-01T09:40:00.000001+00:00"
    assert rows[0]["last_committed_run_id"] == run["run_id"]
    assert rows[0]["last_verified_strategy"] is None
    text = rivet("state", "progression", "-c", cfg, check=0).stderr.splitlines()
    # headers spelled out (they were "COMM MODE" / "VERI MODE"), each value under its header
    assert text[0] == ("EXPORT         COMMITTED MODE COMMITTED                    COMMITTED AT             "
                       "VERIFIED MODE  VERIFIED")
    assert text[1].startswith("events         incremental    2024-05-01T09:40:00.000001+00:00 ")
    assert text[1].endswith(" UTC  -              -")
