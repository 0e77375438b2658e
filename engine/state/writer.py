"""One DuckDB connection per state file per process, owned by one writer thread that commits in groups.

DuckDB lets one process at a time open a file; opening costs ~45 ms, closing ~30-55 ms, and each commit ~10 ms even
on an open connection (an upsert on a primary key ~17 ms). So a process keeps the file open while it has work, and
its writer thread runs everything queued by all threads in ONE transaction and commits once ("group commit"). A
caller gets its result only after that commit. When a unit fails, DuckDB aborts the whole transaction: the group is
rolled back, the units before the faulty one are committed again as a group, the faulty one gets its error, and the
rest go on as a new group; only the faulty one fails.

Another process gets in by knocking (docs/state.md, "Sharing the file between processes"): a process that finds
the file locked touches `<state file>.knock` after every failed attempt. The holder looks at the knock file between
groups and every KNOCK_CHECK_S; on a new knock it closes the file (at once when idle, after MIN_HOLD_S from its open
when it has work) and does not open it again before the knocks have gone quiet (the knocker got in). A process that
got in by knocking closes the file as soon as it is idle (the one it displaced wants it back), and these hand-over
closes skip DuckDB's checkpoint. A holder with nothing to do closes the file after IDLE_CLOSE_S anyway. A waiter
that cannot get in within its lock_wait_s fails with RIVET_STATE_BUSY naming the holder's PID, which DuckDB's lock
error gives.

Not fork-safe: a child forked while the file is open would share DuckDB's open database; start helper processes
with `spawn`.
"""
from __future__ import annotations

import atexit
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import duckdb
from tenacity import RetryCallState, Retrying, retry_if_exception, wait_random_exponential

from engine.errors import ExitClass, RivetError

Op = Callable[[duckdb.DuckDBPyConnection], Any]

# Never let DuckDB reach for the network (an SQLite file would otherwise trigger an extension download).
_CONFIG: dict[str, Any] = {"autoinstall_known_extensions": False, "autoload_known_extensions": False, "threads": 1}

IDLE_CLOSE_S = 0.5    # an idle holder closes the file after this long (lets in processes that do not knock)
KNOCK_CHECK_S = 0.05  # how often an open holder looks at the knock file while idle
MIN_HOLD_S = 0.75     # a holder with work keeps the file this long before yielding (bounds the cost of readers)
QUIET_S = 0.1         # after yielding, wait until no knock for this long (longer than a waiter's retry period) ...
YIELD_MAX_S = 1.0     # ... but no longer than this, then compete for the file again
MAX_GROUP = 256       # units per transaction: bounds the work redone when one unit of a group fails
HAND_OVER_WAL_MAX = 256 * 1024   # hand the file over without a checkpoint only while the WAL is this small (_close)

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<prog>.*?) \(PID (?P<pid>\d+)\)")


# -- errors ---------------------------------------------------------------------------------------------------------

def corrupt_hint(path: Path) -> str:
    return (f"move {path.name} aside (rivet then starts a fresh state) or restore a backup; "
            "or point --state at another file")


