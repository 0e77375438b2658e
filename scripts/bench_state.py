"""What state bookkeeping costs a run: many small exports, chunk completions, and a reader in another process.

    .venv/bin/python scripts/bench_state.py [--exports 200] [--threads 8] [--chunks 300] [--chunk-threads 16]
                                            [--repo PATH] [--json]

No database is contacted: each scenario does only the state operations the runner does, so the wall time is the
bookkeeping alone. --repo runs the same scenarios against another checkout (e.g. a worktree of an older commit) to
get a "before" figure on the same machine in the same minute.

  exports   N small exports, --threads at a time, each doing what `Runner.run_export` / `_commit_run` /
            `flush_journal` do for one incremental export with one part: get_schema, get_export_state,
            batch(log_file), files, set_cursor, set_schema, record_committed_incremental, record_metrics,
            set_last_run, one journal batch of 3 rows (ExportStarted, PartCommitted, ExportFinished).
            Then again while another process reads `StateStore(path).summary()` every 0.5 s: its latency, and how stale
            what it saw was (time since the oldest export finished here that the read did not show).
  chunks    one chunk run, --chunk-threads threads completing chunks the way `Runner._attempt_task` and the
            completion loop do: start_task_soon (start_task in a checkout without it), then batch(log_file,
            complete_task), and three journal rows
            (ChunkStarted, PartCommitted, ChunkFinished) through the runner's 1-second journal buffer.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

READER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from engine.state import StateStore
path, stop = sys.argv[2], sys.argv[3]
import os
while not os.path.exists(stop):
    t0 = time.time()
    rows = StateStore(path, lock_wait_s=60).summary()
    t1 = time.time()
    print(json.dumps({"start": t0, "end": t1, "seen": sum(1 for r in rows if r["last_status"])}), flush=True)
    time.sleep(max(0.0, 0.5 - (t1 - t0)))
"""


class JournalBuffer:
    """The runner's journal buffer: rows are kept and written in one batch at most every second, and at the end."""

    def __init__(self, store):
        self.store, self.rows, self.lock, self.flushed = store, [], threading.Lock(), time.monotonic()

    def add(self, *row, force: bool = False) -> None:
        with self.lock:
            self.rows.append(row)
            due = force or time.monotonic() - self.flushed > 1.0
        if due:
            self.flush()

    def flush(self) -> None:
        with self.lock:
            rows, self.rows, self.flushed = self.rows, [], time.monotonic()
        if rows:
            with self.store.batch():
                for row in rows:
                    self.store.journal(*row)


def one_export(store, journal: JournalBuffer, name: str, finished: list[float], lock: threading.Lock) -> None:
    run_id = f"20260101T000000Z-{name}"
    store.get_schema(name)
    store.get_export_state(name)
    journal.add(name, run_id, "ExportStarted", {"mode": "incremental"})
    with store.batch():
        store.log_file(name, run_id, f"{name}/part-0.parquet", 5000, 120_000, "sha256:00", None, "parquet", "zstd")
    journal.add(name, run_id, "PartCommitted", {"path": f"{name}/part-0.parquet", "rows": 5000})
    store.files(name, run_id=run_id)
    store.set_cursor(name, "5000", "id", f"public.{name}|greatest:id", run_id)
    store.set_schema(name, [{"name": "id", "type": "bigint"}, {"name": "pad", "type": "text"}], "fp")
    store.record_committed_incremental(name, "5000", run_id)
    store.record_metrics(export_name=name, run_id=run_id, mode="incremental", status="succeeded", rows=5000, files=1,
                         bytes=120_000, duration_ms=10, retries=0)
    store.set_last_run(name, run_id, "succeeded")
    with lock:
        finished.append(time.time())
    journal.add(name, run_id, "ExportFinished", {"status": "succeeded"}, force=True)


