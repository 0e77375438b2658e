"""Quality gates `[exports.quality]` (issue 15, docs/guardrails.md): a failed gate fails the run with exit 3, the
manifest says failed, no _SUCCESS, no cursor or boundary moves; the message names the gate and the measured value."""
from __future__ import annotations

import json

import pytest

from tests.helpers import export_config, manifest, rivet, run_json, write_config


def quality(**gates: str) -> str:
    return "[exports.quality]\n        " + "\n        ".join(f"{k} = {v}" for k, v in gates.items())


def state_of(cfg) -> dict:
    return json.loads(rivet("state", "show", "-c", cfg, "--json", check=0).stdout)["exports"][0]


@pytest.fixture()
def people_pg(pg):
    pg.sql("DROP TABLE IF EXISTS people")
    pg.sql("CREATE TABLE people (id bigint PRIMARY KEY, code text, email text, updated_at timestamptz NOT NULL)")
    pg.sql("""INSERT INTO people SELECT g, 'c' || g, CASE WHEN g % 5 = 0 THEN NULL ELSE 'u' || g || '@x' END,
              timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute' FROM generate_series(1, 5) g""")
    return pg


@pytest.fixture()
def people_my(mysql):
    mysql.sql("DROP TABLE IF EXISTS people")
    mysql.sql("CREATE TABLE people (id bigint PRIMARY KEY, code varchar(20), email varchar(50),"
              " updated_at datetime(6) NOT NULL)")
    for i in range(1, 41):
        mysql.sql("INSERT INTO people VALUES (%s, %s, %s, %s)",
                  (i, f"c{i % 30}", None if i % 4 == 0 else f"u{i}@x", f"2024-01-01 00:{i:02d}:00"))
    return mysql


def test_row_count_below_minimum_fails_with_exit_3_and_no_success(tmp_path, people_pg):
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        people_pg.url, name="people", table="people", mode="full", extra=quality(row_count_min="100")))
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", check=3)
    out = json.loads(proc.stdout)["exports"][0]
    assert out["status"] == "failed"
    assert out["error"]["code"] == "RIVET_QUALITY_GATE_FAILED" and out["error"]["exit_class"] == 3
    assert "row_count 5 below minimum 100" in out["error"]["error"]
    assert "RIVET_QUALITY_GATE_FAILED" in proc.stderr
    out_dir = tmp_path / "out"
    assert not (out_dir / "_SUCCESS").exists()
    m = manifest(out_dir)
    assert m["status"] == "failed" and m["row_count"] == 5
    assert m["quality"]["passed"] is False
    assert m["quality"]["gates"][0] == {"gate": "row_count_min", "column": None, "measured": 5, "limit": 100,
                                       "passed": False, "message": "row_count 5 below minimum 100"}


def test_passing_gates_certify_and_record_the_measurements(tmp_path, people_pg):
    gates = quality(row_count_min="1", row_count_max="10", null_ratio_max="{ email = 0.2, code = 0 }",
                    unique_columns='["code"]')
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        people_pg.url, name="people", table="people", mode="full", extra=gates))
    run_json(cfg)
    m = manifest(tmp_path / "out")
    assert m["status"] == "succeeded" and (tmp_path / "out" / "_SUCCESS").exists()
    measured = {(g["gate"], g["column"]): g["measured"] for g in m["quality"]["gates"]}
    assert measured == {("row_count_min", None): 5, ("row_count_max", None): 5, ("null_ratio_max", "email"): 0.2,
                        ("null_ratio_max", "code"): 0.0, ("unique_columns", "code"): 0}
    assert m["quality"]["passed"] is True


def test_incremental_gate_failure_keeps_the_cursor(tmp_path, people_pg):
    gates = quality(null_ratio_max="{ email = 0.25 }")
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        people_pg.url, name="people", table="people", mode="incremental",
        extra=f'cursor_column = "updated_at"\n        {gates}'))
    run_json(cfg)
    cursor = state_of(cfg)["cursor"]
    assert cursor is not None and (tmp_path / "out" / "_SUCCESS").exists()
    # 4 new rows, 2 of them without email: 0.5 of the run's rows
    people_pg.sql("""INSERT INTO people SELECT g, 'c' || g, CASE WHEN g % 2 = 0 THEN NULL ELSE 'e' END,
                     timestamptz '2024-02-01 00:00:00+00' + g * interval '1 minute' FROM generate_series(6, 9) g""")
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", check=3)
    err = json.loads(proc.stdout)["exports"][0]["error"]
    assert err["code"] == "RIVET_QUALITY_GATE_FAILED"
    assert "null_ratio(email) 0.5 (2 of 4 rows) above maximum 0.25" in err["error"]
    assert state_of(cfg)["cursor"] == cursor
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    assert manifest(tmp_path / "out")["status"] == "failed"
    # the same rows are read again next time (the cursor did not move past them); fixed, they pass
    people_pg.sql("UPDATE people SET email = 'fixed' WHERE email IS NULL AND id > 5")
    again = run_json(cfg)["exports"][0]
    assert again["status"] == "succeeded" and again["rows"] == 4
    assert (tmp_path / "out" / "_SUCCESS").exists() and state_of(cfg)["cursor"] > cursor


def test_mariadb_unique_and_null_gates_name_the_measured_values(tmp_path, people_my):
    gates = quality(unique_columns='["code"]', null_ratio_max="{ email = 0.1 }", row_count_max="1000")
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        people_my.url, source_type="mysql", name="people", table="people", mode="full", extra=gates))
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", check=3)
    err = json.loads(proc.stdout)["exports"][0]["error"]["error"]
    assert "unique(code): 10 duplicate row(s)" in err            # c1..c10 appear twice among 40 rows
    assert "null_ratio(email) 0.25 (10 of 40 rows) above maximum 0.1" in err
    assert "row_count" not in err                                  # passing gates are not named in the error
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    assert manifest(tmp_path / "out")["status"] == "failed"


