"""Plan / apply, check, reconcile, repair and validate (issue 4) through the real `rivet` command."""
from __future__ import annotations

import json
from pathlib import Path
from datetime import datetime, timedelta, timezone

import pytest

from engine.plans import seal
from tests.helpers import export_config, manifest, read_table, rivet, run_json, write_config


def cfg_text(url, extra="", mode="chunked", table="items", name="items", more=""):
    return export_config(url, name=name, table=table, mode=mode, extra=f"{extra}\n        {more}")


@pytest.fixture()
def items(pg):
    pg.sql("DROP TABLE IF EXISTS items")
    pg.sql("CREATE TABLE items (id bigint PRIMARY KEY, updated_at timestamp NOT NULL, v text)")
    pg.sql("INSERT INTO items SELECT g, timestamp '2024-01-01' + g * interval '1 minute', 'v' || g "
           "FROM generate_series(1, 1000) g")
    return pg


def plan_json(cfg, *extra, out=None):
    args = ["plan", "-c", cfg, "--json", *extra] + (["-o", out] if out else [])
    return json.loads(rivet(*args, check=0).stdout)


def test_plan_then_apply_runs_exactly_the_plan(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, "chunk_size = 250"))
    plan_file = tmp_path / "plan.json"
    artifact = plan_json(cfg, out=plan_file)
    [entry] = artifact["exports"]
    assert entry["diff"]["first_run"] is True and entry["diff"]["chunks_new"] == 4
    assert [t["lo"] for t in entry["tasks"]] == ["1", "251", "501", "751"]
    assert artifact["integrity"].startswith("sha256:")
    assert "postgres@" in artifact["source"]["url"]
    # rows added after planning fall outside the planned windows: apply runs the plan's SQL, not a new plan
    items.sql("INSERT INTO items VALUES (5000, now(), 'late')")
    out = json.loads(rivet("apply", plan_file, "-c", cfg, "--json", check=0).stdout)
    assert out["exports"][0]["rows"] == 1000
    report = json.loads((Path(out["report"]) / "summary.json").read_text())    # an applied plan is a run: reported
    assert [(e["name"], e["rows"]) for e in report["exports"]] == [("items", 1000)]
    assert sorted(read_table(tmp_path / "out").column("id").to_pylist()) == list(range(1, 1001))
    again = rivet("apply", plan_file, "-c", cfg, "--json", check=0)
    assert json.loads(again.stdout)["status"] == "already_applied" and "already applied" in again.stderr


def test_plan_diff_shows_cursor_from_to(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, 'cursor_column = "updated_at"', mode="incremental"))
    first = plan_json(cfg)["exports"][0]["diff"]
    assert first["first_run"] and first["cursor_from"] is None and first["cursor_to"] == "2024-01-01T16:40:00.000000"
    run_json(cfg)
    items.sql("INSERT INTO items VALUES (2000, timestamp '2025-01-01 00:00:00.5', 'new')")
    proc = rivet("plan", "-c", cfg, check=0)
    assert "2024-01-01T16:40:00.000000" in proc.stderr and "2025-01-01T00:00:00.500000" in proc.stderr
    diff = plan_json(cfg)["exports"][0]["diff"]
    assert diff["cursor_from"] == "2024-01-01T16:40:00.000000" and diff["cursor_to"] == "2025-01-01T00:00:00.500000"


@pytest.mark.parametrize("damage", ["not_json", "truncated", "one_byte"])
def test_apply_refuses_a_damaged_plan_even_with_force(tmp_path, items, damage):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, "chunk_size = 500"))
    plan_file = tmp_path / "plan.json"
    plan_json(cfg, out=plan_file)
    text = plan_file.read_text()
    if damage == "not_json":
        plan_file.write_text("this is not a plan")
    elif damage == "truncated":
        plan_file.write_text(text[: len(text) // 2])
    else:
        plan_file.write_text(text.replace('"1"', '"2"', 1))
    proc = rivet("apply", plan_file, "-c", cfg, "--force", "--json-errors")
    assert proc.returncode == 1
    assert json.loads(proc.stderr.strip().splitlines()[-1])["code"] in ("RIVET_PLAN_INVALID", "RIVET_PLAN_TAMPERED")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.parquet"))


def _reseal(plan_file, **changes):
    artifact = json.loads(plan_file.read_text())
    artifact.update(changes)
    plan_file.write_text(json.dumps(seal(artifact)))


def test_apply_refuses_a_stale_plan_unless_forced(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, "chunk_size = 500"))
    plan_file = tmp_path / "plan.json"
    plan_json(cfg, out=plan_file)
    old = datetime.now(timezone.utc) - timedelta(hours=30)
    _reseal(plan_file, created_at=old.isoformat(), expires_at=(old + timedelta(hours=24)).isoformat())
    proc = rivet("apply", plan_file, "-c", cfg, "--json-errors")
    assert proc.returncode == 5 and "RIVET_PLAN_STALE" in proc.stderr
    assert rivet("apply", plan_file, "-c", cfg, "--force").returncode == 0


def test_apply_refuses_when_the_cursor_moved(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, 'cursor_column = "updated_at"', mode="incremental"))
    plan_file = tmp_path / "plan.json"
    plan_json(cfg, out=plan_file)
    run_json(cfg)   # the cursor moves after planning
    proc = rivet("apply", plan_file, "-c", cfg, "--json-errors")
    assert proc.returncode == 5 and "RIVET_PLAN_CURSOR_MOVED" in proc.stderr
    assert rivet("apply", plan_file, "-c", cfg, "--force").returncode == 0


