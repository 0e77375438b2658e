"""Load (issue 8): 200 exports in one config, `rivet run --parallel-exports 8`, one PostgreSQL database (marked slow:
about 95 s here, so it runs with `make bench`; a 24-export version runs with the suite).

All must succeed, state must agree (200 succeeded metrics rows, one logged file per export, every row in it), and
the number of connections rivet holds on the database — sampled from pg_stat_activity every 20 ms while it runs —
must stay within parallel_exports × the connections one export may hold:

- one native (psycopg) connection, for planning and then for the task's catalog lookups (never both at once:
  the planning source is closed before the task opens its own);
- DuckDB's postgres scanner: one connection per DuckDB thread plus one for the catalog. A task gets
  threads = max(1, cores // parallel) and a plain table scan uses them all (parallel ctid ranges).

So the bound is 8 × (1 + cores + 1). On the 2-core test machine that is 32; the measured peak is printed.
"""
from __future__ import annotations

import json
import os
import threading
import time

import psycopg
import pytest

from tests.reliability.common import rivet, store_of, write_config

PARALLEL = 8
ROWS = 25


@pytest.mark.parametrize("exports", [24, pytest.param(200, marks=pytest.mark.slow)])
def test_many_exports_parallel_8_stay_within_the_connection_bound(tmp_path, pg, exports):
    pg.sql(f"""DO $$ BEGIN FOR i IN 0..{exports - 1} LOOP
        EXECUTE format('DROP TABLE IF EXISTS load_%s', i);
        EXECUTE format('CREATE TABLE load_%s (id int PRIMARY KEY, v text)', i);
        EXECUTE format('INSERT INTO load_%s SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g', i);
        END LOOP; END $$""")
    body = "".join(f'\n[[exports]]\nname = "e{i:03d}"\ntable = "load_{i}"\n'
                   'destination = { type = "local", path = "out/{export}" }\n' for i in range(exports))
    cfg = write_config(tmp_path / "rivet.toml", f'[source]\ntype = "postgres"\nurl = "{pg.url}"\n{body}')

    samples: list[int] = []
    stop = threading.Event()
    count = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
             "AND application_name = 'rivet'")
    # connections this test process already holds (idle in the pools of earlier in-process runs in this worker) are
    # not the run's: the run is its own process, so they are counted once before it starts and taken off
    (baseline,), = pg.sql(count)

    def sample():
        with psycopg.connect(pg.url, autocommit=True, application_name="rivet-load-sampler") as con:
            while not stop.is_set():
                (n,), = con.execute(count).fetchall()
                samples.append(n - baseline)
                time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    try:
        proc = rivet("run", "-c", cfg, "--no-tui", "--json", "--parallel-exports", PARALLEL, timeout=600,
                     subprocess_only=True)
    finally:
        wall = time.monotonic() - t0
        stop.set()
        sampler.join()
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)["exports"]
    assert len(results) == exports and all(r["status"] == "succeeded" and r["rows"] == ROWS for r in results)

    store = store_of(cfg)
    metrics = store.metrics()
    assert len(metrics) == exports and {m["status"] for m in metrics} == {"succeeded"}
    files = store.files()
    assert len(files) == exports and sorted({f["export_name"] for f in files}) == [f"e{i:03d}" for i in range(exports)]
    assert all(f["rows"] == ROWS for f in files)
    for f in files:   # every logged part is where the log says, at its size
        assert (tmp_path / "out" / f["export_name"] / f["path"]).stat().st_size == f["size_bytes"]
        assert (tmp_path / "out" / f["export_name"] / "_SUCCESS").exists()

    cores = os.cpu_count() or 1
    # per export in flight: planning and the rewrite guard (psycopg), and DuckDB's scan: one connection that exports
    # the snapshot plus at most one per DuckDB thread that reads under it; plus the one catalog connection the
    # process's shared DuckDB instance keeps per attached source (docs/architecture.md, "Source connections")
    bound = PARALLEL * (2 + 1 + cores) + 1
    peak = max(samples)
    print(f"\nload: {exports} exports, --parallel-exports {PARALLEL}: {wall:.1f} s wall, "
          f"peak {peak} connections (bound {bound}; {baseline} held before it started), {len(samples)} samples")
    assert samples and peak >= 1, "the sampler never saw rivet connected"
    assert peak <= bound, f"peak {peak} connections > bound {bound}"
