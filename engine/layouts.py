"""How an export's files are laid out (docs/layouts.md): compression codec and level, Parquet row groups.

This module holds the configuration models (`[exports.parquet]`) and the rules that resolve the compression keys
into one codec + level; engine/config.py validates them as parts of an export, engine/formats.py honours them. It
sits just above the base layer (config imports it), so it imports no other engine module.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from engine.errors import ExitClass, RivetError

# The default (no compression keys written): zstd level 3, the measured-fastest writer setting at DuckDB's file size
# (engine/formats.py). Profiles name the usual trade-offs; "balanced" is exactly the default.
DEFAULT_ZSTD_LEVEL = 3
COMPRESSION_PROFILES: dict[str, tuple[str, int | None]] = {
    "fast": ("snappy", None),        # least CPU per byte written and read, largest files
    "balanced": ("zstd", DEFAULT_ZSTD_LEVEL),
    "compact": ("zstd", 9),          # smaller files for a few times the write CPU; reading costs the same
}
LEVEL_RANGES: dict[str, tuple[int, int]] = {"zstd": (1, 22), "gzip": (1, 9)}


def _invalid(reason: str) -> PydanticCustomError:
    # "invalid_value" is rendered by engine.config as "<key> <reason>"
    return PydanticCustomError("invalid_value", "{reason}", {"reason": reason})


class _Layout(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ParquetConfig(_Layout):
    """`[exports.parquet]`: row group size, by rows or by (uncompressed, in-memory) megabytes; at most one."""
    row_group_rows: int | None = Field(default=None, ge=1, le=2**31 - 1)
    target_row_group_mb: int | None = Field(default=None, ge=1, le=4096)

    @model_validator(mode="after")
    def _one(self) -> ParquetConfig:
        if self.row_group_rows is not None and self.target_row_group_mb is not None:
            raise _invalid("sets both row_group_rows and target_row_group_mb: keep one")
        return self

    def describe(self) -> list[str]:
        if self.row_group_rows is not None:
            return [f"row groups of {self.row_group_rows:,} rows"]
        if self.target_row_group_mb is not None:
            return [f"row groups of ~{self.target_row_group_mb} MB (uncompressed)"]
        return []


class LayoutError(ValueError):
    """A layout key that contradicts another; engine.config turns it into RIVET_CONFIG_* with the key's line."""

    def __init__(self, code: str, key: str, message: str, hint: str):
        super().__init__(message)
        self.code, self.key, self.message, self.hint = code, key, message, hint


def resolve_compression(fmt: str, compression: str | None, level: int | None,
                        profile: str | None) -> tuple[str, int | None]:
    """(codec, level) from the written keys. Unset everything → zstd 3 for Parquet, none for CSV (unchanged).
    A profile picks both and conflicts with an explicit compression or compression_level; a level is validated
    against its codec (zstd 1-22, gzip 1-9; the other codecs have none)."""
    if profile is not None:
        if fmt != "parquet":
            raise LayoutError("RIVET_CONFIG_CSV_COMPRESSION", "compression_profile",
                              f'format = "{fmt}" cannot use compression_profile', "csv is written uncompressed")
        for key, value in (("compression_level", level), ("compression", compression)):
            if value is not None:
                raise LayoutError("RIVET_CONFIG_COMPRESSION_CONFLICT", key,
                                  f'compression_profile = "{profile}" conflicts with {key} = {value!r}',
                                  f"the profile sets both codec and level ({describe_profiles()}): "
                                  "keep the profile or the explicit keys")
        return COMPRESSION_PROFILES[profile]
    codec = compression or ("zstd" if fmt == "parquet" else "none")
    if level is None:
        return codec, DEFAULT_ZSTD_LEVEL if codec == "zstd" else None
    if codec not in LEVEL_RANGES:
        raise LayoutError("RIVET_CONFIG_COMPRESSION_LEVEL", "compression_level",
                          f'compression = "{codec}" has no compression_level',
                          "levels exist for zstd (1-22) and gzip (1-9); remove compression_level")
    lo, hi = LEVEL_RANGES[codec]
    if not lo <= level <= hi:
        raise LayoutError("RIVET_CONFIG_COMPRESSION_LEVEL", "compression_level",
                          f"compression_level = {level} is out of range for {codec} ({lo}-{hi})",
                          f"{codec} levels go from {lo} (fastest) to {hi} (smallest)")
    return codec, level


def describe_profiles() -> str:
    return ", ".join(f"{name} = {codec}" + (f" {lvl}" if lvl is not None else "")
                     for name, (codec, lvl) in COMPRESSION_PROFILES.items())


