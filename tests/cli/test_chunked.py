"""Chunked and time-window exports (issue 3): windows, parallel, sparse keys, crash + resume, progression."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pyarrow.parquet as pq
import pytest

from tests.helpers import export_config, RIVET, ROOT, manifest, read_table, rivet, run_json, write_config


def cfg_text(url, source_type="postgres", table="items", extra="", name="items", mode="chunked"):
    return export_config(url, source_type=source_type, name=name, table=table, mode=mode, extra=extra)


@pytest.fixture()
def items(pg):
    pg.sql("DROP TABLE IF EXISTS items")
    pg.sql("CREATE TABLE items (id bigint PRIMARY KEY, day date NOT NULL, at timestamp NOT NULL, v text)")
    pg.sql("""INSERT INTO items SELECT g, date '2024-01-01' + (g / 100), timestamp '2024-01-01' + g * interval '15 minutes',
              'v' || g FROM generate_series(1, 1000) g""")
    return pg


def chunk_files(out):
    return sorted(p for p in out.glob("*.parquet"))


def test_chunk_size_auto_pk_one_part_per_window(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, extra="chunk_size = 300"))
    [exp] = run_json(cfg)["exports"]
    assert exp["rows"] == 1000 and exp["files"] == 4
    files = chunk_files(tmp_path / "out")
    assert all("_chunk" in f.name for f in files)
    ids = sorted(read_table(tmp_path / "out").column("id").to_pylist())
    assert ids == list(range(1, 1001))
    chunks = json.loads(rivet("state", "chunks", "-c", cfg, "-e", "items", "--json", check=0).stdout)
    assert chunks["chunk_run"]["status"] == "completed"
    assert [(t["lo"], t["hi"], t["status"]) for t in chunks["tasks"]] == [
        ("1", "300", "completed"), ("301", "600", "completed"), ("601", "900", "completed"), ("901", "1000", "completed")]
    prog = json.loads(rivet("state", "progression", "-c", cfg, "--json", check=0).stdout)["progression"][0]
    assert prog["last_committed_strategy"] == "chunked" and prog["last_committed_chunk_index"] == 3
    assert prog["last_committed_cursor"] is None


def test_chunk_count_parallel_and_empty_windows(tmp_path, items):
    items.sql("DELETE FROM items WHERE id BETWEEN 201 AND 400")
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, extra="chunk_count = 5\n        parallel = 2"))
    [exp] = run_json(cfg)["exports"]
    assert exp["rows"] == 800 and exp["files"] == 4      # the empty window writes no file
    assert sorted(read_table(tmp_path / "out").column("id").to_pylist()) == [i for i in range(1, 1001) if not 201 <= i <= 400]


def test_chunk_by_days_half_open(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, extra='chunk_column = "at"\n        chunk_by_days = 2'))
    [exp] = run_json(cfg)["exports"]
    assert exp["rows"] == 1000
    ids = read_table(tmp_path / "out").column("id").to_pylist()
    assert sorted(ids) == list(range(1, 1001))   # each row once: windows are half-open


@pytest.mark.parametrize("window, pieces, split", [
    ("chunk_size = 500", 8, ['("id" BETWEEN 1 AND 63)', '("id" BETWEEN 64 AND 126)']),
    ('chunk_column = "day"\n        chunk_by_days = 4', 4,     # a day is the narrowest sub-window
     [""""day" >= DATE '2024-01-01') AND ("day" < DATE '2024-01-02')""",
      """"day" >= DATE '2024-01-02') AND ("day" < DATE '2024-01-03')"""])])
def test_a_big_window_is_read_as_sub_windows_side_by_side_and_each_row_arrives_once(tmp_path, items, monkeypatch,
                                                                                     window, pieces, split):
    """With parallel = 1 one chunk at a time reads, and one PostgreSQL backend streams at about one core's speed:
    a window estimated at 2 × SPLIT_MIN_ROWS or more is read by one reader per core, side by side, in SPLIT_PIECES
    sub-windows per reader (a reader takes the next as it finishes). Lowered here so a 1,000-row table splits; the
    rows must be exactly the window's, each once."""
    import engine.planner
    from engine.sources.postgres import PostgresSource
    monkeypatch.setattr(engine.planner, "SPLIT_MIN_ROWS", 100)
    monkeypatch.setattr(PostgresSource, "concurrent_reads", 2)
    items.sql("ANALYZE items")   # the split is decided on the catalog's row estimate
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, extra=window))
    tasks = json.loads(rivet("plan", "-c", cfg, "--json", check=0).stdout)["exports"][0]["tasks"]
    first = tasks[0]["split"]
    assert tasks[0]["readers"] == 2 and len(first) == pieces and all(p in sql for p, sql in zip(split, first)), first
    [exp] = run_json(cfg)["exports"]
    assert exp["status"] == "succeeded" and exp["rows"] == 1000
    ids = read_table(tmp_path / "out").column("id").to_pylist()
    assert sorted(ids) == list(range(1, 1001))   # each row once: the sub-windows tile the window exactly
    assert rivet("reconcile", "-c", cfg, "-e", "items", check=0).returncode == 0


