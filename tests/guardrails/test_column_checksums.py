"""Column checksums `column_checksums = true` (issue 15, docs/guardrails.md): one order-independent checksum per
column per part and per run in the manifest; `rivet validate` recomputes them and names a tampered column."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.helpers import export_config, manifest, rivet, run_json, write_config


def documented_checksum(texts) -> str:
    """The algorithm exactly as docs/guardrails.md states it (texts: CSV texts, None for NULL)."""
    total = 0
    for t in texts:
        enc = b"~" if t is None else str(len(t.encode())).encode() + b":" + t.encode()
        total += int.from_bytes(hashlib.sha256(enc).digest()[:8], "big")
    return f"{total % 2**64:016x}"


@pytest.fixture()
def cs_pg(pg):
    pg.sql("DROP TABLE IF EXISTS cs_items")
    pg.sql("CREATE TABLE cs_items (id bigint PRIMARY KEY, name text, amount numeric(10,2))")
    pg.sql("INSERT INTO cs_items SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'n' || g END, g * 1.5"
           " FROM generate_series(1, 3000) g")
    return pg


def config(tmp_path, pg, extra="column_checksums = true"):
    return write_config(tmp_path / "rivet.toml", export_config(
        pg.url, name="cs", table="cs_items", mode="chunked", extra=f"chunk_size = 1000\n        {extra}"))


def parts_of(out: Path) -> list[Path]:
    return sorted(out.glob("*.parquet"))


def test_manifest_holds_checksums_per_part_and_run_and_validate_passes(tmp_path, cs_pg):
    cfg = config(tmp_path, cs_pg)
    run_json(cfg)
    m = manifest(tmp_path / "out")
    assert m["column_checksums"]["algorithm"] == "rivet-sum-sha256-64"
    assert len(m["parts"]) == 3 and all(set(p["column_checksums"]) == {"id", "name", "amount"} for p in m["parts"])
    ids = [str(i) for i in range(1, 3001)]
    names = [None if i % 7 == 0 else f"n{i}" for i in range(1, 3001)]
    assert m["column_checksums"]["columns"]["id"] == documented_checksum(ids)
    assert m["column_checksums"]["columns"]["name"] == documented_checksum(names)
    first = pq.read_table(tmp_path / "out" / m["parts"][0]["path"])
    assert m["parts"][0]["column_checksums"]["id"] == documented_checksum(str(v) for v in first["id"].to_pylist())
    proc = rivet("validate", "-c", cfg, "--json", check=0)
    assert json.loads(proc.stdout)["ok"] is True


def test_a_tampered_value_fails_validate_naming_part_and_column(tmp_path, cs_pg):
    cfg = config(tmp_path, cs_pg)
    run_json(cfg)
    part = parts_of(tmp_path / "out")[1]
    table = pq.read_table(part)
    names = table["name"].to_pylist()
    names[10] = "tampered"
    tampered = table.set_column(table.schema.get_field_index("name"), table.schema.field("name"),
                                pa.array(names, table.schema.field("name").type))
    pq.write_table(tampered.replace_schema_metadata(table.schema.metadata), part)
    assert pq.read_metadata(part).num_rows == table.num_rows
    proc = rivet("validate", "-c", cfg, "--json", check=3)
    failures = [f for r in json.loads(proc.stdout)["reports"] for f in r["failures"]]
    column = [f for f in failures if "checksum" in f["problem"]]
    assert len(column) == 1, failures
    assert column[0]["object"] == part.name and column[0]["problem"].startswith("column 'name': checksum")
    assert "column 'name'" in proc.stderr and part.name in proc.stderr


def test_order_of_rows_does_not_matter(tmp_path, cs_pg):
    cfg = config(tmp_path, cs_pg)
    run_json(cfg)
    part = parts_of(tmp_path / "out")[0]
    table = pq.read_table(part)
    pq.write_table(table.take(list(range(table.num_rows - 1, -1, -1))), part)   # reversed: same values
    proc = rivet("validate", "-c", cfg, "--json", check=3)   # the bytes differ …
    problems = [f["problem"] for r in json.loads(proc.stdout)["reports"] for f in r["failures"]]
    assert len(problems) == 1, problems                        # … but no column's values changed
    assert problems[0].endswith("(every column's checksum matches: the values are unchanged, the file was "
                                "re-encoded)")


def test_off_by_default_and_refused_for_csv(tmp_path, cs_pg):
    cfg = config(tmp_path, cs_pg, extra="")
    run_json(cfg)
    m = manifest(tmp_path / "out")
    assert "column_checksums" not in m and all("column_checksums" not in p for p in m["parts"])
    cfg = config(tmp_path, cs_pg, extra='column_checksums = true\n        format = "csv"')
    proc = rivet("run", "-c", cfg, "--no-tui", "--json", check=1)
    assert "RIVET_CONFIG_COLUMN_CHECKSUMS" in proc.stdout + proc.stderr
