#!/usr/bin/env python3
"""How many chunk completions per second a run's coordinator sustains (issue 13: Dask ≥ 100/s).

One chunked export of tiny chunks (PostgreSQL rivet_bench.dask_items, 100,000 rows; `chunk_size` 20 rows → 5,000
chunks, `--quick` 100 rows → 1,000), so the reading is negligible and the wall time is the per-chunk work: task
hand-out, the part's commit, the coordinator's state writes (file log + chunk completion) and its events. Run on a
Dask LocalCluster (2 worker processes × 4 threads on 127.0.0.1) and on the local thread executor (`parallel = 8`).
Completions/s = chunks / wall time of `rivet run` (process start to exit, so start-up is inside: a floor).

    .venv/bin/python scripts/bench_dask.py [--quick]

`make bench` runs it as the `dask` suite (scripts/bench.py). The bookkeeping alone, without a database or Dask, is
scripts/bench_state.py's `chunks` scenario.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import DB, PSQL, RIVET, log, sh   # scripts/bench.py: one database, one psql, one log format

TABLE, ROWS = "dask_items", 100_000
RUN_TIMEOUT_S = 900   # ≈ 15x the slowest run seen (5,000 chunks at 77/s)


def ensure_table() -> None:
    if sh([*PSQL, "-d", "postgres", "-Atc", f"SELECT 1 FROM pg_database WHERE datname = '{DB}'"]) != "1":
        sh([*PSQL, "-d", "postgres", "-c", f"CREATE DATABASE {DB}"])
    if sh([*PSQL, "-d", DB, "-Atc", f"SELECT to_regclass('public.{TABLE}') IS NOT NULL"]) == "t" \
            and sh([*PSQL, "-d", DB, "-Atc", f"SELECT count(*) FROM {TABLE}"]) == str(ROWS):
        return
    log(f"creating {DB}.{TABLE} ({ROWS:,} rows)")
    sh([*PSQL, "-d", DB, "-c", f"DROP TABLE IF EXISTS {TABLE}; CREATE TABLE {TABLE} AS SELECT g::bigint AS id, "
        f"md5(g::text) AS s FROM generate_series(1, {ROWS}) g; ALTER TABLE {TABLE} ADD PRIMARY KEY (id)"])


def one_run(work: Path, chunk_size: int, executor: str, cluster=None) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "rivet.toml").write_text(f"""[source]
type = "postgres"
url = "postgresql://postgres@127.0.0.1:5432/{DB}"
environment = "local"
{executor}
[[exports]]
name = "items"
table = "{TABLE}"
mode = "chunked"
chunk_column = "id"
chunk_size = {chunk_size}
parallel = 8
destination = {{ type = "local", path = "{work}/out" }}
""")
    cluster0 = cluster_cpu_s(cluster)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        p = subprocess.run([RIVET, "run", "--no-tui", "-c", str(work / "rivet.toml")], cwd=work, capture_output=True,
                           text=True, timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:   # a worker that hangs (docs/dask.md, the Python requirement) costs a row, not the bench
        return {"error": f"rivet run did not end within {RUN_TIMEOUT_S} s"}
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    chunks = -(-ROWS // chunk_size)
    if p.returncode != 0:
        return {"error": f"exit {p.returncode}: {p.stderr.strip()[-400:]}"}
    rivet_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"seconds": wall, "chunks": chunks, "per_s": chunks / wall, "rivet_ms": 1000 * rivet_cpu / chunks,
            "cluster_ms": 1000 * (cluster_cpu_s(cluster) - cluster0) / chunks if cluster else None}


def cluster_cpu_s(cluster) -> float:
    """CPU seconds of the Dask scheduler (this process) and its worker processes so far."""
    if cluster is None:
        return 0.0
    import psutil
    me = psutil.Process()
    return sum(sum(p.cpu_times()[:2]) for p in [me, *me.children()])


def suite(quick: bool) -> list[dict]:
    """Rows for bench.py's report: completions/s on Dask and on the local executor."""
    try:
        from distributed import LocalCluster
    except ImportError:
        return [{"name": "dask: chunk completions/s", "error": "the dask extra is not installed"}]
    ensure_table()
    chunk_size = 100 if quick else 20
    import logging
    logging.getLogger("distributed").setLevel(logging.CRITICAL)   # the cluster's tear-down chatter is not a result
    work = Path(tempfile.mkdtemp(prefix="rivet-bench-dask-"))
    rows = []
    try:
        # the cluster rivet doctor passes on this interpreter: the worker profiler off where it can deadlock a
        # worker (CPython gh-106883, docs/dask.md), as the suite's clusters run
        import dask

        from engine.run.remote import profiler_can_hang
        with dask.config.set({"distributed.worker.profile.enabled": not profiler_can_hang()}), \
                LocalCluster(n_workers=2, processes=True, threads_per_worker=4, dashboard_address=None,
                             host="127.0.0.1") as lc:
            for name, executor, cluster in (("dask (2 workers × 4 threads)", f'[executor]\ntype = "dask"\n'
                                             f'address = "{lc.scheduler_address}"\n', lc), ("local threads", "", None)):
                log(f"chunk completions, {name}: {ROWS // chunk_size:,} chunks of {chunk_size} rows")
                r = one_run(work / "run", chunk_size, executor, cluster)
                log(f"  {r.get('per_s', 0):.1f}/s" if "error" not in r else f"  FAILED: {r['error']}")
                rows.append({"name": f"chunk completions/s, {name}", **r})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def report(rows: list[dict]) -> None:
    """Completions/s of the whole run, and CPU per chunk: rivet's process (the coordinator, with its state writes;
    on the local executor also the reads and writes) and, on Dask, the scheduler and workers. On one machine they
    share its cores, so the coordinator's own capacity is 1,000 / rivet ms per chunk per core."""
    print(f"\n{'case':<48} {'chunks':>7} {'wall s':>8} {'per s':>8} {'rivet ms':>9} {'cluster ms':>11}  goal")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<48} FAILED: {r['error']}")
            continue
        goal = f"{'ok' if r['per_s'] >= 100 else 'MISS'} (≥ 100/s)" if r["name"].startswith("chunk completions/s, dask") \
            else ""
        cluster = f"{r['cluster_ms']:>11.1f}" if r.get("cluster_ms") is not None else f"{'':>11}"
        print(f"{r['name']:<48} {r['chunks']:>7,} {r['seconds']:>8.2f} {r['per_s']:>8.1f} {r['rivet_ms']:>9.1f} "
              f"{cluster}  {goal}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 chunks of 100 rows instead of 5,000 of 20")
    rows = suite(ap.parse_args().quick)
    report(rows)
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
