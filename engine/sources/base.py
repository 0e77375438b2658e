"""The contract every source adapter fulfils. The runner only talks to this."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pyarrow as pa

from engine.config import SourceConfig, Tuning
from engine.errors import RivetError
from engine.layouts import BatchBudget


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


# A read queued behind DDL that waits for the export's own guard (PostgreSQL): every later read of the export would
# wait and fail the same way, so the runner stops starting chunks (engine/run/runner.py).
LOCKED = "RIVET_SOURCE_LOCKED"


class BatchStream:
    """Record batches from a read that another thread may interrupt: the task's writer stops a reader that sits in
    a network read when the write side fails (engine/run/task.py `prefetch`)."""

    def __init__(self, batches: Iterator[pa.RecordBatch], interrupt: Callable[[], None]):
        self._batches, self._interrupt = batches, interrupt

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self

    def __next__(self) -> pa.RecordBatch:
        return next(self._batches)

    def close(self) -> None:
        close = getattr(self._batches, "close", None)
        if close is not None:
            close()

    def interrupt(self) -> None:
        self._interrupt()


class Source(ABC):
    engine: str               # "postgres" | "mysql" | "mssql"
    # how many reads of one chunk window side by side pay off (its sub-windows, engine/planner.py split_window):
    # 1 where a second stream only competes for the same client CPU
    concurrent_reads: int = 1

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
    def read(self, sql: str, schema: pa.Schema, batch_rows: int, scan_table: str | None = None,
             budget: BatchBudget | None = None) -> Iterator[pa.RecordBatch]:
        """Stream the rows of `sql` (a complete dialect SELECT built by engine.sql) as record batches conforming to
        `schema` (names, types and field metadata from engine.types). Bounded memory: never fetch everything.
        `scan_table` is set when the read is a plain full-table scan with no casts or filters, so the adapter may
        use a faster path (DuckDB's parallel scan of the attached table) for exactly the same rows.
        The whole read sees one consistent snapshot of the source. With a `budget` (on_batch_memory_exceeded =
        "auto_shrink", engine/layouts.py) each batch holds `budget.rows` rows as it stands when the batch starts."""

    def key_index(self, table: str, column: str) -> tuple[bool, bool, bool]:
        """(nullable, indexed, unique) of one column of a table, from the catalog: indexed = the column leads some
        index, unique = a unique index (or primary key / unique constraint) on exactly that one column
        (`chunk_by_key` needs NOT NULL + unique). Only sources that plan keyset pages implement it."""
        raise RivetError("RIVET_PLAN_KEYSET_UNSUPPORTED", f"chunk_by_key is not supported on {self.engine} sources",
                         "use chunk_column with chunk_size / chunk_count")

    def column_values(self, sql: str) -> list[Any]:
        """The first column of every row of `sql`, on the native driver (small results only: keyset boundaries)."""
        raise RivetError("RIVET_PLAN_KEYSET_UNSUPPORTED", f"chunk_by_key is not supported on {self.engine} sources",
                         "use chunk_column with chunk_size / chunk_count")

    def connection_limit(self) -> int | None:
        """How many connections rivet's user may open on the server at most (None: unknown). `parallel` is
        checked against it at plan time, so a chunked export never dies of "too many connections" halfway."""
        return None

    @contextmanager
    def hold(self, relation: Relation) -> Iterator[None]:
        """Keep what `relation` reads from being rewritten under the export until it is committed (PostgreSQL:
        table locks, see PostgresSource.hold). Other sources need nothing: their snapshots survive DDL or fail."""
        yield

    def verify_hold(self) -> None:
        """Raise if the hold was lost during the run (checked before the run is certified)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