def test_sparse_keys_plan_only_occupied_windows(tmp_path, pg):
    pg.sql("DROP TABLE IF EXISTS sparse")
    pg.sql("CREATE TABLE sparse (id bigint PRIMARY KEY, v int)")
    pg.sql("INSERT INTO sparse SELECT g, g FROM generate_series(1, 10) g")
    pg.sql("INSERT INTO sparse SELECT g, g FROM generate_series(1000000000, 1000000010) g")
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(pg.url, table="sparse", name="sparse", extra="chunk_size = 1000"))
    t0 = time.monotonic()
    [exp] = run_json(cfg)["exports"]
    # windows are aligned at MIN(id) = 1: [1..1000], [999999001..1000000000], [1000000001..1000000010]
    assert exp["rows"] == 21 and exp["files"] == 3
    assert any("sparse" in w for w in exp["warnings"])
    chunks = json.loads(rivet("state", "chunks", "-c", cfg, "-e", "sparse", "--json", check=0).stdout)["tasks"]
    assert [(c["lo"], c["hi"]) for c in chunks] == [("1", "1000"), ("999999001", "1000000000"),
                                                    ("1000000001", "1000000010")]
    assert time.monotonic() - t0 < 60


@pytest.mark.parametrize("bad,code", [
    ('chunk_column = "v"\n        chunk_size = 10', "RIVET_CONFIG_CHUNK_COLUMN_TYPE"),
    ("chunk_size = 0", "RIVET_CONFIG_OUT_OF_RANGE"),
    ("chunk_size = -5", "RIVET_CONFIG_OUT_OF_RANGE"),
    ("chunk_size = 10\n        chunk_count = 3", "RIVET_CONFIG_CHUNK_CONFLICT"),
    ("chunk_size = 10\n        parallel = 0", "RIVET_CONFIG_OUT_OF_RANGE"),
])
def test_chunk_bad_input(tmp_path, items, bad, code):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, extra=bad))
    proc = rivet("run", "-c", cfg, "--no-tui", "--json-errors", "--json")
    assert proc.returncode == 1, proc.stderr
    assert code in proc.stderr + proc.stdout
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_resume_with_nothing_to_resume(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, extra="chunk_size = 300"))
    proc = rivet("run", "-c", cfg, "--no-tui", "--resume", "--json")
    assert proc.returncode == 1
    assert "RIVET_RUN_NOTHING_TO_RESUME" in proc.stdout
    run_json(cfg)
    proc = rivet("run", "-c", cfg, "--no-tui", "--resume", "--json")
    assert proc.returncode == 5 and "RIVET_RUN_PREFIX_COMPLETE" in proc.stdout
    assert rivet("run", "-c", cfg, "--no-tui", "--resume", "--force", "--json").returncode == 0


