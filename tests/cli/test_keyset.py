"""Keyset chunking (issue 16): `chunk_by_key` pages a unique NOT NULL indexed key by chunk_size rows."""
from __future__ import annotations

import json
import math
import os

import pyarrow.parquet as pq
import pytest

from tests.helpers import export_config, manifest, read_table, rivet, run_json, write_config

SPARSE = list(range(1, 11)) + list(range(10**9, 10**9 + 11))


def cfg_for(tmp_path, url, table, extra, source_type="postgres", name=None):
    return write_config(tmp_path / "rivet.toml", export_config(url, source_type=source_type, name=name or table,
                                                               table=table, mode="chunked", extra=extra))


def tasks(cfg, name):
    return json.loads(rivet("state", "chunks", "-c", cfg, "-e", name, "--json", check=0).stdout)["tasks"]


def assert_pages(tmp_path, cfg, name, key, expected, size):
    [exp] = run_json(cfg)["exports"]
    assert exp["status"] == "succeeded"
    pages = math.ceil(len(expected) / size)
    assert exp["rows"] == len(expected) and exp["files"] == pages
    got = read_table(tmp_path / "out").column(key).to_pylist()
    assert sorted(got) == sorted(expected) and len(got) == len(set(got))    # every row exactly once
    ts = tasks(cfg, name)
    assert len(ts) == pages and all(t["status"] == "completed" for t in ts)
    assert ts[0]["lo"] is None                                              # the first page has no lower bound
    assert all(a["hi"] == b["lo"] for a, b in zip(ts, ts[1:]))              # pages chain: (lo, hi]
    return ts


@pytest.fixture()
def pg_keys(pg):
    pg.sql("DROP TABLE IF EXISTS ks_sparse, ks_text, ks_uuid, ks_bad")
    pg.sql("CREATE TABLE ks_sparse (id bigint PRIMARY KEY, v int)")
    pg.sql("INSERT INTO ks_sparse SELECT g, g FROM generate_series(1, 10) g")
    pg.sql("INSERT INTO ks_sparse SELECT g, g FROM generate_series(1000000000, 1000000010) g")
    pg.sql("CREATE TABLE ks_text (k text NOT NULL UNIQUE, v int)")
    # mixed case and punctuation: the collation's order differs from byte order
    pg.sql("INSERT INTO ks_text SELECT CASE WHEN g % 2 = 0 THEN upper(md5(g::text)) ELSE '_' || md5(g::text) END, g "
           "FROM generate_series(1, 95) g")
    pg.sql("CREATE TABLE ks_uuid (u uuid PRIMARY KEY, v int)")
    pg.sql("INSERT INTO ks_uuid SELECT md5(g::text)::uuid, g FROM generate_series(1, 47) g")
    pg.sql("CREATE TABLE ks_bad (id int PRIMARY KEY, dup int NOT NULL, nul int UNIQUE, bare int NOT NULL)")
    pg.sql("CREATE INDEX ON ks_bad (dup)")
    pg.sql("INSERT INTO ks_bad SELECT g, g % 3, g, g FROM generate_series(1, 10) g")
    return pg


def test_pg_sparse_integer_key_pages_rows_not_ranges(tmp_path, pg_keys):
    cfg = cfg_for(tmp_path, pg_keys.url, "ks_sparse", 'chunk_by_key = "id"\n        chunk_size = 4')
    ts = assert_pages(tmp_path, cfg, "ks_sparse", "id", SPARSE, 4)
    assert [t["hi"] for t in ts] == ["4", "8", "1000000001", "1000000005", "1000000009", "1000000010"]


def test_pg_text_key_in_collation_order(tmp_path, pg_keys):
    cfg = cfg_for(tmp_path, pg_keys.url, "ks_text", 'chunk_by_key = "k"\n        chunk_size = 10\n        parallel = 2')
    expected = [k for (k,) in pg_keys.sql("SELECT k FROM ks_text")]
    [exp] = run_json(cfg)["exports"]
    assert exp["rows"] == 95 and exp["files"] == 10
    got = read_table(tmp_path / "out").column("k").to_pylist()
    assert len(got) == len(set(got)) == 95
    assert sorted(got) == sorted(expected)
    assert len(tasks(cfg, "ks_text")) == 10


