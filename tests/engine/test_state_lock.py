"""Cross-process access to the state file: bounded lock wait, the holder named, no starvation, no lost writes."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.errors import ExitClass, RivetError
from engine.state import StateStore

ROOT = Path(__file__).resolve().parents[2]
HOLD = "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('holding', flush=True); time.sleep(float(sys.argv[2]))"


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
    StateStore(p).set_cursor("orders", "7", "id", "t:id", "r1")
    return p


def test_busy_names_the_holder_after_the_wait(path):
    opened = StateStore(path, lock_wait_s=1)
    holder = hold(path, 30)
    try:
        t0 = time.monotonic()
        with pytest.raises(RivetError) as err:
            StateStore(path, lock_wait_s=1)
        elapsed = time.monotonic() - t0
        assert 0.9 <= elapsed < 2.5
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
    assert 0.3 < waited < 5
    assert store.get_export_state("orders")["last_cursor_value"] == "8"


def test_reader_process_gets_in_while_this_process_writes_back_to_back(path):
    """A long run hammering state must still leave windows for `rivet state progression` from cron."""
    store = StateStore(path)
    stop = threading.Event()
    writes = 0

    def hammer():
        nonlocal writes
        while not stop.is_set():
            store.journal("orders", "r1", "tick", {})
            writes += 1

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        reader = rivet_process(
            "from engine.state import StateStore; import sys, time; time.sleep(1.5); t0 = time.monotonic();"
            f" s = StateStore({str(path)!r}, lock_wait_s=8); print(s.get_export_state('orders')['last_cursor_value'],"
            " round(time.monotonic() - t0, 2))")
        out, err = reader.communicate(timeout=30)
    finally:
        stop.set()
        worker.join()
    assert reader.returncode == 0, err
    assert out.split()[0] == "7"
    assert writes > 30  # the writer really was busy while the reader tried
    print(f"\nreader got in after {out.split()[1]} s while this process wrote {writes} journal rows")


def test_two_processes_writing_lose_nothing(path):
    code = ("from engine.state import StateStore; import sys; s = StateStore({p!r}, lock_wait_s=20)\n"
            "for i in range(15):\n"
            "    s.journal('orders', {tag!r}, 'tick', {{'i': i}})\n"
            "    s.set_last_run('orders', {tag!r}, 'running')\n")
    procs = [rivet_process(code.format(p=str(path), tag=tag)) for tag in ("p1", "p2")]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    store = StateStore(path)
    assert len(store.journal_for("orders", run_id="p1")) == 15
    assert len(store.journal_for("orders", run_id="p2")) == 15
    assert store.get_export_state("orders")["last_run_id"] in ("p1", "p2")
