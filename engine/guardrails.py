"""Per-export guardrails (docs/guardrails.md): quality gates, meta columns, column checksums, settle, run reports,
notifications.

This module holds the configuration models (`[exports.quality]`, `[exports.meta_columns]`, `settle`,
`[notifications]`, validated by engine/config.py) and all the logic; the run path calls it from a few marked hooks
(engine/run/runner.py, engine/run/task.py, engine/run/commit.py, engine/planner.py; engine/validate.py rechecks
column checksums). It sits just above the base layer (config imports its models), so it imports nothing but the
base layer (errors, secrets): destinations, the source's clock and the CSV renderer are handed in by the callers.

Quality gates are evaluated after every part of a run is committed and logged, before the manifest:

- row counts come from the file log (each part's rows are counted as it is written): nothing is read back;
- null ratios and uniqueness are measured by DuckDB over the run's parts, one part at a time: a local part is read
  where it lies, a cloud part is streamed back into a temporary file and deleted after its pass. Null counts are
  summed per part; the gated unique columns are appended to a disk-backed DuckDB table (memory_limit bounded,
  spilling to its temp directory) and grouped once at the end. Memory stays bounded; the read-back costs one
  download of the run's parts, paid only when a column gate is configured.

A failed gate fails the run with exit 3 (RIVET_QUALITY_GATE_FAILED): the manifest is written with status failed,
no _SUCCESS, the cursor and committed boundary do not move.
"""
from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import statistics
import tempfile
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from engine.errors import ExitClass, RivetError

EXPORTED_AT = "_rivet_exported_at"
ROW_HASH = "_rivet_row_hash"
META_NAMES = (EXPORTED_AT, ROW_HASH)
ROW_HASH_ALGORITHM = "rivet-sha256-64"
ROW_HASH_DESCRIPTION = ("first 8 bytes of SHA-256 as a big-endian signed int64, over the concatenation, in the "
                        "listed column order, of each value's encoding: NULL -> '~'; otherwise "
                        "'<UTF-8 byte length>:<text>', where text is the value exactly as rivet writes it to CSV")
QUALITY_ERROR = "RIVET_QUALITY_GATE_FAILED"


def _tuples(data: Any, key: str) -> Any:
    """TOML arrays arrive as lists; the strict frozen models want tuples."""
    if isinstance(data, dict) and isinstance(data.get(key), list):
        return {**data, key: tuple(data[key])}
    return data


def _invalid(reason: str) -> PydanticCustomError:
    # "invalid_value" is rendered by engine.config as "<key> <reason>"
    return PydanticCustomError("invalid_value", "{reason}", {"reason": reason})


class _Guard(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)



