"""The Dask executor (issue 9) on a real LocalCluster (2 worker processes) with real PostgreSQL and the S3 emulator.

What a user would check: the cluster's export equals the local one row for row; killing a worker mid-run still
ends with a complete, exact export whose manifest holds no part of the killed attempt; the workers never open the
state file; credentials come from the workers' own environment; a local destination is refused for a remote
cluster; without Dask installed, `type = "dask"` fails with a one-line hint; `rivet doctor` probes every worker.
"""
from __future__ import annotations

import io
import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.config import load_config
from engine.destinations import open_destination
from engine.run.executors import DaskExecutor
from engine.run.runner import Runner, RunOptions
from engine.state import StateStore
from tests.helpers import ROOT, read_table, rivet, write_config

ROWS = 12_000
pytestmark = pytest.mark.timeout(120)


@contextmanager
def local_cluster(**config):
    """A LocalCluster of 2 worker processes × 1 thread on 127.0.0.1, its scheduler on a port of its own, and a client.
    The worker profiler is off where it can deadlock the interpreter (CPython gh-106883, docs/dask.md; this
    machine's Python is 3.11.7): the suite must not hang on a bug no rivet change can fix."""
    import dask
    from distributed import Client, LocalCluster

    from engine.run.remote import profiler_can_hang
    with dask.config.set({"distributed.worker.profile.enabled": not profiler_can_hang(), **config}), \
            LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, host="127.0.0.1",
                         scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"}) as lc, \
            Client(lc) as client:
        yield lc, client


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("distributed", reason="the dask extra is not installed: pip install -e .[dask]")
    with local_cluster() as (lc, client):
        yield lc, client


@pytest.fixture(scope="module")
def items(pg):
    pg.sql("DROP TABLE IF EXISTS dask_items")
    pg.sql("CREATE TABLE dask_items (id bigint PRIMARY KEY, v text, amount numeric(12,2), at timestamptz)")
    pg.sql(f"INSERT INTO dask_items SELECT g, 'v' || g, g * 1.25, timestamptz '2024-01-01 00:00:00+00' "
           f"+ g * interval '1 s' FROM generate_series(1, {ROWS}) g")
    return pg


def dest_toml(cfg) -> str:
    fields = {k: v for k, v in cfg.__dict__.items() if v not in (None, "")}
    return "{ " + ", ".join(f'{k} = "{v}"' for k, v in fields.items()) + " }"


def make_config(tmp_path, url, dest, executor: str = "", tuning: str = "batch_size = 1000", chunk_size: int = 2000,
                extra: str = ""):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return load_config(write_config(tmp_path / "rivet.toml", f"""
        [source]
        type = "postgres"
        url = "{url}"
        {executor}

        [[exports]]
        name = "items"
        table = "dask_items"
        mode = "chunked"
        chunk_size = {chunk_size}
        parallel = 2
        chunk_max_attempts = 3
        destination = {dest_toml(dest)}
        {extra}

        [exports.tuning]
        retry_backoff_ms = 50
        {tuning}
        """))


def dask_section(lc) -> str:
    return f'[executor]\n        type = "dask"\n        address = "{lc.scheduler_address}"'


class StartRecorder(DaskExecutor):
    """Passes the `started` callback (the proposed runner seam) and records where each chunk attempt began."""
    def __init__(self, config):
        super().__init__(config)
        self.starts: dict[int, str] = {}

    def run_task(self, task, plan, source_cfg, dest, emit, started=None, stop=None, read_slot=None):
        def record(worker):
            self.starts[task.index] = worker
            if started is not None:
                started(worker)
        return super().run_task(task, plan, source_cfg, dest, emit, record, stop, read_slot)


def run(config, events: list | None = None, executor=None):
    store = StateStore(config.state_path)
    emit = events.append if events is not None else (lambda e: None)
    (result,) = Runner(config, store, emit, RunOptions(), executor).run()
    return result, store


