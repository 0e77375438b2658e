"""Read one MySQL/MariaDB table through each read path and report wall time, client CPU, server CPU and peak RSS.

Paths (each run is its own process, so peak RSS is that run's alone; rounds interleave the paths so that load from
other work on the machine spreads over all of them):
  cext      MySQLSource.read as rivet runs it: C driver, raw rows → Arrow, planned types
  duckdb    the DuckDB mysql scanner path (MySQLSource._read_duckdb), what rivet used before
  cursor    the same raw-rows → Arrow conversion fed by the C driver's cursor (raw=True, unbuffered, fetchmany)
            instead of the C API object's fetch_row
  pure      the same on the pure-Python driver (what a missing C extension would give)
  startup   imports, connection and planning only, no rows: subtract it from the Python paths' client CPU and RSS
  quick     floor: `mariadb --quick -e "SELECT * ..." > /dev/null` (streams)
  buffered  floor: `mariadb -e "SELECT * ..." > /dev/null` (the client buffers the whole result)
Server CPU is the utime+stime delta of the mariadbd/mysqld process (/proc), so it includes whatever else the server
did meanwhile; the load average is printed with each run for that reason.

  .venv/bin/python scripts/bench_mysql_paths.py --table rivet_bench.orders_1m --runs 3
  .venv/bin/python scripts/bench_mysql_paths.py --verify --table rivet_bench.orders_1m   # cext == duckdb, value for value
"""
from __future__ import annotations

import engine  # noqa: F401  (first: lets mysql-connector's C extension load before pyarrow/duckdb)
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

PATHS = ("cext", "duckdb", "cursor", "pure", "startup", "quick", "buffered")
ROOT = Path(__file__).resolve().parents[1]


def server_pid() -> int | None:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() in ("mariadbd", "mysqld"):
                    return int(d.name)
            except OSError:
                continue
    return None


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plan(url: str, table: str):
    from engine.config import SourceConfig, Tuning
    from engine.sources.base import Relation
    from engine.sources.mysql import MySQLSource
    from engine.types import map_columns, output_schema
    src = MySQLSource(SourceConfig("mysql", url), Tuning(statement_timeout_s=0))
    rel = Relation(table=table)
    mappings = map_columns("mysql", src.describe(rel), {}, src.dialect)
    sql = src.dialect.select(rel, [m.select_expr for m in mappings], [], [])
    return src, sql, output_schema(mappings)


def read_batches(path: str, url: str, table: str, batch_rows: int):
    src, sql, schema = plan(url, table)
    if path == "cext":
        yield from src.read(sql, schema, batch_rows)
    elif path == "duckdb":
        src._native()
        yield from src._read_duckdb(sql, schema, batch_rows)
    elif path == "startup":
        src._native()
    else:
        yield from cursor_read(src, sql, schema, batch_rows, pure=path == "pure")
    src.close()


def cursor_read(src, sql, schema, batch_rows, pure: bool):
    """The cext path's conversion fed by a driver's unbuffered raw cursor."""
    import mysql.connector
    import pyarrow as pa
    from engine.sources.mysql import SLICE_ROWS, _typed
    p = src._params
    conn = mysql.connector.connect(host=p["host"], port=p["port"], user=p["user"], password=p["password"],
                                   database=p.get("database"), use_pure=pure, charset="utf8mb4")
    cur = conn.cursor(raw=True)
    cur.execute("SET time_zone = '+00:00'")
    cur.execute(sql)
    fields = [(None,) * 8 + (d[1], d[7], 0) for d in cur.description]   # type code and flags where _typed reads them
    struct = pa.struct([pa.field(f"c{i}", pa.binary()) for i in range(len(fields))])
    parts, n = [], 0
    while rows := cur.fetchmany(min(SLICE_ROWS, batch_rows)):   # in slices, as the cext path does
        parts.append(_typed(pa.array(rows, struct), schema, fields, "bench"))
        n += len(rows)
        if n >= batch_rows:
            yield pa.concat_batches(parts)
            parts, n = [], 0
    if parts:
        yield pa.concat_batches(parts)
    conn.close()


def one(path: str, url: str, table: str, batch_rows: int) -> None:
    """Child process: read everything, print the row count."""
    rows = 0
    for b in read_batches(path, url, table, batch_rows):
        rows += b.num_rows
    print(json.dumps({"rows": rows}))