class QualityConfig(_Guard):
    """`[exports.quality]`: gates a run must pass before its _SUCCESS is written."""
    row_count_min: int | None = Field(default=None, ge=0)
    row_count_max: int | None = Field(default=None, ge=0)
    null_ratio_max: dict[str, float] = {}          # column → largest allowed share of NULLs (0..1)
    unique_columns: tuple[str, ...] = ()           # together a key: no two rows may share their values

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data: Any) -> Any:   # TOML arrays arrive as lists; strict mode wants the tuple
        data = _tuples(data, "unique_columns")
        if isinstance(data, dict) and isinstance(data.get("null_ratio_max"), dict):
            data = {**data, "null_ratio_max": {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                                               for k, v in data["null_ratio_max"].items()}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> QualityConfig:
        if self.row_count_min is not None and self.row_count_max is not None \
                and self.row_count_min > self.row_count_max:
            raise _invalid(f"row_count_min ({self.row_count_min}) is above row_count_max ({self.row_count_max})")
        for col, ratio in self.null_ratio_max.items():
            if not 0.0 <= ratio <= 1.0:
                raise _invalid(f"null_ratio_max.{col} must be a ratio between 0 and 1, got {ratio}")
        if any(not c for c in list(self.null_ratio_max) + list(self.unique_columns)):
            raise _invalid("column names must not be empty")
        if len(set(self.unique_columns)) != len(self.unique_columns):
            raise _invalid("unique_columns names a column twice")
        return self

    @property
    def columns(self) -> list[str]:
        """Columns the gates read (beyond row counts)."""
        return list(dict.fromkeys([*self.null_ratio_max, *self.unique_columns]))

    def describe(self) -> list[str]:
        gates = []
        if self.row_count_min is not None:
            gates.append(f"row_count >= {self.row_count_min}")
        if self.row_count_max is not None:
            gates.append(f"row_count <= {self.row_count_max}")
        gates += [f"null_ratio({c}) <= {r:g}" for c, r in self.null_ratio_max.items()]
        if self.unique_columns:
            gates.append(f"unique({', '.join(self.unique_columns)})")
        return gates


class MetaColumnsConfig(_Guard):
    """`[exports.meta_columns]`: columns rivet adds to every row."""
    exported_at: bool = False
    row_hash: bool | tuple[str, ...] = False

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data: Any) -> Any:
        return _tuples(data, "row_hash")

    @model_validator(mode="after")
    def _consistent(self) -> MetaColumnsConfig:
        if isinstance(self.row_hash, tuple):
            if not self.row_hash:
                raise _invalid("row_hash needs at least one column (or true for all columns)")
            if any(not c or not isinstance(c, str) for c in self.row_hash):
                raise _invalid("row_hash column names must be non-empty strings")
            if len(set(self.row_hash)) != len(self.row_hash):
                raise _invalid("row_hash names a column twice")
            if set(self.row_hash) & set(META_NAMES):
                raise _invalid("row_hash cannot cover rivet's own meta columns")
        return self

    @property
    def enabled(self) -> bool:
        return self.exported_at or self.row_hash is not False

    def describe(self) -> list[str]:
        out = [EXPORTED_AT] if self.exported_at else []
        if self.row_hash is True:
            out.append(f"{ROW_HASH} (all columns)")
        elif self.row_hash:
            out.append(f"{ROW_HASH} ({', '.join(self.row_hash)})")
        return out


def describe(exp: Any) -> list[str]:
    """One line per configured guardrail, for `rivet check`."""
    lines = []
    quality: QualityConfig | None = getattr(exp, "quality", None)
    meta: MetaColumnsConfig | None = getattr(exp, "meta_columns", None)
    if quality is not None and quality.describe():
        lines.append("quality gates: " + "; ".join(quality.describe()))
    if meta is not None and meta.enabled:
        lines.append("meta columns: " + ", ".join(meta.describe()))
    if getattr(exp, "column_checksums", False):
        lines.append(f"column checksums: {CHECKSUM_ALGORITHM}")
    if exp.settle:
        lines.append(f"settle: rows younger than {format_duration(exp.settle)} on the source's clock held back")
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Before a run: every gated or hashed column exists, and nothing collides with a meta column.

def precheck(exp: Any, data_columns: Sequence[str], dest_kind: str) -> None:
    """Refuse (exit 1) before any row is read: a gate or hash over a column the export does not write, a source
    column named like a meta column, a column gate on stdout (its bytes cannot be read back)."""
    quality: QualityConfig | None = getattr(exp, "quality", None)
    meta: MetaColumnsConfig | None = getattr(exp, "meta_columns", None)
    names = list(data_columns)
    written = set(names)
    if meta is not None and meta.enabled:
        clash = [n for n in META_NAMES if n in written]
        if clash:
            raise RivetError("RIVET_CONFIG_META_COLUMN", f"export {exp.name!r}: the source already has a column "
                             f"named {clash[0]!r}", "rename it in the query, or drop [exports.meta_columns]")
        missing = [c for c in hash_columns(meta, names) if c not in written]
        if missing:
            raise _unknown(exp.name, "meta_columns.row_hash", missing[0], names)
        written |= set(output_names(meta))
    if getattr(exp, "column_checksums", False):
        if exp.format != "parquet" or dest_kind == "stdout":
            raise RivetError("RIVET_CONFIG_COLUMN_CHECKSUMS", f"export {exp.name!r}: column_checksums needs "
                             "format = \"parquet\" and a file destination (the parts are read back)",
                             "remove column_checksums, or write Parquet to a local or cloud destination")
    if quality is not None:
        missing = [c for c in quality.columns if c not in written]
        if missing:
            raise _unknown(exp.name, "quality", missing[0], sorted(written))
        if quality.columns and dest_kind == "stdout":
            raise RivetError("RIVET_CONFIG_QUALITY_STDOUT", f"export {exp.name!r}: null_ratio_max and "
                             "unique_columns cannot be evaluated on a stdout destination (nothing to read back)",
                             "keep only row_count_min/row_count_max, or write to a file destination")