def read_manifest_rows(dest_cfg) -> tuple[pa.Table, dict, list[str]]:
    dest = open_destination(dest_cfg, "items", "x", datetime.now(timezone.utc))
    manifest = json.loads(dest.get_bytes("manifest.json"))
    table = pa.concat_tables([pq.read_table(io.BytesIO(dest.get_bytes(p["path"]))) for p in manifest["parts"]])
    return table.sort_by("id"), manifest, [name for name, _ in dest.list()]


def test_cluster_export_equals_local_and_workers_never_open_state(tmp_path, items, s3_bucket, cluster):
    lc, client = cluster
    local_dest, dask_dest = s3_bucket.destination("local/"), s3_bucket.destination("dask/")
    result, _ = run(make_config(tmp_path / "a", items.url, local_dest))
    assert result.status == "succeeded", result.error

    seen: dict[int, set[str]] = {}
    stop = threading.Event()

    def watch_worker_files():   # sample every worker process's open files while the export runs
        import psutil
        while not stop.is_set():
            for pid in client.run(os.getpid).values():
                try:
                    seen.setdefault(pid, set()).update(f.path for f in psutil.Process(pid).open_files())
                except psutil.Error:
                    pass
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_worker_files, daemon=True)
    events: list = []
    config = make_config(tmp_path / "b", items.url, dask_dest, dask_section(lc), tuning="batch_size = 300")
    executor = StartRecorder(config)
    watcher.start()
    try:
        result, store = run(config, events, executor)
    finally:
        stop.set()
        watcher.join()
    assert result.status == "succeeded", result.error
    assert result.rows == ROWS

    local, _, _ = read_manifest_rows(local_dest)
    remote, manifest, objects = read_manifest_rows(dask_dest)
    assert remote.equals(local)                       # row for row, types and values
    assert remote.column("id").to_pylist() == list(range(1, ROWS + 1))
    assert objects[-2:] == ["_SUCCESS", "manifest.json"] or {"_SUCCESS", "manifest.json"} <= set(objects)

    workers = set(client.scheduler_info()["workers"])
    finished = [e for e in events if type(e).__name__ == "ChunkFinished"]
    # every chunk ran on a worker of the cluster; which one is Dask's choice (a chunk that finishes before the
    # next is submitted may leave the other worker idle), so the spread is not asserted
    assert len(finished) == 6 and {e.worker for e in finished} <= workers
    assert executor.starts == {e.chunk_index: e.worker for e in finished}   # announced live, or by a quick outcome
    batches = [e for e in events if type(e).__name__ == "BatchWritten"]
    assert sum(e.rows for e in batches) == ROWS      # worker events replayed on the coordinator
    assert {r["status"] for r in store.chunk_tasks(result.run_id)} == {"completed"}

    # The coordinator alone touches state: no worker ever held the file open, or even imported the state module.
    state = str(config.state_path)
    assert seen and not any(state in paths or any(p.endswith(".duckdb") for p in paths) for paths in seen.values())
    assert not any(client.run(lambda: "engine.state" in sys.modules).values())


