"""Part files as a reader of the lake sees them (engine/formats.py)."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from engine.formats import PartWriter

ROWS = 200_000


def test_strings_are_dictionary_encoded_only_where_values_repeat(tmp_path):
    """The choice is made on the first rows of a part (engine/formats.py DICTIONARY_SAMPLE_ROWS): a column of a few
    repeating values gets a dictionary, a column of distinct values is written plain, and both read back exactly."""
    statuses = ["paid", "shipped", "delivered", "cancelled", "refunded"]
    schema = pa.schema([("id", pa.int64()), ("status", pa.string()), ("note", pa.string())])
    batch = pa.record_batch([pa.array(range(ROWS)), pa.array([statuses[i % 5] for i in range(ROWS)]),
                             pa.array([f"ref {i:09d}" for i in range(ROWS)])], schema=schema)
    parts = []
    writer = PartWriter("parquet", "zstd", schema, tmp_path, "items", None, parts.append)
    writer.write(batch)
    writer.close()
    meta = pq.ParquetFile(parts[0].local_path).metadata
    encodings = {meta.schema.column(i).name: set(meta.row_group(0).column(i).encodings) for i in range(3)}
    assert "RLE_DICTIONARY" in encodings["status"] or "PLAIN_DICTIONARY" in encodings["status"]
    assert not encodings["note"] & {"RLE_DICTIONARY", "PLAIN_DICTIONARY"}
    assert pq.read_table(parts[0].local_path).equals(pa.Table.from_batches([batch]))