def test_apply_with_export_removed_or_other_config(tmp_path, items, pg):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, "chunk_size = 500"))
    plan_file = tmp_path / "plan.json"
    plan_json(cfg, out=plan_file)
    other = write_config(tmp_path / "other.toml", cfg_text(items.url, "chunk_size = 500", name="renamed"))
    proc = rivet("apply", plan_file, "-c", other, "--json-errors")
    assert proc.returncode == 1 and "RIVET_PLAN_EXPORT_MISSING" in proc.stderr
    changed = write_config(tmp_path / "changed.toml", cfg_text(items.url, "chunk_size = 100"))
    proc = rivet("apply", plan_file, "-c", changed, "--json-errors")
    assert proc.returncode == 1 and "RIVET_PLAN_OTHER_CONFIG" in proc.stderr


def test_reconcile_repair_verified(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, "chunk_size = 250"))
    run_json(cfg)
    clean = json.loads(rivet("reconcile", "-c", cfg, "-e", "items", "--json", check=0).stdout)["reports"][0]
    assert clean["summary"] == {"match": 4, "mismatch": 0, "unknown": 0} and clean["verified_written"]
    prog = json.loads(rivet("state", "progression", "-c", cfg, "--json", check=0).stdout)["progression"][0]
    assert prog["last_verified_chunk_index"] == prog["last_committed_chunk_index"] == 3

    items.sql("DELETE FROM items WHERE id BETWEEN 300 AND 309")
    proc = rivet("reconcile", "-c", cfg, "-e", "items", "--json", "-o", tmp_path / "rec.json")
    assert proc.returncode == 3
    report = json.loads(proc.stdout)["reports"][0]
    bad = [c for c in report["checks"] if c["status"] == "mismatch"]
    assert [(c["index"], c["source_rows"], c["recorded_rows"]) for c in bad] == [(1, 240, 250)]

    dry = json.loads(rivet("repair", "-c", cfg, "-e", "items", "--report", tmp_path / "rec.json", "--json", check=0).stdout)
    assert [c["index"] for c in dry["chunks"]] == [1] and not dry["executed"]
    done = json.loads(rivet("repair", "-c", cfg, "-e", "items", "--execute", "--json", check=0).stdout)
    assert done["executed"] and done["rows_written"] == 240 and len(done["superseded"]) == 1
    after = rivet("reconcile", "-c", cfg, "-e", "items", "--json", check=0)
    assert json.loads(after.stdout)["reports"][0]["summary"]["mismatch"] == 0
    text = rivet("state", "progression", "-c", cfg, check=0).stderr.splitlines()
    assert text[1].startswith("items          chunked        chunk #3 ") and text[1].endswith("chunked        chunk #3")
    m = manifest(tmp_path / "out")
    assert {p["status"] for p in m["parts"]} == {"committed", "superseded"} and m["row_count"] == 990
    assert rivet("validate", "-c", cfg, "-e", "items").returncode == 0


def test_reconcile_bad_input(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, "chunk_size = 250"))
    proc = rivet("reconcile", "-c", cfg, "-e", "items", "--json-errors")
    assert proc.returncode == 1 and "RIVET_RECONCILE_NO_CHUNK_RUN" in proc.stderr
    nockpt = write_config(tmp_path / "n.toml", cfg_text(items.url, "chunk_size = 250\n        chunk_checkpoint = false"))
    run_json(nockpt)
    proc = rivet("reconcile", "-c", nockpt, "-e", "items", "--json-errors")
    assert proc.returncode == 1 and "RIVET_RECONCILE_NO_CHUNK_RUN" in proc.stderr


