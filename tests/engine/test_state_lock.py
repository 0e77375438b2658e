"""The state file shared between processes and threads (docs/state.md): bounded lock wait with the holder named, a
reader getting in during a long writer, two writers taking turns, group commit isolating a faulty unit, writes
flushed at exit, one writer for two spellings of a path, and a deleted or damaged file named as such.

Real processes and a real DuckDB file throughout; no mocks.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.errors import ExitClass, RivetError
from engine.state import StateStore

ROOT = Path(__file__).resolve().parents[2]
# Plain DuckDB (it does not knock): retries until this test process's writer has let the file go.
HOLD = """
import duckdb, sys, time
deadline = time.monotonic() + 20
while True:
    try:
        c = duckdb.connect(sys.argv[1])
        break
    except duckdb.IOException:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.01)
print('holding', flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold(path: Path, seconds: float) -> subprocess.Popen:
    """Another process that opens the state file with plain DuckDB and keeps it open."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def rivet_process(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "state.duckdb"
    store = StateStore(p)
    store.set_cursor("orders", "7", "id", "t:id", "r1")
    store.close()   # let processes that do not knock (plain DuckDB) in at once
    return p


def test_busy_names_the_holder_after_the_wait(path):
    opened = StateStore(path, lock_wait_s=1)
    opened.close()
    holder = hold(path, 30)
    try:
        t0 = time.monotonic()
        with pytest.raises(RivetError) as err:
            StateStore(path, lock_wait_s=1)
        elapsed = time.monotonic() - t0
        assert elapsed >= 0.9
        assert err.value.code == "RIVET_STATE_BUSY" and err.value.exit_class == ExitClass.TRANSIENT
        assert f"state file {path} is in use by PID {holder.pid} (" in err.value.message
        assert "--lock-wait" in err.value.hint

        with pytest.raises(RivetError) as err:
            opened.progression()  # a store built earlier waits the same way on each operation
        assert err.value.code == "RIVET_STATE_BUSY" and f"PID {holder.pid}" in err.value.message
    finally:
        holder.kill()
        holder.wait()
    assert StateStore(path, lock_wait_s=1).get_export_state("orders")["last_cursor_value"] == "7"


def test_operation_waits_for_the_holder_to_exit(path):
    store = StateStore(path, lock_wait_s=10)
    store.close()
    holder = hold(path, 1.0)
    try:
        with pytest.raises(RivetError) as err:
            StateStore(path, lock_wait_s=0).get_export_state("orders")
        assert err.value.code == "RIVET_STATE_BUSY"
        t0 = time.monotonic()
        store.set_cursor("orders", "8", "id", "t:id", "r2")  # blocks until the holder exits, then succeeds
        waited = time.monotonic() - t0
    finally:
        holder.wait()
    assert waited > 0.3
    assert store.get_export_state("orders")["last_cursor_value"] == "8"


def test_reader_process_gets_in_while_this_process_writes_back_to_back(path):
    """A long run hammering state (8 threads) must still let `rivet state progression` from cron in, and show it
    what was committed before it asked."""
    store = StateStore(path)
    stop = threading.Event()
    writes = [0] * 8

    def hammer(n):
        while not stop.is_set():
            store.journal("orders", "r1", "tick", {})
            writes[n] += 1

    workers = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for w in workers:
        w.start()
    try:
        store.set_cursor("orders", "9", "id", "t:id", "r2")   # committed before the reader starts
        reader = rivet_process(
            "from engine.state import StateStore; import sys, time; time.sleep(1.5); t0 = time.monotonic();"
            f" s = StateStore({str(path)!r}, lock_wait_s=8); print(s.get_export_state('orders')['last_cursor_value'],"
            " len(s.journal_for('orders')), round(time.monotonic() - t0, 2))")
        out, err = reader.communicate(timeout=60)
        during = sum(writes)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert reader.returncode == 0, err
    cursor, journal_rows, seconds = out.split()
    assert cursor == "9"
    assert int(journal_rows) > 0
    assert during > 30  # the writers really were busy while the reader tried
    print(f"\nreader got in after {seconds} s while this process wrote {during} journal rows")


WRITER = """
import sys, time
from engine.state import StateStore
path, tag, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = StateStore(path, lock_wait_s=2)
end = time.monotonic() + seconds
i = 0
while time.monotonic() < end:
    s.journal('orders', tag, 'tick', {'i': i})
    s.set_last_run('orders', tag, 'running')
    i += 1
print(i)
"""


def test_two_writer_processes_take_turns(path):
    """Two long writers (a cron `rivet run` while the TUI runs another export): each writes for 6 s with a lock
    wait of 2 s, so both finish only if they take turns; nothing is lost."""
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, "6"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for tag in ("p1", "p2")]
    counts = {}
    for tag, proc in zip(("p1", "p2"), procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        counts[tag] = int(out)
    store = StateStore(path)
    rows = store.journal_for("orders")
    assert {tag: sum(r["run_id"] == tag for r in rows) for tag in counts} == counts
    assert all(n > 0 for n in counts.values())
    turns = sum(a["run_id"] != b["run_id"] for a, b in zip(rows, rows[1:]))
    assert turns >= 2, f"the writers ran one after the other ({turns} switch), not in turns"
    assert store.get_export_state("orders")["last_run_id"] in counts


def test_one_faulty_unit_fails_alone_in_a_group(path):
    """While a plain DuckDB process holds the file, threads queue writes; when it lets go they are committed
    together. One of them breaks a primary key (DuckDB aborts the whole transaction): only that one fails."""
    store = StateStore(path)
    store.create_chunk_run("orders", "r1", None, "id", [(0, 1, 2)])
    store.close()
    holder = hold(path, 1.5)
    results: dict[int, object] = {}

    def write(i):
        try:
            if i == 5:   # a duplicate chunk index in one run: a constraint error inside DuckDB
                store.create_chunk_run("orders", "dup", None, "id", [(0, 1, 2), (0, 2, 3)])
            else:
                store.log_file("orders", "r1", f"p{i}", i, 1, "h", None, "parquet", "zstd")
            results[i] = "ok"
        except Exception as exc:  # noqa: BLE001 - inspected below
            results[i] = exc

    threads = [threading.Thread(target=write, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    holder.wait()
    for t in threads:
        t.join()
    assert [i for i, r in results.items() if r != "ok"] == [5]
    assert "Duplicate key" in str(results[5]) or "PRIMARY KEY" in str(results[5])
    assert sorted(f["path"] for f in store.files("orders")) == sorted(f"p{i}" for i in range(10) if i != 5)
    assert store.chunk_run("dup") is None   # the faulty unit left nothing behind


def test_async_journal_rows_are_flushed_at_exit(path):
    """journal_async returns at once; a process that exits right after still commits the rows (no close())."""
    proc = rivet_process("from engine.state import StateStore\n"
                         f"s = StateStore({str(path)!r})\n"
                         "for i in range(50):\n"
                         "    s.journal_async('orders', 'r9', 'tick', {'i': i})\n")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    rows = StateStore(path).journal_for("orders", run_id="r9")
    assert [r["payload"]["i"] for r in rows] == list(range(50))


def test_close_commits_what_is_queued_and_lets_plain_duckdb_in(path):
    store = StateStore(path)
    for i in range(20):
        store.journal_async("orders", "r8", "tick", {"i": i})
    store.close()
    import duckdb
    con = duckdb.connect(str(path), read_only=True)   # would raise if this process still held the file
    try:
        assert con.execute("SELECT count(*) FROM run_journal WHERE run_id = 'r8'").fetchone()[0] == 20
    finally:
        con.close()


def test_two_spellings_of_one_file_share_one_writer(tmp_path):
    real = tmp_path / "real" / "state.duckdb"
    StateStore(real).set_cursor("orders", "1", "id", "t:id", "r1")
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "state.duckdb").symlink_to(real)
    via_link = StateStore(tmp_path / "link" / "state.duckdb")
    via_link.set_cursor("orders", "2", "id", "t:id", "r2")
    assert StateStore(real).get_export_state("orders")["last_cursor_value"] == "2"
    via_link.close()
    # one WAL, beside the real file: a symlinked spelling must not get its own
    assert not (tmp_path / "link" / "state.duckdb.wal").exists()


def test_state_file_deleted_during_a_run_is_named(path):
    store = StateStore(path)
    store.set_cursor("orders", "8", "id", "t:id", "r2")
    os.remove(path)   # while this process has it open
    with pytest.raises(RivetError) as err:
        store.log_file("orders", "r2", "p0", 1, 1, "h", None, "parquet", "zstd")
    assert err.value.code == "RIVET_STATE_GONE" and err.value.exit_class == ExitClass.USAGE
    assert f"state file {path} was deleted" in err.value.message and "backup" in err.value.hint
    with pytest.raises(RivetError) as err:   # and again once the connection is closed: no silent fresh file
        store.get_export_state("orders")
    assert err.value.code == "RIVET_STATE_GONE"
    assert not path.exists()
    assert StateStore(path).get_export_state("orders") is None   # a new store starts a fresh state


def test_state_file_deleted_while_closed_is_named(path):
    store = StateStore(path)
    store.close()
    os.remove(path)
    with pytest.raises(RivetError) as err:
        store.set_cursor("orders", "9", "id", "t:id", "r3")
    assert err.value.code == "RIVET_STATE_GONE"


def test_half_truncated_state_file_is_corrupt_not_io(tmp_path):
    """Cut at several points: every operation either works or says RIVET_STATE_CORRUPT (never "check free disk
    space", never a raw DuckDB error)."""
    path = tmp_path / "state.duckdb"
    store = StateStore(path)
    with store.batch():
        for i in range(300):
            store.journal("orders", "r1", "tick", {"i": i, "pad": "x" * 200})
    store.close()
    data = path.read_bytes()
    codes = []
    for fraction in (0.5, 0.8, 0.9, 0.95, 0.99):
        cut = tmp_path / f"cut-{fraction}.duckdb"
        cut.write_bytes(data[:int(len(data) * fraction)])
        try:
            s = StateStore(cut, lock_wait_s=1)
            s.journal_for("orders")
            s.journal("orders", "r2", "tick", {})
            codes.append("ok")
        except RivetError as exc:
            codes.append(exc.code)
    assert set(codes) <= {"ok", "RIVET_STATE_CORRUPT"} and "RIVET_STATE_CORRUPT" in codes, codes
