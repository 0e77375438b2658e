"""Compression and Parquet row groups (issue 16 step 1, docs/layouts.md): what was written is read back from the
Parquet footer (codec, row group sizes, writer), on PostgreSQL and MariaDB."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers import export_config, manifest, rivet, run_json, write_config

ROWS = 20000


def local(text: str) -> str:
    """environment = "local": no throttle (the production profile's throttle takes the normal read path)."""
    return text.replace("        url = ", '        environment = "local"\n        url = ', 1)


def cfg(tmp_path: Path, db, extra: str, source_type: str = "postgres", name: str = "items") -> Path:
    return write_config(tmp_path / "rivet.toml", local(export_config(db.url, source_type=source_type, name=name,
                                                                     table="items", mode="full", extra=extra)))


def footers(tmp_path: Path) -> list[pq.FileMetaData]:
    m = manifest(tmp_path / "out")
    return [pq.read_metadata(tmp_path / "out" / p["path"]) for p in m["parts"]]


def codecs(meta: pq.FileMetaData) -> set[str]:
    return {meta.row_group(g).column(c).compression for g in range(meta.num_row_groups)
            for c in range(meta.num_columns)}


def group_rows(meta: pq.FileMetaData) -> list[int]:
    return [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]


@pytest.fixture()
def items_pg(pg):
    pg.sql("DROP TABLE IF EXISTS items")
    pg.sql("CREATE TABLE items (id int PRIMARY KEY, name text, note text)")
    pg.sql(f"INSERT INTO items SELECT g, 'name ' || (g % 7), repeat(md5(g::text), 4) FROM generate_series(1, {ROWS}) g")
    return pg


@pytest.fixture()
def items_my(mysql):
    mysql.sql("DROP TABLE IF EXISTS items")
    mysql.sql("CREATE TABLE items (id int PRIMARY KEY, name varchar(20), note text)")
    mysql.sql(f"INSERT INTO items SELECT seq, CONCAT('name ', seq % 7), REPEAT(MD5(seq), 4) FROM seq_1_to_{ROWS}")
    return mysql


def test_default_is_zstd(tmp_path, items_pg):
    run_json(cfg(tmp_path, items_pg, ""))
    [meta] = footers(tmp_path)
    assert codecs(meta) == {"ZSTD"}
    assert meta.num_rows == ROWS


def test_row_group_rows_and_profile_are_honoured(tmp_path, items_pg):
    run_json(cfg(tmp_path, items_pg, 'compression_profile = "fast"\n        [exports.parquet]\n'
                                     '        row_group_rows = 4096'))
    [meta] = footers(tmp_path)
    assert codecs(meta) == {"SNAPPY"}
    sizes = group_rows(meta)
    assert sum(sizes) == ROWS and max(sizes) == 4096 and len(sizes) == -(-ROWS // 4096)


def test_row_group_rows_off_duckdbs_vector_size_is_written_exactly(tmp_path, items_pg):
    # 1,000 is no multiple of DuckDB's 2,048-row vectors: the groups are cut from the batches exactly
    run_json(cfg(tmp_path, items_pg, "[exports.parquet]\n        row_group_rows = 1000"))
    [meta] = footers(tmp_path)
    assert meta.created_by.startswith("parquet-cpp-arrow")
    assert group_rows(meta) == [1000] * (ROWS // 1000)


def test_zstd_level_is_applied(tmp_path, items_pg):
    sizes = {}
    for level in (1, 12):
        (tmp_path / str(level)).mkdir()
        run_json(cfg(tmp_path / str(level), items_pg, f"compression_level = {level}"))
        [meta] = footers(tmp_path / str(level))
        assert codecs(meta) == {"ZSTD"}
        sizes[level] = sum(p["size_bytes"] for p in manifest(tmp_path / str(level) / "out")["parts"])
    assert sizes[12] != sizes[1]   # the level reached the writer (zstd sizes are not monotonic in the level on small pages)


def test_query_export_row_groups_by_rows_are_exact(tmp_path, items_pg):
    # a query export; batches of 300 rows are gathered into groups of 1000
    text = export_config(items_pg.url, name="items", table="items", mode="full",
                         extra='compression = "gzip"\n        compression_level = 9\n        [exports.parquet]\n'
                               '        row_group_rows = 1000\n        [exports.tuning]\n        batch_size = 300')
    text = text.replace('table = "items"', 'query = "SELECT * FROM items ORDER BY id"')
    run_json(write_config(tmp_path / "rivet.toml", local(text)))
    [meta] = footers(tmp_path)
    assert meta.created_by.startswith("parquet-cpp-arrow")
    assert codecs(meta) == {"GZIP"}
    assert group_rows(meta) == [1000] * (ROWS // 1000)


def test_target_row_group_mb_gathers_batches_into_groups_of_that_size(tmp_path, items_pg):
    run_json(cfg(tmp_path, items_pg, "[exports.parquet]\n        target_row_group_mb = 1\n"
                                     "        [exports.tuning]\n        batch_size = 500"))
    [meta] = footers(tmp_path)
    assert meta.created_by.startswith("parquet-cpp-arrow")
    assert codecs(meta) == {"ZSTD"}
    sizes = group_rows(meta)
    assert sum(sizes) == ROWS and 1 < len(sizes) < ROWS // 500   # batches gathered into ~1 MB groups
    assert all(n % 500 == 0 for n in sizes[:-1])


def test_gzip_with_a_level_on_a_table_export(tmp_path, items_pg):
    run_json(cfg(tmp_path, items_pg, 'compression = "gzip"\n        compression_level = 1'))
    [meta] = footers(tmp_path)
    assert meta.created_by.startswith("parquet-cpp-arrow") and codecs(meta) == {"GZIP"}


def test_mariadb_row_groups_and_codecs(tmp_path, items_my):
    run_json(cfg(tmp_path, items_my, 'compression_profile = "compact"\n        [exports.parquet]\n'
                                     '        row_group_rows = 1500\n        [exports.tuning]\n        batch_size = 400',
                 source_type="mysql"))
    [meta] = footers(tmp_path)
    assert codecs(meta) == {"ZSTD"}
    assert group_rows(meta) == [1500] * (ROWS // 1500) + [ROWS % 1500]


def test_mariadb_default_and_target_mb(tmp_path, items_my):
    run_json(cfg(tmp_path, items_my, "[exports.parquet]\n        target_row_group_mb = 1\n"
                                     "        [exports.tuning]\n        batch_size = 500", source_type="mysql"))
    [meta] = footers(tmp_path)
    assert codecs(meta) == {"ZSTD"}
    sizes = group_rows(meta)
    assert sum(sizes) == ROWS and 1 < len(sizes) < ROWS // 500


def test_check_and_plan_show_the_layout(tmp_path, items_pg):
    c = cfg(tmp_path, items_pg, 'compression_profile = "compact"\n        [exports.parquet]\n'
                                '        row_group_rows = 1000')
    out = json.loads(rivet("check", "-c", c, "--json", check=0).stdout)
    assert out["exports"][0]["layout"] == ['parquet: zstd level 9 (profile "compact"), row groups of 1,000 rows']
    proc = rivet("plan", "-c", c, check=0)
    assert "parquet: zstd level 9" in proc.stderr and "row groups of 1,000 rows" in proc.stderr


@pytest.mark.parametrize("extra, key, words", [
    ("compression_level = 23", "compression_level", "out of range for zstd (1-22)"),
    ('compression = "gzip"\n        compression_level = 10', "compression_level", "out of range for gzip (1-9)"),
    ('compression = "snappy"\n        compression_level = 3', "compression_level", 'compression = "snappy" has no'),
    ('compression_profile = "fast"\n        compression_level = 3', "compression_level", "conflicts with"),
    ('compression_profile = "fast"\n        compression = "zstd"', "compression", "conflicts with"),
    ('compression_profile = "tiny"', "compression_profile", "tiny"),
    ('format = "csv"\n        [exports.parquet]\n        row_group_rows = 10', "parquet", 'needs format = "parquet"'),
    ("[exports.parquet]\n        row_group_rows = 10\n        target_row_group_mb = 1", "parquet", "keep one"),
    ("[exports.parquet]\n        row_group_rows = 0", "row_group_rows", "row_group_rows"),
])
def test_bad_layout_keys_are_refused(tmp_path, extra, key, words):
    c = write_config(tmp_path / "rivet.toml", export_config("postgresql://u@127.0.0.1/x", name="items",
                                                            table="items", mode="full", extra=extra))
    proc = rivet("check", "-c", c, check=1)
    assert words in proc.stderr and key in proc.stderr
