#!/usr/bin/env python3
"""`make bench`: Rivet's exports timed against the database's own fastest dump to /dev/null (the floor).

Tables are made once and reused (same generators as the peer benchmark, scripts/pg_orders.sql and my_orders.sql):
PostgreSQL rivet_bench.orders (5 M rows) and orders_20m (20 M), MariaDB rivet_bench.orders (5 M); `--quick` uses
1 M-row orders_1m tables and one run per case. Each case: 1 warm-up + 3 runs, median wall time and median peak RSS
of the child process (os.wait4; a rivet case's own subprocesses are not counted). A case is one dict in CASES:
floors have `argv`, rivet cases have `export` (keys merged into the generated [[exports]] entry) and name their floor.

Issue 13's suites, `many` (200 small tables) and `startup` (process start to exit), run the original Rust rivet
side by side: see scripts/bench_peer.py and docs/performance.md.

Issue 16's suite, `layouts`, prices the layout features against the same export without them (docs/layouts.md):
keyset pages (`chunk_by_key`) vs range windows (`chunk_column`) on 1 M-row tables whose key is sparse (two runs 10^9
apart) or skewed (dense, then a thin tail), made by scripts/pg_sparse.sql and my_sparse.sql; and Hive partitions by
month on the orders tables vs `pg rivet full` / `my rivet full` (every export takes the same batch path since the
fused DuckDB COPY path was removed, so this is the cost of the split alone). Each layouts case runs interleaved with
the case it is compared with (`paired`), round by round, so both see the same machine; the comparison table gives
time and peak-RSS ratios.

Usage: .venv/bin/python scripts/bench.py [--quick] [--only many,startup,pg,mysql,layouts,dask]
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

ROWS = {"orders": 5_000_000, "orders_20m": 20_000_000, "orders_1m": 1_000_000, "sparse": 1_000_000,
        "skewed": 1_000_000}
KEY_SHAPES = ("sparse", "skewed")   # tables made by pg_sparse.sql / my_sparse.sql, not by the orders generators
QUICK_TABLE = {"orders": "orders_1m", "sparse": "sparse", "skewed": "skewed"}   # --quick: tables mapped here,
                                                                                # cases on other tables dropped
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

# issue 16, suite `layouts`: each case names the case it is compared with (`floor`) and runs interleaved with it
# (`paired`); `vs` adds more comparisons to the layouts table. 100,000-row keyset pages vs 100,000-id range windows.
KEYSET = {"mode": "chunked", "chunk_by_key": "id", "chunk_size": 100_000}
RANGE = {"mode": "chunked", "chunk_column": "id", "chunk_size": 100_000}
PARTITIONED = {"mode": "full", "partition_by": "created_at", "partition_granularity": "month"}
for _db, _p in (("pg", "pg"), ("mysql", "my")):
    for _shape in KEY_SHAPES:
        CASES += [
            {"name": f"{_p} rivet range {_shape}", "db": _db, "suite": "layouts", "table": _shape, "export": RANGE},
            {"name": f"{_p} rivet keyset {_shape}", "db": _db, "suite": "layouts", "table": _shape, "export": KEYSET,
             "floor": f"{_p} rivet range {_shape}", "paired": True},
        ]
CASES += [
    {"name": "pg rivet full partitioned month", "db": "pg", "suite": "layouts", "table": "orders",
     "floor": "pg rivet full", "paired": True, "export": PARTITIONED},
    {"name": "my rivet full partitioned month", "db": "mysql", "suite": "layouts", "table": "orders",
     "floor": "my rivet full", "paired": True, "export": PARTITIONED},
]


def log(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def sh(argv: list[str], stdin: str | None = None) -> str:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True).stdout.strip()


# ---------------------------------------------------------------- data (made once, reused)

def ensure_pg(table: str) -> None:
    n = ROWS[table]
    gen = ["-v", f"shape={table}", "-f", str(ROOT / "scripts/pg_sparse.sql")] if table in KEY_SHAPES else \
        ["-f", str(ROOT / "scripts/pg_orders.sql")]
    if sh([*PSQL, "-d", "postgres", "-Atc", f"SELECT 1 FROM pg_database WHERE datname = '{DB}'"]) != "1":
        sh([*PSQL, "-d", "postgres", "-c", f"CREATE DATABASE {DB}"])
    exists = sh([*PSQL, "-d", DB, "-Atc", f"SELECT to_regclass('public.{table}') IS NOT NULL"]) == "t"
    if exists and sh([*PSQL, "-d", DB, "-Atc", f"SELECT count(*) FROM {table}"]) == str(n):
        return
    log(f"loading PostgreSQL {DB}.{table}: {n:,} rows (about {n // 230_000} s)")
    t0 = time.monotonic()
    sh([*PSQL, "-d", DB, "-1", "-v", f"tbl={table}", "-v", f"n={n}", *gen])
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
    if table in KEY_SHAPES:
        sql = (ROOT / "scripts/my_sparse.sql").read_text()
        sql = f"SET @shape = '{table}', @n = {n};\n" + sql.replace("sparse_tbl", table).replace(
            "seq_1_to_1000000", f"seq_1_to_{n}")
    else:
        sql = (ROOT / "scripts/my_orders.sql").read_text()
        sql = re.sub(r"\borders\b", table, sql).replace("seq_1_to_5000000", f"seq_1_to_{n}")
    sh([*MARIADB, DB], stdin=sql)
    log(f"  done in {time.monotonic() - t0:.0f} s")


# ---------------------------------------------------------------- one measured process

def measure(argv: list[str], stdout: Path | None = None, cwd: Path | None = None, env: dict | None = None) -> dict:
    """Run argv to completion: wall seconds, peak RSS (MiB) of that process, exit code, stderr, stdout."""
    with tempfile.TemporaryFile() as err, open(stdout or os.devnull, "wb") as out:
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=env)
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
    files = sum(1 for p in (workdir / "out").rglob("*") if p.suffix in (".parquet", ".csv"))   # parts written
    return {**r, "bytes": summary.get("bytes"), "files": files}


def run_cases(group: list[dict], warmups: int, runs: int) -> dict[str, dict]:
    """The cases of a group, round by round (case A, case B, A, B, …): a pair measured side by side sees the same
    machine. A case that fails stops; the others go on."""
    workdirs = {c["name"]: WORK / re.sub(r"[^a-z0-9]+", "-", c["name"].lower()) for c in group}
    for c in group:
        workdirs[c["name"]].mkdir(parents=True, exist_ok=True)
        log(f"{c['name']} ({c['table']}): {warmups} warm-up + {runs} run{'s' if runs > 1 else ''}"
            + (f", interleaved with {len(group) - 1} other case(s)" if len(group) > 1 else ""))
    measured: dict[str, list[dict]] = {c["name"]: [] for c in group}
    failed: dict[str, dict] = {}
    for i in range(warmups + runs):
        for case in group:
            name, table, workdir = case["name"], case["table"], workdirs[case["name"]]
            if name in failed:
                continue
            r = run_once(case, table, workdir)
            if "error" in r:   # show it, stop repeating it, keep the table going
                tail = "\n".join((r["stderr"] + r["stdout"]).strip().splitlines()[-25:])
                log(f"  {name}: FAILED: {r['error']}\n{tail}")
                failed[name] = {"name": name, "table": table, "error": r["error"], "stderr_tail": tail}
            elif i >= warmups:
                measured[name].append(r)
                log(f"  {name}: {r['seconds']:.2f} s, {r['rss_mib']:.0f} MiB")
    for workdir in workdirs.values():
        shutil.rmtree(workdir, ignore_errors=True)
    out = {}
    for case in group:
        name, rs = case["name"], measured[case["name"]]
        out[name] = failed.get(name) or {
            "name": name, "table": case["table"], "rows": ROWS[case["table"]],
            "seconds": statistics.median(r["seconds"] for r in rs),
            "rss_mib": statistics.median(r["rss_mib"] for r in rs),
            "bytes": rs[-1].get("bytes"), "files": rs[-1].get("files"),
            "runs": [{"seconds": r["seconds"], "rss_mib": r["rss_mib"]} for r in rs]}
    return out


def groups_of(cases: list[dict]) -> list[list[dict]]:
    """Run order: each case in its own group, except a `paired` case, which joins the group of its floor."""
    groups: list[list[dict]] = []
    where: dict[str, int] = {}
    for c in cases:
        k = where.get(c.get("floor", "")) if c.get("paired") else None
        if k is None:
            k = len(groups)
            groups.append([])
        groups[k].append(c)
        where[c["name"]] = k
    return groups


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
        if case.get("suite") == "layouts":
            goals.append("see layouts below")
        elif "export" in case:
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
    layouts = [(c, other) for c in cases if c.get("suite") == "layouts" for other in [c.get("floor"), *c.get("vs", [])]
               if other]
    if not layouts:
        return
    head = f"{'layouts (issue 16): case':<34} {'compared with':<34} {'time x':>7} {'rss x':>6} {'files':>7} {'vs':>6}"
    print("\n" + head + "\n" + "-" * len(head))
    for case, other in layouts:
        a, b = results[case["name"]], results.get(other, {})
        if "error" in a or not b.get("seconds"):
            print(f"{case['name']:<34} {other:<34} {'-':>7} {'-':>6}   ({a.get('error') or b.get('error') or 'not run'})")
            continue
        a.setdefault("compared", {})[other] = {"time": a["seconds"] / b["seconds"], "rss": a["rss_mib"] / b["rss_mib"]}
        print(f"{case['name']:<34} {other:<34} {a['seconds'] / b['seconds']:>7.2f} {a['rss_mib'] / b['rss_mib']:>6.2f} "
              f"{a.get('files') or '-':>7} {b.get('files') or '-':>6}")
    print("time x / rss x: median wall time / median peak RSS of the case over the one it is compared with, measured "
          "interleaved; files: parts written by each.")


SUITES = ("many", "startup", "pg", "mysql", "layouts", "dask")


def suites(text: str) -> set[str]:
    chosen = {s.strip() for s in text.split(",") if s.strip()}
    if not chosen or chosen - set(SUITES):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(SUITES)} (comma-separated)")
    return chosen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 M-row tables and one run per big case; one run of `many`, 3 of each startup case")
    ap.add_argument("--only", type=suites, default=set(SUITES), metavar="SUITES",
                    help=f"comma-separated, from {','.join(SUITES)} (default all): many and startup against the "
                         "original rivet, pg and mysql the big tables against their floors, layouts keyset vs range "
                         "chunks and partitioned vs not, dask chunk completions/s (scripts/bench_dask.py)")
    args = ap.parse_args()
    os.environ["RIVET_WARM"] = "0"   # every case times (and measures the RSS of) rivet in its own process, unless
    #                                 # the startup suite's warm case says otherwise (docs/warm.md)
    warmups, runs = (0, 1) if args.quick else (1, 3)

    import bench_peer   # issue 13's suites; imports this module back as `bench`
    peer_rows = []
    if "many" in args.only:
        peer_rows += bench_peer.suite_many(args.quick)
    if "startup" in args.only:
        peer_rows += bench_peer.suite_startup(args.quick)

    cases = [c for c in CASES if c.get("suite", c["db"]) in args.only]
    chosen = {c["name"] for c in cases}
    needed = {c["floor"] for c in cases if c.get("suite") == "layouts" and "floor" in c} - chosen   # `pg rivet full`…
    cases = [c for c in CASES if c["name"] in chosen | needed]
    if args.quick:
        cases = [{**c, "table": QUICK_TABLE[c["table"]]} for c in cases if c["table"] in QUICK_TABLE]
    for db, table in sorted({(c["db"], c["table"]) for c in cases}):
        (ensure_pg if db == "pg" else ensure_mysql)(table)

    results = {}
    for group in groups_of(cases):
        results.update(run_cases(group, warmups, runs))
    dask_rows = []
    if "dask" in args.only:
        import bench_dask
        dask_rows = bench_dask.suite(args.quick)
    if peer_rows:
        bench_peer.report(peer_rows)
    if cases:
        report(cases, results)
    if dask_rows:
        bench_dask.report(dask_rows)
    RESULTS.write_text(json.dumps({"quick": args.quick, "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                                   "results": results, "peer": peer_rows, "dask": dask_rows}, indent=2))
    print(f"results: {RESULTS}")
    failed = any("error" in r for r in results.values()) or any(r.get("error") for r in peer_rows + dask_rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.modules.setdefault("bench", sys.modules["__main__"])   # bench_peer imports this module's helpers
    sys.exit(main())
