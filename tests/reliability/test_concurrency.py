"""Concurrency (issue 8): two `rivet run` of one export never write at the same time. The second waits up to
--lock-wait for the per-export lock, then exits 2 (RIVET_RUN_BUSY) naming the holder's PID; with a long enough
wait it runs after the first one, never interleaved with it; a SIGKILLed holder leaves no stale lock.
"""
from __future__ import annotations

import json
import signal
import time

import pytest

from engine.state import StateStore
from tests.reliability.common import Prefix, local_dest, rivet, run_summary, start, store_of, wait_for, write_config

ROWS = 3000


@pytest.fixture(scope="module")
def lock_items(pg):
    pg.sql("DROP TABLE IF EXISTS lock_items")
    pg.sql("CREATE TABLE lock_items (id bigint PRIMARY KEY, pad text)")
    pg.sql(f"INSERT INTO lock_items SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g")
    return pg


@pytest.fixture
def cfg(tmp_path, lock_items):
    # slow: 6 chunks of 500 rows, 100-row batches, 100 ms between batches (3 s in all)
    return write_config(tmp_path / "rivet.toml", f"""
[source]
type = "postgres"
url = "{lock_items.url}"

[[exports]]
name = "locked"
table = "lock_items"
mode = "chunked"
chunk_size = 500
destination = {{ type = "local", path = "out" }}
[exports.tuning]
batch_size = 100
throttle_ms = 100
""")


def parts(cfg) -> list:
    return Prefix.of(local_dest(cfg.parent / "out"), "locked").part_names


def test_second_run_waits_lock_wait_then_exits_2_naming_the_holder(cfg):
    first = start(cfg)
    try:
        assert wait_for(lambda: parts(cfg), timeout=60), "the first run never wrote a part"
        t0 = time.monotonic()
        second = rivet("run", "-c", cfg, "--no-tui", "--json", "--json-errors", "--lock-wait", "1")
        waited = time.monotonic() - t0
        assert second.returncode == 2, second.stderr
        err = run_summary(second)["error"]
        assert err["code"] == "RIVET_RUN_BUSY"
        assert f"PID {first.pid}" in err["error"], err
        assert waited >= 1.0, f"gave up after {waited:.2f} s, before --lock-wait"
        assert first.poll() is None, "the first run should still be running"
    finally:
        out, _ = first.communicate(timeout=120)
    assert first.returncode == 0
    store = store_of(cfg)
    run = store.latest_chunk_run("locked")
    tasks = store.chunk_tasks(run["run_id"])
    assert all(t["status"] == "completed" and t["attempts"] == 1 for t in tasks)   # one writer per chunk
    assert len(store.chunk_tasks(run["run_id"])) == 6
    files = store.files("locked")
    assert sorted(f["chunk_index"] for f in files) == list(range(6))    # each chunk written exactly once
    started = [j for j in store.journal_for("locked") if j["event"] == "ExportStarted"]
    assert len(started) == 1, "the refused run must not have started the export"
    failed = [m for m in store.metrics("locked") if m["status"] == "failed"]
    assert [m["error_code"] for m in failed] == ["RIVET_RUN_BUSY"]


def test_waiting_run_goes_after_the_holder_never_alongside(cfg):
    first = start(cfg)
    assert wait_for(lambda: parts(cfg), timeout=60)
    second = start(cfg, "--lock-wait", "120")
    out1, _ = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, err2
    a, b = json.loads(out1)["exports"][0], json.loads(out2)["exports"][0]
    assert a["run_id"] != b["run_id"]
    store = store_of(cfg)
    run_a = store.chunk_run(a["run_id"])
    run_b = store.chunk_run(b["run_id"])
    assert run_a["status"] == run_b["status"] == "completed"
    assert run_b["created_at"] >= run_a["finished_at"], "the second chunk run started before the first finished"
    for run in (run_a, run_b):
        assert all(t["attempts"] == 1 for t in store.chunk_tasks(run["run_id"]))


def test_sigkilled_holder_leaves_no_stale_lock(cfg):
    first = start(cfg)
    assert wait_for(lambda: len(parts(cfg)) >= 2, timeout=60)
    second = start(cfg, "--lock-wait", "60")
    time.sleep(0.5)                                  # the second run is now waiting for the lock
    first.send_signal(signal.SIGKILL)
    first.communicate()
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    summary = json.loads(out)["exports"][0]
    store = store_of(cfg)
    run = store.latest_chunk_run("locked")
    assert summary["run_id"] == run["run_id"] and run["status"] == "completed"   # it resumed the killed run
    prefix = Prefix.of(local_dest(cfg.parent / "out"), "locked")
    assert sorted(prefix.manifest_values("id", [prefix.latest])) == list(range(1, ROWS + 1))


def test_a_symlinked_state_path_shares_the_export_lock(cfg, tmp_path):
    """Two spellings of one state file (issue 12 item 11): the second run waits for the first and exits 2
    naming it; before, each spelling had its own lock directory and both ran at once."""
    real = tmp_path / "real" / "state.duckdb"
    (tmp_path / "link").mkdir()
    link = tmp_path / "link" / "state.duckdb"
    link.symlink_to(real)
    cfg.write_text(cfg.read_text().replace("throttle_ms = 100", "throttle_ms = 500"))   # ~15 s: outlive the 2nd start
    first = start(cfg, "--state", real)
    try:
        assert wait_for(lambda: parts(cfg), timeout=60), "the first run never wrote a part"
        second = rivet("run", "-c", cfg, "--no-tui", "--json", "--json-errors", "--lock-wait", "1", "--state", link)
        assert second.returncode == 2, second.stderr
        err = run_summary(second)["error"]
        assert err["code"] == "RIVET_RUN_BUSY" and f"PID {first.pid}" in err["error"], err
        assert first.poll() is None, "the first run should still be running"
    finally:
        first.communicate(timeout=120)
    assert first.returncode == 0
    assert not (tmp_path / "link" / "locks").exists()   # one lock directory, beside the real file
    store = StateStore(link, lock_wait_s=30)
    tasks = store.chunk_tasks(store.latest_chunk_run("locked")["run_id"])
    assert [(t["status"], t["attempts"]) for t in tasks] == [("completed", 1)] * 6


def test_state_file_deleted_during_a_run_fails_clearly_and_loses_no_rows(cfg):
    """Issue 12 item 12: not exit 6 (a CatalogException); the run fails with RIVET_STATE_GONE, writes no
    _SUCCESS, and the next run (with a fresh state) exports every row."""
    state = cfg.parent / ".rivet" / "state.duckdb"
    first = start(cfg)
    assert wait_for(lambda: parts(cfg), timeout=60), "the first run never wrote a part"
    state.unlink()
    out, err = first.communicate(timeout=120)
    summary = json.loads(out)["exports"][0]
    assert first.returncode == 1, err
    assert summary["error"]["code"] == "RIVET_STATE_GONE", summary
    assert Prefix.of(local_dest(cfg.parent / "out"), "locked").success is None
    assert not state.exists()   # a run never recreates a state file under its own feet

    again = rivet("run", "-c", cfg, "--no-tui", "--json")
    assert again.returncode == 0, again.stderr
    prefix = Prefix.of(local_dest(cfg.parent / "out"), "locked")
    assert prefix.success is not None
    assert sorted(prefix.manifest_values("id", [prefix.latest])) == list(range(1, ROWS + 1))
