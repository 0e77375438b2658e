"""Arrow batches → Parquet / CSV part files in a spool directory, rotated by size, hashed while written.

The writer never holds more than one batch; each finished part is handed to `on_part` (which commits it to the
destination) before the next one starts, so a long export keeps memory flat and commits as it goes.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
# pyarrow.compute builds its ~1,000 Python function wrappers when imported, ~60 ms of every process start: the
# Parquet path (and the PostgreSQL source's checks) call the few functions they need through call_function, and
# only the CSV conversions import the module.
from pyarrow._compute import call_function

from engine.errors import ExitClass, RivetError

# zstd level 3 with dictionary encoding only where it pays (low-cardinality strings) matched DuckDB's file size
# at half of pyarrow's default write time (docs/performance.md, "Readers and writer settings measured before the build").
ZSTD_LEVEL = 3
DICTIONARY_MAX_RATIO = 0.1
# ...judged on the first rows of a part: counting the distinct values of a whole first batch (~240 k rows) took
# 0.1-0.25 s per part on the writer's thread under load, paid again by every chunk
DICTIONARY_SAMPLE_ROWS = 32_768


@dataclass(frozen=True)
class PartFile:
    local_path: Path
    name: str            # final object name relative to the destination prefix
    rows: int
    size_bytes: int
    content_hash: str    # "sha256:<hex>" of the file bytes


class _HashingFile:
    """A write-only file that hashes and counts bytes as they pass (no second read of the part)."""

    def __init__(self, path: Path):
        self._f = open(path, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data) -> int:
        view = memoryview(data)
        self._f.write(view)
        self._hash.update(view)
        self.size += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        if not self.closed:
            self._f.flush()
            os.fsync(self._f.fileno())  # durable before it may be committed
            self._f.close()
            self.closed = True

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def part_basename(export: str, now: datetime | None = None, chunk_index: int | None = None) -> str:
    """<export>_<YYYYMMDD>_<HHMMSS>_<mmm>_<nonce>, with _chunk<idx> for chunk parts (README "Output layout and commit order")."""
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y%m%d_%H%M%S_") + f"{now.microsecond // 1000:03d}"
    chunk = f"_chunk{chunk_index}" if chunk_index is not None else ""
    return f"{export}{chunk}_{stamp}_{secrets.token_hex(3)}"


def is_part_of(export: str, filename: str) -> bool:
    """Whether a file name is one of `export`'s parts (and not, e.g., of an export named `<export>_chunked`)."""
    import re
    return re.match(rf"{re.escape(export)}(_chunk\d+)?_\d{{8}}_\d{{6}}_\d{{3}}_[0-9a-f]{{6}}", filename) is not None


def extension(fmt: str) -> str:
    return "parquet" if fmt == "parquet" else "csv"


# The Gregorian calendar repeats every 400 years (146,097 days). pyarrow formats dates exactly only between years
# -32767 and 32767 (year 100000 comes out as -31072, and a date32 beyond as '<value out of range: …>'): each value is
# moved by whole 400-year periods into 1970..2369, formatted there, and the periods are added back to its year.
_CYCLE_DAYS = 146_097
_US_PER_DAY = 86_400_000_000


def _iso_year(year: pa.Array) -> pa.Array:
    """ISO 8601 years: four digits for 0000..9999, a sign beyond them ('+100000', '-0043' = 44 BC: astronomical
    numbering, where year 0 is 1 BC)."""
    import pyarrow.compute as pc   # CSV only (see the imports)
    digits = pc.utf8_lpad(pc.cast(pc.abs(year), pa.string()), 4, "0")
    sign = pc.if_else(pc.less(year, 0), "-", pc.if_else(pc.greater(year, 9999), "+", ""))
    return pc.binary_join_element_wise(sign, digits, "")


def _iso_calendar(ticks: pa.Array, timestamp: bool, suffix: str = "") -> pa.Array:
    """ISO 8601 text of int64 microseconds (timestamp) or days since 1970-01-01, for any value:
    '2024-01-02T03:04:05.000006' / '2024-01-02'."""
    import pyarrow.compute as pc   # CSV only (see the imports)
    cycle = _CYCLE_DAYS * (_US_PER_DAY if timestamp else 1)
    periods = pc.divide(ticks, cycle)                 # truncates toward zero: |periods * cycle| <= |ticks|
    rest = pc.subtract(ticks, pc.multiply(periods, cycle))
    before = pc.less(rest, 0)
    rest = pc.if_else(before, pc.add(rest, cycle), rest)
    periods = pc.subtract(periods, pc.cast(before, pa.int64()))
    moved = rest.cast(pa.timestamp("us")) if timestamp else rest.cast(pa.int32()).cast(pa.date32())
    year = pc.add(pc.cast(pc.year(moved), pa.int64()), pc.multiply(periods, 400))
    tail = pc.utf8_slice_codeunits(moved.cast(pa.string()), 4)   # '-MM-DD' + ' HH:MM:SS.ffffff' for timestamps
    if timestamp:
        tail = pc.replace_substring(tail, " ", "T", max_replacements=1)
    return pc.binary_join_element_wise(_iso_year(year), tail, suffix, "")