def check_format(fmt: str, parquet: ParquetConfig | None) -> None:
    if parquet is not None and fmt != "parquet":
        raise LayoutError("RIVET_CONFIG_INVALID", "parquet", f'[exports.parquet] needs format = "parquet" '
                          f'(format is "{fmt}")', 'remove [exports.parquet] or set format = "parquet"')


DUCKDB_VECTOR_ROWS = 2048


def describe(exp: Any) -> list[str]:
    """One line per layout setting, for `rivet check` and `rivet plan`."""
    lines = []
    reads = []
    if getattr(exp, "max_value_mb", None):
        reads.append(f"values <= {exp.max_value_mb} MB (checked by the server)")
    if getattr(exp, "max_batch_memory_mb", None):
        reads.append(f"batches <= {exp.max_batch_memory_mb} MB ({exp.on_batch_memory_exceeded})")
    if reads:
        lines.append("reads: " + ", ".join(reads))
    lines += describe_partitions(exp)
    if exp.format != "parquet":
        return lines
    level = getattr(exp, "compression_level", None)
    profile = getattr(exp, "compression_profile", None)
    parts = [exp.compression + (f" level {level}" if level is not None else "")
             + (f' (profile "{profile}")' if profile else "")]
    parquet: ParquetConfig | None = getattr(exp, "parquet", None)
    if parquet is not None:
        parts += parquet.describe()
    return ["parquet: " + ", ".join(parts)] + lines


# ---------------------------------------------------------------------------------------------------------------
# Memory-bounded reads (docs/layouts.md "Memory-bounded reads"): a per-value ceiling checked by the server, and a
# per-batch memory ceiling that warns, fails, or shrinks the rows per batch for the rest of the read.

VALUE_TOO_LARGE = "RIVET_SOURCE_VALUE_TOO_LARGE"
BATCH_TOO_LARGE = "RIVET_SOURCE_BATCH_TOO_LARGE"
GUARD_PREFIX = "_rivet_len_"          # the read schema's guard columns (dropped before writing)
GUARD_KEY = b"rivet.value_guard"      # field metadata: the column a guard column measures
DUCKDB_PIECE_ROWS = DUCKDB_VECTOR_ROWS


def check_memory_keys(e: Any) -> None:
    """`on_batch_memory_exceeded` means nothing without `max_batch_memory_mb`: refuse it rather than ignore it."""
    if "on_batch_memory_exceeded" in e.model_fields_set and e.max_batch_memory_mb is None:
        raise LayoutError("RIVET_CONFIG_INVALID", "on_batch_memory_exceeded",
                          "on_batch_memory_exceeded needs max_batch_memory_mb", "add max_batch_memory_mb = 256")


def is_large_value(t: Any) -> bool:
    import pyarrow as pa
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
                or pa.types.is_large_binary(t))


def guard_field(i: int, column: str) -> Any:
    import pyarrow as pa
    return pa.field(f"{GUARD_PREFIX}{i}", pa.int64(), metadata={GUARD_KEY: column.encode()})


def guard_columns(schema: Any) -> list[tuple[str, str]]:
    """(guard column, measured column) of a read schema."""
    return [(f.name, f.metadata[GUARD_KEY].decode()) for f in schema
            if f.name.startswith(GUARD_PREFIX) and f.metadata and GUARD_KEY in f.metadata]


def value_too_large(export: str, column: str, size: int, limit_mb: int) -> RivetError:
    return RivetError(VALUE_TOO_LARGE, f"export {export!r}: column {column!r} holds a value of {size:,} bytes "
                      f"({size / 1048576:.1f} MB), above max_value_mb = {limit_mb}",
                      f"raise max_value_mb, leave the column out (columns = {{ {column} = \"skip\" }}) or export "
                      "it through a query that truncates it; no _SUCCESS is written", ExitClass.REFUSED)


def check_values(batch: Any, guards: list[tuple[str, str]], export: str, limit_mb: int) -> Any:
    """Refuse the export when the server measured a value above the ceiling (it sent NULL in its place); return
    the batch without its guard columns."""
    import pyarrow.compute as pc
    for guard, column in guards:
        col = batch.column(guard)
        if col.null_count < len(col):
            raise value_too_large(export, column, int(pc.max(col).as_py()), limit_mb)
    return batch.drop_columns([g for g, _ in guards])


