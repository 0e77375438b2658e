#!/usr/bin/env python3
"""SQL Server: rivet's full export of a 1 M-row table timed against the fastest plain read of the same table through
pymssql (the floor: the same driver, rows fetched and dropped, nothing converted or written).

Runs only when RIVET_BENCH_MSSQL_URL (or else RIVET_TEST_MSSQL_URL) names a server, e.g.
mssql://user:password@127.0.0.1:1433/master; otherwise it says so and exits 0. The table rivet_bench.dbo.orders_1m is
made once (deterministic values, the shape of the PostgreSQL bench table) and reused. Each case: 1 warm-up + 3 runs
(--quick: 1 run), median wall time and median peak RSS of the child process (os.wait4).

Floors (each a child process reading `SELECT * FROM dbo.orders_1m` to the end):
  pymssql fetchmany   cursor.fetchmany(10000) until empty (what a careful pymssql program does)
  _mssql rows         the C layer's own row iterator under the cursor (no DB-API wrapping)
The fastest of them is the floor the rivet cases are divided by.

Usage: .venv/bin/python scripts/bench_mssql.py [--quick] [--rows N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RIVET = str(Path(sys.executable).parent / "rivet")
WORK = Path(tempfile.gettempdir()) / "rivet-bench-mssql"
RESULTS = Path(tempfile.gettempdir()) / "rivet-bench-mssql-results.json"
DB = "rivet_bench"
TABLE = "orders_1m"
URL = os.environ.get("RIVET_BENCH_MSSQL_URL") or os.environ.get("RIVET_TEST_MSSQL_URL", "")

# 1 M rows from a cross join of digits (no sys.all_objects size assumptions); values depend on i only
LOAD_SQL = """
DROP TABLE IF EXISTS dbo.{table};
CREATE TABLE dbo.{table} (id bigint NOT NULL PRIMARY KEY, customer_id int NOT NULL, status nvarchar(16) NOT NULL,
  amount decimal(12,2) NOT NULL, created_at datetime2(6) NOT NULL, updated_at datetime2(6) NULL, note nvarchar(80) NULL,
  flag bit NOT NULL);
"""
INSERT_SQL = """
WITH d AS (SELECT v FROM (VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)) AS t(v)),
n AS (SELECT CAST({base} AS bigint) + a.v + 10 * b.v + 100 * c.v + 1000 * e.v + 10000 * f.v + 1 AS i
      FROM d a CROSS JOIN d b CROSS JOIN d c CROSS JOIN d e CROSS JOIN d f)
INSERT INTO dbo.{table}
SELECT i, 1 + (i * 7919) % 200000,
  CASE i % 10 WHEN 0 THEN N'pending' WHEN 1 THEN N'paid' WHEN 2 THEN N'paid' WHEN 3 THEN N'shipped'
    WHEN 4 THEN N'shipped' WHEN 8 THEN N'cancelled' WHEN 9 THEN N'refunded' ELSE N'delivered' END,
  CAST(1 + ((i * 104729) % 99900) / 100.0 AS decimal(12,2)),
  DATEADD(second, CAST(i * 20 % 2000000000 AS int), CAST('2021-01-01T00:00:00.123456' AS datetime2(6))),
  CASE WHEN i % 10 < 3 THEN NULL ELSE DATEADD(second, CAST(i * 23 % 2000000000 AS int),
    CAST('2021-01-01T00:00:00.654321' AS datetime2(6))) END,
  CASE WHEN i % 10 = 7 THEN NULL ELSE CONCAT(N'Leave at front door ref ', (i * 2654435761) % 1000000007) END,
  CAST(i % 2 AS bit)
FROM n;
"""

FLOOR_FETCHMANY = """
import sys, pymssql
from engine.sources.mssql import parse_url
p, _ = parse_url(sys.argv[1])
con = pymssql.connect(server=p["host"], port=str(p["port"]), user=p["user"], password=p["password"],
                      database=sys.argv[2], tds_version="7.4", autocommit=True)
