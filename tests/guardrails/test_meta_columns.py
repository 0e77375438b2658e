"""Meta columns `[exports.meta_columns]` (issue 15, docs/guardrails.md): `_rivet_exported_at` (one UTC instant per
run) and `_rivet_row_hash` (rivet-sha256-64 over the CSV text of the covered values), in Parquet and CSV."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.helpers import export_config, rivet, run_json, write_config


@pytest.fixture()
def things_pg(pg):
    pg.sql("DROP TABLE IF EXISTS things")
    pg.sql("CREATE TABLE things (id int PRIMARY KEY, name text, price numeric(10,2), at timestamptz, ok boolean,"
           " raw bytea)")
    pg.sql("""INSERT INTO things VALUES (1, 'a', 1.50, '2024-01-02 03:04:05.000006+00', true, '\\x00ff'),
              (2, '', NULL, NULL, false, NULL), (3, NULL, 0, '1999-12-31 23:59:59+00', NULL, '\\x')""")
    return pg


def config(tmp_path: Path, db, fmt: str, meta: str, source_type: str = "postgres", table: str = "things") -> Path:
    text = export_config(db.url, source_type=source_type, name="things", table=table, mode="full",
                         extra=f'format = "{fmt}"\n        [exports.meta_columns]\n        {meta}')
    text = text.replace('path = "out"', 'path = "out/{run_id}"')
    return write_config(tmp_path / f"rivet-{fmt}.toml", text)


def run_once(cfg: Path) -> tuple[pa.Table, dict, list[Path]]:
    run_id = run_json(cfg)["exports"][0]["run_id"]
    out = cfg.parent / "out" / run_id
    m = json.loads((out / "manifest.json").read_text())
    files = [out / p["path"] for p in m["parts"]]
    tables = [pq.read_table(f) if f.suffix == ".parquet" else pacsv.read_csv(f) for f in files]
    return pa.concat_tables(tables).sort_by("id"), m, files


def documented_hash(texts: list[str | None]) -> int:
    """docs/guardrails.md, "Recomputing the row hash", word for word."""
    enc = b"".join(b"~" if t is None else str(len(t.encode())).encode() + b":" + t.encode() for t in texts)
    return int.from_bytes(hashlib.sha256(enc).digest()[:8], "big", signed=True)


def csv_texts(path: Path) -> pa.Table:
    """The CSV fields as text: an empty field is NULL, a quoted "" is an empty string."""
    names = pacsv.read_csv(path).schema.names
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names}, strings_can_be_null=True, quoted_strings_can_be_null=False))


def test_parquet_meta_columns_have_documented_types_and_values(tmp_path, things_pg):
    cfg = config(tmp_path, things_pg, "parquet", "exported_at = true\n        row_hash = true")
    table, m, files = run_once(cfg)
    schema = pq.read_schema(files[0])
    assert schema.field("_rivet_exported_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("_rivet_row_hash").type == pa.int64()
    assert schema.names[-2:] == ["_rivet_exported_at", "_rivet_row_hash"]
    stamps = set(table.column("_rivet_exported_at").to_pylist())
    assert len(stamps) == 1
    (stamp,) = stamps
    assert stamp.isoformat().replace("+00:00", "Z") == m["meta_columns"]["exported_at"]["value"]
    rh = m["meta_columns"]["row_hash"]
    assert rh["algorithm"] == "rivet-sha256-64" and rh["type"] == "int64"
    assert rh["columns"] == ["id", "name", "price", "at", "ok", "raw"]
    assert None not in table.column("_rivet_row_hash").to_pylist()
    assert len(set(table.column("_rivet_row_hash").to_pylist())) == 3


def test_csv_row_hash_recomputes_from_the_fields_and_matches_parquet(tmp_path, things_pg):
    csv_table, m, files = run_once(config(tmp_path, things_pg, "csv", "row_hash = true\n        exported_at = true"))
    texts = pa.concat_tables([csv_texts(f) for f in files])
    cols = m["meta_columns"]["row_hash"]["columns"]
    for row in texts.to_pylist():
        assert documented_hash([row[c] for c in cols]) == int(row["_rivet_row_hash"])
    assert texts.column("_rivet_exported_at")[0].as_py().endswith("Z")
    pq_table, _, _ = run_once(config(tmp_path, things_pg, "parquet", "row_hash = true"))
    assert pq_table.column("_rivet_row_hash").to_pylist() == csv_table.column("_rivet_row_hash").to_pylist()
    assert "_rivet_exported_at" not in pq_table.schema.names


def test_row_hash_is_stable_for_identical_rows_and_changes_with_a_value(tmp_path, things_pg):
    cfg = config(tmp_path, things_pg, "parquet", 'row_hash = ["id", "name"]')
    first, m, _ = run_once(cfg)
    assert m["meta_columns"]["row_hash"]["columns"] == ["id", "name"]
    second, _, _ = run_once(cfg)
    assert first.column("_rivet_row_hash").to_pylist() == second.column("_rivet_row_hash").to_pylist()
    things_pg.sql("UPDATE things SET name = 'b' WHERE id = 1")
    things_pg.sql("UPDATE things SET price = 99 WHERE id = 2")       # not covered: its hash stays
    third, _, _ = run_once(cfg)
    before, after = first.column("_rivet_row_hash").to_pylist(), third.column("_rivet_row_hash").to_pylist()
    assert after[0] != before[0] and after[1:] == before[1:]
    assert after[0] == documented_hash(["1", "b"])
    # NULL and the empty string hash differently
    assert documented_hash(["2", ""]) == before[1] and documented_hash(["3", None]) == before[2]


def test_mariadb_meta_columns(tmp_path, mysql):
    mysql.sql("DROP TABLE IF EXISTS things")
    mysql.sql("CREATE TABLE things (id int PRIMARY KEY, name varchar(10), at datetime(6))")
    mysql.sql("INSERT INTO things VALUES (1, 'x', '2024-01-02 03:04:05.000006'), (2, NULL, NULL)")
    table, m, files = run_once(config(tmp_path, mysql, "csv", "exported_at = true\n        row_hash = true",
                                      source_type="mysql"))
    texts = csv_texts(files[0])
    for row in texts.to_pylist():
        assert documented_hash([row["id"], row["name"], row["at"]]) == int(row["_rivet_row_hash"])
    assert texts.column("at").to_pylist()[0] == "2024-01-02T03:04:05.000006"
    assert len(set(table.column("_rivet_exported_at").to_pylist())) == 1


def test_meta_columns_refused_on_unknown_or_clashing_columns(tmp_path, things_pg):
    cfg = config(tmp_path, things_pg, "parquet", 'row_hash = ["id", "nme"]')
    proc = rivet("run", "-c", cfg, "--no-tui", check=1)
    assert "RIVET_CONFIG_UNKNOWN_COLUMN" in proc.stderr and "did you mean 'name'" in proc.stderr
    things_pg.sql("DROP TABLE IF EXISTS clash")
    things_pg.sql("CREATE TABLE clash (id int PRIMARY KEY, _rivet_row_hash bigint)")
    proc = rivet("run", "-c", config(tmp_path, things_pg, "parquet", "row_hash = true", table="clash"),
                 "--no-tui", check=1)
    assert "RIVET_CONFIG_META_COLUMN" in proc.stderr
    proc = rivet("run", "-c", config(tmp_path, things_pg, "parquet", "row_hash = []"), "--no-tui", check=1)
    assert "row_hash needs at least one column" in proc.stderr
    check = rivet("check", "-c", config(tmp_path, things_pg, "csv", "exported_at = true\n        row_hash = true"),
                  check=0)
    assert "meta columns: _rivet_exported_at, _rivet_row_hash (all columns)" in check.stderr