def _plain_decimals(col: pa.Array) -> pa.Array:
    """Decimals as plain digits. pyarrow's writer prints a decimal with an exponent when its adjusted exponent is
    below -6 ('1E-10', '0E-10'), which only a scale above 6 allows: those columns are written as text (and so
    quoted, like every text value), the others stay numbers."""
    import pyarrow.compute as pc   # CSV only (see the imports)
    text = col.cast(pa.string())
    exponent = pc.fill_null(pc.match_substring(text, "E"), False)
    if not pc.any(exponent).as_py():
        return text
    plain = [format(v, "f") for v in pc.filter(col, exponent).to_pylist()]
    return pc.replace_with_mask(text, exponent, pa.array(plain, pa.string()))


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """CSV text of the types the CSV writer would render inexactly (docs/types.md): dates and timestamps in ISO 8601
    for every year ('T' separator, microseconds, 'Z' for instants), decimals without exponent, binary as hex."""
    cols = []
    for field, col in zip(batch.schema, batch.columns):
        t = field.type
        if pa.types.is_timestamp(t):   # an instant is written in UTC
            col = _iso_calendar(col.cast(pa.timestamp("us", tz=t.tz)).view(pa.int64()), True, "Z" if t.tz else "")
        elif pa.types.is_date(t):
            col = _iso_calendar(col.cast(pa.date32()).cast(pa.int32()).cast(pa.int64()), False)
        elif pa.types.is_time(t):   # 'HH:MM:SS' + the unit's fraction digits ('.ffffff' for microseconds)
            col = col.cast(pa.string())
        elif pa.types.is_decimal(t) and t.scale > 6:
            col = _plain_decimals(col)
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            col = pa.array([None if v is None else v.hex() for v in col.to_pylist()], pa.string())
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_struct(t):
            import json
            col = pa.array([None if v is None else json.dumps(v, default=str) for v in col.to_pylist()], pa.string())
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


