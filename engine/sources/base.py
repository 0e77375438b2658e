"""The contract every source adapter fulfils. The runner only talks to this."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa

from engine.config import SourceConfig, Tuning


@dataclass(frozen=True)
class SourceColumn:
    name: str
    native_type: str          # as the source declares it: "numeric(12,2)", "tinyint(1)", "timestamp with time zone"
    nullable: bool = True


@dataclass(frozen=True)
class Relation:
    """What an export reads: a table ("schema.table" / "table") or a query's SQL text. Exactly one is set."""
    table: str | None = None
    query: str | None = None


class Source(ABC):
    engine: str               # "postgres" | "mysql" | "mssql"

    def __init__(self, cfg: SourceConfig, tuning: Tuning):
        self.cfg = cfg
        self.tuning = tuning

    @property
    @abstractmethod
    def dialect(self):
        """The engine.sql Dialect used to build every SQL string sent to this source."""

    @abstractmethod
    def server_version(self) -> str:
        """Connect and authenticate; return e.g. 'PostgreSQL 15.20' / '10.11.19-MariaDB'.
        RivetError (auth failure: exit 1; unreachable within connect_timeout_s: exit 2, transient)."""

    @abstractmethod
    def describe(self, relation: Relation) -> list[SourceColumn]:
        """Columns with declared types, without reading rows. Missing table → RivetError RIVET_SOURCE_NO_SUCH_TABLE."""

    @abstractmethod
    def primary_key(self, table: str) -> list[SourceColumn]:
        """Primary key columns of a table, in key order ([] when none)."""

    @abstractmethod
    def estimate_rows(self, relation: Relation) -> int | None:
        """Cheap row estimate from catalog statistics (None for queries or when unknown)."""

    @abstractmethod
    def scalar(self, sql: str) -> Any:
        """Run one dialect SQL statement returning one row / one column (MIN, MAX, COUNT) on the native driver."""

    @abstractmethod
    def read(self, sql: str, schema: pa.Schema, batch_rows: int, scan_table: str | None = None) -> Iterator[pa.RecordBatch]:
        """Stream the rows of `sql` (a complete dialect SELECT built by engine.sql) as record batches conforming to
        `schema` (names, types and field metadata from engine.types). Bounded memory: never fetch everything.
        `scan_table` is set when the read is a plain full-table scan with no casts or filters, so the adapter may
        use a faster path (DuckDB's parallel scan of the attached table) for exactly the same rows.
        The whole read sees one consistent snapshot of the source."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