def test_a_long_chunk_is_placed_live_and_a_quick_one_by_its_outcome(tmp_path, items, s3_bucket, cluster,
                                                                     monkeypatch):
    """A worker announces an attempt once it has run remote.ANNOUNCE_AFTER_S (0.25 s): the TUI shows a long chunk's
    worker while it runs. A chunk that ends sooner saves that message; its outcome names the worker. Either way
    ChunkStarted names the worker that ran the chunk, before its ChunkFinished. A quick chunk's outcome comes with
    its report, so its result is never fetched from the cluster; a long chunk's is."""
    from distributed import Future
    lc, client = cluster
    fetched: list[str] = []
    result_of = Future.result
    monkeypatch.setattr(Future, "result", lambda self, *a, **kw: (fetched.append(self.key), result_of(self, *a, **kw))[1])

    class LiveStarts(StartRecorder):
        def __init__(self, config):
            super().__init__(config)
            self.live: dict[int, bool] = {}

        def run_task(self, task, plan, source_cfg, dest, emit, started=None, stop=None, read_slot=None):
            def record(worker):   # is the attempt still running on that worker as it is placed?
                keys = {k for k in self._inflight if k.split("-")[-2] == str(task.index)}
                self.live[task.index] = bool(keys & set(client.processing().get(worker, ())))
                if started is not None:
                    started(worker)
            return super().run_task(task, plan, source_cfg, dest, emit, record, stop, read_slot)

    def announce_after(seconds: float) -> None:   # on each worker process
        from engine.run import remote
        remote.ANNOUNCE_AFTER_S = seconds

    # slow: 4 batches x 0.4 s per chunk, announced at 0.25 s; quick: the workers announce nothing within the run
    for name, tuning, after, live in (("slow", "batch_size = 1000\n        throttle_ms = 400", 0.25, True),
                                      ("quick", "batch_size = 4000", 3600, False)):
        client.run(announce_after, after)
        events: list = []
        fetched.clear()
        config = make_config(tmp_path / name, items.url, s3_bucket.destination(f"{name}/"), dask_section(lc),
                             tuning=tuning, chunk_size=4000)   # 3 chunks
        executor = LiveStarts(config)
        try:
            result, _ = run(config, events, executor)
        finally:
            client.run(announce_after, 0.25)
        assert result.status == "succeeded" and result.rows == ROWS, result.error
        order = [(type(e).__name__, e.chunk_index, e.worker) for e in events
                 if type(e).__name__ in ("ChunkStarted", "ChunkFinished")]
        for i in range(3):
            (_, _, ran_on), = [o for o in order if o[:2] == ("ChunkFinished", i)]
            assert order.index(("ChunkStarted", i, ran_on)) < order.index(("ChunkFinished", i, ran_on)), order
        assert executor.live == {0: live, 1: live, 2: live}
        assert len([k for k in fetched if k.startswith("rivet-items-")]) == (3 if live else 0), fetched


def test_killed_worker_counts_as_an_attempt_and_the_export_stays_exact(tmp_path, items, s3_bucket, cluster):
    lc, client = cluster
    dest = s3_bucket.destination("killed/")
    config = make_config(tmp_path, items.url, dest, dask_section(lc), tuning="batch_size = 200\n        throttle_ms = 40",
                         chunk_size=3000, extra='max_file_size = "8KB"')   # several parts per chunk
    events: list = []
    killed: list[int] = []

    def kill_a_worker_with_a_committed_part():
        """SIGKILL the worker of a chunk attempt that already committed a part (it can never clean that up)."""
        probe = open_destination(dest, "items", "x", datetime.now(timezone.utc))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = {str(k).split("-")[-2]: w for w, keys in client.processing().items() for k in keys}
            for part in (n for n, _ in probe.list() if n.endswith(".parquet")):
                worker = running.get(part.split("_chunk")[1].split("_")[0])   # key: rivet-<export>-<run>-<chunk>-<nonce>
                if worker:
                    os.kill(client.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)
                    killed.append(part)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_a_worker_with_a_committed_part, daemon=True)
    killer.start()
    result, store = run(config, events)
    killer.join()
    assert killed, "no chunk attempt was caught with a committed part"
    assert result.status == "succeeded", result.error

    table, manifest, objects = read_manifest_rows(dest)
    assert table.column("id").to_pylist() == list(range(1, ROWS + 1))     # every row exactly once
    retried = [e for e in events if type(e).__name__ == "Retrying"]
    assert any("RIVET_EXECUTOR_WORKER_LOST" in e.error or "died" in e.error for e in retried), retried
    assert result.retries >= 1
    assert max(t["attempts"] for t in store.chunk_tasks(result.run_id)) >= 2   # counted against chunk_max_attempts
    listed = {p["path"] for p in manifest["parts"]}
    logged = {f["path"] for f in store.files("items", run_id=result.run_id)}
    assert listed == logged and killed[0] in objects and killed[0] not in listed   # the orphan stays out
    client.wait_for_workers(2, timeout=30)             # the nanny restarts the worker for the next test


