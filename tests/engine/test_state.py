"""The state store against a real DuckDB file: every operation, the progression rules (docs/state.md, "Progression"), migrations."""
from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from engine.errors import ExitClass, RivetError
from engine.state import StateStore, compare_cursors, migrate

ADR_0008_COLUMNS = [
    ("export_name", "VARCHAR"), ("last_committed_strategy", "VARCHAR"), ("last_committed_cursor", "VARCHAR"),
    ("last_committed_chunk_index", "INTEGER"), ("last_committed_run_id", "VARCHAR"), ("last_committed_at", "VARCHAR"),
    ("last_verified_strategy", "VARCHAR"), ("last_verified_cursor", "VARCHAR"),
    ("last_verified_chunk_index", "INTEGER"), ("last_verified_run_id", "VARCHAR"), ("last_verified_at", "VARCHAR"),
]
ISO_Z = "%Y-%m-%dT%H:%M:%S.%fZ"


@pytest.fixture
def store(tmp_path):
    return StateStore(tmp_path / "state.duckdb", lock_wait_s=5)


def columns(store, table):
    store.close()   # this process's writer holds the file open; DuckDB refuses a second, differently configured open
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {table}").fetchall()]
    finally:
        con.close()


def assert_iso_z(text):
    datetime.strptime(text, ISO_Z)  # raises when the format drifts


# -- opening, migrations, bad files ------------------------------------------------------------------------------