def test_mariadb_incremental_gate_failure_keeps_the_cursor(tmp_path, people_my):
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        people_my.url, source_type="mysql", name="people", table="people", mode="incremental",
        extra=f'cursor_column = "updated_at"\n        {quality(row_count_min="5")}'))
    run_json(cfg)
    cursor = state_of(cfg)["cursor"]
    people_my.sql("INSERT INTO people VALUES (41, 'new', 'n@x', '2024-03-01 00:00:00')")
    proc = rivet("run", "-c", cfg, "--no-tui", check=3)
    assert "row_count 1 below minimum 5" in proc.stderr
    assert state_of(cfg)["cursor"] == cursor
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_chunked_gate_failure_starts_a_new_chunk_run_next_time(tmp_path, people_my):
    gates = quality(unique_columns='["code"]')
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        people_my.url, source_type="mysql", name="people", table="people", mode="chunked",
        extra=f"chunk_size = 10\n        format = \"csv\"\n        {gates}"))
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", check=3)
    first = json.loads(proc.stdout)["exports"][0]
    assert "unique(code): 10 duplicate row(s)" in first["error"]["error"]
    people_my.sql("UPDATE people SET code = concat('k', id)")
    second = run_json(cfg)["exports"][0]
    assert second["status"] == "succeeded" and second["rows"] == 40
    assert second["run_id"] != first["run_id"]          # not a resume of the rejected run: the rows are read again
    m = manifest(tmp_path / "out")
    assert m["status"] == "succeeded" and m["quality"]["passed"] is True
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_csv_null_ratio_tells_null_from_empty_string(tmp_path, pg):
    pg.sql("DROP TABLE IF EXISTS blanks")
    pg.sql("CREATE TABLE blanks (id int PRIMARY KEY, note text)")
    pg.sql("INSERT INTO blanks VALUES (1, ''), (2, ''), (3, NULL), (4, 'x')")
    gates = quality(null_ratio_max="{ note = 0.25 }", unique_columns='["id"]')
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        pg.url, name="blanks", table="blanks", mode="full", extra=f'format = "csv"\n        {gates}'))
    run_json(cfg)
    gates = {g["gate"]: g for g in manifest(tmp_path / "out")["quality"]["gates"]}
    assert gates["null_ratio_max"]["measured"] == 0.25 and gates["unique_columns"]["measured"] == 0


@pytest.mark.parametrize("gates, code, words", [
    ('[exports.quality]\n        row_count_minimum = 3', "RIVET_CONFIG_UNKNOWN_KEY", "row_count_minimum"),
    ('[exports.quality]\n        row_count_min = 10\n        row_count_max = 5', "RIVET_CONFIG_INVALID",
     "row_count_min (10) is above row_count_max (5)"),
    ('[exports.quality]\n        null_ratio_max = { email = 1.5 }', "RIVET_CONFIG_INVALID", "between 0 and 1"),
    ('[exports.quality]\n        row_count_min = -1', "RIVET_CONFIG_OUT_OF_RANGE", "row_count_min"),
    ('[exports.quality]\n        unique_columns = ["nope"]', "RIVET_CONFIG_UNKNOWN_COLUMN", "'nope'"),
])
def test_bad_gates_are_refused_before_any_row_is_read(tmp_path, people_pg, gates, code, words):
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        people_pg.url, name="people", table="people", mode="full", extra=gates))
    proc = rivet("run", "-c", cfg, "--no-tui", check=1)
    assert code in proc.stderr and words in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.parquet"))


def test_check_lists_the_configured_gates(tmp_path, people_pg):
    gates = quality(row_count_min="1", null_ratio_max="{ email = 0.5 }", unique_columns='["id"]')
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        people_pg.url, name="people", table="people", mode="full", extra=gates))
    proc = rivet("check", "-c", cfg, check=0)
    assert "quality gates: row_count >= 1; null_ratio(email) <= 0.5; unique(id)" in proc.stderr
    data = json.loads(rivet("check", "-c", cfg, "--json", check=0).stdout)
    assert data["exports"][0]["guardrails"] == ["quality gates: row_count >= 1; null_ratio(email) <= 0.5; unique(id)"]


def test_column_gates_read_the_parts_back_from_s3(tmp_path, people_pg, s3_bucket):
    from datetime import datetime, timezone

    from engine.destinations import open_destination
    from tests.cli.test_cloud import dest_toml
    gates = quality(null_ratio_max="{ email = 0.1 }", unique_columns='["code"]')
    cfg = write_config(tmp_path / "rivet.toml", f"""
        [source]
        type = "postgres"
        url = "{people_pg.url}"

        [[exports]]
        name = "people"
        table = "people"
        max_file_size = 1
        destination = {dest_toml(s3_bucket, "people/")}
        {gates}
        """)
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", check=3)
    err = json.loads(proc.stdout)["exports"][0]["error"]["error"]
    assert "null_ratio(email) 0.2 (1 of 5 rows) above maximum 0.1" in err
    dest = open_destination(s3_bucket.destination(prefix="people/"), "people", "x", datetime.now(timezone.utc))
    names = [n for n, _ in dest.list()]
    assert "_SUCCESS" not in names
    m = json.loads(dest.get_bytes("manifest.json"))
    assert m["status"] == "failed" and m["part_count"] >= 1
    assert {g["gate"]: g["passed"] for g in m["quality"]["gates"]} == {"null_ratio_max": False, "unique_columns": True}
