"""Foundation, end to end through the real `rivet` command: full exports from PostgreSQL and MariaDB."""
from __future__ import annotations

import hashlib
import json
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from tests.helpers import manifest, read_table, rivet, run_json, write_config


@pytest.fixture(scope="module")
def pg_orders(pg):
    pg.sql("DROP TABLE IF EXISTS orders")
    pg.sql("""CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int NOT NULL, status text NOT NULL,
              amount numeric(12,2) NOT NULL, created_at timestamp NOT NULL, note text, flag boolean NOT NULL)""")
    pg.sql("""INSERT INTO orders SELECT g, g % 97, (ARRAY['paid','shipped','new'])[1 + g % 3], g * 1.25,
              timestamp '2024-01-01' + g * interval '1 second' + interval '0.000123 second',
              CASE WHEN g % 10 = 0 THEN NULL WHEN g % 10 = 1 THEN '' ELSE 'note, "' || g || '"' END, g % 2 = 0
              FROM generate_series(1, 20000) g""")
    return pg


def pg_config(tmp_path, pg, fmt="parquet", extra="", table="orders"):
    return write_config(tmp_path / "rivet.toml", f"""
        [source]
        type = "postgres"
        url = "{pg.url}"

        [[exports]]
        name = "orders"
        table = "{table}"
        mode = "full"
        format = "{fmt}"
        destination = {{ type = "local", path = "out/orders" }}
        {extra}
        """)


def test_full_export_parquet_equals_source(tmp_path, pg_orders):
    cfg = pg_config(tmp_path, pg_orders)
    summary = run_json(cfg)
    [exp] = summary["exports"]
    assert exp["status"] == "succeeded" and exp["rows"] == 20000 and exp["files"] == 1 and exp["error"] is None
    out = tmp_path / "out/orders"
    table = read_table(out).sort_by("id")
    source = pg_orders.sql("SELECT id, customer_id, status, amount, created_at, note, flag FROM orders ORDER BY id")
    assert table.num_rows == len(source)
    got = list(zip(*[table.column(c).to_pylist() for c in table.column_names]))
    assert got == [tuple(r) for r in source]
    assert table.schema.field("amount").type.scale == 2
    assert table.schema.field("amount").metadata[b"rivet.native_type"] == b"numeric(12,2)"
    m = manifest(out)
    assert m["row_count"] == 20000 == pg_orders.sql("SELECT count(*) FROM orders")[0][0]
    assert m["status"] == "succeeded" and m["part_count"] == 1 and m["mode"] == "full"
    assert (out / f"manifest-{m['run_id']}.json").read_bytes() == (out / "manifest.json").read_bytes()
    success = (out / "_SUCCESS").read_text().strip()
    assert success == "sha256:" + hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    part = out / m["parts"][0]["path"]
    assert m["parts"][0]["content_hash"] == "sha256:" + hashlib.sha256(part.read_bytes()).hexdigest()
    assert pq.ParquetFile(part).metadata.num_rows == m["parts"][0]["rows"]


def test_csv_rules_and_rotation(tmp_path, pg_orders):
    cfg = pg_config(tmp_path, pg_orders, fmt="csv", extra='max_file_size = "200KB"\n        [exports.tuning]\n        batch_size = 2000')
    [exp] = run_json(cfg)["exports"]
    assert exp["files"] > 1
    out = tmp_path / "out/orders"
    parts = sorted(out.glob("*.csv"))
    assert all("_part" in p.name for p in parts)
    text = parts[0].read_text()
    header, first = text.splitlines()[:2]
    assert header == '"id","customer_id","status","amount","created_at","note","flag"'
    # row 1: empty string note → "" ; timestamps ISO 8601 with microseconds
    assert first == '1,1,"shipped",1.25,"2024-01-01T00:00:01.000123","",false'
    row10 = [line for line in text.splitlines() if line.startswith("10,")][0]
    assert row10.split(",")[5] == ""  # NULL → empty field
    assert sum(read_table(out).num_rows for _ in [0]) == 20000