def test_creates_parent_directory_and_all_tables(tmp_path):
    path = tmp_path / "deep" / ".rivet" / "state.duckdb"
    s = StateStore(path)
    assert path.is_file() and s.schema_version() == 2
    s.close()
    con = duckdb.connect(str(path), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    con.close()
    assert {"schema_version", "export_state", "export_progression", "chunk_run", "chunk_task", "file_log",
            "export_metrics", "export_schema", "run_journal"} <= tables


def test_export_progression_has_exactly_the_adr_columns(store):
    assert columns(store, "export_progression") == ADR_0008_COLUMNS


def test_reopening_applies_nothing_twice(tmp_path):
    path = tmp_path / "s.duckdb"
    StateStore(path).set_cursor("a", "1", "id", "t:id", "r1")
    s = StateStore(path)
    assert s.get_export_state("a")["last_cursor_value"] == "1"
    s.close()
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT version FROM schema_version ORDER BY 1").fetchall() == [(1,), (2,)]
    con.close()


def test_upgrades_a_file_created_by_migration_001_only(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    assert migrate(con, upto=1) == [1]
    con.execute("INSERT INTO export_state (export_name, last_cursor_value, cursor_column) VALUES ('orders', '41', 'id')")
    con.close()

    s = StateStore(path)
    assert s.schema_version() == 2
    assert s.get_export_state("orders")["last_cursor_value"] == "41"  # data survives the upgrade
    s.record_committed_incremental("orders", "41", "r1")
    s.journal("orders", "r1", "cursor_moved", {"to": "41"})
    assert s.progression("orders")[0]["last_committed_cursor"] == "41"
    assert [e["event"] for e in s.journal_for("orders")] == ["cursor_moved"]


@pytest.mark.parametrize("content", [b"hello world" * 100, b"", b"\x00" * 4096])
def test_non_duckdb_file_is_corrupt_exit_1(tmp_path, content):
    path = tmp_path / "state.duckdb"
    path.write_bytes(content)
    with pytest.raises(RivetError) as err:
        StateStore(path)
    assert err.value.code == "RIVET_STATE_CORRUPT" and err.value.exit_class == ExitClass.USAGE
    assert str(path) in err.value.message and "move state.duckdb aside" in err.value.hint


def test_sqlite_file_is_named_as_such_without_touching_the_network(tmp_path):
    import sqlite3
    path = tmp_path / ".rivet_state.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE export_state (export_name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(RivetError) as err:
        StateStore(path)
    assert err.value.code == "RIVET_STATE_CORRUPT" and "SQLite" in err.value.message


def test_truncated_duckdb_file_is_corrupt(tmp_path):
    path = tmp_path / "state.duckdb"
    s = StateStore(path)
    s.journal("a", "r", "e", {})
    s.close()
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(RivetError) as err:
        StateStore(path)
    assert err.value.code == "RIVET_STATE_CORRUPT"


def test_foreign_duckdb_schema_is_refused(tmp_path):
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE export_state (x INTEGER)")  # someone else's database, no schema_version
    con.close()
    with pytest.raises(RivetError) as err:
        StateStore(path)
    assert err.value.code == "RIVET_STATE_CORRUPT" and "unexpected schema" in err.value.message


def test_directory_as_state_path(tmp_path):
    with pytest.raises(RivetError) as err:
        StateStore(tmp_path)
    assert err.value.code == "RIVET_STATE_PATH" and err.value.exit_class == ExitClass.USAGE


# -- export_state ------------------------------------------------------------------------------------------------

def test_cursor_last_run_accept_and_reset(store):
    assert store.get_export_state("orders") is None
    store.set_cursor("orders", "100", "id", "public.orders:id", "r1")
    store.set_last_run("orders", "r1", "completed")
    st = store.get_export_state("orders")
    assert (st["last_cursor_value"], st["cursor_column"], st["cursor_identity"], st["cursor_run_id"]) == \
        ("100", "id", "public.orders:id", "r1")
    assert (st["last_run_id"], st["last_status"]) == ("r1", "completed")
    assert_iso_z(st["last_run_at"])
    assert_iso_z(st["cursor_updated_at"])

    store.set_last_run("orders", "r2", "failed")  # last run does not touch the cursor
    assert store.get_export_state("orders")["last_cursor_value"] == "100"

    store.accept_identity("orders", "order_id", "public.orders_v2:order_id")
    st = store.get_export_state("orders")
    assert (st["last_cursor_value"], st["cursor_column"], st["cursor_identity"]) == \
        ("100", "order_id", "public.orders_v2:order_id")

    assert store.reset_state("orders") is True
    st = store.get_export_state("orders")
    assert (st["last_cursor_value"], st["cursor_column"], st["cursor_identity"]) == (None, None, None)
    assert (st["last_run_id"], st["last_status"]) == ("r2", "failed")
    assert store.reset_state("orders") is False
    assert store.reset_state("never_ran") is False


def test_export_rows_reads_schema_and_state_together(store):
    assert store.export_rows("orders") == (None, None)
    store.set_schema("orders", [{"name": "id", "type": "int64"}], "fp1")
    schema, state = store.export_rows("orders")
    assert schema["columns"] == [{"name": "id", "type": "int64"}] and schema["fingerprint"] == "fp1"
    assert state is None
    store.set_last_run("orders", "r1", "succeeded")
    schema, state = store.read_export_rows("orders").result()
    assert schema["fingerprint"] == "fp1"
    assert state == store.get_export_state("orders") and state["last_run_id"] == "r1"
    assert store.export_rows("other") == (None, None)


def test_writes_hinted_new_are_right_whatever_the_row_holds(store):
    # `new=True` (the row was missing when planned) only changes the order of the statements: a row that turned up
    # meanwhile is updated, not duplicated and not an error
    store.set_last_run("orders", "r1", "succeeded", new=True)
    assert store.get_export_state("orders")["last_run_id"] == "r1"
    store.set_cursor("orders", "100", "id", "public.orders:id", "r1", new=True)   # the row exists by now
    store.set_last_run("orders", "r2", "failed", new=True)
    st = store.get_export_state("orders")
    assert (st["last_cursor_value"], st["last_run_id"], st["last_status"]) == ("100", "r2", "failed")
    store.set_schema("orders", [{"name": "id", "type": "int64"}], "fp1", new=True)
    store.set_schema("orders", [{"name": "id", "type": "int64"}, {"name": "v", "type": "string"}], "fp2", new=True)
    assert store.get_schema("orders")["fingerprint"] == "fp2"
    store.close()
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        counts = [con.execute(f"SELECT count(*) FROM {t} WHERE export_name = 'orders'").fetchone()[0]
                  for t in ("export_state", "export_schema")]
    finally:
        con.close()
    assert counts == [1, 1]


def test_a_failing_read_fails_alone(store):
    store.set_last_run("orders", "r1", "succeeded")
    with pytest.raises(RivetError) as err:
        store._rows("SELECT * FROM no_such_table")
    assert err.value.code == "RIVET_STATE_CORRUPT"
    assert store.get_export_state("orders")["last_run_id"] == "r1"   # the file stays usable
    store.set_last_run("orders", "r2", "succeeded")
    assert store.get_export_state("orders")["last_run_id"] == "r2"


def test_a_batch_can_be_waited_for_later(store):
    later = []
    with store.batch(later):
        store.set_last_run("orders", "r1", "succeeded")
        store.record_metrics(export_name="orders", run_id="r1", status="succeeded")
    assert len(later) == 1
    assert store.get_export_state("orders")["last_run_id"] == "r1"   # a read queued after it sees it
    assert later[0].result(timeout=30) is None
    with store.batch(later):
        store._write(lambda con: con.execute("INSERT INTO no_such_table VALUES (1)"))
    with pytest.raises(RivetError) as err:
        later[1].result(timeout=30)
    assert err.value.code == "RIVET_STATE_CORRUPT"
    assert [m["run_id"] for m in store.metrics("orders")] == ["r1"]


# -- file_log ----------------------------------------------------------------------------------------------------

def test_file_log_filters_and_supersede(store):
    store.log_file("orders", "r1", "out/a.parquet", 10, 1000, "h1", 0, "parquet", "zstd")
    store.log_file("orders", "r1", "out/b.parquet", 20, 2000, "h2", 1, "parquet", "zstd")
    store.log_file("orders", "r2", "out/c.parquet", 5, 500, "h3", None, "parquet", "zstd")
    store.log_file("events", "r9", "out/e.csv", 7, 70, None, None, "csv", "none")
    a, b = (f["id"] for f in store.files(run_id="r1"))
    assert b > a
    assert [f["path"] for f in store.files("orders")] == ["out/a.parquet", "out/b.parquet", "out/c.parquet"]
    assert [f["path"] for f in store.files(run_id="r1")] == ["out/a.parquet", "out/b.parquet"]
    assert len(store.files()) == 4
    first = store.files("orders")[0]
    assert (first["rows"], first["size_bytes"], first["content_hash"], first["chunk_index"], first["format"],
            first["compression"], first["status"]) == (10, 1000, "h1", 0, "parquet", "zstd", "committed")
    assert_iso_z(first["created_at"])

    assert store.supersede_files("orders", ["out/a.parquet", "out/e.csv", "missing"]) == 1  # other export untouched
    assert store.supersede_files("orders", ["out/a.parquet"]) == 0
    assert store.supersede_files("orders", []) == 0
    assert [f["path"] for f in store.files("orders", status="superseded")] == ["out/a.parquet"]
    assert store.files("events")[0]["status"] == "committed"


# -- metrics -----------------------------------------------------------------------------------------------------

def test_metrics_newest_first_with_limit(store):
    start = datetime(2026, 4, 18, 12, 0, tzinfo=UTC)
    for i in range(3):
        store.record_metrics(export_name="orders", run_id=f"r{i}", mode="full", status="completed",
                             started_at=start + timedelta(minutes=i), finished_at=start + timedelta(minutes=i, seconds=5),
                             duration_ms=5000, rows=100 * i, files=1, bytes=1000, retries=0)
    store.record_metrics(export_name="events", run_id="e1", status="failed", error_code="RIVET_SOURCE_GONE",
                         error_message="server closed the connection")
    assert [m["run_id"] for m in store.metrics("orders")] == ["r2", "r1", "r0"]
    assert [m["run_id"] for m in store.metrics(last=2)] == ["e1", "r2"]
    newest = store.metrics("orders", last=1)[0]
    assert newest["started_at"] == "2026-04-18T12:02:00.000000Z" and newest["rows"] == 200
    assert store.metrics("events")[0]["error_code"] == "RIVET_SOURCE_GONE"
    with pytest.raises(TypeError):
        store.record_metrics(export_name="x", rowz=1)


# -- schema ------------------------------------------------------------------------------------------------------

def test_schema_roundtrip(store):
    assert store.get_schema("orders") is None
    cols = [{"name": "id", "type": "int64"}, {"name": "note", "type": "string"}]
    store.set_schema("orders", cols, "fp1")
    got = store.get_schema("orders")
    assert got["columns"] == cols and got["fingerprint"] == "fp1"
    store.set_schema("orders", cols[:1], "fp2")
    assert store.get_schema("orders")["columns"] == cols[:1] and store.get_schema("orders")["fingerprint"] == "fp2"


# -- chunk runs --------------------------------------------------------------------------------------------------

def test_chunk_run_lifecycle(store):
    store.create_chunk_run("orders", "r1", "plan-h", "id", [(0, 1, 100), (1, 101, 200), (2, 201, 300)])
    run = store.latest_chunk_run("orders")
    assert (run["run_id"], run["status"], run["plan_hash"], run["chunk_column"], run["chunk_count"],
            run["finished_at"]) == ("r1", "in_progress", "plan-h", "id", 3, None)
    tasks = store.chunk_tasks("r1")
    assert [(t["chunk_index"], t["lo"], t["hi"], t["status"], t["attempts"]) for t in tasks] == [
        (0, "1", "100", "pending", 0), (1, "101", "200", "pending", 0), (2, "201", "300", "pending", 0)]

    assert store.start_task("r1", 0) == 1
    store.complete_task("r1", 0, 100, "out/orders_chunk0_.parquet")
    assert store.start_task("r1", 1) == 1
    store.fail_task("r1", 1, "connection reset")
    assert store.start_task("r1", 2) == 1
    assert store.chunk_summary("r1") == {"pending": 0, "running": 1, "completed": 1, "failed": 1, "total": 3,
                                         "rows": 100}
    done = store.chunk_tasks("r1", "completed")[0]
    assert (done["rows_written"], done["file_path"]) == (100, "out/orders_chunk0_.parquet")
    assert_iso_z(done["started_at"])
    assert_iso_z(done["finished_at"])
    assert store.chunk_tasks("r1", ("failed",))[0]["error"] == "connection reset"
    assert [t["chunk_index"] for t in store.chunk_tasks("r1", ["pending", "failed", "running"])] == [1, 2]

    # crash: the running task goes back to pending, its attempt stays counted
    assert store.reset_running("r1") == 1
    assert store.reset_running("r1") == 0
    t2 = store.chunk_tasks("r1")[2]
    assert (t2["status"], t2["attempts"]) == ("pending", 1)

    store.finish_chunk_run("r1", "failed")
    assert store.latest_chunk_run("orders", status="failed")["finished_at"] is not None
    store.finish_chunk_run("r1", "in_progress")  # resume reopens it
    assert store.latest_chunk_run("orders")["finished_at"] is None
    store.finish_chunk_run("r1", "completed")
    assert store.chunk_run("r1")["status"] == "completed"
    with pytest.raises(ValueError):
        store.finish_chunk_run("r1", "done")


def test_tasks_move_strictly_forward(store):
    store.create_chunk_run("orders", "r1", None, "id", [(0, 1, 10), (1, 11, 20)])
    for call in (lambda: store.complete_task("r1", 0, 1, None), lambda: store.fail_task("r1", 0, "x")):
        with pytest.raises(RivetError) as err:
            call()  # pending -> completed|failed skips running
        assert err.value.code == "RIVET_STATE_TRANSITION"
    store.start_task("r1", 0)
    with pytest.raises(RivetError):
        store.start_task("r1", 0)  # already running
    store.complete_task("r1", 0, 10, None)
    for call in (lambda: store.start_task("r1", 0), lambda: store.fail_task("r1", 0, "x"),
                 lambda: store.complete_task("r1", 0, 1, None)):
        with pytest.raises(RivetError) as err:
            call()  # completed is final
        assert err.value.code == "RIVET_STATE_TRANSITION"
    with pytest.raises(RivetError):
        store.start_task("r1", 99)
    assert store.chunk_tasks("r1")[0]["rows_written"] == 10


def test_failed_task_retried_while_attempts_below_max(store):
    store.create_chunk_run("orders", "r1", None, "id", [(0, 1, 10)])
    for attempt in (1, 2, 3):
        assert store.start_task("r1", 0, max_attempts=3) == attempt
        store.fail_task("r1", 0, f"boom {attempt}")
    with pytest.raises(RivetError) as err:
        store.start_task("r1", 0, max_attempts=3)
    assert "failed 3 times" in err.value.message
    assert store.chunk_tasks("r1")[0]["error"] == "boom 3"


def test_latest_chunk_run_and_duplicates(store):
    assert store.latest_chunk_run("orders") is None
    store.create_chunk_run("orders", "r1", "h1", "id", [(0, 1, 2)])
    store.finish_chunk_run("r1", "completed")
    store.create_chunk_run("orders", "r2", "h2", "id", [(0, 1, 2)])
    store.create_chunk_run("events", "e1", "h3", "at", [])
    assert store.latest_chunk_run("orders")["run_id"] == "r2"
    assert store.latest_chunk_run("orders", status="completed")["run_id"] == "r1"
    assert store.latest_chunk_run("orders", status="failed") is None
    assert store.chunk_summary("e1")["total"] == 0
    with pytest.raises(RivetError) as err:
        store.create_chunk_run("orders", "r1", "h", "id", [(0, 1, 2)])
    assert err.value.code == "RIVET_STATE_DUPLICATE_RUN"
    assert len(store.chunk_tasks("r1")) == 1  # the failed create left nothing behind


def test_create_chunk_run_100k_chunks(store):
    chunks = [(i, i * 100_000 + 1, (i + 1) * 100_000) for i in range(100_000)]
    t0 = time.perf_counter()
    store.create_chunk_run("big", "rbig", "h", "id", chunks)
    elapsed = time.perf_counter() - t0
    print(f"\ncreate_chunk_run with 100,000 chunks: {elapsed:.2f} s")
    summary = store.chunk_summary("rbig")
    assert summary["pending"] == 100_000
    last = store.chunk_tasks("rbig")[-1]
    assert (last["chunk_index"], last["lo"], last["hi"]) == (99_999, "9999900001", "10000000000")


# -- progression (docs/state.md) --------------------------------------------------------------------------------------

@pytest.mark.parametrize("a,b,expected", [
    ("9", "10", -1),                                            # numeric, not lexicographic
    ("1000", "999", 1),
    ("-5", "3", -1),
    ("1.50", "1.5", 0),
    ("123456789012345678901234567890", "123456789012345678901234567891", -1),  # exact past float precision
    ("2026-04-17T23:59:59+02:00", "2026-04-17T22:00:00Z", -1),  # 21:59:59Z < 22:00:00Z
    ("2026-04-17 23:59:59.123456+00", "2026-04-17T23:59:59.123457Z", -1),
    ("2026-04-17T10:00:00", "2026-04-17T10:00:00Z", 0),        # naive = UTC
    ("2026-04-17", "2026-04-16T23:59:59Z", 1),                 # a date is its midnight
    ("2026-04-17T00:00:00.123456789Z", "2026-04-17T00:00:00.123456780Z", 1),  # nanoseconds still count
    ("b", "a", 1),                                              # byte order
    ("abc", "abd", -1),
    ("10", "9a", -1),                                           # mixed: byte order
    ("2026-04-17", "zzz", -1),
])
def test_compare_cursors(a, b, expected):
    assert compare_cursors(a, b) == expected
    assert compare_cursors(b, a) == -expected


def test_committed_incremental_is_monotonic_numeric(store):
    assert store.record_committed_incremental("events", "9", "r1") is True
    assert store.record_committed_incremental("events", "10", "r2") is True  # '10' > '9' numerically
    assert store.record_committed_incremental("events", "9", "stale") is False  # lower: row kept
    row = store.progression("events")[0]
    assert (row["last_committed_strategy"], row["last_committed_cursor"], row["last_committed_chunk_index"],
            row["last_committed_run_id"]) == ("incremental", "10", None, "r2")
    assert_iso_z(row["last_committed_at"])
    assert store.record_committed_incremental("events", "10", "r3") is True  # equal moves run/at along
    assert store.progression("events")[0]["last_committed_run_id"] == "r3"


def test_committed_incremental_is_monotonic_on_timestamps_with_zones(store):
    store.record_committed_incremental("events", "2026-04-17T23:59:59+02:00", "r1")  # 21:59:59Z
    assert store.record_committed_incremental("events", "2026-04-17T21:00:00Z", "r2") is False
    assert store.record_committed_incremental("events", "2026-04-17T22:00:00Z", "r3") is True
    assert store.record_committed_incremental("events", "2026-04-17 21:30:00", "r4") is False  # naive = UTC
    assert store.progression("events")[0]["last_committed_cursor"] == "2026-04-17T22:00:00Z"


def test_committed_incremental_byte_order_fallback(store):
    store.record_committed_incremental("k", "order-b", "r1")
    assert store.record_committed_incremental("k", "order-a", "r2") is False
    assert store.record_committed_incremental("k", "order-c", "r3") is True


def test_committed_chunked_overwrites_and_verified_is_independent(store):
    store.record_committed_chunked("orders", 41, "r1")
    store.record_verified_chunked("orders", 40, "r1")
    row = store.progression("orders")[0]
    assert (row["last_committed_strategy"], row["last_committed_chunk_index"], row["last_committed_cursor"]) == \
        ("chunked", 41, None)
    assert (row["last_verified_strategy"], row["last_verified_chunk_index"], row["last_verified_run_id"]) == \
        ("chunked", 40, "r1")
    assert_iso_z(row["last_verified_at"])
    # the progression contract: no monotonicity check for chunked commits across reruns -- a new run overwrites
    store.record_committed_chunked("orders", 7, "r2")
    row = store.progression("orders")[0]
    assert (row["last_committed_chunk_index"], row["last_committed_run_id"]) == (7, "r2")
    assert row["last_verified_chunk_index"] == 40  # same strategy: verified untouched
    store.record_verified_chunked("orders", 7, "r2")
    assert store.progression("orders")[0]["last_verified_run_id"] == "r2"


def test_verified_alone_creates_the_row(store):
    store.record_verified_chunked("orders", 3, "r1")
    row = store.progression("orders")[0]
    assert row["last_committed_strategy"] is None and row["last_verified_chunk_index"] == 3


def test_strategy_switch_replaces_the_row(store):
    store.record_committed_chunked("orders", 41, "c1")
    store.record_verified_chunked("orders", 41, "c1")
    # switching to incremental: even a "lower-looking" cursor is taken, and no chunk fields survive
    assert store.record_committed_incremental("orders", "0", "i1") is True
    row = store.progression("orders")[0]
    assert row == {**row, "last_committed_strategy": "incremental", "last_committed_cursor": "0",
                   "last_committed_chunk_index": None, "last_committed_run_id": "i1",
                   "last_verified_strategy": None, "last_verified_chunk_index": None,
                   "last_verified_run_id": None, "last_verified_at": None}
    store.record_committed_chunked("orders", 2, "c2")
    row = store.progression("orders")[0]
    assert (row["last_committed_strategy"], row["last_committed_cursor"], row["last_committed_chunk_index"]) == \
        ("chunked", None, 2)


def test_progression_listing_and_reset(store):
    store.record_committed_incremental("b_events", "5", "r1")
    store.record_committed_chunked("a_orders", 1, "r2")
    assert [r["export_name"] for r in store.progression()] == ["a_orders", "b_events"]
    assert [r["export_name"] for r in store.progression("b_events")] == ["b_events"]
    assert store.progression("nope") == []
    assert store.reset_progression("b_events") is True
    assert store.reset_progression("b_events") is False
    assert [r["export_name"] for r in store.progression()] == ["a_orders"]


def test_progression_survives_state_reset_and_schema_change(store):
    store.set_cursor("events", "10", "id", "t:id", "r1")
    store.record_committed_incremental("events", "10", "r1")
    store.set_schema("events", [{"name": "id", "type": "int64"}], "fp1")
    store.set_schema("events", [{"name": "id", "type": "int64"}, {"name": "x", "type": "string"}], "fp2")
    store.reset_state("events")
    store.accept_identity("events", "id2", "t:id2")
    assert store.progression("events")[0]["last_committed_cursor"] == "10"  # PG8: only reset_progression clears it


# -- journal, summary, batch, threads ----------------------------------------------------------------------------

def test_journal(store):
    store.journal("orders", "r1", "chunk_started", {"chunk": 0})
    store.journal("orders", "r1", "chunk_done", {"chunk": 0, "at": datetime(2026, 1, 1)})
    store.journal("orders", "r2", "run_started", None)
    store.journal("events", "e1", "run_started", {})
    events = store.journal_for("orders")
    assert [e["event"] for e in events] == ["chunk_started", "chunk_done", "run_started"]
    assert events[1]["payload"] == {"chunk": 0, "at": "2026-01-01 00:00:00"}
    assert events[2]["payload"] == {}
    assert_iso_z(events[0]["at"])
    assert [e["event"] for e in store.journal_for("orders", run_id="r1")] == ["chunk_started", "chunk_done"]
    assert [e["event"] for e in store.journal_for("orders", limit=2)] == ["chunk_done", "run_started"]


def test_summary(store):
    store.set_cursor("events", "2026-04-17T23:59:59Z", "updated_at", "events:updated_at", "e1")
    store.set_last_run("events", "e1", "completed")
    store.log_file("events", "e1", "p1", 10, 100, "h", None, "csv", "none")
    store.log_file("events", "e1", "p2", 5, 50, "h", None, "csv", "none")
    store.log_file("events", "e1", "p3", 1, 1, "h", None, "csv", "none")
    store.supersede_files("events", ["p3"])
    store.create_chunk_run("orders", "o1", "h", "id", [(0, 1, 2)])
    rows = store.summary()
    assert [r["export_name"] for r in rows] == ["events", "orders"]
    ev = rows[0]
    assert (ev["cursor"], ev["cursor_column"], ev["last_run_id"], ev["last_status"], ev["files"], ev["rows"],
            ev["bytes"]) == ("2026-04-17T23:59:59Z", "updated_at", "e1", "completed", 2, 15, 150)
    assert rows[1]["files"] == 0 and rows[1]["cursor"] is None
    assert store.summary("orders")[0]["export_name"] == "orders"
    assert store.summary("nope") == []


def test_batch_is_one_transaction(store):
    store.create_chunk_run("orders", "r1", None, "id", [(0, 1, 10)])
    store.start_task("r1", 0)
    with store.batch():
        store.complete_task("r1", 0, 10, "p0")
        with store.batch():  # nested batches join the outer one
            store.log_file("orders", "r1", "p0", 10, 100, "h", 0, "parquet", "zstd")
        store.journal("orders", "r1", "chunk_done", {"chunk": 0})
    assert store.chunk_tasks("r1")[0]["status"] == "completed" and len(store.files("orders")) == 1

    with pytest.raises(RuntimeError), store.batch():
        store.set_cursor("orders", "99", "id", "t:id", "r1")
        store.log_file("orders", "r1", "p1", 1, 1, "h", None, "parquet", "zstd")
        raise RuntimeError("crash before commit")
    assert store.get_export_state("orders") is None and len(store.files("orders")) == 1  # all rolled back


def test_reads_are_refused_inside_a_batch(store):
    with pytest.raises(RuntimeError, match="only writes"), store.batch():
        store.set_cursor("orders", "1", "id", "t:id", "r1")
        store.get_export_state("orders")   # would see nothing of the batch yet
    assert store.get_export_state("orders") is None   # and the batch was not applied


def test_starts_queued_together_run_as_one_statement_and_each_gets_its_own_outcome(store):
    """Chunk starts queued while the writer is busy join one unit (one UPDATE for all): each caller still gets its
    own attempt number or its own refusal, and a refused start does not undo the others."""
    store.create_chunk_run("orders", "r1", None, "id", [(i, i, i + 1) for i in range(5)])
    store.start_task("r1", 2)
    store.complete_task("r1", 2, 1, None)
    store.start_task("r1", 3, max_attempts=1)
    store.fail_task("r1", 3, "boom")
    gate = threading.Event()
    blocker = store._writer.call_soon(lambda con: gate.wait(30), 30)   # the writer is busy until the gate opens
    asks = [(0, 3), (1, 3), (1, 3), (2, 3), (3, 1), (99, 3), (4, 3)]
    outcomes: dict[int, object] = {}

    def start(n: int, idx: int, max_attempts: int) -> None:
        try:
            outcomes[n] = store.start_task("r1", idx, max_attempts=max_attempts)
        except RivetError as exc:
            outcomes[n] = exc
    threads = [threading.Thread(target=start, args=(n, *ask)) for n, ask in enumerate(asks)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(store._writer._appended.get("start_task", (None, [], []))[1]) < len(asks):
        assert time.monotonic() < deadline, "the starts did not join one unit"
        time.sleep(0.01)
    gate.set()
    blocker.result(timeout=30)
    for t in threads:
        t.join(timeout=30)
    assert [outcomes[n] for n in (0, 1, 6)] == [1, 1, 1]
    refusals = {n: outcomes[n] for n in (2, 3, 4, 5)}
    assert all(isinstance(e, RivetError) and e.code == "RIVET_STATE_TRANSITION" for e in refusals.values())
    assert "chunk 1 of run r1 is running, cannot start it" in refusals[2].message   # the same chunk twice
    assert "chunk 2 of run r1 is completed" in refusals[3].message
    assert "chunk 3 of run r1 failed 1 times (max 1)" in refusals[4].message
    assert "chunk 99 of run r1 does not exist" in refusals[5].message
    assert [(t["status"], t["attempts"]) for t in store.chunk_tasks("r1")] == [
        ("running", 1), ("running", 1), ("completed", 1), ("failed", 1), ("running", 1)]


def test_completions_of_a_batch_are_one_statement_and_a_refused_one_undoes_the_batch(store):
    store.create_chunk_run("orders", "r1", None, "id", [(i, i, i + 1) for i in range(4)])
    for idx in (0, 1, 2):
        store.start_task("r1", idx)
    with store.batch():
        for idx in (0, 1):
            store.log_file("orders", "r1", f"p{idx}'s part", 10 + idx, 100, None, idx, "parquet", "zstd")
        store.complete_task("r1", 0, 10, "p0's part")
        store.complete_task("r1", 1, 11, None)
    assert [(t["status"], t["rows_written"], t["file_path"]) for t in store.chunk_tasks("r1")] == [
        ("completed", 10, "p0's part"), ("completed", 11, None), ("running", None, None), ("pending", None, None)]
    assert [(f["path"], f["rows"], f["chunk_index"]) for f in store.files("orders")] == [
        ("p0's part", 10, 0), ("p1's part", 11, 1)]

    with pytest.raises(RivetError) as err, store.batch():
        store.log_file("orders", "r1", "p2", 1, 1, None, 2, "parquet", "zstd")
        store.log_file("orders", "r1", "p3", 1, 1, None, 3, "parquet", "zstd")
        store.complete_task("r1", 2, 1, "p2")
        store.complete_task("r1", 3, 1, "p3")   # never started
    assert err.value.code == "RIVET_STATE_TRANSITION" and "chunk 3 of run r1 is pending" in err.value.message
    assert [t["status"] for t in store.chunk_tasks("r1")] == ["completed", "completed", "running", "pending"]
    assert len(store.files("orders")) == 2   # the batch's parts were not logged either


def test_threads_race_for_chunks_and_lose_no_writes(tmp_path):
    """Eight threads on two store objects (one writer) all try to start every chunk: each chunk is started once,
    and every completion, part and journal row lands."""
    s1 = StateStore(tmp_path / "s.duckdb")
    s2 = StateStore(tmp_path / "s.duckdb")
    chunks = 40
    s1.create_chunk_run("orders", "r1", None, "id", [(i, i, i + 1) for i in range(chunks)])
    won: list[int] = []
    errors = []

    def work(store):
        for i in range(chunks):
            try:
                store.start_task("r1", i)
            except RivetError as exc:
                if exc.code != "RIVET_STATE_TRANSITION":
                    errors.append(exc)
                continue
            won.append(i)
            with store.batch():
                store.log_file("orders", "r1", f"p{i}", 1, 1, "h", i, "parquet", "zstd")
                store.complete_task("r1", i, 1, f"p{i}")
            store.journal("orders", "r1", "ChunkFinished", {"chunk_index": i})

    threads = [threading.Thread(target=work, args=(s1 if n % 2 else s2,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(won) == list(range(chunks))
    assert [(t["status"], t["attempts"]) for t in s1.chunk_tasks("r1")] == [("completed", 1)] * chunks
    assert sorted(f["chunk_index"] for f in s2.files("orders")) == list(range(chunks))
    assert len(s2.journal_for("orders")) == chunks


def test_a_state_file_deleted_just_before_a_reopen_is_not_recreated(tmp_path, monkeypatch):
    """The writer closes the file when idle and reopens it for the next write. Deleted in the instant between its
    existence check and DuckDB's connect, connect would create an empty file: the run failed with the wrong
    reason (RIVET_STATE_CORRUPT when the new file got the old inode number) and left a state file behind it never
    had (seen in CI: tests/reliability/test_concurrency.py, about 1 run in 10)."""
    import engine.state.writer as writer_module
    path = tmp_path / "state.duckdb"
    store = StateStore(path)
    store.set_last_run("orders", "r1", "succeeded")
    store.close()                                         # as the idle close does
    real_connect = duckdb.connect

    def connect_after_deletion(database, *args, **kwargs):   # the file goes after the check, before the open
        path.unlink(missing_ok=True)
        return real_connect(database, *args, **kwargs)
    monkeypatch.setattr(writer_module.duckdb, "connect", connect_after_deletion)
    with pytest.raises(RivetError) as e:
        store.set_last_run("orders", "r2", "succeeded")
    assert e.value.code == "RIVET_STATE_GONE" and "deleted" in e.value.message
    assert not path.exists()


def test_a_state_file_deleted_just_after_a_reopen_fails_as_gone(tmp_path, monkeypatch):
    """Deleted in the instant between DuckDB's connect (which opened the existing file) and the writer's look at
    which file it opened: the write failed with RIVET_INTERNAL_ERROR (FileNotFoundError) instead of
    RIVET_STATE_GONE, and the connection was left open (seen in tests/reliability/test_concurrency.py)."""
    import engine.state.writer as writer_module
    path = tmp_path / "state.duckdb"
    store = StateStore(path)
    store.set_last_run("orders", "r1", "succeeded")
    store.close()                                         # as the idle close does
    real_connect = duckdb.connect
    opened = []

    def connect_then_deletion(database, *args, **kwargs):   # the file goes right after the open
        con = real_connect(database, *args, **kwargs)
        opened.append(con)
        path.unlink()
        return con
    monkeypatch.setattr(writer_module.duckdb, "connect", connect_then_deletion)
    with pytest.raises(RivetError) as e:
        store.set_last_run("orders", "r2", "succeeded")
    assert e.value.code == "RIVET_STATE_GONE" and "deleted" in e.value.message
    assert not path.exists()
    with pytest.raises(duckdb.ConnectionException):   # the writer closed what it opened
        opened[0].execute("SELECT 1")