def _unknown(export: str, key: str, column: str, names: Sequence[str]) -> RivetError:
    import difflib
    close = difflib.get_close_matches(column, list(names), n=1)
    return RivetError("RIVET_CONFIG_UNKNOWN_COLUMN", f"export {export!r}: {key} names column {column!r}, which the "
                      "export does not write", f"did you mean {close[0]!r}?" if close else
                      "columns: " + ", ".join(list(names)[:20]))


# ---------------------------------------------------------------------------------------------------------------
# Quality gates.

class PartSource(Protocol):
    """What the gates need of a destination (engine.destinations.Destination)."""
    kind: str

    def local_copy(self, name: str, into: Path) -> tuple[Path, bool]: ...


@dataclass
class GateResult:
    gate: str                 # row_count_min | row_count_max | null_ratio_max | unique_columns
    column: str | None
    measured: float | int
    limit: float | int | None
    passed: bool
    message: str

    def to_dict(self) -> dict:
        return {"gate": self.gate, "column": self.column, "measured": self.measured, "limit": self.limit,
                "passed": self.passed, "message": self.message}


@dataclass
class QualityReport:
    rows: int
    results: list[GateResult] = field(default_factory=list)

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    def to_manifest(self) -> dict:
        return {"passed": not self.failed, "rows": self.rows, "gates": [r.to_dict() for r in self.results]}


def evaluate_quality(q: QualityConfig, fmt: str, parts: Sequence[Any], dest: PartSource) -> QualityReport:
    """Measure every gate over the run's committed parts (`parts`: file-log rows: path, rows)."""
    rows = sum(int(p["rows"]) for p in parts)
    report = QualityReport(rows)
    if q.row_count_min is not None:
        ok = rows >= q.row_count_min
        report.results.append(GateResult("row_count_min", None, rows, q.row_count_min, ok,
                                         f"row_count {rows} {'meets' if ok else 'below'} minimum {q.row_count_min}"))
    if q.row_count_max is not None:
        ok = rows <= q.row_count_max
        report.results.append(GateResult("row_count_max", None, rows, q.row_count_max, ok,
                                         f"row_count {rows} {'within' if ok else 'above'} maximum {q.row_count_max}"))
    if q.columns:
        nulls, duplicates = _measure(q, fmt, parts, dest)
        for col, limit in q.null_ratio_max.items():
            ratio = nulls[col] / rows if rows else 0.0
            ok = ratio <= limit
            report.results.append(GateResult(
                "null_ratio_max", col, round(ratio, 6), limit, ok,
                f"null_ratio({col}) {ratio:.4g} ({nulls[col]} of {rows} rows) "
                f"{'within' if ok else 'above'} maximum {limit:g}"))
        if q.unique_columns:
            key = ", ".join(q.unique_columns)
            ok = duplicates == 0
            report.results.append(GateResult(
                "unique_columns", key, duplicates, 0, ok,
                f"unique({key}): {duplicates} duplicate row(s)" if not ok else f"unique({key}): no duplicates"))
    return report


def quality_error(export: str, report: QualityReport) -> RivetError | None:
    failed = report.failed
    if not failed:
        return None
    return RivetError(QUALITY_ERROR, f"export {export!r}: quality gate failed: {'; '.join(r.message for r in failed)}",
                      "nothing was certified (manifest status failed, no _SUCCESS, cursor unchanged); fix the source "
                      "data or the gate in [exports.quality], then run again", ExitClass.INTEGRITY)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _measure(q: QualityConfig, fmt: str, parts: Sequence[Any], dest: PartSource) -> tuple[dict[str, int], int]:
    """Null counts per gated column (summed per part) and duplicate rows over unique_columns (one GROUP BY over a
    disk-backed table of just those columns)."""
    import duckdb
    nulls = dict.fromkeys(q.null_ratio_max, 0)
    uniq = list(q.unique_columns)
    with _workdir() as work:
        con = duckdb.connect(str(work / "gates.duckdb"))
        try:
            con.execute(f"SET memory_limit = '256MB'; SET temp_directory = '{work / 'spill'}'; SET threads = 2; "
                        "SET preserve_insertion_order = false")
            created = False
            for p in parts:
                path, temporary = dest.local_copy(p["path"], work)
                try:
                    scan = _scan(fmt, path)
                    if nulls:
                        counts = con.execute("SELECT " + ", ".join(f"count(*) - count({_q(c)})" for c in nulls)
                                             + f" FROM {scan}").fetchone()
                        assert counts is not None
                        for c, n in zip(list(nulls), counts):
                            nulls[c] += int(n)
                    if uniq:
                        cols = ", ".join(_q(c) for c in uniq)
                        if not created:
                            con.execute(f"CREATE TABLE keys AS SELECT {cols} FROM {scan} WHERE false")
                            created = True
                        not_null = " AND ".join(f"{_q(c)} IS NOT NULL" for c in uniq)
                        con.execute(f"INSERT INTO keys SELECT {cols} FROM {scan} WHERE {not_null}")
                finally:
                    if temporary:
                        path.unlink(missing_ok=True)
            duplicates = 0
            if uniq and created:
                cols = ", ".join(_q(c) for c in uniq)
                row = con.execute(f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM keys "
                                  f"GROUP BY {cols} HAVING count(*) > 1)").fetchone()
                duplicates = int(row[0]) if row else 0
        finally:
            con.close()
    return nulls, duplicates