cur = con.cursor()
cur.execute("SELECT * FROM dbo." + sys.argv[3])
n = 0
while True:
    rows = cur.fetchmany(10000)
    if not rows:
        break
    n += len(rows)
print(n)
"""

FLOOR_MSSQL = """
import sys, pymssql
from engine.sources.mssql import parse_url
p, _ = parse_url(sys.argv[1])
con = pymssql.connect(server=p["host"], port=str(p["port"]), user=p["user"], password=p["password"],
                      database=sys.argv[2], tds_version="7.4", autocommit=True)
raw = con._conn
raw.execute_query("SELECT * FROM dbo." + sys.argv[3])
n = 0
for _ in raw:
    n += 1
print(n)
"""


def log(msg: str) -> None:
    print(f"bench-mssql: {msg}", file=sys.stderr, flush=True)


def connect(database: str):
    import pymssql
    from engine.sources.mssql import parse_url
    p, _ = parse_url(URL)
    return pymssql.connect(server=p["host"], port=str(p["port"]), user=p["user"], password=p["password"],
                           database=database, tds_version="7.4", autocommit=True, login_timeout=10)


def ensure_table(rows: int) -> None:
    from engine.sources.mssql import parse_url
    server_db = parse_url(URL)[0]["database"] or "master"
    con = connect(server_db)
    cur = con.cursor()
    cur.execute(f"SELECT COUNT(*) AS n FROM sys.databases WHERE name = N'{DB}'")
    if cur.fetchone()[0] == 0:
        cur.execute(f"CREATE DATABASE [{DB}]")
    con.close()
    con = connect(DB)
    cur = con.cursor()
    cur.execute(f"SELECT OBJECT_ID(N'dbo.{TABLE}') AS o")
    exists = cur.fetchone()[0] is not None
    if exists:
        cur.execute(f"SELECT COUNT_BIG(*) AS n FROM dbo.{TABLE}")
    if exists and cur.fetchone()[0] == rows:
        con.close()
        return
    log(f"loading {DB}.dbo.{TABLE}: {rows:,} rows")
    t0 = time.monotonic()
    cur.execute(LOAD_SQL.format(table=TABLE))
    for base in range(0, rows, 100_000):
        cur.execute(INSERT_SQL.format(table=TABLE, base=base))
    cur.execute(f"DELETE FROM dbo.{TABLE} WHERE id > {rows}")
    con.close()
    log(f"  done in {time.monotonic() - t0:.0f} s")


def measure(argv: list[str], stdout: Path | None = None, cwd: Path | None = None) -> dict:
    """Run argv to completion: wall seconds, peak RSS (MiB) of that process, exit code, stderr, stdout."""
    with tempfile.TemporaryFile() as err, open(stdout or os.devnull, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return {"seconds": seconds, "rss_mib": usage.ru_maxrss / 1024, "rc": proc.returncode, "stderr": stderr,
            "stdout": stdout.read_text(errors="replace") if stdout else ""}


def rivet_argv(fmt: str, workdir: Path) -> list[str]:
    from urllib.parse import urlsplit, urlunsplit
    shutil.rmtree(workdir / "out", ignore_errors=True)
    shutil.rmtree(workdir / ".rivet", ignore_errors=True)
    url = urlunsplit(urlsplit(URL)._replace(path="/" + DB))
    export = {"name": "bench", "table": f"dbo.{TABLE}", "mode": "full", "format": fmt,
              "destination": {"type": "local", "path": "out"}}
    if fmt == "parquet":
        export["compression"] = "zstd"
    cfg = workdir / "rivet.toml"
    cfg.write_text(tomli_w.dumps({"source": {"type": "mssql", "url_env": "RIVET_BENCH_URL", "environment": "local"},
                                  "exports": [export]}))
    os.environ["RIVET_BENCH_URL"] = url
    return [RIVET, "run", "-c", str(cfg), "--no-tui", "--json"]


CASES = [
    {"name": "floor: pymssql fetchmany", "argv": [sys.executable, "-c", FLOOR_FETCHMANY], "floor": True},
    {"name": "floor: _mssql rows", "argv": [sys.executable, "-c", FLOOR_MSSQL], "floor": True},
    {"name": "rivet full parquet", "format": "parquet"},
    {"name": "rivet full csv", "format": "csv"},
]


def run_case(case: dict, rows: int, warmups: int, runs: int) -> dict:
    workdir = WORK / case["name"].replace(" ", "-").replace(":", "")
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"{case['name']}: {warmups} warm-up + {runs} run(s)")
    measured = []
    for i in range(warmups + runs):
        if "argv" in case:
            r = measure([*case["argv"], URL, DB, TABLE], stdout=workdir / "stdout")
            got = r["stdout"].strip()
        else:
            r = measure(rivet_argv(case["format"], workdir), stdout=workdir / "stdout", cwd=workdir)
            try:
                got = str(json.loads(r["stdout"])["exports"][0]["rows"])
            except (ValueError, KeyError, IndexError, TypeError):
                got = "?"
        if r["rc"] != 0 or got != str(rows):
            log(f"  FAILED: exit {r['rc']}, rows {got}\n{(r['stderr'] + r['stdout'])[-2000:]}")
            return {"name": case["name"], "error": f"exit {r['rc']}, rows {got}"}
        if i >= warmups:
            measured.append(r)
            log(f"  {r['seconds']:.2f} s, {r['rss_mib']:.0f} MiB")
    shutil.rmtree(workdir, ignore_errors=True)
    return {"name": case["name"], "rows": rows, "floor": case.get("floor", False),
            "seconds": statistics.median(r["seconds"] for r in measured),
            "rss_mib": statistics.median(r["rss_mib"] for r in measured),
            "runs": [{"seconds": r["seconds"], "rss_mib": r["rss_mib"]} for r in measured]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one run per case, no warm-up")
    ap.add_argument("--rows", type=int, default=1_000_000, help="table size (default 1,000,000)")
    args = ap.parse_args()
    if not URL:
        print("bench-mssql: skipped: set RIVET_BENCH_MSSQL_URL or RIVET_TEST_MSSQL_URL to a SQL Server "
              "(mssql://user:password@host:1433/master)")
        return 0
    warmups, runs = (0, 1) if args.quick else (1, 3)
    ensure_table(args.rows)
    with connect(DB) as con:
        cur = con.cursor()
        cur.execute("SELECT @@VERSION AS v")
        server = " ".join(str(cur.fetchone()[0]).split())[:100]
    results = [run_case(c, args.rows, warmups, runs) for c in CASES]
    floors = [r for r in results if r.get("floor") and "seconds" in r]
    floor = min(floors, key=lambda r: r["seconds"]) if floors else None
    head = f"{'case':<28} {'rows':>10} {'seconds':>8} {'rows/s':>9} {'x floor':>8} {'peak MiB':>9}"
    print(f"\nserver: {server}\n" + head + "\n" + "-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['name']:<28} FAILED: {r['error']}")
            continue
        r["ratio_to_floor"] = r["seconds"] / floor["seconds"] if floor else None
        ratio = f"{r['ratio_to_floor']:.2f}" if r["ratio_to_floor"] else "-"
        print(f"{r['name']:<28} {r['rows']:>10,} {r['seconds']:>8.2f} {r['rows'] / r['seconds'] / 1e3:>8.0f}k "
              f"{ratio:>8} {r['rss_mib']:>9.0f}")
    if floor:
        print(f"\nfloor = {floor['name']} (the fastest plain pymssql read); medians; peak RSS of the process itself")
    RESULTS.write_text(json.dumps({"server": server, "cpus": os.cpu_count(), "results": results}, indent=2))
    print(f"results: {RESULTS}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
