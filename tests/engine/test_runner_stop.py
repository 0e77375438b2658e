"""A user stop (Runner.cancel) is its own status: "stopped", exit class 2, resumable — not a failure. Running chunks
go back to pending with no attempt counted; exports that had not started report "stopped" and record nothing;
the next plain run resumes and delivers every row exactly once."""
from __future__ import annotations

import threading

import pyarrow.parquet as pq
import pytest

from engine import events as ev
from engine.config import load_config
from engine.errors import ExitClass
from engine.run.runner import Runner, RunOptions
from engine.state import StateStore
from tests.helpers import write_config

ROWS = 2000


@pytest.fixture()
def slow(pg, tmp_path):
    pg.sql("DROP TABLE IF EXISTS stop_items")
    pg.sql("CREATE TABLE stop_items (id bigint PRIMARY KEY, v text)")
    pg.sql(f"INSERT INTO stop_items SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g")
    path = write_config(tmp_path / "rivet.toml", f"""
        [source]
        type = "postgres"
        url = "{pg.url}"

        [[exports]]
        name = "stop_a"
        table = "stop_items"
        mode = "chunked"
        chunk_size = 250
        destination = {{ type = "local", path = "out_a" }}
        [exports.tuning]
        batch_size = 50
        throttle_ms = 50

        [[exports]]
        name = "stop_b"
        table = "stop_items"
        mode = "full"
        destination = {{ type = "local", path = "out_b" }}
        """)
    return load_config(path)


def test_stop_mid_run_is_stopped_and_resumes(slow):
    store = StateStore(slow.state_path)
    runner = None
    seen: list[ev.Event] = []

    def on_event(e: ev.Event) -> None:
        seen.append(e)
        if isinstance(e, ev.ChunkFinished) and e.status == "completed":
            threading.Thread(target=runner.cancel).start()

    runner = Runner(slow, store, on_event, RunOptions(parallel_exports=1))
    first, second = runner.run()
    assert first.status == "stopped" and first.error.code == "RIVET_RUN_STOPPED"
    assert first.exit_class == ExitClass.TRANSIENT
    assert second.status == "stopped" and second.run_id is None      # never started
    assert [m["export_name"] for m in store.metrics()] == ["stop_a"]   # nothing recorded for stop_b
    finished = [e for e in seen if isinstance(e, ev.ExportFinished)]
    assert [(e.export, e.status) for e in finished] == [("stop_a", "stopped"), ("stop_b", "stopped")]

    run = store.latest_chunk_run("stop_a")
    tasks = store.chunk_tasks(run["run_id"])
    assert {t["status"] for t in tasks} <= {"completed", "pending"}
    assert all(t["attempts"] <= 1 for t in tasks)
    assert any(t["status"] == "pending" for t in tasks)
    assert not (slow.base_dir / "out_a" / "_SUCCESS").exists()

    again = Runner(slow, store, options=RunOptions(names=["stop_a"])).run()[0]
    assert again.status == "succeeded" and again.run_id == run["run_id"]     # resumed, not restarted
    ids = [i for f in (slow.base_dir / "out_a").glob("*.parquet") for i in pq.read_table(f).column("id").to_pylist()]
    assert sorted(ids) == list(range(1, ROWS + 1))


def test_a_failed_last_state_write_is_the_exports_error_in_a_parallel_run(pg, tmp_path):
    # Runner.run commits each export's metrics and last run while the next export starts; a failure of that write
    # must still reach the export's result (and so the exit code) before run() returns
    pg.sql("DROP TABLE IF EXISTS rec_items")
    pg.sql("CREATE TABLE rec_items (id bigint PRIMARY KEY)")
    pg.sql("INSERT INTO rec_items SELECT g FROM generate_series(1, 10) g")
    path = write_config(tmp_path / "rivet.toml", f"""
        [source]
        type = "postgres"
        url = "{pg.url}"
        """ + "".join(f"""
        [[exports]]
        name = "rec_{i}"
        table = "rec_items"
        mode = "full"
        destination = {{ type = "local", path = "out_{i}" }}
        """ for i in range(3)))
    config = load_config(path)
    store = StateStore(config.state_path)
    store._write(lambda con: con.execute("DROP TABLE export_metrics"))   # the metrics INSERT now fails
    results = Runner(config, store, options=RunOptions(parallel_exports=2)).run()
    assert [r.rows for r in results] == [10, 10, 10]
    assert all(r.error is not None and r.error.code == "RIVET_STATE_CORRUPT" for r in results), \
        [(r.name, r.error) for r in results]
    assert all(s["last_run_id"] is None for s in (store.get_export_state(f"rec_{i}") or {"last_run_id": None}
                                                  for i in range(3)))   # the batch failed as a whole