def _scan(fmt: str, path: Path) -> str:
    lit = "'" + str(path).replace("'", "''") + "'"
    if fmt == "parquet":
        return f"read_parquet({lit})"
    # rivet's CSV: NULL = empty field, empty string = "" (allow_quoted_nulls off keeps "" a value)
    return (f"read_csv({lit}, header = true, all_varchar = true, allow_quoted_nulls = false, delim = ',', "
            "quote = '\"', escape = '\"')")


@contextmanager
def _workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="rivet-gates-"))
    try:
        (d / "spill").mkdir()
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Meta columns.

def hash_columns(meta: MetaColumnsConfig, data_columns: Sequence[str]) -> list[str]:
    if meta.row_hash is True:
        return [c for c in data_columns if c not in META_NAMES]
    return list(meta.row_hash) if meta.row_hash else []


def output_names(meta: MetaColumnsConfig) -> list[str]:
    return ([EXPORTED_AT] if meta.exported_at else []) + ([ROW_HASH] if meta.row_hash is not False else [])


def output_schema(schema: Any, meta: MetaColumnsConfig | None) -> Any:
    """The written schema: the data columns, then the meta columns (timestamp[us, UTC], int64)."""
    import pyarrow as pa
    if meta is None or not meta.enabled:
        return schema
    note = {b"rivet.native_type": b"rivet meta column"}
    if meta.exported_at:
        schema = schema.append(pa.field(EXPORTED_AT, pa.timestamp("us", tz="UTC"), metadata=note))
    if meta.row_hash is not False:
        schema = schema.append(pa.field(ROW_HASH, pa.int64(), metadata=note))
    return schema