def test_second_run_adds_parts_beside_old_ones(tmp_path, pg_orders):
    cfg = pg_config(tmp_path, pg_orders)
    first = run_json(cfg)["exports"][0]
    second = run_json(cfg)["exports"][0]
    assert first["run_id"] != second["run_id"]
    assert len(list((tmp_path / "out/orders").glob("*.parquet"))) == 2
    files = json.loads(rivet("state", "files", "-c", tmp_path / "rivet.toml", "--json", check=0).stdout)["files"]
    assert {f["run_id"] for f in files} == {first["run_id"], second["run_id"]}
    runs = json.loads(rivet("metrics", "-c", tmp_path / "rivet.toml", "-e", "orders", "--json", check=0).stdout)["runs"]
    assert [r["run_id"] for r in runs] == [second["run_id"], first["run_id"]]
    assert all(r["status"] == "succeeded" and r["rows"] == 20000 for r in runs)


def test_headless_progress_and_summary_on_stderr(tmp_path, pg_orders):
    cfg = pg_config(tmp_path, pg_orders)
    proc = rivet("run", "-c", cfg, "--no-tui", check=0)
    assert proc.stdout == ""
    assert "orders" in proc.stderr and "succeeded" in proc.stderr and "20,000" in proc.stderr


def test_global_options_before_and_after_subcommand(tmp_path, pg_orders):
    cfg = pg_config(tmp_path, pg_orders)
    rivet("-c", cfg, "run", "--no-tui", check=0)
    rivet("run", "--no-tui", "-c", cfg, check=0)


@pytest.fixture(scope="module")
def my_orders(mysql):
    mysql.sql("DROP TABLE IF EXISTS orders")
    mysql.sql("""CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT NOT NULL, status VARCHAR(16) NOT NULL,
                 amount DECIMAL(12,2) NOT NULL, created_at DATETIME(6) NOT NULL, note TEXT NULL, flag BOOLEAN NOT NULL)""")
    mysql.sql("""INSERT INTO orders SELECT seq, seq % 97, ELT(1 + seq % 3, 'paid','shipped','new'), seq * 1.25,
                 TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND + INTERVAL 123 MICROSECOND,
                 IF(seq % 10 = 0, NULL, CONCAT('note ', seq)), seq % 2 FROM seq_1_to_20000""")
    return mysql


def test_full_export_mariadb(tmp_path, my_orders):
    cfg = write_config(tmp_path / "rivet.toml", f"""
        [source]
        type = "mysql"
        url = "{my_orders.url}"

        [[exports]]
        name = "orders"
        table = "orders"
        mode = "full"
        destination = {{ type = "local", path = "out" }}
        """)
    [exp] = run_json(cfg)["exports"]
    assert exp["status"] == "succeeded" and exp["rows"] == 20000
    table = read_table(tmp_path / "out").sort_by("id")
    source = my_orders.sql("SELECT id, customer_id, status, amount, created_at, note, flag FROM orders ORDER BY id")
    got = list(zip(*[table.column(c).to_pylist() for c in table.column_names]))
    assert got == [tuple(r) for r in source]
    assert isinstance(got[0][3], Decimal)
    assert manifest(tmp_path / "out")["row_count"] == 20000


# A table of more than 1,000 pages is read by DuckDB's parallel table scan, a smaller one as a query
# (engine/sources/postgres.py `read`): each path refuses what no exact type holds, in its own way
BIG_TABLE_ROWS = 250_000     # two narrow columns: ~1,350 pages


def fill_past_one_ctid_range(pg, table: str, values: str) -> None:
    pg.sql(f"INSERT INTO {table} SELECT g, {values} FROM generate_series(100, {BIG_TABLE_ROWS}) g; ANALYZE {table}")
    assert pg.sql(f"SELECT pg_relation_size('{table}') / current_setting('block_size')::int")[0][0] > 1000