def test_repair_with_report_from_another_export(tmp_path, items):
    text = cfg_text(items.url, "chunk_size = 250") + """
        [[exports]]
        name = "other"
        table = "items"
        mode = "chunked"
        chunk_size = 500
        destination = { type = "local", path = "out2" }
        """
    cfg = write_config(tmp_path / "rivet.toml", text)
    run_json(cfg)
    rivet("reconcile", "-c", cfg, "-e", "other", "-o", tmp_path / "other.json", check=0)
    proc = rivet("repair", "-c", cfg, "-e", "items", "--report", tmp_path / "other.json", "--json-errors")
    assert proc.returncode == 1 and "RIVET_REPAIR_OTHER_EXPORT" in proc.stderr


def test_incremental_reconcile_is_whole_export(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, 'cursor_column = "updated_at"', mode="incremental"))
    run_json(cfg)
    rep = json.loads(rivet("reconcile", "-c", cfg, "-e", "items", "--json", check=0).stdout)["reports"][0]
    assert rep["summary"] == {"match": 1, "mismatch": 0, "unknown": 0} and not rep["verified_written"]
    items.sql("DELETE FROM items WHERE id = 5")
    assert rivet("reconcile", "-c", cfg, "-e", "items").returncode == 3


@pytest.mark.parametrize("damage", ["delete", "truncate", "extra"])
def test_validate_finds_damage(tmp_path, items, damage):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, "chunk_size = 250"))
    run_json(cfg, "--validate")
    out = tmp_path / "out"
    part = sorted(out.glob("*.parquet"))[1]
    if damage == "delete":
        part.unlink()
    elif damage == "truncate":
        part.write_bytes(part.read_bytes()[:100])
    else:
        (out / "stray.csv").write_text("a\n1\n")
    proc = rivet("validate", "-c", cfg, "--json")
    report = json.loads(proc.stdout)["reports"][0]
    if damage == "extra":
        assert proc.returncode == 0 and report["warnings"][0]["object"] == "stray.csv"
    else:
        assert proc.returncode == 3 and report["failures"][0]["object"] == part.name


def test_check_reports_fidelity_and_strict(tmp_path, pg):
    pg.sql("DROP TABLE IF EXISTS mixed")
    pg.sql("CREATE TABLE mixed (id int PRIMARY KEY, n numeric, amount numeric(12,2), iv interval)")
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(pg.url, table="mixed", name="mixed", mode="full",
                                                         more='[exports.columns]\n        n = "text"'))
    proc = rivet("check", "-c", cfg, "--json", check=0)
    cols = {c["name"]: c for c in json.loads(proc.stdout)["exports"][0]["columns"]}
    assert cols["amount"]["fidelity"] == "exact" and cols["n"]["fidelity"] == "text"
    assert cols["iv"]["fidelity"] in ("text", "refused")
    assert rivet("check", "-c", cfg, "--strict").returncode == 1


def test_run_reconcile_flag(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, "chunk_size = 500"))
    out = run_json(cfg, "--reconcile")
    assert out["validation"][0]["ok"] and out["reconcile"][0]["ok"]


def test_init_then_doctor_then_run_on_a_fresh_database(tmp_path, pg):
    pg.sql("DROP TABLE IF EXISTS init_orders")
    pg.sql("CREATE TABLE init_orders (id bigint PRIMARY KEY, updated_at timestamptz, n numeric, v text)")
    pg.sql("INSERT INTO init_orders SELECT g, now(), g / 3.0, 'v' FROM generate_series(1, 500) g")
    pg.sql("ANALYZE init_orders")
    cfg = tmp_path / "rivet.toml"
    rivet("init", "--source", pg.url, "--table", "public.init_orders", "-o", cfg, check=0)
    text = cfg.read_text()
    assert text.startswith("# rivet.toml — written by `rivet init`")
    assert "incremental candidates: updated_at" in text and "not exact: n (numeric: text)" in text
    assert rivet("init", "--source", pg.url, "-o", cfg).returncode == 1   # never overwrites
    doctor = rivet("doctor", "-c", cfg, check=0)
    assert doctor.stderr.count("ok") >= 4
    out = run_json(cfg)["exports"][0]
    assert out["name"] == "init_orders" and out["rows"] == 500