def test_a_hung_worker_is_dropped_after_the_scheduler_ttl_and_its_chunks_retried(tmp_path, items, s3_bucket):
    """A worker that stops answering (SIGSTOP here; a deadlocked interpreter in the field, docs/dask.md) holds its
    chunk only until the scheduler's worker-ttl drops it: the run then retries the chunk on another worker and ends
    exact. Bounded by the cluster's distributed.scheduler.worker-ttl (5 minutes by default, 5 s here)."""
    pytest.importorskip("distributed", reason="the dask extra is not installed: pip install -e .[dask]")
    dest = s3_bucket.destination("hung/")
    with local_cluster(**{"distributed.scheduler.worker-ttl": "5s"}) as (lc, client):
        config = make_config(tmp_path, items.url, dest, dask_section(lc),
                             tuning="batch_size = 500\n        throttle_ms = 150", chunk_size=2000)   # 6 chunks, ~0.6 s each
        victim = next(iter(client.run(os.getpid).values()))
        stopper = threading.Timer(1.5, os.kill, (victim, signal.SIGSTOP))
        stopper.start()
        events: list = []
        try:
            result, _ = run(config, events)
        finally:
            stopper.cancel()
            try:
                os.kill(victim, signal.SIGCONT)   # the nanny has usually replaced it by now
            except ProcessLookupError:
                pass
    assert result.status == "succeeded", result.error
    table, _, _ = read_manifest_rows(dest)
    assert table.column("id").to_pylist() == list(range(1, ROWS + 1))     # every row exactly once
    assert any(type(e).__name__ == "Retrying" and "died while running chunk" in e.error for e in events), \
        [e for e in events if type(e).__name__ == "Retrying"]


def test_credentials_come_from_the_workers_environment(tmp_path, items, s3_bucket, cluster):
    lc, client = cluster
    secret = "dask-worker-secret-5521"
    url = items.url.replace("postgres@", f"postgres:{secret}@")      # trust auth: any password connects
    dest = s3_bucket.destination("creds/")
    config = make_config(tmp_path, url, dest, dask_section(lc))
    from datetime import datetime, timezone
    from engine.destinations import open_destination
    from engine.planner import TaskSpec
    plan = _plan_for(config)
    dest = open_destination(plan.export.destination, plan.export.name, plan.run_id, datetime.now(timezone.utc))
    envelope = DaskExecutor(config).envelope(TaskSpec(0, "SELECT 1"), plan, config.source, dest)
    assert secret.encode() not in pickle.dumps(envelope)             # the password never travels

    result, _ = run(config)
    assert result.status == "failed" and result.error.code == "RIVET_EXECUTOR_WORKER_CREDENTIALS"
    assert secret not in result.error.message and "RIVET_SOURCE_PASSWORD" in result.error.message

    client.run(lambda: os.environ.update(RIVET_SOURCE_PASSWORD=secret))   # each worker's own environment
    try:
        result, _ = run(config)
    finally:
        client.run(lambda: os.environ.pop("RIVET_SOURCE_PASSWORD", None))
    assert result.status == "succeeded" and result.rows == ROWS, result.error


def _plan_for(config):
    from engine.planner import plan_export
    from engine.sources import open_source
    exp = config.exports[0]
    with open_source(config.source, exp.tuning) as src:
        return plan_export(exp, src, StateStore(config.state_path))