def csv_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Every value as the text the CSV writer puts in its field (NULL stays null): `_csv_ready`, then the writer's own
    cast to string for the rest. The row hash (engine/guardrails.py) is computed over this text."""
    ready = _csv_ready(batch)
    return pa.RecordBatch.from_arrays([c if pa.types.is_string(c.type) else c.cast(pa.string()) for c in ready.columns],
                                      names=ready.schema.names)


class PartWriter:
    """Writes batches of one schema into rotated part files under `spool_dir`.

    `on_part(PartFile)` is called for each finished part (size limit reached, or close()).
    """

    def __init__(self, fmt: str, compression: str, schema: pa.Schema, spool_dir: Path, basename: str,
                 max_file_size: int | None, on_part: Callable[[PartFile], None], *,
                 compression_level: int | None = ZSTD_LEVEL, row_group_rows: int | None = None,
                 row_group_bytes: int | None = None, subdir: str = ""):
        self.fmt, self.compression, self.schema = fmt, compression, schema
        self.subdir = subdir   # a Hive partition directory (engine/layouts.py): part names carry it
        self.compression_level = compression_level
        # Row groups (docs/layouts.md): unset → one per batch; else batches are gathered until a group is full
        # (by rows, or by their in-memory Arrow bytes) and written as exactly that group.
        self.row_group_rows, self.row_group_bytes = row_group_rows, row_group_bytes
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = self._pending_bytes = 0
        self.spool_dir, self.basename, self.max_file_size = Path(spool_dir), basename, max_file_size
        self.on_part = on_part
        self.parts: list[PartFile] = []
        self._file: _HashingFile | None = None
        self._writer: pq.ParquetWriter | pacsv.CSVWriter | None = None   # set together with _file by _open
        self._rows = 0
        self._index = 0
        self._dictionary: list[str] | None = None

    @property
    def bytes_written(self) -> int:
        return sum(p.size_bytes for p in self.parts) + (self._file.size if self._file else 0)

    def _name(self) -> str:
        rotated = self.max_file_size is not None
        suffix = f"_part{self._index}" if rotated else ""
        folder = f"{self.subdir}/" if self.subdir else ""
        return f"{folder}{self.basename}{suffix}.{extension(self.fmt)}"

    def _choose_dictionary(self, batch: pa.RecordBatch | pa.Table) -> list[str]:
        chosen = []
        for field, col in zip(batch.schema, batch.columns):
            if (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)) and len(col):
                col = col.slice(0, DICTIONARY_SAMPLE_ROWS)
                if call_function("count_distinct", [col]).as_py() <= max(1, DICTIONARY_MAX_RATIO * len(col)):
                    chosen.append(field.name)
        return chosen

    def _open(self, first: pa.RecordBatch | pa.Table) -> None:
        self._index += 1
        name = self._name()
        (self.spool_dir / name).parent.mkdir(parents=True, exist_ok=True)
        self._file = _HashingFile(self.spool_dir / name)
        self._rows = 0
        if self.fmt == "parquet":
            if self._dictionary is None:
                self._dictionary = self._choose_dictionary(first)
            codec = None if self.compression == "none" else self.compression
            self._writer = pq.ParquetWriter(
                self._file, self.schema, compression=codec,
                compression_level=self.compression_level if codec in ("zstd", "gzip") else None,
                use_dictionary=self._dictionary or False, write_statistics=True, store_schema=True)
        else:
            csv_schema = _csv_ready(first.slice(0, 0)).schema
            self._writer = pacsv.CSVWriter(self._file, csv_schema, write_options=pacsv.WriteOptions(
                include_header=True, quoting_style="needed"))

    @property
    def _grouping(self) -> bool:
        return self.fmt == "parquet" and (self.row_group_rows is not None or self.row_group_bytes is not None)

    def write(self, batch: pa.RecordBatch) -> int:
        """Write one batch; returns the bytes added to disk by it (for progress)."""
        if batch.num_rows == 0:
            return 0
        if self._grouping:
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
            self._pending_bytes += batch.nbytes
            return self._flush_groups(final=False)
        return self._write_group(batch)

    def _flush_groups(self, final: bool) -> int:
        """Write every full row group gathered so far (and, when final, the remainder as the last one)."""
        added = 0
        if self.row_group_rows is not None:
            size = self.row_group_rows
            while self._pending_rows >= size or (final and self._pending_rows):
                table = pa.Table.from_batches(self._pending)
                take = min(size, table.num_rows)
                added += self._write_group(table.slice(0, take))
                rest = table.slice(take)
                self._pending = rest.to_batches() if rest.num_rows else []
                self._pending_rows, self._pending_bytes = rest.num_rows, rest.nbytes
        elif self._pending and (final or self._pending_bytes >= (self.row_group_bytes or 0)):
            added += self._write_group(pa.Table.from_batches(self._pending))
            self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        return added

    def _write_group(self, batch: pa.RecordBatch | pa.Table) -> int:
        if self._writer is None:
            self._open(batch)
        assert self._file is not None and self._writer is not None   # _open set both
        before = self._file.size
        try:
            if isinstance(batch, pa.Table):   # one gathered row group: exactly its rows
                assert isinstance(self._writer, pq.ParquetWriter)
                self._writer.write_table(batch, row_group_size=batch.num_rows)
            elif self.fmt == "parquet":
                self._writer.write_batch(batch)
            else:
                self._writer.write_batch(_csv_ready(batch))
        except OSError as exc:
            raise _disk_error(exc, self.spool_dir) from exc
        self._rows += batch.num_rows
        added = self._file.size - before
        if self.max_file_size is not None and self._file.size >= self.max_file_size:
            self._finish()
        return added

    def _finish(self) -> None:
        if self._writer is None:
            return
        assert self._file is not None   # _open sets _file before _writer
        try:
            self._writer.close()
            self._file.close()
        except OSError as exc:
            raise _disk_error(exc, self.spool_dir) from exc
        part = PartFile(self.spool_dir / self._name(), self._name(), self._rows, self._file.size, self._file.digest)
        self._writer = self._file = None
        self.parts.append(part)
        self.on_part(part)

    def close(self) -> list[PartFile]:
        if self._grouping:
            self._flush_groups(final=True)
        self._finish()
        return self.parts

    def abort(self) -> None:
        """Drop the unfinished part (an error happened mid-write): never commit half a file."""
        if self._file is not None:
            path = self.spool_dir / self._name()
            try:
                if self._writer is not None:
                    self._writer.close()
            except Exception:
                pass
            try:
                self._file.close()
            except Exception:
                pass
            path.unlink(missing_ok=True)
            self._writer = self._file = None
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0


def _disk_error(exc: OSError, where: Path) -> RivetError:
    import errno
    if exc.errno == errno.ENOSPC:
        return RivetError("RIVET_DEST_DISK_FULL", f"no space left on device while writing to {where}",
                          "free space or point the destination elsewhere; nothing was committed", ExitClass.TRANSIENT)
    return RivetError("RIVET_DEST_WRITE", f"cannot write to {where}: {exc.strerror or exc}",
                      "check the destination path and its permissions")
