"""A task's body: read one SQL window from the source, write part files, commit each part to the destination.

Tasks are pure: a TaskSpec and an ExportPlan in, a TaskResult out; they never touch state, so they can run on this
process's threads or on a cluster worker (engine/run/remote.py) behind the same call. The coordinator
(engine/run/runner.py) writes the file log and everything after it (engine/run/commit.py).
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from engine import events as ev
from engine import guardrails, layouts
from engine.config import SourceConfig
from engine.destinations import Destination
from engine.errors import ExitClass, RivetError
from engine.faults import fault
from engine.formats import PartFile, PartWriter, csv_text, part_basename
from engine.planner import CURSOR_FIELD, ExportPlan, TaskSpec, run_started_at
from engine.sources import open_source

T = TypeVar("T")
STOPPED = "RIVET_RUN_STOPPED"
READ_AHEAD = 2            # batches read ahead of the writer: reading and writing overlap, memory stays bounded
POLL_S = 0.1              # how often a blocked hand-over looks at the other side
JOIN_S = 10.0             # how long the writer waits for a stopped reader to let go of its connection


@dataclass
class TaskResult:
    index: int | None
    parts: list[PartFile]
    rows: int
    cursor_max: Any = None
    retries: int = 0
    worker: str = "local"
    max_bytes: dict = field(default_factory=dict)   # text/binary column → largest value in bytes (shape drift)


def stopped_error() -> RivetError:
    return RivetError(STOPPED, "stopped by the user", "run it again: a chunked export resumes where it stopped",
                      ExitClass.TRANSIENT)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ReadSlot:
    """One of the `parallel` source reads a chunked export may have at once (runner._task_outcomes). Taken before a
    chunk starts, given back the moment its reads end: the next chunk's read then starts while this chunk's last
    batches are still being written and its part committed (the writer is the slower side: the batches queued
    ahead of it, ~85 ms of writing per 1 M-row chunk, plus the part's fsync, and the next chunk's first batch, ~0.1
    s, overlap instead of idling a core). The source never sees more than `parallel` chunk reads."""

    def __init__(self, reads: threading.Semaphore, stop: threading.Event | None = None):
        self._reads, self._lock, self._held = reads, threading.Lock(), False
        while not reads.acquire(timeout=POLL_S):
            if stop is not None and stop.is_set():
                raise stopped_error()
        self._held = True

    def release(self) -> None:
        with self._lock:
            if self._held:
                self._held = False
                self._reads.release()


class _ReaderThreads:
    """Daemon threads that stay up between reads and take the next one: a thread per read would start and end with
    every chunk. On CPython 3.11 before 3.11.12, a thread ending while another thread runs sys._current_frames with
    the cycle collector kicking in deadlocks the process (python/cpython#106883), and Dask's worker profiler calls
    it every 10 ms: a worker hung that way in the Dask bench, with a thread per read and per announcement. Every
    job gets a thread at once (a new one when none is idle), so a read never waits behind another."""

    def __init__(self) -> None:
        self._forget()
        os.register_at_fork(after_in_child=self._forget)   # a forked child has none of the parent's threads

    def _forget(self) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def run(self, job: Callable[[], None], finished: threading.Event) -> None:
        """Run `job` on a reader thread; `finished` is set once it has returned and its thread is free again."""
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1   # an idle thread waits in _serve's get(), or is about to
        self._jobs.put((job, finished))
        if spawn:
            threading.Thread(target=self._serve, name="rivet-read", daemon=True).start()

    def _serve(self) -> None:
        while True:
            job, finished = self._jobs.get()
            try:
                job()
            except BaseException:  # noqa: BLE001 - a pump hands its own errors to its consumer
                pass
            finally:
                job = None   # let go of the read (its streams, cursors) now, not when the next one comes
                with self._lock:
                    self._idle += 1
                finished.set()


_READERS = _ReaderThreads()


def prefetch(batches: Iterable[T] | list[Iterable[T]], depth: int = READ_AHEAD,
             on_end: Callable[[], None] | None = None, readers: int | None = None) -> Iterator[T]:
    """Pull items on helper threads so reading the source overlaps writing the part (both release the GIL).

    `batches` is one stream, or a list of streams (a window split into sub-windows) read by `readers` threads side by
    side (default: one per stream), each taking the next stream not yet started when its own ends, so that they
    finish within one stream of each other: items come in the order they arrive; the whole ends when every stream
    has ended, and fails on the first error.

    No hand-over ever waits without watching the other side: a reader puts with a timeout and stops when the
    writer has gone (a full disk, an error, a cancel), the writer gets with a timeout and notices readers that
    died without a word. When the writer stops first, the streams being read are interrupted if the source supports
    it (`interrupt()`), those not started are closed, and the writer waits at most JOIN_S for the readers.

    `on_end` is called once every stream has ended and closed (read to the end or not), while the writer may still
    have items to take."""
    streams = batches if isinstance(batches, list) else [batches]
    threads = max(1, min(readers or len(streams), len(streams)))
    q: queue.Queue = queue.Queue(maxsize=depth * threads)
    stop = threading.Event()
    done = object()
    lock = threading.Lock()
    todo = list(reversed(streams))          # not started yet: taken from the end, in the given order
    reading: list[Iterable[T]] = []         # started, not yet closed
    left = [len(streams)]                   # not yet closed

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def closed(stream: Iterable[T]) -> None:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        with lock:
            if stream in reading:
                reading.remove(stream)
            left[0] -= 1
            last = left[0] == 0
        if last and on_end is not None:
            on_end()

    def pump() -> None:
        while True:
            with lock:
                if stop.is_set() or not todo:
                    return
                stream = todo.pop()
                reading.append(stream)
            try:
                for b in stream:
                    if not put(b):
                        return
                put(done)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                put(e)
                return
            finally:
                closed(stream)

    pumps = [threading.Event() for _ in range(threads)]   # each set when its reader is done
    for finished in pumps:
        _READERS.run(pump, finished)
    try:
        ended = 0
        while ended < len(streams):
            try:
                item = q.get(timeout=POLL_S)
            except queue.Empty:
                if all(finished.is_set() for finished in pumps) and q.empty():
                    raise RivetError("RIVET_SOURCE_READER_LOST", "the source reader stopped without a result",
                                     "this is a bug in rivet; rerun with RIVET_DEBUG=1", ExitClass.INTERNAL)
                continue
            if item is done:
                ended += 1
                continue
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with lock:
            unread, todo[:] = todo[:], []
            active = list(reading)
        for stream in unread:
            closed(stream)
        for stream in active:
            interrupt = getattr(stream, "interrupt", None)
            if interrupt is not None:
                try:
                    interrupt()
                except Exception:  # noqa: BLE001 - the reader closed its connection meanwhile: nothing left to stop
                    pass
        deadline = time.monotonic() + JOIN_S
        for finished in pumps:
            finished.wait(max(0.0, deadline - time.monotonic()))


def execute_task(task: TaskSpec, plan: ExportPlan, source_cfg: SourceConfig, dest: Destination,
                 emit: ev.Emit, stop: threading.Event | None = None, read_slot: ReadSlot | None = None) -> TaskResult:
    """The pure task: read one SQL window from the source, write part files, commit each to the destination.
    Touches no state. On failure (or when `stop` is set: RIVET_RUN_STOPPED between batches), parts this attempt
    committed are removed again (no manifest references them). `read_slot` is given back when the reads end."""
    exp = plan.export
    committed: list[PartFile] = []

    def commit(part: PartFile) -> None:
        if dest.kind != "local":
            emit(ev.PhaseChanged(exp.name, plan.run_id, "uploading"))
        dest.commit_file(part.local_path, part.name)
        committed.append(part)
        fault("after_part_upload")
        emit(ev.PartCommitted(exp.name, plan.run_id, part.name, part.rows, part.size_bytes, task.index))

    max_size = None if dest.kind == "stdout" else exp.max_file_size   # one stream: never rotate on a pipe
    # -- guardrails hook: meta columns appended to every batch (engine/guardrails.py)
    meta = exp.meta_columns if exp.meta_columns is not None and exp.meta_columns.enabled else None
    exported_at = run_started_at(plan.run_id)
    hashed = guardrails.hash_columns(meta, plan.write_schema.names) if meta else []
    parquet = exp.parquet
    out_schema = guardrails.output_schema(plan.write_schema, meta)

    def part_writer(subdir: str = "") -> PartWriter:   # a partition's writer gets a fresh name (nonce) each time
        return PartWriter(exp.format, exp.compression, out_schema, dest.spool_dir(),
                          part_basename(exp.name, utcnow(), task.index), max_size, commit,
                          compression_level=exp.compression_level,
                          row_group_rows=parquet.row_group_rows if parquet else None,
                          row_group_bytes=parquet.target_row_group_mb * 1024 * 1024
                          if parquet and parquet.target_row_group_mb else None, subdir=subdir)
    # -- layouts hook: Hive partitions, one writer per open partition (engine/layouts.py)
    layouts.check_partition_column(exp, plan.write_schema)
    writer: PartWriter | layouts.PartitionedWriter = \
        layouts.PartitionedWriter(exp, part_writer) if exp.partition_by else part_writer()
    rows, cursor_max = 0, None
    drop = plan.cursor_column == CURSOR_FIELD
    throttle = exp.tuning.throttle_ms / 1000
    # -- layouts hook: value ceiling (guard columns) and batch memory ceiling (engine/layouts.py)
    guards = layouts.guard_columns(plan.read_schema)
    memory_limit = exp.max_batch_memory_mb * 1024 * 1024 if exp.max_batch_memory_mb else None
    budget = layouts.BatchBudget(plan.batch_rows) if memory_limit and exp.on_batch_memory_exceeded == "auto_shrink" \
        else None
    warned_memory = False
    max_bytes: dict[str, int] = {}
    try:
        with open_source(source_cfg, exp.tuning) as src:
            emit(ev.PhaseChanged(exp.name, plan.run_id, "reading"))
            writing = False
            streams = [src.read(sql, plan.read_schema, plan.batch_rows, task.scan_table, budget=budget)
                       for sql in task.split or (task.sql,)]
            for batch in prefetch(streams, on_end=read_slot.release if read_slot is not None else None,
                                  readers=task.readers):
                if stop is not None and stop.is_set():
                    raise stopped_error()
                if guards:
                    batch = layouts.check_values(batch, guards, exp.name, exp.max_value_mb or 0)
                if memory_limit and batch.nbytes > memory_limit:
                    if exp.on_batch_memory_exceeded == "fail":
                        raise layouts.batch_too_large(exp, batch.num_rows, batch.nbytes)
                    # auto_shrink: halve once per batch read under the current budget (batches read ahead under
                    # the larger one do not halve it again); a batch of one row cannot shrink: warn
                    shrunk = budget is not None and 1 < batch.num_rows <= budget.rows and budget.halve()
                    if shrunk or not warned_memory:
                        emit(ev.Warned(exp.name, plan.run_id, layouts.batch_memory_message(
                            exp, batch.num_rows, batch.nbytes, budget.rows if shrunk and budget else None)))
                        warned_memory = True
                if plan.cursor_column:
                    cursor_max = _max(batch.column(plan.cursor_column), cursor_max)
                if drop:
                    batch = batch.drop_columns([CURSOR_FIELD])
                if exp.shape_drift_warn_factor:
                    layouts.measure_bytes(batch, max_bytes)
                if meta is not None:
                    batch = guardrails.add_meta_columns(batch, meta, exported_at, hashed, csv_text)
                if not writing:
                    emit(ev.PhaseChanged(exp.name, plan.run_id, "writing"))
                    writing = True
                added = writer.write(batch)
                rows += batch.num_rows
                emit(ev.BatchWritten(exp.name, plan.run_id, batch.num_rows, added, task.index))
                if throttle:
                    time.sleep(throttle)
        writer.close()
    except BaseException:
        writer.abort()
        for part in committed:
            try:
                dest.delete(part.name)
            except Exception:  # noqa: BLE001 - best effort: an uncommitted part is a foreign file, never a gap
                pass
        raise
    return TaskResult(task.index, writer.parts, rows, cursor_max, worker=threading.current_thread().name,
                      max_bytes=max_bytes)


def _max(column: Any, current: Any) -> Any:
    import pyarrow.compute as pc
    m = pc.max(column).as_py()
    return m if m is not None and (current is None or m > current) else current