def test_local_destination_needs_a_cluster_on_this_machine(tmp_path, items, cluster):
    """Through the CLI flags: refused (exit 5) for a remote scheduler before anything connects; allowed for a
    LocalCluster on 127.0.0.1, whose workers see this machine's paths."""
    lc, _ = cluster
    from engine.config import DestinationConfig
    out = tmp_path / "out"
    cfg = make_config(tmp_path, items.url, DestinationConfig(type="local", path=str(out))).path   # no [executor]
    refused = rivet("run", "-c", cfg, "--no-tui", "--scheduler", "tcp://10.255.255.1:8786", cwd=tmp_path,
                    timeout=60, check=5)
    assert "RIVET_EXECUTOR_LOCAL_DESTINATION" in refused.stderr and not out.exists()

    with scheduler_log() as logged:
        proc = rivet("run", "-c", cfg, "--no-tui", "--json", "--executor", "dask", "--scheduler",
                     lc.scheduler_address, cwd=tmp_path, timeout=120, check=0)
        time.sleep(1.0)   # the scheduler handles the client's goodbye after the command returns
    (summary,) = json.loads(proc.stdout)["exports"]
    assert summary["status"] == "succeeded" and summary["rows"] == ROWS
    assert read_table(out).sort_by("id").column("id").to_pylist() == list(range(1, ROWS + 1))
    assert not (out / ".rivet-staging").exists()      # the shared spool is cleaned by the coordinator
    # the run's client left cleanly: no "CRITICAL - Closed comm … remove-client" traceback in the scheduler's log
    assert not [r.getMessage() for r in logged if r.levelno >= logging.ERROR]


@contextmanager
def scheduler_log():
    """The records the (in-process) scheduler of the module's LocalCluster logs meanwhile."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)
    handler, logger = Keep(level=logging.DEBUG), logging.getLogger("distributed.scheduler")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def test_without_dask_one_line_hint(tmp_path, items, s3_bucket):
    cfg = make_config(tmp_path, items.url, s3_bucket.destination("x/"),
                      '[executor]\n        type = "dask"\n        address = "tcp://127.0.0.1:1"').path
    code = ("import sys; sys.modules['distributed'] = None; from rivet_tui.cli import main; "
            f"sys.argv = ['rivet', 'run', '-c', {str(cfg)!r}, '--no-tui']; main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert any("RIVET_EXECUTOR_DASK_MISSING" in line for line in lines), proc.stderr
    assert any("pip install 'rivet-export[dask]'" in line for line in lines)
    assert "Traceback" not in proc.stderr


def test_doctor_probes_every_worker(tmp_path, items, s3_bucket, cluster):
    lc, client = cluster
    from engine.doctor import run_checks
    cfg = make_config(tmp_path, items.url, s3_bucket.destination("doc/"), dask_section(lc)).path
    checks = {c.name: c for c in run_checks({"config_path": str(cfg)})}
    assert checks["executor"].ok and "2 workers" in checks["executor"].detail
    for worker in client.scheduler_info()["workers"]:
        assert checks[f"worker {worker}"].ok, checks[f"worker {worker}"]
        assert "python" in checks[f"worker {worker}"].detail   # the interpreter check ran there
    down = make_config(tmp_path / "down", items.url, s3_bucket.destination("doc/"),
                       '[executor]\n        type = "dask"\n        address = "tcp://127.0.0.1:9"').path
    t0 = time.monotonic()
    failed = {c.name: c for c in run_checks({"config_path": str(down)})}
    assert not failed["executor"].ok and "RIVET_EXECUTOR_UNREACHABLE" in failed["executor"].detail
    assert time.monotonic() - t0 < 20


def test_doctor_fails_a_worker_python_that_can_deadlock_under_the_profiler():
    """CPython 3.11 before 3.11.12 can deadlock a worker when a thread ends while Dask's profiler reads every
    thread's frames (gh-106883): a worker of the bench hung so. `rivet doctor` says so, and how to avoid it."""
    from engine.run.remote import interpreter_check
    name, ok, detail, hint = interpreter_check((3, 11, 7), profiling=True)
    assert (name, ok) == ("python", False) and "3.11.7" in detail and "gh-106883" in detail
    assert "3.11.12" in hint and "distributed.worker.profile.enabled: false" in hint
    assert interpreter_check((3, 11, 7), profiling=False)[1]
    assert interpreter_check((3, 11, 12), profiling=True)[1]
    assert interpreter_check((3, 12, 1), profiling=True)[1]