def run(path: str, args) -> dict:
    u = urlsplit(args.url)
    if path in ("quick", "buffered"):
        cmd = ["mariadb", "-h", u.hostname or "127.0.0.1", "-P", str(u.port or 3306), "-u", u.username or "root",
               *([f"-p{u.password}"] if u.password else []), *(["--quick"] if path == "quick" else []),
               "-N", "-e", f"SELECT * FROM {args.table}"]
    else:
        cmd = [sys.executable, __file__, "--one", path, "--url", args.url, "--table", args.table,
               "--batch-rows", str(args.batch_rows)]
    pid = server_pid()
    load = os.getloadavg()[0]
    s0, t0 = cpu_seconds(pid), time.perf_counter()
    out = subprocess.PIPE if path not in ("quick", "buffered") else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=out, cwd=ROOT)
    stdout = proc.stdout.read() if proc.stdout else b""
    _, status, ru = os.wait4(proc.pid, 0)
    wall, server = time.perf_counter() - t0, cpu_seconds(pid) - s0
    if status != 0:
        raise SystemExit(f"{path} failed (status {status})")
    rows = json.loads(stdout)["rows"] if stdout else None
    return {"path": path, "wall": wall, "client_cpu": ru.ru_utime + ru.ru_stime, "server_cpu": server,
            "rss_mib": ru.ru_maxrss / 1024, "rows": rows, "load": load}


def verify(args) -> None:
    """cext and duckdb deliver the same table: same schema, same values, row for row (read ordered by the key)."""
    import pyarrow as pa
    tables = {}
    for path in ("cext", "duckdb"):
        src, sql, schema = plan(args.url, args.table)
        sql += f" ORDER BY {src.dialect.quote_ident(schema.names[0])}"   # by name: the duckdb path prepends a column
        if path == "duckdb":
            src._native()
            batches = src._read_duckdb(sql, schema, args.batch_rows)
        else:
            batches = src.read(sql, schema, args.batch_rows)
        tables[path] = pa.Table.from_batches(list(batches), schema)
        src.close()
    a, b = tables["cext"], tables["duckdb"]
    assert a.schema == b.schema, (a.schema, b.schema)
    for name in a.column_names:
        x, y = a.column(name), b.column(name)
        assert x.equals(y), (name, x.slice(0, 3), y.slice(0, 3), len(x), len(y))
    print(f"identical: {a.num_rows} rows, {a.num_columns} columns ({', '.join(str(t) for t in a.schema.types)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="mysql://root@127.0.0.1:3306/rivet_bench")
    ap.add_argument("--table", default="rivet_bench.orders_1m")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--batch-rows", type=int, default=122_880)
    ap.add_argument("--one", choices=PATHS[:5], help=argparse.SUPPRESS)
    ap.add_argument("--verify", action="store_true")
    args = ap.parse_args()
    if args.one:
        return one(args.one, args.url, args.table, args.batch_rows)
    if args.verify:
        return verify(args)
    paths = args.paths.split(",")
    results: dict[str, list[dict]] = {p: [] for p in paths}
    for r in range(args.runs):
        for p in paths:
            res = run(p, args)
            results[p].append(res)
            print(f"round {r + 1} {p:9s} wall {res['wall']:6.2f} s  client cpu {res['client_cpu']:6.2f} s  "
                  f"server cpu {res['server_cpu']:6.2f} s  rss {res['rss_mib']:7.1f} MiB  rows {res['rows']}  "
                  f"load {res['load']:.2f}", flush=True)
    print(f"\n{args.table}, median of {args.runs} (min-max); load average 1 min at the runs' starts\n")
    print("| path | wall s | client CPU s | server CPU s | peak RSS MiB | load |")
    print("|---|---|---|---|---|---|")
    def med(rs, k):
        v = [x[k] for x in rs]
        return f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"

    for p, rs in results.items():
        loads = [x["load"] for x in rs]
        print(f"| {p} | {med(rs, 'wall')} | {med(rs, 'client_cpu')} | {med(rs, 'server_cpu')} | "
              f"{statistics.median([x['rss_mib'] for x in rs]):.0f} | {min(loads):.1f}-{max(loads):.1f} |")


if __name__ == "__main__":
    main()