def add_meta_columns(batch: Any, meta: MetaColumnsConfig | None, exported_at: datetime, columns: Sequence[str],
                     as_text: Callable[[Any], Any]) -> Any:
    """Append the meta columns to a batch. `as_text(batch)`: the batch with every value rendered as the CSV
    writer renders it (engine.formats.csv_text)."""
    import pyarrow as pa
    if meta is None or not meta.enabled:
        return batch
    arrays, names = list(batch.columns), list(batch.schema.names)
    if meta.exported_at:
        arrays.append(pa.array([exported_at] * batch.num_rows, pa.timestamp("us", tz="UTC")))
        names.append(EXPORTED_AT)
    if meta.row_hash is not False:
        arrays.append(row_hashes(as_text(batch.select(list(columns)))))
        names.append(ROW_HASH)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def row_hashes(texts: Any) -> Any:
    """ROW_HASH_DESCRIPTION over a batch whose columns are all strings (NULL = null)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    pieces = []
    for col in texts.columns:
        col = col.cast(pa.string())
        length = pc.cast(pc.binary_length(col), pa.string())
        encoded = pc.binary_join_element_wise(length, col, ":")
        pieces.append(pc.fill_null(encoded, "~"))
    if not pieces:
        return pa.nulls(texts.num_rows, pa.int64())
    joined = pieces[0] if len(pieces) == 1 else pc.binary_join_element_wise(*pieces, "")
    sha = hashlib.sha256
    return pa.array([int.from_bytes(sha(v.encode()).digest()[:8], "big", signed=True) for v in joined.to_pylist()],
                    pa.int64())


def meta_manifest(meta: MetaColumnsConfig, exported_at: datetime, columns: Sequence[str]) -> dict:
    out: dict[str, Any] = {}
    if meta.exported_at:
        out["exported_at"] = {"column": EXPORTED_AT, "type": "timestamp[us, UTC]",
                              "value": exported_at.isoformat().replace("+00:00", "Z")}
    if meta.row_hash is not False:
        out["row_hash"] = {"column": ROW_HASH, "type": "int64", "algorithm": ROW_HASH_ALGORITHM,
                           "description": ROW_HASH_DESCRIPTION, "columns": list(columns)}
    return out





# ---------------------------------------------------------------------------------------------------------------
# Settle (incremental exports).

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NOW_SQL = {"postgres": "SELECT now()", "mysql": "SELECT NOW(6)", "mssql": "SELECT SYSUTCDATETIME()"}


def settle_seconds(value: Any) -> int:
    """`settle = "1h"` → 3600. A duration string: one or more <integer><unit> with unit s, m, h or d ("90s",
    "1h30m", "2d"); at least 1 s. (pydantic BeforeValidator for [[exports]] settle.)"""
    import re
    if not isinstance(value, str):
        raise _invalid('must be a duration string such as "30m", "1h" or "1h30m"')
    text = value.strip().lower()
    parts = re.findall(r"(\d+)\s*([smhd])", text)
    if not parts or re.sub(r"\s", "", text) != "".join(n + u for n, u in parts):
        raise _invalid(f'{value!r} is not a duration: use <number><unit> with unit s, m, h or d, e.g. "1h30m"')
    seconds = sum(int(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds < 1:
        raise _invalid("must be at least 1s")
    return seconds


def format_duration(seconds: int) -> str:
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"


def settle_horizon(export: str, engine: str, settle_s: int, cursor: str, arrow_type: Any,
                   scalar: Callable[[str], Any]) -> datetime:
    """now() on the SOURCE's clock minus `settle_s`, in the cursor's own kind of timestamp (rivet's source sessions
    run in UTC, so a naive timestamp cursor is compared in UTC). Rows whose cursor is above it are held back."""
    import pyarrow as pa
    from datetime import timedelta, timezone
    if not pa.types.is_timestamp(arrow_type):
        raise RivetError("RIVET_CONFIG_SETTLE_CURSOR", f"export {export!r}: settle needs a timestamp cursor, "
                         f"{cursor!r} is {arrow_type}",
                         "remove settle, or use a timestamp column (e.g. updated_at) as cursor_column")
    now = scalar(_NOW_SQL[engine])
    if not isinstance(now, datetime):
        raise RivetError("RIVET_SOURCE_CLOCK", f"export {export!r}: the source's clock returned {now!r}",
                         "this is a bug in rivet; report it", ExitClass.INTERNAL)
    horizon = now - timedelta(seconds=settle_s)
    if arrow_type.tz is not None:
        return horizon.astimezone(timezone.utc) if horizon.tzinfo else horizon.replace(tzinfo=timezone.utc)
    return horizon.astimezone(timezone.utc).replace(tzinfo=None) if horizon.tzinfo else horizon


# ---------------------------------------------------------------------------------------------------------------
# Column checksums.

CHECKSUM_ALGORITHM = "rivet-sum-sha256-64"
CHECKSUM_DESCRIPTION = ("per column: the sum modulo 2^64 over every value of the first 8 bytes of the SHA-256 of the "
                        "value's row-hash encoding (NULL -> '~'; otherwise '<UTF-8 byte length>:<text>', text as "
                        "rivet writes the value to CSV), read as a big-endian unsigned int64; written as 16 "
                        "lowercase hex digits. Order-independent: a run's checksum is the sum of its parts'.")
_MASK64 = (1 << 64) - 1
_CHECKSUM_BATCH = 65_536


def column_sums(parquet: Any, as_text: Callable[[Any], Any]) -> dict[str, int]:
    """CHECKSUM_DESCRIPTION over one Parquet part (a path or a file object), every column, read in batches of
    _CHECKSUM_BATCH rows: memory holds one batch. `as_text`: engine.formats.csv_text.

    `pre_buffer=False`: by default pyarrow buffers the whole file's columns before the first batch, so memory grew
    with the part (peak RSS 338 → 517 MiB from 5 M to 20 M rows, make bench 2026-12-01)."""
    import pyarrow.parquet as pq
    f = pq.ParquetFile(parquet, pre_buffer=False)
    sums = dict.fromkeys(f.schema_arrow.names, 0)
    sha = hashlib.sha256
    for batch in f.iter_batches(batch_size=_CHECKSUM_BATCH):
        texts = as_text(batch)
        for name, col in zip(texts.schema.names, texts.columns):
            encoded = _encode(col)
            sums[name] = (sums[name] + sum(int.from_bytes(sha(v).digest()[:8], "big")
                                           for v in encoded.to_pylist())) & _MASK64
    return sums


def _encode(col: Any) -> Any:
    """The row-hash encoding of each value of a string column, as binary."""
    import pyarrow as pa
    import pyarrow.compute as pc
    col = col.cast(pa.string())
    length = pc.cast(pc.binary_length(col), pa.string())
    return pc.fill_null(pc.binary_join_element_wise(length, col, ":"), "~").cast(pa.binary())


def hex64(value: int) -> str:
    return f"{value & _MASK64:016x}"


def add_sums(total: dict[str, int], part: dict[str, int]) -> None:
    for k, v in part.items():
        total[k] = (total.get(k, 0) + v) & _MASK64


def part_checksums(parts: Sequence[Any], dest: PartSource, as_text: Callable[[Any], Any]
                   ) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Column checksums of every part (`parts`: file-log rows), each read back one at a time (a cloud part through a
    temporary file, deleted after), and of the run (their sum). Returns ({part path: {column: hex}}, {column: hex})."""
    per_part: dict[str, dict[str, str]] = {}
    run: dict[str, int] = {}
    with _workdir() as work:
        for p in parts:
            path, temporary = dest.local_copy(p["path"], work)
            try:
                sums = column_sums(path, as_text)
            finally:
                if temporary:
                    path.unlink(missing_ok=True)
            per_part[p["path"]] = {k: hex64(v) for k, v in sums.items()}
            add_sums(run, sums)
    return per_part, {k: hex64(v) for k, v in run.items()}