@pytest.mark.parametrize("big", [False, True], ids=["query", "table scan"])
def test_nan_in_bounded_numeric_is_refused(tmp_path, pg, big):
    """The query path guards NaN on the server; the table scan reads it as 0, so it watches the decimal columns for
    zeros and, when one appears, asks the server whether the column holds NaN."""
    pg.sql("DROP TABLE IF EXISTS nan_t")
    pg.sql("CREATE TABLE nan_t (id int PRIMARY KEY, n numeric(12,2))")
    pg.sql("INSERT INTO nan_t VALUES (1, 1.50), (2, 0), (3, 'NaN')")
    if big:
        fill_past_one_ctid_range(pg, "nan_t", "g % 100 + 0.25")
    cfg = pg_config(tmp_path, pg, table="nan_t")
    proc = rivet("run", "-c", cfg, "--no-tui", "--json")
    assert proc.returncode == 5
    err = json.loads(proc.stdout)["exports"][0]["error"]
    assert err["code"] == "RIVET_SOURCE_UNREPRESENTABLE" and "column n holds NaN" in err["error"]
    assert not list((tmp_path / "out/orders").glob("*.parquet"))   # the part of the failed read was not kept
    pg.sql("DELETE FROM nan_t WHERE id = 3")    # zeros alone are fine: the server confirms no NaN
    [exp] = run_json(cfg)["exports"]
    assert exp["rows"] == (BIG_TABLE_ROWS - 97 if big else 2)
    n = read_table(tmp_path / "out/orders").sort_by("id").column("n").to_pylist()
    assert n[:2] == [Decimal("1.50"), Decimal("0.00")]


@pytest.mark.parametrize("big", [False, True], ids=["query", "table scan"])
def test_infinity_timestamp_is_refused(tmp_path, pg, big):
    pg.sql("DROP TABLE IF EXISTS inf_t")
    pg.sql("CREATE TABLE inf_t (id int PRIMARY KEY, at timestamp)")
    pg.sql("INSERT INTO inf_t VALUES (1, '2024-01-01'), (2, 'infinity')")
    if big:
        fill_past_one_ctid_range(pg, "inf_t", "timestamp '2024-01-02' + g * interval '1 s'")
    proc = rivet("run", "-c", pg_config(tmp_path, pg, table="inf_t"), "--no-tui", "--json")
    assert proc.returncode == 5
    assert "column at holds infinity" in json.loads(proc.stdout)["exports"][0]["error"]["error"]
    assert not list((tmp_path / "out/orders").rglob("*.parquet"))


def test_parquet_rotation_of_a_full_export(tmp_path, pg_orders):
    cfg = pg_config(tmp_path, pg_orders, extra='max_file_size = "100KB"\n        [exports.tuning]\n        batch_size = 2000')
    [exp] = run_json(cfg)["exports"]
    out = tmp_path / "out/orders"
    parts = sorted(out.glob("*.parquet"))
    assert exp["files"] == len(parts) > 1 and all("_part" in p.name for p in parts)
    assert sorted(read_table(out).column("id").to_pylist()) == list(range(1, 20001))
    m = manifest(out)
    assert sum(p["rows"] for p in m["parts"]) == 20000
    assert pq.read_schema(parts[0]).field("amount").metadata[b"rivet.native_type"] == b"numeric(12,2)"
    assert not list(out.glob(".rivet-staging/*/*"))   # nothing left in the spool


def test_a_killed_runs_spool_files_are_swept_by_the_next_run(tmp_path, pg_orders):
    cfg = pg_config(tmp_path, pg_orders)
    killed = rivet("run", "-c", cfg, "--no-tui", env={"RIVET_FAULT_AT": "mid_upload"})
    assert killed.returncode == -9
    staging = tmp_path / "out/orders/.rivet-staging"
    assert list(staging.rglob("orders_*.parquet"))        # the part never reached its final name
    assert not list((tmp_path / "out/orders").glob("*.parquet"))
    run_json(cfg)
    assert not staging.exists() or not list(staging.rglob("*"))
    assert len(list((tmp_path / "out/orders").glob("*.parquet"))) == 1
