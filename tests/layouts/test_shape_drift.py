"""Shape drift (issue 16 step 3, docs/layouts.md): the largest byte length of each text/binary column is stored
beside the export's schema in state; a run whose maximum grows past shape_drift_warn_factor times it warns (Warned
event: journal, headless line, the run's JSON warnings). Factor 0 turns it off."""
from __future__ import annotations

import json

import duckdb
import pytest

from tests.helpers import export_config, release_state_files, rivet, write_config

WARNING = "shape drift: column 'body'"


def make(db) -> None:
    db.sql("DROP TABLE IF EXISTS docs")
    db.sql("CREATE TABLE docs (id int PRIMARY KEY, body varchar(4000), n int)")
    for i in range(1, 6):
        db.sql(f"INSERT INTO docs VALUES ({i}, '{'b' * 100}', {i})")


@pytest.fixture()
def pg_docs(pg):
    make(pg)
    return pg


@pytest.fixture()
def my_docs(mysql):
    make(mysql)
    return mysql


def cfg(tmp_path, db, source_type: str, extra: str = ""):
    text = export_config(db.url, source_type=source_type, name="docs", table="docs", mode="full",
                         extra=extra).replace('path = "out"', 'path = "out/{run_id}"')
    # environment = "local": the fast profile, no throttle
    return write_config(tmp_path / "rivet.toml", text.replace("        url = ", '        environment = "local"\n'
                                                                               "        url = ", 1))


def run(c) -> tuple[dict, str]:
    proc = rivet("run", "-c", c, "--no-tui", "--json", check=0)
    return json.loads(proc.stdout)["exports"][0], proc.stderr


def stored_max(tmp_path) -> dict:
    release_state_files()
    con = duckdb.connect(str(tmp_path / ".rivet" / "state.duckdb"), read_only=True)
    try:
        columns = json.loads(con.execute("SELECT columns FROM export_schema WHERE export_name = 'docs'").fetchone()[0])
        journal = [json.loads(p) for (p,) in con.execute(
            "SELECT payload FROM run_journal WHERE export_name = 'docs' AND event = 'Warned'").fetchall()]
    finally:
        con.close()
    return {"max": {c["name"]: c.get("max_bytes") for c in columns}, "journal": journal}


@pytest.mark.parametrize("db, source_type", [("pg_docs", "postgres"), ("my_docs", "mysql")])
def test_twenty_times_longer_value_warns(tmp_path, request, db, source_type):
    d = request.getfixturevalue(db)
    c = cfg(tmp_path, d, source_type)
    first, err = run(c)
    assert WARNING not in err and not first["warnings"]
    state = stored_max(tmp_path)
    assert state["max"] == {"id": None, "body": 100, "n": None}
    d.sql(f"UPDATE docs SET body = '{'x' * 2000}' WHERE id = 3")
    second, err = run(c)
    assert second["status"] == "succeeded"
    assert WARNING in err and "2,000 bytes, 20.0x the stored maximum of 100 bytes" in err   # the headless line
    assert any(WARNING in w for w in second["warnings"])
    state = stored_max(tmp_path)
    assert any(WARNING in j.get("message", "") for j in state["journal"])   # journaled
    assert state["max"]["body"] == 2000    # the new maximum is stored: the same data again does not warn
    third, err = run(c)
    assert WARNING not in err


@pytest.mark.parametrize("db, source_type", [("pg_docs", "postgres"), ("my_docs", "mysql")])
def test_factor_zero_does_not_warn(tmp_path, request, db, source_type):
    d = request.getfixturevalue(db)
    c = cfg(tmp_path, d, source_type, "shape_drift_warn_factor = 0")
    run(c)
    d.sql(f"UPDATE docs SET body = '{'x' * 2000}' WHERE id = 3")
    second, err = run(c)
    assert WARNING not in err and not second["warnings"]


def test_growth_below_the_factor_does_not_warn(tmp_path, pg_docs):
    c = cfg(tmp_path, pg_docs, "postgres", "shape_drift_warn_factor = 25")
    run(c)
    pg_docs.sql(f"UPDATE docs SET body = '{'x' * 2000}' WHERE id = 3")
    second, err = run(c)
    assert WARNING not in err
    pg_docs.sql(f"UPDATE docs SET body = '{'x' * 3000}' WHERE id = 3")   # 30x the first 100, 1.5x the stored 2000
    third, err = run(c)
    assert WARNING not in err