def _start(cfg):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.Popen([*RIVET, "run", "-c", str(cfg), "--no-tui", "--json"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def _wait_for(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("where", ["boundary", "mid_chunk"])
def test_sigkill_then_plain_run_finishes_exactly(tmp_path, items, where):
    # slow the run down (small batches + throttle) so the kill lands halfway
    extra = "chunk_size = 100\n        [exports.tuning]\n        batch_size = 10\n        throttle_ms = 15"
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, extra=extra))
    out = tmp_path / "out"
    proc = _start(cfg)
    if where == "boundary":
        assert _wait_for(lambda: len(chunk_files(out)) >= 4)
    else:
        assert _wait_for(lambda: len(chunk_files(out)) >= 3)
        time.sleep(0.08)   # a chunk takes ~150 ms here (10 batches x 15 ms): land inside the next one
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "_SUCCESS").exists()
    for f in chunk_files(out):   # everything under a final name is a complete part
        pq.read_metadata(f)
    before = {f.name for f in chunk_files(out)}
    chunks = json.loads(rivet("state", "chunks", "-c", cfg, "-e", "items", "--json", check=0).stdout)
    done_before = {t["chunk_index"] for t in chunks["tasks"] if t["status"] == "completed"}
    assert 0 < len(done_before) < 10

    summary = run_json(cfg)["exports"][0]
    assert summary["status"] == "succeeded"
    chunks = json.loads(rivet("state", "chunks", "-c", cfg, "-e", "items", "--json", check=0).stdout)
    assert chunks["chunk_run"]["status"] == "completed"
    assert all(t["status"] == "completed" for t in chunks["tasks"])
    # completed chunks were not re-read: no new file for them
    new_files = [f for f in chunk_files(out) if f.name not in before]
    assert not any(f"_chunk{i}_" in f.name for f in new_files for i in done_before)
    # the committed parts (the manifest) hold every source row exactly once
    m = manifest(out)
    ids = []
    for p in m["parts"]:
        ids += pq.read_table(out / p["path"]).column("id").to_pylist()
    assert sorted(ids) == list(range(1, 1001))
    assert m["row_count"] == 1000 and m["status"] == "succeeded"


def test_chunk_failing_every_attempt(tmp_path, pg):
    pg.sql("DROP TABLE IF EXISTS flaky")
    pg.sql("CREATE TABLE flaky (id int PRIMARY KEY, d numeric)")
    pg.sql("INSERT INTO flaky SELECT g, 1 FROM generate_series(1, 100) g")
    pg.sql("INSERT INTO flaky VALUES (55, 0) ON CONFLICT (id) DO UPDATE SET d = 0")
    pg.sql("CREATE OR REPLACE VIEW flaky_v AS SELECT id, (1 / d)::int AS inv FROM flaky")
    extra = "chunk_column = \"id\"\n        chunk_size = 10\n        chunk_max_attempts = 2"
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(pg.url, table="flaky_v", name="flaky", extra=extra))
    proc = rivet("run", "-c", cfg, "--no-tui", "--json")
    assert proc.returncode != 0
    exp = json.loads(proc.stdout)["exports"][0]
    assert exp["status"] == "failed" and "1 of 10 chunks failed" in exp["error"]["error"]
    out = tmp_path / "out"
    assert not (out / "_SUCCESS").exists()
    assert manifest(out)["status"] == "failed"
    tasks = json.loads(rivet("state", "chunks", "-c", cfg, "-e", "flaky", "--json", check=0).stdout)["tasks"]
    failed = [t for t in tasks if t["status"] == "failed"]
    assert [t["chunk_index"] for t in failed] == [5]
    assert sum(1 for t in tasks if t["status"] == "completed") == 9
    prog = json.loads(rivet("state", "progression", "-c", cfg, "--json", check=0).stdout)["progression"]
    assert prog == [] or prog[0]["last_committed_chunk_index"] is None