def checksums_manifest(run: dict[str, str]) -> dict:
    return {"algorithm": CHECKSUM_ALGORITHM, "description": CHECKSUM_DESCRIPTION, "columns": run}

# ---------------------------------------------------------------------------------------------------------------
# Notifications.

NOTIFY_EVENTS = ("failure", "schema_change", "quality", "degraded")
NOTIFY_TIMEOUT_S = 5.0
NOTIFY_ATTEMPTS = 3                     # a connection error, a timeout or a 5xx is tried again, at most this often
NOTIFY_BACKOFF_S = (0.5, 1.0)           # pauses between the attempts


class NotificationsConfig(_Guard):
    """`[notifications]`: one webhook POST per export run that meets one of the `on` events."""
    webhook_url_env: str = Field(min_length=1)
    format: str = "slack"
    on: tuple[str, ...] = ("failure",)

    @model_validator(mode="before")
    @classmethod
    def _lists(cls, data: Any) -> Any:
        return _tuples(data, "on")

    @model_validator(mode="after")
    def _consistent(self) -> NotificationsConfig:
        if self.format not in ("slack", "json"):
            raise _invalid(f"format must be \"slack\" or \"json\", got {self.format!r}")
        unknown = [e for e in self.on if e not in NOTIFY_EVENTS]
        if unknown:
            raise _invalid(f"on: unknown event {unknown[0]!r} (events: {', '.join(NOTIFY_EVENTS)})")
        if not self.on:
            raise _invalid("on needs at least one event")
        if not all(c.isalnum() or c == "_" for c in self.webhook_url_env):
            raise _invalid("webhook_url_env is the NAME of an environment variable holding the URL, not the URL")
        return self

    def describe(self) -> list[str]:
        return [f"{self.format} webhook from ${self.webhook_url_env} on {', '.join(self.on)}"]


SLOW_FACTOR = 2.0          # "degraded" when a run takes more than this times the median of its recent runs ...
SLOW_MIN_EXTRA_MS = 1000   # ... and at least this much longer (a 40 ms export taking 90 ms is not news)
SLOW_HISTORY = 5           # recent successful runs compared with; fewer than 3 say nothing


