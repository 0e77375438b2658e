#!/usr/bin/env python3
"""`make bench`: Rivet's exports timed against the database's own fastest dump to /dev/null (the floor).

Tables are made once and reused (same generators as the peer benchmark, scripts/pg_orders.sql and my_orders.sql):
PostgreSQL rivet_bench.orders (5 M rows) and orders_20m (20 M), MariaDB rivet_bench.orders (5 M); `--quick` uses
1 M-row orders_1m tables and one run per case. Each case: 1 warm-up + 3 runs, median wall time and median peak RSS
of the child process (os.wait4; a rivet case's own subprocesses are not counted). A case is one dict in CASES:
floors have `argv`, rivet cases have `export` (keys merged into the generated [[exports]] entry) and name their floor.

Usage: .venv/bin/python scripts/bench.py [--quick] [--only pg|mysql]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

ROOT = Path(__file__).resolve().parent.parent
RIVET = str(Path(sys.executable).parent / "rivet")
WORK = Path(tempfile.gettempdir()) / "rivet-bench"
RESULTS = Path(tempfile.gettempdir()) / "rivet-bench-results.json"

DB = "rivet_bench"
PG_URL = f"postgresql://postgres@127.0.0.1:5432/{DB}"
MY_URL = f"mysql://root@127.0.0.1:3306/{DB}"
PSQL = ["psql", "-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", "5432", "-U", "postgres"]
MARIADB = ["mariadb", "-h", "127.0.0.1", "-P", "3306", "-uroot"]

ROWS = {"orders": 5_000_000, "orders_20m": 20_000_000, "orders_1m": 1_000_000}
QUICK_TABLE = {"orders": "orders_1m"}          # --quick: tables mapped here, cases on other tables dropped
GOAL_RATIO, GOAL_RSS_MIB, GOAL_RSS_GROWTH = 1.5, 400, 1.2   # issue 2: ≤ 1.5× floor, ≤ 400 MB, flat memory

PG_COPY = [*PSQL, "-d", DB, "-c", "COPY (SELECT * FROM {table}) TO STDOUT (FORMAT binary)"]
CASES: list[dict] = [
    {"name": "pg floor: psql COPY binary", "db": "pg", "table": "orders", "argv": PG_COPY},
    {"name": "pg rivet full", "db": "pg", "table": "orders", "floor": "pg floor: psql COPY binary",
     "export": {"mode": "full"}},
    {"name": "pg floor: psql COPY binary 20M", "db": "pg", "table": "orders_20m", "argv": PG_COPY},
    {"name": "pg rivet full 20M", "db": "pg", "table": "orders_20m", "floor": "pg floor: psql COPY binary 20M",
     "export": {"mode": "full"}, "rss_vs": "pg rivet full"},
    # issue 3: chunked, parallel 1 / 2 / 4 (5 chunks of 1 M ids); ratios are to the full export
    *[{"name": f"pg rivet chunked p{n}", "db": "pg", "table": "orders", "floor": "pg rivet full",
       "export": {"mode": "chunked", "chunk_size": 1_000_000, "parallel": n}} for n in (1, 2, 4)],
    {"name": "my floor: mariadb -e", "db": "mysql", "table": "orders",
     "argv": [*MARIADB, DB, "-e", "SELECT * FROM {table}"]},
    {"name": "my floor: mariadb --quick", "db": "mysql", "table": "orders",
     "argv": [*MARIADB, "--quick", DB, "-e", "SELECT * FROM {table}"]},
    {"name": "my rivet full", "db": "mysql", "table": "orders", "floor": "my floor: mariadb -e",
     "export": {"mode": "full"}},
]


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def sh(argv: list[str], stdin: str | None = None) -> str:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True).stdout.strip()


# ---------------------------------------------------------------- data (made once, reused)

def ensure_pg(table: str) -> None:
    n = ROWS[table]
    if sh([*PSQL, "-d", "postgres", "-Atc", f"SELECT 1 FROM pg_database WHERE datname = '{DB}'"]) != "1":
        sh([*PSQL, "-d", "postgres", "-c", f"CREATE DATABASE {DB}"])
    exists = sh([*PSQL, "-d", DB, "-Atc", f"SELECT to_regclass('public.{table}') IS NOT NULL"]) == "t"
    if exists and sh([*PSQL, "-d", DB, "-Atc", f"SELECT count(*) FROM {table}"]) == str(n):
        return
    log(f"loading PostgreSQL {DB}.{table}: {n:,} rows (about {n // 230_000} s)")
    t0 = time.monotonic()
    sh([*PSQL, "-d", DB, "-1", "-v", f"tbl={table}", "-v", f"n={n}", "-f", str(ROOT / "scripts/pg_orders.sql")])
    sh([*PSQL, "-d", DB, "-c", f"VACUUM (FREEZE, ANALYZE) {table}"])   # set hint bits now, not in the first timed run
    log(f"  done in {time.monotonic() - t0:.0f} s")


def ensure_mysql(table: str) -> None:
    n = ROWS[table]
    sh([*MARIADB, "-e", f"CREATE DATABASE IF NOT EXISTS {DB}"])
    exists = f"SELECT count(*) FROM information_schema.tables WHERE table_schema = '{DB}' AND table_name = '{table}'"
    have = sh([*MARIADB, "-N", "-e", exists])
    if have == "1" and sh([*MARIADB, DB, "-N", "-e", f"SELECT count(*) FROM {table}"]) == str(n):
        return
    log(f"loading MariaDB {DB}.{table}: {n:,} rows (about {n // 180_000} s)")
    t0 = time.monotonic()
    sql = (ROOT / "scripts/my_orders.sql").read_text()
    sql = re.sub(r"\borders\b", table, sql).replace("seq_1_to_5000000", f"seq_1_to_{n}")
    sh([*MARIADB, DB], stdin=sql)
    log(f"  done in {time.monotonic() - t0:.0f} s")


# ---------------------------------------------------------------- one measured process

def measure(argv: list[str], stdout: Path | None = None, cwd: Path | None = None) -> dict:
    """Run argv to completion: wall seconds, peak RSS (MiB) of that process, exit code, stderr, stdout."""
    with tempfile.TemporaryFile() as err, open(stdout or os.devnull, "wb") as out:
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd)
        except OSError as e:   # e.g. no rivet in the venv yet: a failed case, not a crashed bench
            return {"seconds": 0.0, "rss_mib": 0.0, "rc": 127, "stderr": str(e), "stdout": ""}
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)   # reaped here; keeps Popen from waiting again
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return {"seconds": seconds, "rss_mib": usage.ru_maxrss / 1024, "rc": proc.returncode, "stderr": stderr,
            "stdout": stdout.read_text(errors="replace") if stdout else ""}


def rivet_config(case: dict, table: str, workdir: Path) -> Path:
    source = {"type": "postgres", "url": PG_URL} if case["db"] == "pg" else {"type": "mysql", "url": MY_URL}
    export = {"name": "bench", "table": f"public.{table}" if case["db"] == "pg" else table,
              "mode": "full", "format": "parquet", "compression": "zstd",
              "destination": {"type": "local", "path": "out"}, **case["export"]}
    path = workdir / "rivet.toml"
    path.write_text(tomli_w.dumps({"source": {**source, "environment": "local"}, "exports": [export]}))
    return path


def run_once(case: dict, table: str, workdir: Path) -> dict:
    """One run of a case. A failure comes back as {"error": ...}, never as an exception."""
    if "argv" in case:
        r = measure([a.format(table=table) for a in case["argv"]])
        return r if r["rc"] == 0 else {**r, "error": f"exit {r['rc']}"}
    shutil.rmtree(workdir / "out", ignore_errors=True)      # each run starts empty: fresh state, no old parts
    shutil.rmtree(workdir / ".rivet", ignore_errors=True)
    config = rivet_config(case, table, workdir)
    r = measure([RIVET, "run", "-c", str(config), "--no-tui", "--json"], stdout=workdir / "summary.json", cwd=workdir)
    if r["rc"] != 0:
        return {**r, "error": f"rivet exit {r['rc']}"}
    try:
        summary = json.loads(r["stdout"])["exports"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return {**r, "error": "no JSON summary on stdout"}
    if summary.get("rows") != ROWS[table]:
        return {**r, "error": f"wrote {summary.get('rows')} rows, expected {ROWS[table]:,}"}
    return {**r, "bytes": summary.get("bytes")}


def run_case(case: dict, table: str, warmups: int, runs: int) -> dict:
    workdir = WORK / re.sub(r"[^a-z0-9]+", "-", case["name"].lower())
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"{case['name']} ({table}): {warmups} warm-up + {runs} run{'s' if runs > 1 else ''}")
    measured = []
    for i in range(warmups + runs):
        r = run_once(case, table, workdir)
        if "error" in r:   # show it, stop repeating it, keep the table going
            tail = "\n".join((r["stderr"] + r["stdout"]).strip().splitlines()[-25:])
            log(f"  FAILED: {r['error']}\n{tail}")
            shutil.rmtree(workdir, ignore_errors=True)
            return {"name": case["name"], "table": table, "error": r["error"], "stderr_tail": tail}
        if i >= warmups:
            measured.append(r)
            log(f"  {r['seconds']:.2f} s, {r['rss_mib']:.0f} MiB")
    shutil.rmtree(workdir, ignore_errors=True)
    return {"name": case["name"], "table": table, "rows": ROWS[table],
            "seconds": statistics.median(r["seconds"] for r in measured),
            "rss_mib": statistics.median(r["rss_mib"] for r in measured),
            "bytes": measured[-1].get("bytes"),
            "runs": [{"seconds": r["seconds"], "rss_mib": r["rss_mib"]} for r in measured]}


# ---------------------------------------------------------------- report

def report(cases: list[dict], results: dict[str, dict]) -> None:
    head = f"{'case':<34} {'rows':>11} {'seconds':>8} {'rows/s':>8} {'x floor':>8} {'peak MiB':>9} {'out MB':>7}  goal"
    print("\n" + head + "\n" + "-" * len(head))
    for case in cases:
        r = results[case["name"]]
        if "error" in r:
            print(f"{case['name']:<34} {'FAILED: ' + r['error']}")
            continue
        floor = results.get(case.get("floor", ""), {})
        ratio = r["seconds"] / floor["seconds"] if floor.get("seconds") else None
        goals = []
        if "export" in case:
            goals.append(f"time {'ok' if ratio and ratio <= GOAL_RATIO else 'MISS'}" if ratio else "time ?")
            goals.append(f"rss {'ok' if r['rss_mib'] <= GOAL_RSS_MIB else 'MISS'}")
            base = results.get(case.get("rss_vs", ""), {})
            if base.get("rss_mib"):
                growth = r["rss_mib"] / base["rss_mib"]
                r["rss_growth"] = growth
                goals.append(f"rss x{growth:.2f} vs {base['table']} {'ok' if growth <= GOAL_RSS_GROWTH else 'MISS'}")
        r["ratio_to_floor"] = ratio
        out_mb = f"{r['bytes'] / 1e6:.1f}" if r.get("bytes") else "-"
        print(f"{case['name']:<34} {r['rows']:>11,} {r['seconds']:>8.2f} {r['rows'] / r['seconds'] / 1e6:>7.2f}M "
              f"{(f'{ratio:.2f}' if ratio else '-'):>8} {r['rss_mib']:>9.0f} {out_mb:>7}  {', '.join(goals)}")
    print(f"\ngoals (issue 2): rivet ≤ {GOAL_RATIO}x its floor, peak RSS ≤ {GOAL_RSS_MIB} MiB, "
          f"peak RSS at 20M ≤ {GOAL_RSS_GROWTH}x the 5M peak. Medians; peak RSS is the rivet process itself.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 M-row tables, one run per case, no warm-up")
    ap.add_argument("--only", choices=["pg", "mysql"], help="run only the PostgreSQL or only the MariaDB cases")
    args = ap.parse_args()
    warmups, runs = (0, 1) if args.quick else (1, 3)

    cases = [c for c in CASES if args.only in (None, c["db"])]
    if args.quick:
        cases = [{**c, "table": QUICK_TABLE[c["table"]]} for c in cases if c["table"] in QUICK_TABLE]
    for db, table in sorted({(c["db"], c["table"]) for c in cases}):
        (ensure_pg if db == "pg" else ensure_mysql)(table)

    results = {c["name"]: run_case(c, c["table"], warmups, runs) for c in cases}
    report(cases, results)
    RESULTS.write_text(json.dumps({"quick": args.quick, "cpus": os.cpu_count(), "results": results}, indent=2))
    print(f"results: {RESULTS}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