def test_time_window(tmp_path, pg):
    pg.sql("DROP TABLE IF EXISTS logins")
    pg.sql("CREATE TABLE logins (id int PRIMARY KEY, at timestamptz, epoch bigint)")
    pg.sql("INSERT INTO logins SELECT g, now() - g * interval '1 day' + interval '1 hour', "
           "extract(epoch from now() - g * interval '1 day' + interval '1 hour')::bigint FROM generate_series(0, 19) g")
    extra = 'time_column = "at"\n        days_window = 7'
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(pg.url, table="logins", name="logins", mode="time_window", extra=extra))
    assert run_json(cfg)["exports"][0]["rows"] == 8
    extra = 'time_column = "epoch"\n        time_column_type = "unix"\n        days_window = 3'
    cfg = write_config(tmp_path / "u.toml", cfg_text(pg.url, table="logins", name="logins_u", mode="time_window", extra=extra))
    assert run_json(cfg)["exports"][0]["rows"] == 4


def test_chunked_mariadb_parallel(tmp_path, mysql):
    mysql.sql("DROP TABLE IF EXISTS items")
    mysql.sql("CREATE TABLE items (id INT PRIMARY KEY, v VARCHAR(10))")
    mysql.sql("INSERT INTO items SELECT seq, CONCAT('v', seq) FROM seq_1_to_1000")
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(mysql.url, "mysql", extra="chunk_size = 250\n        parallel = 2"))
    assert run_json(cfg)["exports"][0]["files"] == 4
    assert sorted(read_table(tmp_path / "out").column("id").to_pylist()) == list(range(1, 1001))


def test_schema_drift_fail_before_any_chunk(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, extra='chunk_size = 500\n        on_schema_drift = "fail"'))
    run_json(cfg)
    files_before = set((tmp_path / "out").glob("*.parquet"))
    items.sql("ALTER TABLE items ADD COLUMN extra int")
    proc = rivet("run", "-c", cfg, "--no-tui", "--json")
    assert proc.returncode == 4
    assert json.loads(proc.stdout)["exports"][0]["error"]["code"] == "RIVET_SCHEMA_DRIFT"
    assert set((tmp_path / "out").glob("*.parquet")) == files_before
    assert (tmp_path / "out/_SUCCESS").exists()     # the refused run touched nothing


def test_schema_drift_warn(tmp_path, items):
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, extra="chunk_size = 500"))
    run_json(cfg)
    items.sql("ALTER TABLE items ADD COLUMN extra int")
    exp = run_json(cfg)["exports"][0]
    assert exp["status"] == "succeeded" and any("+ extra" in w for w in exp["warnings"])


def test_parallel_exports_one_failing(tmp_path, items):
    text = cfg_text(items.url, extra="chunk_size = 500") + """
        [[exports]]
        name = "broken"
        table = "missing_table"
        destination = { type = "local", path = "out2" }

        [[exports]]
        name = "items_full"
        table = "items"
        destination = { type = "local", path = "out3" }
        """
    cfg = write_config(tmp_path / "rivet.toml", text)
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", "--parallel-exports", "3")
    assert proc.returncode == 1
    by_name = {e["name"]: e for e in json.loads(proc.stdout)["exports"]}
    assert by_name["items"]["status"] == "succeeded", by_name["items"]["error"]
    assert by_name["items_full"]["rows"] == 1000, by_name["items_full"]["error"]
    assert by_name["broken"]["status"] == "failed"
    assert "broken" in proc.stderr


def test_second_process_reads_state_during_a_long_run(tmp_path, items):
    extra = "chunk_size = 50\n        [exports.tuning]\n        batch_size = 10\n        throttle_ms = 20"
    cfg = write_config(tmp_path / "rivet.toml", cfg_text(items.url, extra=extra))
    proc = _start(cfg)
    try:
        assert _wait_for(lambda: len(chunk_files(tmp_path / "out")) >= 1)
        t0 = time.monotonic()
        prog = rivet("state", "progression", "-c", cfg, "--lock-wait", "10", check=0)
        assert time.monotonic() - t0 < 10
        assert "No progression" in prog.stderr or "EXPORT" in prog.stderr
        assert proc.poll() is None   # the export was still running
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0