class BatchBudget:
    """Rows per batch a source hands over, read at every batch boundary: auto_shrink halves it mid-read."""

    def __init__(self, rows: int):
        self.rows = max(1, int(rows))

    def halve(self) -> int:
        self.rows = max(1, self.rows // 2)
        return self.rows


def regroup(pieces: Any, budget: BatchBudget) -> Any:
    """Batches of `budget.rows` rows (as it stands when each batch starts) out of a stream of small pieces (DuckDB's
    2,048-row vectors); a piece larger than the budget is sliced, never copied."""
    import pyarrow as pa
    pending: list = []
    n = 0
    for piece in pieces:
        off = 0
        while off < piece.num_rows:
            take = min(max(budget.rows - n, 1), piece.num_rows - off)
            pending.append(piece.slice(off, take))
            n += take
            off += take
            if n >= budget.rows:
                yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)
                pending, n = [], 0
    if pending:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)


def batch_memory_message(exp: Any, rows: int, nbytes: int, shrunk_to: int | None) -> str:
    what = f"a batch of {rows:,} rows holds {nbytes / 1048576:.1f} MB, above max_batch_memory_mb = " \
           f"{exp.max_batch_memory_mb}"
    if shrunk_to is not None:
        return f"{what}: batches halved to {shrunk_to:,} rows for the rest of the read"
    return f"{what} (on_batch_memory_exceeded = \"{exp.on_batch_memory_exceeded}\")"


def batch_too_large(exp: Any, rows: int, nbytes: int) -> RivetError:
    return RivetError(BATCH_TOO_LARGE, batch_memory_message(exp, rows, nbytes, None),
                      "lower [exports.tuning] batch_size, raise max_batch_memory_mb, or set "
                      'on_batch_memory_exceeded = "auto_shrink"; no _SUCCESS is written', ExitClass.REFUSED)


# ---------------------------------------------------------------------------------------------------------------
# Shape drift (docs/layouts.md "Shape drift"): the largest byte length of every text/binary column, measured as
# written, kept beside the export's schema in state (export_schema.columns[].max_bytes, a running maximum), and a
# warning when a run's maximum grows past shape_drift_warn_factor times the stored one.

DEFAULT_SHAPE_DRIFT_FACTOR = 10.0


def measure_bytes(batch: Any, into: dict[str, int]) -> None:
    from pyarrow._compute import call_function   # every batch: not pyarrow.compute (engine/formats.py says why)
    for f, col in zip(batch.schema, batch.columns):
        if is_large_value(f.type) and col.null_count < len(col):
            m = call_function("max", [call_function("binary_length", [col])]).as_py()
            if m is not None and m > into.get(f.name, -1):
                into[f.name] = int(m)


def merge_max(into: dict[str, int], other: dict[str, int]) -> None:
    for k, v in other.items():
        if v > into.get(k, -1):
            into[k] = v


def shape_drift(stored: Any, measured: dict[str, int], factor: float) -> list[str]:
    """One warning per column whose largest value grew past `factor` times the stored maximum (a stored maximum of
    0, only empty values so far, has no scale to compare with)."""
    if not stored or factor <= 0:
        return []
    out = []
    for c in stored.get("columns", []):
        old, new = c.get("max_bytes"), measured.get(c["name"])
        if old and new is not None and new > factor * old:
            out.append(f"shape drift: column {c['name']!r} now holds a value of {new:,} bytes, {new / old:.1f}x the "
                       f"stored maximum of {old:,} bytes (shape_drift_warn_factor = {factor:g})")
    return out


def schema_columns(mappings: Any, stored: Any, measured: dict[str, int]) -> list[dict]:
    """export_schema.columns for the commit: name, type, and max_bytes (the running maximum) where known."""
    prior = {c["name"]: c.get("max_bytes") for c in (stored or {}).get("columns", [])}
    cols = []
    for m in mappings:
        col: dict[str, Any] = {"name": m.name, "type": m.native_type}
        known = [v for v in (prior.get(m.name), measured.get(m.name)) if v is not None]
        if known:
            col["max_bytes"] = max(known)
        cols.append(col)
    return cols


# ---------------------------------------------------------------------------------------------------------------
# Hive partitions (docs/layouts.md "Hive partitions"): parts under `<column>_<granularity>=<value>/`, one PartWriter
# per open partition, at most MAX_OPEN_PARTITIONS open (the least recently written one is closed, which commits its
# part, when another is needed). The directory key is not the column's own name: a Hive reader (DuckDB, pyarrow)
# would otherwise put the directory's truncated text in place of, or in conflict with, the column's exact value.

PARTITION_FORMATS = {"day": "%Y-%m-%d", "month": "%Y-%m", "year": "%Y"}
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
MAX_OPEN_PARTITIONS = 16
PARTITION_COLUMN = "RIVET_CONFIG_PARTITION_COLUMN"