def test_pg_uuid_key(tmp_path, pg_keys):
    cfg = cfg_for(tmp_path, pg_keys.url, "ks_uuid", 'chunk_by_key = "u"\n        chunk_size = 10')
    [exp] = run_json(cfg)["exports"]
    assert exp["rows"] == 47 and exp["files"] == 5
    assert sorted(read_table(tmp_path / "out").column("v").to_pylist()) == list(range(1, 48))
    assert len(tasks(cfg, "ks_uuid")) == 5


@pytest.mark.parametrize("column,problem", [("dup", "not unique"), ("nul", "nullable"), ("bare", "not indexed")])
def test_pg_refuses_a_key_that_cannot_page(tmp_path, pg_keys, column, problem):
    cfg = cfg_for(tmp_path, pg_keys.url, "ks_bad", f'chunk_by_key = "{column}"\n        chunk_size = 4')
    proc = rivet("run", "-c", cfg, "--no-tui", "--json")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "RIVET_PLAN_KEYSET_KEY" in proc.stdout and f"'{column}' is" in proc.stdout and problem in proc.stdout
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_config_conflicts(tmp_path, pg_keys):
    for extra in ('chunk_by_key = "id"\n        chunk_count = 3', 'chunk_by_key = "id"\n        chunk_column = "id"'):
        cfg = cfg_for(tmp_path, pg_keys.url, "ks_sparse", extra)
        proc = rivet("run", "-c", cfg, "--no-tui", "--json")
        assert proc.returncode == 1 and "RIVET_CONFIG_CHUNK_CONFLICT" in proc.stdout


def test_pg_resume_reads_only_the_remaining_pages(tmp_path, pg_keys):
    cfg = cfg_for(tmp_path, pg_keys.url, "ks_sparse", 'chunk_by_key = "id"\n        chunk_size = 4')
    # the process dies (SIGKILL at a commit point, no timing) right after the second page is recorded
    env = {**os.environ, "RIVET_FAULT_AT": "after_file_log", "RIVET_FAULT_AFTER": "2"}
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", env=env, subprocess_only=True)
    assert proc.returncode != 0
    out = tmp_path / "out"
    assert not (out / "_SUCCESS").exists()
    done = {t["chunk_index"] for t in tasks(cfg, "ks_sparse") if t["status"] == "completed"}
    assert done == {0, 1}
    before = {f.name for f in out.glob("*.parquet")}

    [exp] = run_json(cfg)["exports"]
    assert exp["status"] == "succeeded" and exp["rows"] == len(SPARSE)         # the run as a whole
    new = [f.name for f in out.glob("*.parquet") if f.name not in before]   # only the 4 remaining pages were read
    assert len(new) == 4 and not any(f"_chunk{i}_" in n for n in new for i in done)
    ids = []
    for p in manifest(out)["parts"]:
        ids += pq.read_table(out / p["path"]).column("id").to_pylist()
    assert sorted(ids) == SPARSE                                                 # every row exactly once


@pytest.fixture()
def my_keys(mysql):
    mysql.sql("DROP TABLE IF EXISTS ks_sparse, ks_text, ks_bad")
    mysql.sql("CREATE TABLE ks_sparse (id BIGINT PRIMARY KEY, v INT)")
    mysql.sql("INSERT INTO ks_sparse SELECT seq, seq FROM seq_1_to_10")
    mysql.sql("INSERT INTO ks_sparse SELECT seq, seq FROM seq_1000000000_to_1000000010")
    # the default collation is case-insensitive: 'K1' < 'k2' < 'K3' regardless of case, not in byte order
    mysql.sql("CREATE TABLE ks_text (k VARCHAR(20) NOT NULL, v INT, UNIQUE KEY (k))")
    mysql.sql("INSERT INTO ks_text SELECT CONCAT(IF(seq % 2 = 1, 'K', 'k'), LPAD(seq, 3, '0')), seq FROM seq_1_to_95")
    mysql.sql("CREATE TABLE ks_bad (id INT PRIMARY KEY, dup INT NOT NULL, nul INT UNIQUE, bare INT NOT NULL, KEY (dup))")
    mysql.sql("INSERT INTO ks_bad SELECT seq, seq % 3, seq, seq FROM seq_1_to_10")
    return mysql