def corrupt(path: Path, what: str) -> RivetError:
    return RivetError("RIVET_STATE_CORRUPT", f"state file {path} {what}", corrupt_hint(path))


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _is_lock_conflict(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "Could not set lock" in str(exc)


def busy(path: Path, exc: BaseException | None, waited_s: float) -> RivetError:
    holder = _LOCK_HOLDER.search(str(exc)) if exc else None
    who = f"PID {holder['pid']} ({holder['prog']})" if holder else "another process"
    return RivetError("RIVET_STATE_BUSY", f"state file {path} is in use by {who}",
                      f"waited {waited_s:g} s; wait for that process to finish, raise --lock-wait, "
                      "or point --state at another file", ExitClass.TRANSIENT)


def gone(path: Path, what: str) -> RivetError:
    return RivetError("RIVET_STATE_GONE", f"state file {path} {what} while rivet was using it; the writes since "
                      "then were not recorded",
                      "restore the file from a backup to keep the cursors and chunk checkpoints, or run again to "
                      "start a fresh state (incremental exports then read from the beginning)")


def _open_error(path: Path, exc: duckdb.Error) -> RivetError:
    first = _first_line(exc)
    if not path.exists() or "Permission denied" in first:
        return RivetError("RIVET_STATE_OPEN", f"cannot open state file {path}: {first}",
                          "check the permissions on the file and its directory, or point --state elsewhere")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        head = b""
    if head.startswith(b"SQLite format 3"):
        return corrupt(path, "is an SQLite database, not DuckDB (the Rust rivet's state?)")
    if head[8:12] != b"DUCK":
        return corrupt(path, "is not a DuckDB database")
    error = translate(path, exc)
    return error if isinstance(error, RivetError) else corrupt(path, f"cannot be read: {first}")


def translate(path: Path, exc: Exception) -> Exception:
    """A DuckDB error as the RivetError a user should see; anything else (a bug, a RivetError) unchanged."""
    first = _first_line(exc)
    if isinstance(exc, duckdb.IOException):
        # a short read means the file is shorter than its own header says: damage, not a full disk
        if any(s in first for s in ("Corrupt", "checksum", "Could not read enough bytes")):
            return corrupt(path, f"is damaged: {first}")
        return RivetError("RIVET_STATE_IO", f"state file {path}: {first}",
                          "check free disk space and permissions on the state directory")
    if isinstance(exc, duckdb.FatalException):
        return RivetError("RIVET_STATE_IO", f"state file {path}: {first}",
                          "check free disk space and permissions on the state directory, then run again")
    if isinstance(exc, duckdb.CatalogException):
        return corrupt(path, f"has an unexpected schema: {first}")
    return exc


# -- units of work ----------------------------------------------------------------------------------------------------

Kind = Literal["op", "adopt", "flush", "release"]


@dataclass(eq=False)
class Unit:
    """One caller's work. `op` runs inside the group's transaction; kinds other than "op" run between groups:
    adopt   a new StateStore: may create the file, adopts whatever file is at the path, runs `op` (the migrations,
            which manage their own transactions) outside any group
    flush   resolves once everything queued before it is committed
    release like flush, then closes the file (StateStore.close)
    """
    op: Op
    lock_wait_s: float
    future: Future[Any]
    kind: Kind = "op"
    reads_only: bool = False     # an op that only reads: a group of such ops runs without a transaction
    deadline: float = field(init=False)

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.lock_wait_s

    def resolve(self, result: Any) -> None:
        self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        self.future.set_exception(exc)


def _nothing(con: duckdb.DuckDBPyConnection) -> None:
    return None


class StateWriter:
    """The one owner of a state file's connection in this process (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = path   # resolved: every spelling of the file maps to one writer and one WAL beside the file
        self.knock_path = path.with_name(path.name + ".knock")
        self.local = threading.local()   # the batch() open in each thread (StateStore.batch)
        self._queue: queue.SimpleQueue[Unit] = queue.SimpleQueue()
        self._lock = threading.Lock()    # guards _thread (a unit is never queued without a thread to serve it)
        self._thread: threading.Thread | None = None
        self._appended: dict[str, tuple[Future[Any], list[Any], list[Future[Any]]]] = {}   # and this (append)
        # owned by the writer thread:
        self._con: duckdb.DuckDBPyConnection | None = None
        self._identity: tuple[int, int] | None = None   # (st_dev, st_ino) of the file adopted; another one is "gone"
        self._opened_at = 0.0
        self._knock_at_open = 0
        self._yielded = False
        self._knocked_in = False   # we got the file by knocking: its previous holder wants it back

    # -- callers ----------------------------------------------------------------------------------------------------

    def submit(self, unit: Unit) -> None:
        with self._lock:
            self._queue.put(unit)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=f"rivet-state:{self.path.name}",
                                                daemon=True)
                self._thread.start()

    def call(self, op: Op, lock_wait_s: float, kind: Kind = "op", reads_only: bool = False) -> Any:
        """Run op(con) in the next group; return its result once the group committed (or raise its error)."""
        return self.call_soon(op, lock_wait_s, kind, reads_only).result()

    def call_soon(self, op: Op, lock_wait_s: float, kind: Kind = "op", reads_only: bool = False) -> Future[Any]:
        """Like call, without waiting: the future resolves once the group committed."""
        future: Future[Any] = Future()
        self.submit(Unit(op, lock_wait_s, future, kind, reads_only))
        return future

    def append(self, key: str, item: Any, write: Callable[[duckdb.DuckDBPyConnection, list[Any]], Any],
               lock_wait_s: float) -> Future[Any]:
        """Queue `item` for write(con, items) in the next group, with every other item appended under `key` until
        that group runs: one statement for many callers (journal rows, chunk starts). Each DuckDB call of the
        writer waits for the GIL again while exports run, so fewer, larger statements are what lets it keep up.

        write returns one outcome per item (its result, or an exception that fails that item alone: the others
        still commit) or None (every item's result is None). The item's future resolves once its group committed.
        An item joins a unit queued earlier, so it may run before a unit its caller queued without waiting for it
        (journal_async, batch(later=...)): append only what does not depend on such writes."""
        item_future: Future[Any] = Future()
        with self._lock:
            pending = self._appended.get(key)
            if pending is not None and not pending[0].done():   # its unit has not run yet: join it
                pending[1].append(item)
                pending[2].append(item_future)
                return item_future
            future: Future[Any] = Future()
            items, futures = [item], [item_future]
            self._appended[key] = (future, items, futures)

        def op(con: duckdb.DuckDBPyConnection) -> Any:
            with self._lock:   # from now on, new items go to a new unit
                if self._appended.get(key, (None,))[0] is future:
                    del self._appended[key]
            return write(con, items)

        def settle(unit_future: Future[Any]) -> None:
            exc = unit_future.exception()
            outcomes = [exc] * len(futures) if exc else unit_future.result() or [None] * len(futures)
            if len(outcomes) != len(futures):   # a bug in write: fail every caller rather than leave one waiting
                outcomes = [RuntimeError(f"{key}: {len(outcomes)} outcomes for {len(futures)} items")] * len(futures)
            for each, outcome in zip(futures, outcomes):
                if isinstance(outcome, BaseException):
                    each.set_exception(outcome)
                else:
                    each.set_result(outcome)
        future.add_done_callback(settle)
        self.submit(Unit(op, lock_wait_s, future))
        return item_future

    def append_async(self, key: str, item: Any, write: Callable[[duckdb.DuckDBPyConnection, list[Any]], Any],
                     lock_wait_s: float) -> None:
        """append() without waiting: nobody looks at the outcome, so a failure is dropped (e.g. journal rows)."""
        self.append(key, item, write, lock_wait_s)

    def flush(self) -> None:
        """Wait until everything queued so far (fire-and-forget units too) is committed."""
        self.call(_nothing, 0.0, "flush")

    def close(self) -> None:
        """Flush, then close the file so that other processes can open it at once. The next call reopens it."""
        self.call(_nothing, 0.0, "release")

    def idle(self) -> bool:
        return self._thread is None

    # -- the writer thread ------------------------------------------------------------------------------------------

    def _serve(self) -> None:
        idle_since = time.monotonic()
        while True:
            units = self._take(KNOCK_CHECK_S)
            if units:
                try:
                    self._work(units)
                except Exception as exc:   # a bug here must not leave callers waiting forever
                    self._close(yielded=False)
                    for unit in units:
                        if not unit.future.done():
                            unit.fail(exc)
                idle_since = time.monotonic()
                continue
            if self._con is not None:
                knocked = self._knocked()
                idle_close_s = KNOCK_CHECK_S if self._knocked_in else IDLE_CLOSE_S
                if knocked or time.monotonic() - idle_since >= idle_close_s:
                    self._close(yielded=knocked)
                continue
            with self._lock:   # exit only with nothing queued; submit() starts a new thread otherwise
                if self._queue.empty():
                    self._thread = None
                    return

    def _take(self, wait_s: float) -> list[Unit]:
        try:
            units = [self._queue.get(timeout=wait_s)]
        except queue.Empty:
            return []
        while len(units) < MAX_GROUP:
            try:
                units.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return units

    def _work(self, units: list[Unit]) -> None:
        """Run units in order: plain ops in groups, the other kinds between them."""
        group: list[Unit] = []
        for unit in units:
            if unit.kind == "op":
                group.append(unit)
                continue
            self._run_group(group)
            group = []
            if unit.kind == "adopt":
                self._adopt(unit)
            else:
                if unit.kind == "release" and self._con is not None:
                    self._close(yielded=False)
                unit.resolve(None)
        self._run_group(group)
        if (self._con is not None and self._knocked()
                and (time.monotonic() - self._opened_at >= MIN_HOLD_S or self._queue.empty())):
            self._close(yielded=True)

    def _run_group(self, group: list[Unit]) -> None:
        group = self._ensure_open(group)
        if not group:
            return
        con = self._con
        assert con is not None
        try:
            self._check_identity()
        except RivetError as exc:
            self._close(yielded=False)
            for unit in group:
                unit.fail(exc)
            return
        if all(unit.reads_only for unit in group):
            self._run_reads(group)
            return
        results: list[Any] = []
        try:
            con.begin()
            for unit in group:
                results.append(unit.op(con))
            con.commit()
        except Exception as exc:
            self._rollback()
            self._recover(group, len(results), exc)
            return
        for unit, result in zip(group, results):
            unit.resolve(result)

    def _run_reads(self, group: list[Unit]) -> None:
        """Reads need no transaction (only this thread writes the file): BEGIN and COMMIT would be two more DuckDB
        calls, each waiting for the GIL again while exports run. A storage error closes the file, as in _recover."""
        for i, unit in enumerate(group):
            try:
                result = unit.op(cast(duckdb.DuckDBPyConnection, self._con))
            except Exception as exc:
                unit.fail(translate(self.path, exc))
                if isinstance(exc, (duckdb.IOException, duckdb.FatalException)):
                    self._close(yielded=False)
                    self._run_group(group[i + 1:])
                    return
                continue
            unit.resolve(result)

    def _recover(self, group: list[Unit], failed_at: int, exc: Exception) -> None:
        """The group's transaction failed at unit `failed_at` (== len(group): at COMMIT) and was rolled back.

        The units before it succeeded, and the failing one failed in exactly the state they leave behind (ops are
        deterministic and nobody else writes meanwhile). So: commit the ones before it as a group, fail it with its
        error, and go on with the rest as a new group. A storage error (or a failed COMMIT) fails the whole group:
        nothing of it was committed, and the database may be unusable until reopened.
        """
        error = translate(self.path, exc)
        if failed_at == len(group) or isinstance(exc, (duckdb.IOException, duckdb.FatalException)):
            self._close(yielded=False)
            for unit in group:
                unit.fail(error)
            return
        self._run_group(group[:failed_at])
        group[failed_at].fail(error)
        self._run_group(group[failed_at + 1:])

    def _rollback(self) -> None:
        if self._con is None:
            return
        try:
            self._con.rollback()
        except duckdb.Error:
            pass   # no transaction open (the failure came before BEGIN, or DuckDB already ended it)

    def _adopt(self, unit: Unit) -> None:
        if self._con is not None:
            try:
                self._check_identity()
            except RivetError:
                self._close(yielded=False)   # a new file at the path: open and adopt it
        if not self._ensure_open([unit], adopt=True):
            return
        assert self._con is not None
        try:
            result = unit.op(self._con)
        except Exception as exc:
            self._rollback()
            unit.fail(translate(self.path, exc))
            self._close(yielded=False)
            return
        unit.resolve(result)

    # -- opening, knocking, closing ---------------------------------------------------------------------------------

    def _ensure_open(self, units: list[Unit], adopt: bool = False) -> list[Unit]:
        """Open the file if needed, waiting for another process to let go; returns the units still waiting (the
        others failed with RIVET_STATE_BUSY after their lock_wait_s, or with the open error)."""
        if self._con is not None or not units:
            return units
        if self._yielded:
            self._wait_for_quiet()
        waiting = list(units)

        def give_up(state: RetryCallState) -> bool:   # fail the units whose wait is over; stop when none is left
            now = time.monotonic()
            exc = state.outcome.exception() if state.outcome else None
            for unit in [u for u in waiting if u.deadline <= now]:
                waiting.remove(unit)
                unit.fail(busy(self.path, exc, unit.lock_wait_s))
            return not waiting

        # A failed attempt costs ~5 ms. Poll quickly: a holder that does not knock (another tool, an older rivet)
        # may free the file for a few ms only.
        retrying = Retrying(retry=retry_if_exception(_is_lock_conflict), stop=give_up, reraise=True,
                            wait=wait_random_exponential(multiplier=0.005, max=0.02),
                            before_sleep=lambda state: self._knock())
        try:
            retrying(self._open, adopt)
            # Got in by knocking: the holder we displaced wants the file back; give it up as soon as we are idle.
            self._knocked_in = retrying.statistics.get("attempt_number", 1) > 1
        except RivetError as exc:
            for unit in waiting:
                unit.fail(exc)
            return []
        except duckdb.IOException:   # still locked, and every unit has given up
            return []
        return waiting

    def _open(self, adopt: bool) -> None:
        if not adopt and self._identity is not None and not self.path.exists():
            raise gone(self.path, "was deleted")
        try:
            con = duckdb.connect(str(self.path), config=_CONFIG)
        except duckdb.IOException as exc:
            if _is_lock_conflict(exc):
                raise
            raise _open_error(self.path, exc) from None
        except duckdb.Error as exc:
            raise _open_error(self.path, exc) from None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:   # deleted right after DuckDB opened it
            con.close()
            raise gone(self.path, "was deleted") from None
        identity = (st.st_dev, st.st_ino)
        if not adopt and self._identity is not None and _is_blank(con):
            # The file was deleted between the exists() check above and connect(), which then created an empty one
            # (possibly under the old inode number). Nobody else made it: a creator holds its file locked until
            # its migrations have run. Take it away again, so the run never leaves a state file it did not have.
            con.close()
            for leftover in (self.path, self.path.with_name(self.path.name + ".wal")):
                leftover.unlink(missing_ok=True)
            raise gone(self.path, "was deleted")
        if not adopt and self._identity not in (None, identity):
            con.close()
            raise gone(self.path, "was replaced by another file")
        self._identity = identity
        self._con = con
        self._opened_at = time.monotonic()
        self._knock_at_open = self._knock_mtime()
        self._yielded = False

    def _check_identity(self) -> None:
        """A file deleted (or replaced) under an open connection would swallow every later commit: refuse instead."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise gone(self.path, "was deleted") from None
        if (st.st_dev, st.st_ino) != self._identity:
            raise gone(self.path, "was replaced by another file")

    def _close(self, yielded: bool) -> None:
        """Close the file. Handing it over (knocked, or back to the holder we knocked out) skips DuckDB's checkpoint
        on close while the WAL is small: a checkpoint costs ~0.1-1.5 s (more as tables grow), all of it while the
        other process waits, and replaying a small WAL when it opens costs it less (~0.15 s per 100 KiB; a lower
        checkpoint_threshold instead made every run 2.5x slower). Any other close checkpoints as usual."""
        con, self._con = self._con, None
        hand_over = (yielded or self._knocked_in) and self._wal_size() < HAND_OVER_WAL_MAX
        self._yielded, self._knocked_in = yielded, False
        if con is None:
            return
        try:
            if hand_over:
                con.execute("PRAGMA disable_checkpoint_on_shutdown")
            con.close()
        except duckdb.Error:
            pass   # closing a connection whose database already failed

    def _wal_size(self) -> int:
        try:
            return os.stat(self.path.with_name(self.path.name + ".wal")).st_size
        except OSError:
            return 0

    def _knock(self) -> None:
        try:
            self.knock_path.touch()   # its mtime is the signal
        except OSError:
            pass   # a read-only directory: the holder still closes the file when idle

    def _knock_mtime(self) -> int:
        try:
            return os.stat(self.knock_path).st_mtime_ns
        except OSError:
            return 0

    def _knocked(self) -> bool:
        return self._knock_mtime() > self._knock_at_open

    def _wait_for_quiet(self) -> None:
        """After yielding: let the knocker in (its knocks stop once it has the file), within YIELD_MAX_S."""
        start = last_change = time.monotonic()
        last = self._knock_mtime()
        while time.monotonic() - start < YIELD_MAX_S:
            time.sleep(0.02)
            mtime = self._knock_mtime()
            if mtime != last:
                last, last_change = mtime, time.monotonic()
            elif time.monotonic() - last_change >= QUIET_S:
                break
        self._yielded = False


# -- one writer per file per process ----------------------------------------------------------------------------------

_WRITERS: dict[Path, StateWriter] = {}
_WRITERS_LOCK = threading.Lock()


def _is_blank(con: duckdb.DuckDBPyConnection) -> bool:
    """A database without a single table: one that connect() has just created."""
    row = con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()
    return not (row and row[0])


def writer_for(path: Path) -> StateWriter:
    """The writer of a state file; keyed by the resolved path, so a symlinked spelling shares it."""
    key = path.resolve()
    with _WRITERS_LOCK:
        writer = _WRITERS.get(key)
        if writer is None:
            writer = _WRITERS[key] = StateWriter(key)
        return writer


def close_all() -> None:
    """Commit what is queued and close every state file this process has open (at exit)."""
    with _WRITERS_LOCK:
        writers = list(_WRITERS.values())
    for writer in writers:
        if not writer.idle():
            try:
                writer.close()
            except RuntimeError:   # a new thread refused at interpreter shutdown: the writer had just gone idle
                pass


atexit.register(close_all)