def slow_reason(duration_ms: int, previous_ms: Sequence[int]) -> str | None:
    """Why a successful run counts as slow, or None: measured against the median of the export's recent runs."""
    if len(previous_ms) < 3:
        return None
    median = statistics.median(previous_ms)
    if median <= 0 or duration_ms <= SLOW_FACTOR * median or duration_ms - median < SLOW_MIN_EXTRA_MS:
        return None
    return (f"slow: {duration_ms / 1000:.1f} s, {duration_ms / median:.1f}x the median of its last "
            f"{len(previous_ms)} runs ({median / 1000:.1f} s)")


def run_events(status: str, error_code: str | None, schema_changed: bool, retries: int, warnings: int,
               slow: bool = False) -> list[str]:
    """The notification events a finished export run meets, most specific first (a run notifies once, with the
    first of these its config subscribes to). A skipped or stopped run meets none."""
    if status in ("failed", "refused"):
        if error_code == QUALITY_ERROR:
            return ["quality", "failure"]
        if error_code == "RIVET_SCHEMA_DRIFT":
            return ["schema_change", "failure"]
        return ["failure"]
    if status == "succeeded":
        out = ["schema_change"] if schema_changed else []
        if retries or warnings or slow:
            out.append("degraded")
        return out
    return []


def notification_payload(n: NotificationsConfig, event: str, result: dict) -> dict:
    """The POST body. `result`: ExportResult.to_dict(). "json": the facts as fields; "slack": `text` (and blocks)
    as Slack incoming webhooks (and Mattermost, Teams workflows, Discord's /slack endpoint) accept."""
    err = result.get("error") or None
    facts = {"export": result["name"], "run_id": result.get("run_id"), "status": result["status"], "event": event,
             "error_code": err["code"] if err else None, "error_message": err["error"] if err else None,
             "rows": result.get("rows", 0), "files": result.get("files", 0), "duration_ms": result.get("duration_ms", 0),
             "retries": result.get("retries", 0), "warnings": list(result.get("warnings") or []),
             "slow": result.get("slow")}
    if n.format == "json":
        return {"source": "rivet", **facts}
    title = {"failure": "failed", "quality": "failed a quality gate", "schema_change": "saw a schema change",
             "degraded": "succeeded, degraded (retries, warnings or slow)"}[event]
    text = (f"rivet: export {facts['export']} {title} (run {facts['run_id'] or '-'}, {facts['rows']:,} rows, "
            f"{facts['duration_ms'] / 1000:.1f} s)")
    if err:
        detail = f"{facts['error_code']}: {facts['error_message']}"
    else:
        notes = [f"{facts['retries']} retried attempt(s)"] if facts["retries"] else []
        notes += [facts["slow"]] if facts["slow"] else []
        detail = "; ".join(notes + facts["warnings"])
    if detail:
        text += "\n" + detail
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


def webhook_url(n: NotificationsConfig, environ: Any) -> str | None:
    """The URL from its environment variable, registered with engine.secrets so no message ever shows it."""
    from engine.secrets import register
    url = environ.get(n.webhook_url_env) or None
    register(url)
    return url


def deliver(url: str, payload: dict, timeout_s: float = NOTIFY_TIMEOUT_S, attempts: int = NOTIFY_ATTEMPTS,
            backoff_s: Sequence[float] = NOTIFY_BACKOFF_S) -> str | None:
    """POST `payload` as JSON; returns None when delivered (2xx), else why not (never the URL). A connection error,
    a timeout or a 5xx is tried again up to `attempts` times; a 4xx is not."""
    import time
    import urllib.error
    import urllib.request
    from engine.secrets import redact
    body = json.dumps(payload).encode()
    why = "not attempted"
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff_s[min(attempt - 1, len(backoff_s) - 1)])
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "rivet"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:   # noqa: S310 (the user's webhook)
                resp.read(65536)
            return None
        except urllib.error.HTTPError as e:
            why = f"HTTP {e.code}"
            if e.code < 500:
                break
        except (urllib.error.URLError, OSError, ValueError) as e:   # refused, DNS, timeout, a malformed URL
            reason = getattr(e, "reason", e)
            why = type(reason).__name__ if isinstance(reason, BaseException) and not str(reason) else str(reason)
    return redact(f"{why} after {attempt + 1} attempt(s)").replace(url, "***")


