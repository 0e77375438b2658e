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
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from engine.errors import ExitClass, RivetError

# zstd level 3 with dictionary encoding only where it pays (low-cardinality strings) matched DuckDB's file size
# at half of pyarrow's default write time (notes/bench-peers.md §6).
ZSTD_LEVEL = 3
DICTIONARY_MAX_RATIO = 0.1


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
    """<export>_<YYYYMMDD>_<HHMMSS>_<mmm>_<nonce>, with _chunk<idx> for chunk parts (SPEC §3)."""
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


def _csv_ready(batch: pa.RecordBatch) -> pa.RecordBatch:
    """SPEC §3 CSV: timestamps ISO 8601 with microseconds ('T' separator, 'Z' for UTC); binary as hex."""
    cols = []
    for field, col in zip(batch.schema, batch.columns):
        t = field.type
        if pa.types.is_timestamp(t):
            fmt = "%Y-%m-%dT%H:%M:%S" + ("Z" if t.tz in ("UTC", "+00:00", "Etc/UTC") else ("%z" if t.tz else ""))
            col = pc.strftime(col.cast(pa.timestamp("us", tz=t.tz)), format=fmt)
        elif pa.types.is_time(t):
            col = pc.strftime(col.cast(pa.time64("us")), format="%H:%M:%S")
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            col = pa.array([None if v is None else v.hex() for v in col.to_pylist()], pa.string())
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_struct(t):
            import json
            col = pa.array([None if v is None else json.dumps(v, default=str) for v in col.to_pylist()], pa.string())
        cols.append(col)
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


class PartWriter:
    """Writes batches of one schema into rotated part files under `spool_dir`.

    `on_part(PartFile)` is called for each finished part (size limit reached, or close()).
    """

    def __init__(self, fmt: str, compression: str, schema: pa.Schema, spool_dir: Path, basename: str,
                 max_file_size: int | None, on_part: Callable[[PartFile], None]):
        self.fmt, self.compression, self.schema = fmt, compression, schema
        self.spool_dir, self.basename, self.max_file_size = Path(spool_dir), basename, max_file_size
        self.on_part = on_part
        self.parts: list[PartFile] = []
        self._file: _HashingFile | None = None
        self._writer = None
        self._rows = 0
        self._index = 0
        self._dictionary: list[str] | None = None

    @property
    def bytes_written(self) -> int:
        return sum(p.size_bytes for p in self.parts) + (self._file.size if self._file else 0)

    def _name(self) -> str:
        rotated = self.max_file_size is not None
        suffix = f"_part{self._index}" if rotated else ""
        return f"{self.basename}{suffix}.{extension(self.fmt)}"

    def _choose_dictionary(self, batch: pa.RecordBatch) -> list[str]:
        chosen = []
        for field, col in zip(batch.schema, batch.columns):
            if (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)) and len(col):
                if pc.count_distinct(col).as_py() <= max(1, DICTIONARY_MAX_RATIO * len(col)):
                    chosen.append(field.name)
        return chosen

    def _open(self, first: pa.RecordBatch) -> None:
        self._index += 1
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        name = self._name()
        self._file = _HashingFile(self.spool_dir / name)
        self._rows = 0
        if self.fmt == "parquet":
            if self._dictionary is None:
                self._dictionary = self._choose_dictionary(first)
            codec = None if self.compression == "none" else self.compression
            self._writer = pq.ParquetWriter(
                self._file, self.schema, compression=codec,
                compression_level=ZSTD_LEVEL if codec == "zstd" else None,
                use_dictionary=self._dictionary or False, write_statistics=True, store_schema=True)
        else:
            csv_schema = _csv_ready(first.slice(0, 0)).schema
            self._writer = pacsv.CSVWriter(self._file, csv_schema, write_options=pacsv.WriteOptions(
                include_header=True, quoting_style="needed"))

    def write(self, batch: pa.RecordBatch) -> int:
        """Write one batch; returns the bytes added to disk by it (for progress)."""
        if batch.num_rows == 0:
            return 0
        if self._writer is None:
            self._open(batch)
        before = self._file.size
        try:
            if self.fmt == "parquet":
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


def _disk_error(exc: OSError, where: Path) -> RivetError:
    import errno
    if exc.errno == errno.ENOSPC:
        return RivetError("RIVET_DEST_DISK_FULL", f"no space left on device while writing to {where}",
                          "free space or point the destination elsewhere; nothing was committed", ExitClass.TRANSIENT)
    return RivetError("RIVET_DEST_WRITE", f"cannot write to {where}: {exc.strerror or exc}",
                      "check the destination path and its permissions")
