"""A PostgreSQL table rewrite (ALTER TABLE ... that rewrites, TRUNCATE, VACUUM FULL) is not MVCC-safe: committed
after a read's snapshot was taken, it makes the table look empty to that read. rivet holds ACCESS SHARE locks on
what an export reads from before any read until the run is certified (as pg_dump does), so an export either gets
every row or fails with exit 2, no _SUCCESS and nothing certified — never "succeeded, 0 rows"."""
from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import psycopg
import pytest

from tests.reliability.common import Prefix, local_dest, rivet, run_summary, start, wait_for, write_config

ROWS = 6_000


@pytest.fixture
def table(pg):
    pg.sql("DROP TABLE IF EXISTS rw")
    pg.sql("CREATE TABLE rw (id bigint PRIMARY KEY, at timestamptz NOT NULL, pad text)")
    pg.sql(f"INSERT INTO rw SELECT g, now() - g * interval '1 second', md5(g::text) FROM generate_series(1, {ROWS}) g")
    return pg


EXPORTS = {
    "full_table": 'table = "rw"\nmode = "full"',                      # DuckDB's parallel table scan
    "full_query": 'query = "SELECT id, at, pad FROM rw"\nmode = "full"',
    "incremental": 'table = "rw"\nmode = "incremental"\ncursor_column = "id"',
    "time_window": 'table = "rw"\nmode = "time_window"\ntime_column = "at"\ndays_window = 7',
    "chunked": 'table = "rw"\nmode = "chunked"\nchunk_size = 1000',
}


def config(tmp_path, pg, body: str, extra: str = "") -> tuple:
    dest = local_dest(tmp_path / "out")
    cfg = write_config(tmp_path / "rivet.toml", f"""
[source]
type = "postgres"
url = "{pg.url}"

[[exports]]
name = "rw"
{body}
destination = {{ type = "local", path = "{dest.path}" }}
{extra}
""")
    return cfg, dest


def waiting_on_lock(pg) -> bool:
    rows = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                  "AND application_name = 'rivet' AND wait_event_type = 'Lock'")
    return rows[0][0] > 0


@pytest.mark.parametrize("kind", list(EXPORTS))
def test_rewrite_in_progress_when_the_run_starts(tmp_path, table, kind):
    """The rewrite holds its lock when rivet starts and commits while rivet waits: every row is exported."""
    cfg, dest = config(tmp_path, table, EXPORTS[kind])
    ddl = psycopg.connect(table.url)
    try:
        ddl.execute("ALTER TABLE rw ADD COLUMN z float8 DEFAULT random()")   # rewrites the table, not committed
        proc = start(cfg)
        assert wait_for(lambda: waiting_on_lock(table) or proc.poll() is not None, timeout=120)
        assert proc.poll() is None, proc.communicate()
        ddl.commit()
    finally:
        ddl.close()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert run_summary(SimpleNamespace(stdout=out, stderr=err))["rows"] == ROWS
    prefix = Prefix.of(dest, "rw")
    assert prefix.success is not None and not prefix.success_problems()
    assert sorted(prefix.manifest_values("id", [prefix.latest])) == list(range(1, ROWS + 1))
    if kind != "full_query":   # what was read is the table after the rewrite, its new column included
        assert len(prefix.manifest_values("z", [prefix.latest])) == ROWS


def test_rewrite_during_a_chunked_run(tmp_path, table):
    """A rewrite asked for mid-run waits for rivet's locks; rivet's next read, queued behind it, gives up at once:
    the run fails with exit 2 (RIVET_SOURCE_LOCKED), certifies nothing, lets the rewrite through, and the next run
    delivers every row."""
    cfg, dest = config(tmp_path, table, EXPORTS["chunked"],
                       "[exports.tuning]\nbatch_size = 200\nthrottle_ms = 40\nretry_backoff_ms = 100")
    proc = start(cfg)
    assert wait_for(lambda: any((tmp_path / "out").glob("rw_chunk*.parquet")) or proc.poll() is not None,
                    timeout=120)
    done = threading.Event()

    def rewrite():
        with psycopg.connect(table.url, autocommit=True) as ddl:
            ddl.execute("SET lock_timeout = '120s'")
            ddl.execute("ALTER TABLE rw ADD COLUMN z float8 DEFAULT random()")
        done.set()
    t = threading.Thread(target=rewrite, daemon=True)
    t.start()
    out, err = proc.communicate(timeout=300)
    t.join(150)
    assert done.is_set(), "the rewrite never got its lock"
    summary = run_summary(SimpleNamespace(stdout=out, stderr=err))
    if proc.returncode == 0:      # the run finished before the rewrite was asked for: then it has every row
        assert summary["rows"] == ROWS
    else:
        assert proc.returncode == 2, err
        assert summary["error"]["code"] == "RIVET_SOURCE_LOCKED", summary
        assert Prefix.of(dest, "rw").success is None        # nothing certified
        # one chunk finds the rewrite queued behind the export's guard; the chunks not started yet are not tried:
        # each would wait out the read lock timeout, holding up the rewrite and every query queued behind it, only to
        # fail the same way (with 1,000 chunks that was hours). They stay pending for the next run.
        assert "1 of 6 chunks failed" in summary["error"]["error"], summary["error"]["error"]
        tasks = json.loads(rivet("state", "chunks", "-c", cfg, "-e", "rw", "--json").stdout)["tasks"]
        assert sorted(t["status"] for t in tasks).count("failed") == 1, tasks
    again = rivet("run", "-c", cfg, "--no-tui", "--json")
    assert again.returncode == 0, again.stderr
    prefix = Prefix.of(dest, "rw")
    assert prefix.success is not None and not prefix.success_problems()
    assert sorted(prefix.manifest_values("id", [prefix.latest])) == list(range(1, ROWS + 1))