def check_partition_keys(e: Any) -> None:
    if "partition_granularity" in e.model_fields_set and e.partition_by is None:
        raise LayoutError("RIVET_CONFIG_INVALID", "partition_granularity", "partition_granularity needs partition_by",
                          'add partition_by = "created_at" (a date or timestamp column)')
    if e.partition_by is not None and getattr(e.destination, "type", None) == "stdout":
        raise LayoutError("RIVET_CONFIG_INVALID", "partition_by", "a stdout destination cannot hold partitions",
                          "write to local, s3, gcs or azure, or remove partition_by")


def partition_key(exp: Any) -> str:
    """The directory key: `created_at_day`, `created_at_month`, `created_at_year`."""
    return f"{exp.partition_by}_{exp.partition_granularity}"


def check_partition_column(exp: Any, schema: Any) -> None:
    """partition_by must name a written date or timestamp column (known once the source is described)."""
    import pyarrow as pa
    if exp.partition_by is None:
        return
    if exp.partition_by not in schema.names:
        raise RivetError(PARTITION_COLUMN, f"partition_by = {exp.partition_by!r} is not a column of the export",
                         f"columns: {', '.join(schema.names)}", ExitClass.USAGE)
    t = schema.field(exp.partition_by).type
    if not (pa.types.is_timestamp(t) or pa.types.is_date(t)):
        raise RivetError(PARTITION_COLUMN, f"partition_by = {exp.partition_by!r} is of type {t}, not a date or "
                         "timestamp", "partition by a date or timestamp column (partitions by distinct values of "
                         "other types are not supported)", ExitClass.REFUSED)


def partitions_of(exp: Any, column: Any) -> Iterator[tuple[str, Any]]:
    """(partition text, row mask) for each partition a batch's `column` holds: the date/timestamp at the
    granularity (a timestamp with a time zone in that zone's wall time, as stored), NULL → HIVE_NULL.

    Each row is floored to the start of its day/month/year and only the few distinct starts are formatted:
    formatting every row (`strftime`) was most of what partitioning cost (make bench: 2.2 s of 5 M rows)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if pa.types.is_timestamp(column.type) and column.type.tz is not None:
        column = pc.local_timestamp(column)   # the wall time: a zone's midnight can be ambiguous, its wall time not
    starts = pc.floor_temporal(column, unit=exp.partition_granularity)
    for start in pc.unique(starts):
        if start.is_valid:
            yield pc.strftime(start, format=PARTITION_FORMATS[exp.partition_granularity]).as_py(), \
                pc.equal(starts, start)
        else:
            yield HIVE_NULL, pc.is_null(starts)


def describe_partitions(exp: Any) -> list[str]:
    if getattr(exp, "partition_by", None) is None:
        return []
    return [f"partitions: {partition_key(exp)}=<{exp.partition_by} by {exp.partition_granularity}>/ "
            f"(hive; NULL → {HIVE_NULL})"]


class PartitionedWriter:
    """Splits each batch by partition value and writes each slice through that partition's writer (made by
    `open_writer(subdir)`); at most `max_open` writers are open, the least recently written one is closed first.
    A partition opened again later gets a new writer (a new part name: `open_writer` names each uniquely)."""

    def __init__(self, exp: Any, open_writer: Any, max_open: int = MAX_OPEN_PARTITIONS):
        self.exp, self.open_writer, self.max_open = exp, open_writer, max(1, max_open)
        self.key = partition_key(exp)
        self._open: dict[str, Any] = {}          # insertion order = least recently written first
        self._closed: list[Any] = []

    @property
    def parts(self) -> list:
        return [p for w in self._closed for p in w.parts] + [p for w in self._open.values() for p in w.parts]

    def write(self, batch: Any) -> int:
        if batch.num_rows == 0:
            return 0
        added = 0
        for value, rows in partitions_of(self.exp, batch.column(self.exp.partition_by)):
            piece = batch.filter(rows)
            subdir = f"{self.key}={value}"
            writer = self._open.pop(subdir, None)
            if writer is None:
                while len(self._open) >= self.max_open:
                    self._close(next(iter(self._open)))
                writer = self.open_writer(subdir)
            self._open[subdir] = writer            # now the most recently written
            added += writer.write(piece)
        return added

    def _close(self, subdir: str) -> None:
        writer = self._open.pop(subdir)
        self._closed.append(writer)
        writer.close()

    def close(self) -> list:
        while self._open:
            self._close(next(iter(self._open)))
        return self.parts

    def abort(self) -> None:
        for w in self._open.values():
            w.abort()
        self._open.clear()