def notify(n: NotificationsConfig | None, result: dict, schema_changed: bool, environ: Any) -> str | None:
    """The notifications hook of a finished export run: POST once when the run meets a subscribed event.
    Returns a warning when the webhook could not be reached (never raises: a notification never fails a run)."""
    if n is None:
        return None
    events = run_events(result["status"], (result.get("error") or {}).get("code"), schema_changed,
                        int(result.get("retries") or 0), len(result.get("warnings") or []), bool(result.get("slow")))
    event = next((e for e in events if e in n.on), None)
    if event is None:
        return None
    url = webhook_url(n, environ)
    if url is None:
        return (f"notification ({event}) not sent: environment variable {n.webhook_url_env} "
                "([notifications] webhook_url_env) is not set")
    try:
        why = deliver(url, notification_payload(n, event, result))
    except Exception as e:   # a notification never fails a run
        from engine.secrets import redact
        why = redact(f"{type(e).__name__}: {e}").replace(url, "***")
    return None if why is None else f"notification ({event}) not delivered: {why}"

# ---------------------------------------------------------------------------------------------------------------
# Run reports.

def session_id(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def run_summary(session: str, started: datetime, finished: datetime, exports: Sequence[dict], exit_code: int) -> dict:
    """The summary of one `rivet run` (`exports`: ExportResult.to_dict() of each export)."""
    rows = []
    for e in exports:
        err = e.get("error")
        rows.append({"name": e["name"], "run_id": e.get("run_id"), "status": e["status"], "rows": e.get("rows", 0),
                     "files": e.get("files", 0), "bytes": e.get("bytes", 0), "duration_ms": e.get("duration_ms", 0),
                     "retries": e.get("retries", 0), "warnings": list(e.get("warnings") or []),
                     "error": ({"code": err["code"], "exit_class": err["exit_class"], "message": err["error"],
                                "hint": err["hint"]} if err else None)})
    return {"summary_version": 1, "session_id": session, "started_at": _iso(started), "finished_at": _iso(finished),
            "duration_ms": int((finished - started).total_seconds() * 1000), "exit_code": exit_code,
            "status": "ok" if exit_code == 0 else "failed",
            "totals": {k: sum(r[k] for r in rows) for k in ("rows", "files", "bytes", "retries")},
            "exports": rows}


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def summary_markdown(s: dict) -> str:
    lines = [f"# rivet run {s['session_id']}", "",
             f"{s['status']} (exit {s['exit_code']}), {s['started_at']} → {s['finished_at']} "
             f"({s['duration_ms'] / 1000:.1f} s); {s['totals']['rows']:,} rows, {s['totals']['files']} files, "
             f"{s['totals']['bytes']:,} bytes", "",
             "| export | status | rows | files | bytes | duration | retries | run id |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for e in s["exports"]:
        lines.append(f"| {e['name']} | {e['status']} | {e['rows']:,} | {e['files']} | {e['bytes']:,} | "
                     f"{e['duration_ms'] / 1000:.1f} s | {e['retries']} | {e['run_id'] or '-'} |")
    notes = [e for e in s["exports"] if e["warnings"] or e["error"]]
    for e in notes:
        lines += ["", f"## {e['name']}"]
        if e["error"]:
            lines.append(f"- error `{e['error']['code']}` (exit {e['error']['exit_class']}): {e['error']['message']}")
            if e["error"]["hint"]:
                lines.append(f"  - hint: {e['error']['hint']}")
        lines += [f"- warning: {w}" for w in e["warnings"]]
    return "\n".join(lines) + "\n"


def report_dir(state_path: Path, session: str) -> Path:
    """`.rivet/runs/<session_id>/`: beside the state file."""
    return Path(state_path).parent / "runs" / session


def write_run_report(state_path: Path, summary: dict, extra_json: Path | None = None) -> Path:
    """`.rivet/runs/<session_id>/summary.json` and `summary.md` beside the state file (and the JSON at
    `extra_json`, for --summary-output). Returns the directory."""
    out = report_dir(state_path, summary["session_id"])
    out.mkdir(parents=True, exist_ok=True)
    data = json.dumps(summary, indent=2) + "\n"
    _write(out / "summary.json", data)
    _write(out / "summary.md", summary_markdown(summary))
    if extra_json is not None:
        extra_json.parent.mkdir(parents=True, exist_ok=True)
        _write(extra_json, data)
    return out


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(3)}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
