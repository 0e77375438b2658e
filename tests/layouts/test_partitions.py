"""Hive partitions (issue 16, docs/layouts.md "Hive partitions"): parts under `<column>_<granularity>=<value>/`,
NULL under `__HIVE_DEFAULT_PARTITION__`, every row exactly once, readable by DuckDB and pyarrow with Hive
partitioning, `rivet validate` clean, reruns fine; on PostgreSQL and MariaDB."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from engine.formats import PartWriter
from engine.layouts import PartitionedWriter
from tests.helpers import export_config, manifest, rivet, run_json, write_config

ROWS = 300


def expected_rows() -> list[tuple[int, dt.datetime | None, dt.date | None]]:
    base = dt.datetime(2023, 11, 28, 7, 15, 30)
    rows = []
    for i in range(1, ROWS + 1):
        ts = None if i % 17 == 0 else base + dt.timedelta(hours=11 * i, seconds=i)
        day = None if i % 19 == 0 else (base + dt.timedelta(days=3 * i)).date()
        rows.append((i, ts, day))
    return rows


def make(db, ts_type: str) -> None:
    db.sql("DROP TABLE IF EXISTS events")
    db.sql(f"CREATE TABLE events (id int PRIMARY KEY, created_at {ts_type} NULL, born date NULL, note varchar(20))")
    values = ", ".join(
        f"({i}, {repr(ts.isoformat(' ')) if ts else 'NULL'}, {repr(d.isoformat()) if d else 'NULL'}, 'n{i}')"
        for i, ts, d in expected_rows())
    db.sql(f"INSERT INTO events VALUES {values}")


@pytest.fixture()
def pg_events(pg):
    make(pg, "timestamp")
    return pg


@pytest.fixture()
def my_events(mysql):
    make(mysql, "datetime")
    return mysql


FMT = {"day": "%Y-%m-%d", "month": "%Y-%m", "year": "%Y"}


def config(tmp_path: Path, db, source_type: str, column: str, granularity: str, fmt: str = "parquet") -> Path:
    extra = f'format = "{fmt}"\n        partition_by = "{column}"\n        partition_granularity = "{granularity}"' \
            "\n        [exports.tuning]\n        batch_size = 40"
    return write_config(tmp_path / "rivet.toml", export_config(db.url, source_type=source_type, name="events",
                                                                table="events", mode="full", extra=extra))


CASES = [("created_at", "day"), ("created_at", "month"), ("born", "year")]


@pytest.mark.parametrize("db, source_type", [("pg_events", "postgres"), ("my_events", "mysql")])
@pytest.mark.parametrize("column, granularity", CASES)
def test_partitions_land_in_their_directories(tmp_path, request, db, source_type, column, granularity):
    d = request.getfixturevalue(db)
    cfg = config(tmp_path, d, source_type, column, granularity)
    out = tmp_path / "out"
    result = run_json(cfg)
    assert result["exports"][0]["status"] == "succeeded", result
    key = f"{column}_{granularity}"
    rows = expected_rows()
    pos = 1 if column == "created_at" else 2

    # every row in the directory of its value, exactly once
    seen: dict[int, str] = {}
    for part in out.rglob("*.parquet"):
        rel = part.relative_to(out)
        assert len(rel.parts) == 2 and rel.parts[0].startswith(f"{key}=")
        t = read_table_file(part)
        for rid in t.column("id").to_pylist():
            assert rid not in seen
            seen[rid] = rel.parts[0].split("=", 1)[1]
    want = {r[0]: (r[pos].strftime(FMT[granularity]) if r[pos] is not None else "__HIVE_DEFAULT_PARTITION__")
            for r in rows}
    assert seen == want
    assert (out / f"{key}=__HIVE_DEFAULT_PARTITION__").is_dir()

    # _SUCCESS and manifest.json at the prefix root, once; every part names its partition
    assert (out / "_SUCCESS").is_file() and not list(out.glob("*=*/_SUCCESS")) \
        and not list(out.glob("*=*/manifest*.json"))
    m = manifest(out)
    assert m["row_count"] == ROWS
    assert {p["partition"] for p in m["parts"]} == {f"{key}={v}" for v in want.values()}
    assert all(p["path"].startswith(p["partition"] + "/") for p in m["parts"])

    # Hive readers: the right row count, the original column's exact values, the directory key beside it
    con = duckdb.connect()
    got = con.execute(f"SELECT id, {column}, {key} FROM read_parquet('{out}/**/*.parquet', hive_partitioning=true) "
                      "ORDER BY id").fetchall()
    assert len(got) == ROWS
    assert [(g[0], g[1]) for g in got] == [(r[0], r[pos]) for r in rows]
    assert [str(g[2]) if g[2] is not None else None for g in got] == \
        [want[r[0]] if r[pos] is not None else None for r in rows]
    table = ds.dataset(str(out), format="parquet", partitioning="hive",
                       exclude_invalid_files=True).to_table().sort_by("id")
    assert table.num_rows == ROWS
    assert table.column(column).to_pylist() == [r[pos] for r in rows]
    assert table.column("id").to_pylist() == list(range(1, ROWS + 1))

    assert rivet("validate", "-c", cfg, check=0).returncode == 0
    checked = rivet("check", "-c", cfg, check=0)
    assert "partitions: " + key in checked.stdout + checked.stderr
    # a rerun works: new parts beside the old, the manifest names exactly its run's rows, validate stays clean
    again = run_json(cfg)
    assert again["exports"][0]["status"] == "succeeded", again
    m2 = manifest(out)
    assert m2["run_id"] != m["run_id"] and m2["row_count"] == ROWS
    assert rivet("validate", "-c", cfg, check=0).returncode == 0


def read_table_file(path: Path) -> pa.Table:
    import pyarrow.parquet as pq
    return pq.read_table(path)


def test_csv_partitions_on_mariadb(tmp_path, my_events):
    cfg = config(tmp_path, my_events, "mysql", "created_at", "month", fmt="csv")
    assert run_json(cfg)["exports"][0]["status"] == "succeeded"
    out = tmp_path / "out"
    import pyarrow.csv as pacsv
    ids = sorted(i for f in out.rglob("*.csv") for i in pacsv.read_csv(f).column("id").to_pylist())
    assert ids == list(range(1, ROWS + 1))   # (per file: the NULL partition's created_at column is all empty)
    assert all(p.parent.name.startswith("created_at_month=") for p in out.rglob("*.csv"))
    assert rivet("validate", "-c", cfg, check=0).returncode == 0


def test_non_temporal_column_is_refused(tmp_path, pg_events):
    cfg = config(tmp_path, pg_events, "postgres", "note", "day")
    proc = rivet("run", "-c", cfg, "--no-tui", "--json")
    assert proc.returncode == 5 and "RIVET_CONFIG_PARTITION_COLUMN" in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_granularity_without_partition_by_is_refused(tmp_path, pg_events):
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        pg_events.url, name="events", table="events", mode="full", extra='partition_granularity = "month"'))
    proc = rivet("check", "-c", cfg)
    assert proc.returncode == 1 and "partition_granularity" in proc.stdout + proc.stderr


def test_stdout_destination_is_refused(tmp_path, pg_events):
    text = export_config(pg_events.url, name="events", table="events", mode="full", extra='partition_by = "born"')
    cfg = write_config(tmp_path / "rivet.toml", text.replace('{ type = "local", path = "out" }', '{ type = "stdout" }'))
    proc = rivet("check", "-c", cfg)
    assert proc.returncode == 1 and "stdout destination cannot hold partitions" in proc.stdout + proc.stderr


def test_open_partitions_are_bounded(tmp_path):
    """At most max_open writers at once: the least recently written is closed (its part committed) first; a
    partition written again later gets a new part, and every row lands exactly once."""
    committed: list = []

    class Exp:
        partition_by, partition_granularity = "d", "day"

    schema = pa.schema([("id", pa.int64()), ("d", pa.date32())])
    opened: list[str] = []

    def open_writer(subdir: str) -> PartWriter:
        opened.append(subdir)
        return PartWriter("parquet", "zstd", schema, tmp_path, f"x{len(opened)}", None, committed.append,
                          subdir=subdir)

    w = PartitionedWriter(Exp(), open_writer, max_open=2)
    days = [dt.date(2024, 1, 1 + i % 5) for i in range(50)]
    for start in range(0, 50, 10):
        w.write(pa.record_batch([pa.array(range(start, start + 10)), pa.array(days[start:start + 10])],
                                schema=schema))
        assert len(w._open) <= 2
    parts = w.close()
    assert len(opened) > 5 and sum(p.rows for p in parts) == 50 and len(committed) == len(parts)
    ids = sorted(i for p in parts for i in read_table_file(p.local_path).column("id").to_pylist())
    assert ids == list(range(50))
    assert all(p.name.startswith("d_day=2024-01-0") for p in parts)


def test_chunked_partitions_reconcile_and_plan(tmp_path, pg_events):
    """A chunked export: each chunk task splits its window by partition; reconcile (nested part paths in the
    manifest) and validate stay clean; `rivet plan` names the partitioning."""
    extra = 'chunk_column = "id"\n        chunk_size = 100\n        partition_by = "created_at"\n' \
            '        partition_granularity = "month"'
    cfg = write_config(tmp_path / "rivet.toml", export_config(pg_events.url, name="events", table="events",
                                                               mode="chunked", extra=extra))
    planned = rivet("plan", "-c", cfg, check=0)
    assert "partitions: created_at_month=" in planned.stdout + planned.stderr
    result = run_json(cfg)
    assert result["exports"][0]["status"] == "succeeded", result
    out = tmp_path / "out"
    m = manifest(out)
    assert m["row_count"] == ROWS and {p["chunk_index"] for p in m["parts"]} == {0, 1, 2}
    assert all(p["partition"].startswith("created_at_month=") for p in m["parts"])
    assert rivet("reconcile", "-c", cfg, "-e", "events").returncode == 0
    assert rivet("validate", "-c", cfg).returncode == 0
    assert not (out / ".rivet-staging").exists()   # the partitions' spool folders are removed with the spool
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*), count(DISTINCT id) FROM read_parquet('{out}/**/*.parquet', "
                       "hive_partitioning=true)").fetchone() == (ROWS, ROWS)


def test_killed_partitioned_run_is_swept_and_rerun(tmp_path, pg_events):
    """SIGKILL while the 2nd part sits complete in its partition's spool folder (fault point mid_upload): no
    _SUCCESS; the next run sweeps that spool file and folder, and its manifest names every row exactly once."""
    cfg = config(tmp_path, pg_events, "postgres", "created_at", "month")
    out = tmp_path / "out"
    crashed = rivet("run", "-c", cfg, "--no-tui", "--json", env={"RIVET_FAULT_AT": "mid_upload",
                                                                  "RIVET_FAULT_AFTER": "2"})
    assert crashed.returncode == -9 and not (out / "_SUCCESS").exists()
    assert list((out / ".rivet-staging").rglob("*=*/*.parquet"))   # the killed part, in its partition's folder
    result = run_json(cfg)
    assert result["exports"][0]["status"] == "succeeded", result
    assert not (out / ".rivet-staging").exists()
    m = manifest(out)
    ids = sorted(i for p in m["parts"] for i in read_table_file(out / p["path"]).column("id").to_pylist())
    assert ids == list(range(1, ROWS + 1))
    assert rivet("validate", "-c", cfg).returncode == 0


def test_partitions_on_s3(tmp_path, pg, s3_bucket):
    """A cloud destination (S3 on moto): partition objects under the prefix, read back through the manifest."""
    from tests.cli.test_cloud import config as cloud_config
    from tests.cli.test_cloud import read_back
    pg.sql("DROP TABLE IF EXISTS cloud_items")
    pg.sql("CREATE TABLE cloud_items (id bigint PRIMARY KEY, v text, at timestamptz)")
    pg.sql("INSERT INTO cloud_items SELECT g, 'v' || g, CASE WHEN g % 50 = 0 THEN NULL ELSE "
           "timestamptz '2024-01-01 00:00:00+00' + g * interval '1 hour' END FROM generate_series(1, 1000) g")
    cfg = cloud_config(tmp_path, pg, s3_bucket, extra='partition_by = "at"')
    assert run_json(cfg)["exports"][0]["status"] == "succeeded"
    table, m, objects = read_back(s3_bucket)
    assert sorted(table.column("id").to_pylist()) == list(range(1, 1001))
    assert all(o.startswith("at_day=") for o in objects if o.endswith(".parquet"))
    assert "at_day=__HIVE_DEFAULT_PARTITION__" in {p["partition"] for p in m["parts"]}
    assert "_SUCCESS" in objects and "manifest.json" in objects
    assert rivet("validate", "-c", cfg).returncode == 0


@pytest.mark.parametrize("tz", [None, "UTC", "Europe/Berlin", "America/St_Johns"])
@pytest.mark.parametrize("granularity", ["day", "month", "year"])
def test_each_row_lands_in_the_partition_its_own_value_names(tz, granularity):
    """Rows are floored to their day/month/year and only the distinct starts are formatted (fast); every row must
    still land where formatting its own value would put it, in the zone's wall time, NULL apart."""
    import random
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    import pyarrow as pa
    import pyarrow.compute as pc

    from engine.layouts import HIVE_NULL, PARTITION_FORMATS, partitions_of
    rnd = random.Random(7)
    base = datetime(1999, 12, 31, 22, 0, tzinfo=timezone.utc)
    values = [None if rnd.random() < 0.05 else base + timedelta(minutes=rnd.randrange(0, 60 * 24 * 800))
              for _ in range(5000)]
    column = pa.array(values, pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us", tz=tz)) if tz else \
        pa.array([v.replace(tzinfo=None) if v else None for v in values], pa.timestamp("us"))
    expected = pc.fill_null(pc.strftime(column, format=PARTITION_FORMATS[granularity]), HIVE_NULL).to_pylist()
    got = [None] * len(values)
    for text, rows in partitions_of(SimpleNamespace(partition_granularity=granularity), column):
        for i in pc.indices_nonzero(rows).to_pylist():
            assert got[i] is None
            got[i] = text
    assert got == expected