def test_mariadb_sparse_and_text_keys(tmp_path, my_keys):
    cfg = cfg_for(tmp_path, my_keys.url, "ks_sparse", 'chunk_by_key = "id"\n        chunk_size = 4', "mysql")
    assert_pages(tmp_path, cfg, "ks_sparse", "id", SPARSE, 4)
    sub = tmp_path / "t"
    sub.mkdir()
    cfg = cfg_for(sub, my_keys.url, "ks_text", 'chunk_by_key = "k"\n        chunk_size = 10\n        parallel = 2',
                  "mysql")
    ts = assert_pages(sub, cfg, "ks_text", "v", list(range(1, 96)), 10)
    assert ts[0]["hi"] == "k010"


@pytest.mark.parametrize("column,problem", [("dup", "not unique"), ("nul", "nullable"), ("bare", "not indexed")])
def test_mariadb_refuses_a_key_that_cannot_page(tmp_path, my_keys, column, problem):
    cfg = cfg_for(tmp_path, my_keys.url, "ks_bad", f'chunk_by_key = "{column}"\n        chunk_size = 4', "mysql")
    proc = rivet("run", "-c", cfg, "--no-tui", "--json")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "RIVET_PLAN_KEYSET_KEY" in proc.stdout and problem in proc.stdout


def test_pg_reconcile_repair_and_check_see_pages(tmp_path, pg_keys):
    cfg = cfg_for(tmp_path, pg_keys.url, "ks_sparse", 'chunk_by_key = "id"\n        chunk_size = 4')
    check = rivet("check", "-c", cfg, "--json", check=0)
    assert "RIVET_PLAN_KEYSET_KEY" not in check.stdout
    run_json(cfg)
    clean = json.loads(rivet("reconcile", "-c", cfg, "-e", "ks_sparse", "--json", check=0).stdout)["reports"][0]
    assert clean["summary"] == {"match": 6, "mismatch": 0, "unknown": 0}
    pg_keys.sql("DELETE FROM ks_sparse WHERE id = 2")          # inside the first page, the one without a lower bound
    proc = rivet("reconcile", "-c", cfg, "-e", "ks_sparse", "--json", "-o", tmp_path / "rec.json")
    assert proc.returncode == 3
    bad = [c for c in json.loads(proc.stdout)["reports"][0]["checks"] if c["status"] == "mismatch"]
    assert [(c["index"], c["source_rows"], c["recorded_rows"]) for c in bad] == [(0, 3, 4)]
    done = json.loads(rivet("repair", "-c", cfg, "-e", "ks_sparse", "--execute", "--json", check=0).stdout)
    assert done["executed"] and done["rows_written"] == 3
    after = rivet("reconcile", "-c", cfg, "-e", "ks_sparse", "--json", check=0)
    assert json.loads(after.stdout)["reports"][0]["summary"]["mismatch"] == 0


def test_check_plan_and_the_tui_plan_screen_call_keyset_chunks_pages(tmp_path, pg_keys):
    from rivet_tui.screens.plan import render_diff
    cfg = cfg_for(tmp_path, pg_keys.url, "ks_sparse", 'chunk_by_key = "id"\n        chunk_size = 8')
    check = rivet("check", "-c", cfg, check=0)
    assert "3 pages" in check.stderr and "chunks" not in check.stderr
    assert json.loads(rivet("check", "-c", cfg, "--json", check=0).stdout)["exports"][0]["chunk_unit"] == "pages"
    plan = rivet("plan", "-c", cfg, check=0).stderr
    assert "pages   +3 new" in plan
    assert "+ page 0: id ≤ 8" in plan and "+ page 1: 8 < id ≤ 1000000005" in plan
    assert "+ page 2: 1000000005 < id ≤ 1000000010" in plan
    diff = json.loads(rivet("plan", "-c", cfg, "--json", check=0).stdout)["exports"][0]["diff"]
    screen = render_diff(diff, no_color=True).plain
    assert "3 pages: #0 [id ≤ 8], #1 [8 < id ≤ 1000000005], #2 [1000000005 < id ≤ 1000000010]" in screen
    # a range-chunked export keeps its words
    ranged = cfg_for(tmp_path, pg_keys.url, "ks_sparse", 'chunk_column = "id"\n        chunk_size = 500000000')
    assert "pages" not in rivet("plan", "-c", ranged, check=0).stderr