def bench_exports(store_cls, repo: Path, n: int, threads: int, with_reader: bool) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-state-"))
    path = tmp / "state.duckdb"
    store = store_cls(path)
    stop = tmp / "stop"
    reader = None
    if with_reader:
        reader = subprocess.Popen([sys.executable, "-c", READER, str(repo), str(path), str(stop)],
                                  stdout=subprocess.PIPE, text=True)
        time.sleep(2.0)   # the reader's imports; it then reads every 0.5 s
    journal = JournalBuffer(store)
    finished: list[float] = []
    lock = threading.Lock()
    started = time.time()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(one_export, store, journal, f"t{i:04d}", finished, lock) for i in range(n)]:
            f.result()
    wall = time.perf_counter() - t0
    end = time.time()
    assert store_cls(path).summary()[-1]["last_status"] == "succeeded"
    result = {"exports": n, "threads": threads, "wall_s": round(wall, 2), "exports_per_s": round(n / wall, 1)}
    if reader is None:
        return result
    time.sleep(1.0)
    stop.touch()
    out, _ = reader.communicate(timeout=120)
    reads = [json.loads(line) for line in out.splitlines()]
    during = [r for r in reads if started <= r["start"] <= end]
    finished.sort()
    latencies = [r["end"] - r["start"] for r in during]
    staleness = [max(0.0, r["start"] - finished[r["seen"]]) if r["seen"] < len(finished) else 0.0 for r in during]
    return {**result, "reader_reads": len(during),
            "reader_latency_max_s": round(max(latencies), 3) if latencies else None,
            "reader_latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
            "reader_staleness_max_s": round(max(staleness), 3) if staleness else None}


def bench_chunks(store_cls, n: int, threads: int) -> dict:
    path = Path(tempfile.mkdtemp(prefix="bench-state-")) / "state.duckdb"
    store = store_cls(path)
    run = "20260101T000000Z-chunks"
    store.create_chunk_run("big", run, "h", "id", [(i, str(i), str(i + 1)) for i in range(n)])
    journal = JournalBuffer(store)

    start = getattr(store, "start_task_soon", store.start_task)   # as the runner starts a chunk (not waited for)

    def complete(i: int) -> None:
        start(run, i)
        journal.add("big", run, "ChunkStarted", {"chunk_index": i})
        journal.add("big", run, "PartCommitted", {"chunk_index": i})
        with store.batch():
            store.log_file("big", run, f"p{i}.parquet", 10**6, 25 * 10**6, "sha256:00", i, "parquet", "zstd")
            store.complete_task(run, i, 10**6, f"p{i}.parquet")
        journal.add("big", run, "ChunkFinished", {"chunk_index": i})

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(complete, i) for i in range(n)]:
            f.result()
    journal.flush()
    wall = time.perf_counter() - t0
    assert store.chunk_summary(run)["completed"] == n
    return {"chunks": n, "threads": threads, "wall_s": round(wall, 2), "completions_per_s": round(n / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exports", type=int, default=200)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--chunks", type=int, default=300)
    ap.add_argument("--chunk-threads", type=int, default=16)
    ap.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose engine/ to measure")
    ap.add_argument("--skip", action="append", default=[], choices=["exports", "reader", "chunks"],
                    help="leave out a scenario (repeatable)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    repo = args.repo.resolve()
    sys.path.insert(0, str(repo))
    from engine.state import StateStore

    result: dict = {"repo": str(repo)}
    if "exports" not in args.skip:
        result["exports"] = bench_exports(StateStore, repo, args.exports, args.threads, with_reader=False)
    if "reader" not in args.skip:
        result["exports_with_reader"] = bench_exports(StateStore, repo, args.exports, args.threads, with_reader=True)
    if "chunks" not in args.skip:
        result["chunks"] = bench_chunks(StateStore, args.chunks, args.chunk_threads)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{repo}")
    if e := result.get("exports"):
        print(f"  {e['exports']} small exports, {e['threads']} at a time: {e['wall_s']} s ({e['exports_per_s']}/s)")
    if r := result.get("exports_with_reader"):
        print(f"  {r['exports']} small exports with a reader in another process every 0.5 s: {r['wall_s']} s;"
              f" {r['reader_reads']} reads, latency max {r['reader_latency_max_s']} s, median"
              f" {r['reader_latency_median_s']} s; staleness max {r['reader_staleness_max_s']} s")
    if c := result.get("chunks"):
        print(f"  {c['chunks']} chunk completions, {c['threads']} threads: {c['wall_s']} s"
              f" ({c['completions_per_s']}/s)")


if __name__ == "__main__":
    main()
