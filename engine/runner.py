"""Run exports: plan → tasks on an executor → commit in the SPEC §3 order → events.

Commit order (never a gap, at-least-once): each part is written to a spool name and committed to the destination
(rename / completed upload) by the task; the coordinator then writes its file-log row. After all parts:
manifest-<run_id>.json and manifest.json → _SUCCESS (hash of the manifest) → cursor → schema → committed
progression → metrics → ExportFinished. A crash anywhere may leave an extra part, never a cursor or boundary
ahead of durable data.
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow.compute as pc
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from engine import events as ev
from engine.config import Config, ExportConfig
from engine.destinations import open_destination
from engine.errors import ExitClass, RivetError, internal
from engine.executors import make_executor
from engine.faults import fault
from engine.formats import PartFile, PartWriter, part_basename
from engine.locks import export_lock
from engine.manifest import (MANIFEST, SUCCESS, build_manifest, manifest_bytes, run_manifest_name, schema_fingerprint,
                             success_bytes)
from engine.planner import CURSOR_FIELD, ExportPlan, TaskSpec, cursor_text, plan_export, run_started_at
from engine.secrets import redact
from engine.sources import open_source

JOURNAL_FLUSH_S = 1.0
JOURNALED = (ev.ExportStarted, ev.ChunkStarted, ev.ChunkFinished, ev.PartCommitted, ev.Retrying, ev.Warned,
             ev.ExportFinished)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class RunOptions:
    names: list[str] = field(default_factory=list)
    parallel_exports: int = 1
    resume: bool = False
    force: bool = False
    strict: bool = False
    lock_wait_s: float = 60.0


@dataclass
class ExportResult:
    name: str
    status: str                      # succeeded | failed | skipped | refused
    run_id: str | None = None
    rows: int = 0
    files: int = 0
    bytes: int = 0
    duration_ms: int = 0
    retries: int = 0
    error: RivetError | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_class(self) -> ExitClass:
        return self.error.exit_class if self.error else ExitClass.OK

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "run_id": self.run_id, "rows": self.rows,
                "files": self.files, "bytes": self.bytes, "duration_ms": self.duration_ms, "retries": self.retries,
                "error": self.error.to_dict() if self.error else None, "warnings": self.warnings}


@dataclass
class TaskResult:
    index: int | None
    parts: list[PartFile]
    rows: int
    cursor_max: object = None
    retries: int = 0
    worker: str = "local"


def _copy_task(task: TaskSpec, plan: ExportPlan, src, dest, emit: ev.Emit, basename: str, commit, committed) -> TaskResult:
    """Fused read+write for a plain full-table scan to Parquet: the source's engine writes the files itself; we
    hash them, count their rows from the footer and commit each, exactly like parts from PartWriter."""
    import hashlib
    import pyarrow.parquet as pq
    exp = plan.export
    spool = dest.spool_dir()
    estimate = plan.rows_estimate or 0
    seen = {"rows": 0}

    def progress(fraction: float) -> None:   # the engine reports progress as a fraction: turn it into rows
        rows = int(estimate * min(fraction, 1.0))
        if rows > seen["rows"]:
            emit(ev.BatchWritten(exp.name, plan.run_id, rows - seen["rows"], 0, task.index))
            seen["rows"] = rows

    parts: list[PartFile] = []
    try:
        files = src.copy_parquet(task.scan_table, plan.write_schema, spool / basename, exp.compression,
                                 exp.max_file_size, plan.batch_rows, progress)
        for i, path in enumerate(files, 1):
            name = f"{basename}_part{i}.parquet" if exp.max_file_size else f"{basename}.parquet"
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(8 << 20):
                    h.update(chunk)
            part = PartFile(path, name, pq.read_metadata(path).num_rows, path.stat().st_size, "sha256:" + h.hexdigest())
            commit(part)
            parts.append(part)
    finally:   # whatever was not committed (a failed or half-written file) leaves the spool
        leftover = spool / basename
        if leftover.is_dir():
            for p in leftover.glob("*"):
                p.unlink(missing_ok=True)
            leftover.rmdir()
        leftover.with_suffix(".parquet").unlink(missing_ok=True)
    total = sum(p.rows for p in parts)
    emit(ev.BatchWritten(exp.name, plan.run_id, total - seen["rows"], sum(p.size_bytes for p in parts), task.index))
    return TaskResult(task.index, parts, total, None, worker=threading.current_thread().name)


def prefetch(batches, depth: int = 2):
    """Pull batches on a helper thread so reading the source overlaps writing the part (both release the GIL).
    The bounded queue keeps at most `depth` batches in memory; an error on either side stops both."""
    import queue
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def pump():
        try:
            for b in batches:
                while not stop.is_set():
                    try:
                        q.put(b, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)
        finally:
            close = getattr(batches, "close", None)
            if close and stop.is_set():
                close()

    t = threading.Thread(target=pump, name="rivet-read", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, RivetError) and exc.transient


def execute_task(task: TaskSpec, plan: ExportPlan, source_cfg, dest, emit: ev.Emit, threads: int | None = None) -> TaskResult:
    """The pure task: read one SQL window from the source, write part files, commit each to the destination.
    Touches no state. On failure, parts this attempt committed are removed again (no manifest references them)."""
    exp = plan.export
    committed: list[PartFile] = []

    def commit(part: PartFile) -> None:
        dest.commit_file(part.local_path, part.name)
        committed.append(part)
        fault("after_part_upload")
        emit(ev.PartCommitted(exp.name, plan.run_id, part.name, part.rows, part.size_bytes, task.index))

    max_size = None if dest.kind == "stdout" else exp.max_file_size   # one stream: never rotate on a pipe
    writer = PartWriter(exp.format, exp.compression, plan.write_schema, dest.spool_dir(),
                        part_basename(exp.name, utcnow(), task.index), max_size, commit)
    rows, cursor_max = 0, None
    drop = plan.cursor_column == CURSOR_FIELD
    throttle = exp.tuning.throttle_ms / 1000
    try:
        with open_source(source_cfg, exp.tuning) as src:
            if (task.scan_table and exp.format == "parquet" and dest.kind != "stdout" and not throttle
                    and hasattr(src, "copy_parquet")):
                return _copy_task(task, plan, src, dest, emit, writer.basename, commit, committed)
            if threads and hasattr(src, "threads"):
                src.threads = threads
            for batch in prefetch(src.read(task.sql, plan.read_schema, plan.batch_rows, task.scan_table)):
                if plan.cursor_column:
                    m = pc.max(batch.column(plan.cursor_column)).as_py()
                    if m is not None and (cursor_max is None or m > cursor_max):
                        cursor_max = m
                if drop:
                    batch = batch.drop_columns([CURSOR_FIELD])
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
            except Exception:
                pass
        raise
    return TaskResult(task.index, writer.parts, rows, cursor_max, worker=threading.current_thread().name)


class Runner:
    def __init__(self, config: Config, store, emit: ev.Emit = ev.ignore, options: RunOptions | None = None,
                 executor=None):
        self.config, self.store, self.options = config, store, options or RunOptions()
        self._emit_outer = emit
        self.executor = executor or make_executor(config)
        self._journal_lock = threading.Lock()
        self._journal: list[tuple] = []
        self._journal_flushed = time.monotonic()
        self.cancelled = threading.Event()

    # -- events ---------------------------------------------------------------------------------------------
    def emit(self, event: ev.Event) -> None:
        if isinstance(event, JOURNALED):
            payload = {k: v for k, v in event.to_dict().items() if k not in ("export", "run_id", "event")}
            with self._journal_lock:
                self._journal.append((event.export, event.run_id, event.kind, payload))
                due = time.monotonic() - self._journal_flushed > JOURNAL_FLUSH_S or isinstance(event, ev.ExportFinished)
            if due:
                self.flush_journal()
        self._emit_outer(event)

    def flush_journal(self) -> None:
        """Write buffered journal rows in one state transaction (not one per event: each opens the state file).
        Runs at most every JOURNAL_FLUSH_S while events flow, and when an export ends."""
        with self._journal_lock:
            rows, self._journal = self._journal, []
            self._journal_flushed = time.monotonic()
        if not rows:
            return
        try:
            with self.store.batch():
                for row in rows:
                    self.store.journal(*row)
        except Exception:  # the journal is observational; never fail an export for it
            pass

    # -- entry points ---------------------------------------------------------------------------------------
    def run(self) -> list[ExportResult]:
        exports = self.config.select(self.options.names)
        n = max(1, self.options.parallel_exports)
        if n == 1 or len(exports) == 1:
            return [self.run_export(e) for e in exports]
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="rivet-export") as pool:
            futures = [pool.submit(self.run_export, e) for e in exports]
            return [f.result() for f in futures]

    def run_plans(self, plans: list[ExportPlan]) -> list[ExportResult]:
        """Run prepared plans (from `rivet apply`): exactly their SQL, no re-planning."""
        return [self.run_export(p.export, p) for p in plans]

    def run_export(self, exp: ExportConfig, plan: ExportPlan | None = None) -> ExportResult:
        t0 = time.monotonic()
        started = utcnow()
        result = ExportResult(exp.name, "failed")
        run_id = plan.run_id if plan else None
        try:
            with export_lock(self.config.state_path, exp.name, self.options.lock_wait_s):
                if plan is None:
                    with open_source(self.config.source, exp.tuning) as src:
                        plan = plan_export(exp, src, self.store, strict=self.options.strict,
                                           resume=self.options.resume, force=self.options.force)
                        lost = self._reopen_lost_chunks(plan) if plan.resumed else None
                        if lost:   # plan again: the reopened chunks are to do
                            plan = plan_export(exp, src, self.store, strict=self.options.strict,
                                               resume=self.options.resume, force=self.options.force)
                            plan.warnings.append(lost)
                run_id = result.run_id = plan.run_id
                self._commit_run(plan, started, result)
                if plan.plan_id and result.status in ("succeeded", "skipped"):   # re-applying is then a no-op
                    self.store.journal(exp.name, plan.run_id, "PlanApplied", {"plan_id": plan.plan_id})
        except RivetError as e:
            result.error = e
            result.status = "refused" if e.exit_class == ExitClass.REFUSED else "failed"
        except Exception as e:  # a bug: report it as one line, keep the traceback for RIVET_DEBUG
            if os.environ.get("RIVET_DEBUG"):
                traceback.print_exc()
            result.error = internal(e)
        result.duration_ms = int((time.monotonic() - t0) * 1000)
        if result.error and result.error.exit_class != ExitClass.OK:
            result.error.message = redact(result.error.message)
        try:
            self.store.record_metrics(export_name=exp.name, run_id=run_id or "-", mode=exp.mode, status=result.status,
                                      started_at=iso(started), finished_at=iso(utcnow()), duration_ms=result.duration_ms,
                                      rows=result.rows, files=result.files, bytes=result.bytes, retries=result.retries,
                                      error_code=result.error.code if result.error else None,
                                      error_message=result.error.message if result.error else None)
            self.store.set_last_run(exp.name, run_id or "-", result.status)
        except RivetError as e:
            result.error = result.error or e
        self.emit(ev.ExportFinished(exp.name, run_id or "-", result.status, result.rows, result.files, result.bytes,
                                    result.duration_ms, result.retries,
                                    result.error.to_dict() if result.error else None))
        return result

    def _reopen_lost_chunks(self, plan: ExportPlan) -> str | None:
        """Resuming a chunk run: a completed chunk whose parts are no longer in the destination (deleted, bucket
        recreated) is exported again; skipping it would put _SUCCESS over a prefix with a gap. Returns a warning."""
        exp = plan.export
        if exp.destination.type == "stdout":
            return None
        present = dict(open_destination(exp.destination, exp.name, plan.run_id, run_started_at(plan.run_id)).list())
        lost: dict[int, list[str]] = {}
        for f in self.store.files(exp.name, run_id=plan.run_id, status="committed"):
            if f["chunk_index"] is not None and present.get(f["path"]) != f["size_bytes"]:
                lost.setdefault(f["chunk_index"], []).append(f["path"])
        if not lost:
            return None
        self.store.supersede_files(exp.name, [p for paths in lost.values() for p in paths])
        for idx in lost:
            self.store.reopen_task(plan.run_id, idx)
        return (f"{sum(map(len, lost.values()))} part(s) of completed chunks {sorted(lost)} are missing from the "
                "destination; those chunks are exported again")

    # -- one export -----------------------------------------------------------------------------------------
    def _commit_run(self, plan: ExportPlan, started: datetime, result: ExportResult) -> None:
        exp, store = plan.export, self.store
        for w in plan.warnings:
            result.warnings.append(w)
            self.emit(ev.Warned(exp.name, plan.run_id, w))
        if plan.schema_changes:
            msg = f"schema changed since the last run: {'; '.join(plan.schema_changes)}"
            if exp.on_schema_drift == "fail":
                raise RivetError("RIVET_SCHEMA_DRIFT", f"export {exp.name!r}: {msg}",
                                 "set on_schema_drift = \"warn\" to accept it, or fix the source", ExitClass.DRIFT)
            if exp.on_schema_drift == "warn":
                result.warnings.append(msg)
                self.emit(ev.Warned(exp.name, plan.run_id, msg))

        dest = open_destination(exp.destination, exp.name, plan.run_id, run_started_at(plan.run_id))
        if exp.mode == "chunked" and exp.chunk_checkpoint:
            existing = store.latest_chunk_run(exp.name)
            if plan.resumed or (existing and existing["run_id"] == plan.run_id):
                store.reset_running(plan.run_id)     # tasks of a killed process go back to pending
                done = {t["chunk_index"] for t in store.chunk_tasks(plan.run_id, status="completed")}
                plan.tasks = [t for t in plan.tasks if t.index not in done]
            else:
                store.create_chunk_run(exp.name, plan.run_id, plan.plan_hash, plan.chunk_column,
                                       [(t.index, t.lo, t.hi) for t in plan.tasks])
        self.emit(ev.ExportStarted(exp.name, plan.run_id, exp.mode, plan.chunks_total or None, plan.chunks_done,
                                   plan.rows_estimate))
        to_stdout = dest.kind == "stdout"
        dest.sweep_spool(exp.name)   # spool files of a killed earlier run (we hold the export's lock)
        if not to_stdout and dest.head(SUCCESS) is not None:
            dest.delete(SUCCESS)   # the prefix is in flux until this run's _SUCCESS lands

        failures: list[RivetError] = []
        cursor_max = None
        parallel = max(1, exp.parallel) if exp.mode == "chunked" else 1
        threads = max(1, (os.cpu_count() or 2) // parallel)
        with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="rivet-task") as pool:
            # each `rivet run` gives a failed chunk a fresh budget of chunk_max_attempts tries beyond those spent
            spent = ({t["chunk_index"]: t["attempts"] or 0 for t in store.chunk_tasks(plan.run_id)}
                     if exp.mode == "chunked" and exp.chunk_checkpoint else {})
            futures = [pool.submit(self._attempt_task, t, plan, dest, threads, spent.get(t.index, 0))
                       for t in plan.tasks]
            for fut in as_completed(futures):
                try:
                    tr: TaskResult = fut.result()
                except RivetError as e:
                    failures.append(e)
                    if exp.mode != "chunked":
                        raise
                    continue
                with store.batch():   # one state transaction per finished task
                    for part in tr.parts:   # file-log row only after the part is durable in the destination
                        store.log_file(exp.name, plan.run_id, part.name, part.rows, part.size_bytes,
                                       part.content_hash, tr.index, exp.format, exp.compression)
                    if tr.index is not None and exp.chunk_checkpoint:
                        store.complete_task(plan.run_id, tr.index, tr.rows, ",".join(p.name for p in tr.parts))
                fault("after_file_log")
                result.rows += tr.rows
                result.retries += tr.retries
                if tr.cursor_max is not None and (cursor_max is None or tr.cursor_max > cursor_max):
                    cursor_max = tr.cursor_max

        dest.close()
        files = store.files(exp.name, run_id=plan.run_id)
        live = [f for f in files if f.get("status", "committed") == "committed"]
        result.files = len(live)
        result.bytes = sum(f["size_bytes"] for f in live)
        if plan.resumed:
            result.rows = sum(f["rows"] for f in live)
        status = "failed" if failures else "succeeded"
        if status == "succeeded" and result.rows == 0 and exp.skip_empty:
            result.status = "skipped"
            return
        manifest = build_manifest(
            run_id=plan.run_id, export_name=exp.name, mode=exp.mode, started_at=iso(started), finished_at=iso(utcnow()),
            status=status, source_engine=self.config.source.type, source_table=exp.table, dest_kind=dest.kind,
            dest_uri=dest.uri, fmt=exp.format, compression=exp.compression,
            schema_fingerprint=schema_fingerprint(plan.write_schema),
            parts=[{"path": f["path"], "rows": f["rows"], "size_bytes": f["size_bytes"],
                    "content_hash": f["content_hash"], "status": f.get("status", "committed"),
                    **({"chunk_index": f["chunk_index"]} if f.get("chunk_index") is not None else {})} for f in files],
            cursor_low=plan.cursor_from, cursor_high=cursor_text(cursor_max) if cursor_max is not None else plan.cursor_from,
            chunk_run={"chunk_column": plan.chunk_column, "chunks": plan.chunks_total} if exp.mode == "chunked" else None)
        data = manifest_bytes(manifest)
        dest.put_bytes(run_manifest_name(plan.run_id), data)
        dest.put_bytes(MANIFEST, data)
        fault("after_manifest")
        if failures:
            if exp.mode == "chunked" and exp.chunk_checkpoint:
                store.finish_chunk_run(plan.run_id, "failed")
            first = failures[0]
            raise RivetError(first.code, f"export {exp.name!r}: {len(failures)} of {len(plan.tasks)} chunks failed; "
                             f"first: {first.message}", first.hint or "rerun `rivet run` to retry the failed chunks",
                             first.exit_class, first.transient)
        dest.put_bytes(SUCCESS, success_bytes(data))
        fault("after_success")

        if to_stdout and not self.options.force:
            # bytes on a pipe are not durable or retry-safe: keep the cursor where it was unless --force
            if exp.mode == "incremental" and cursor_max is not None:
                result.warnings.append("stdout destination: the cursor was not advanced (add --force to advance it)")
            result.status = "succeeded"
            return
        # State moves only now that the data it covers is durable (SPEC §3).
        if exp.mode == "incremental" and cursor_max is not None:
            store.set_cursor(exp.name, cursor_text(cursor_max), exp.cursor_column, plan.cursor_identity, plan.run_id)
            fault("after_cursor")
        store.set_schema(exp.name, [{"name": m.name, "type": m.native_type} for m in plan.mappings],
                         schema_fingerprint(plan.write_schema))
        if exp.mode == "chunked" and exp.chunk_checkpoint:
            store.finish_chunk_run(plan.run_id, "completed")
        self._record_committed(plan, cursor_max, result)
        fault("after_progression")
        result.status = "succeeded"

    def _record_committed(self, plan: ExportPlan, cursor_max, result: ExportResult) -> None:
        """Committed progression, written last (seed PG2): a failure here is logged, never fatal."""
        exp = plan.export
        try:
            if exp.mode == "incremental" and cursor_max is not None:
                self.store.record_committed_incremental(exp.name, cursor_text(cursor_max), plan.run_id)
            elif exp.mode == "chunked" and exp.chunk_checkpoint:
                done = [t["chunk_index"] for t in self.store.chunk_tasks(plan.run_id, status="completed")]
                if done:
                    self.store.record_committed_chunked(exp.name, max(done), plan.run_id)
        except Exception as e:  # noqa: BLE001 - advisory only (PG7)
            msg = f"could not record the committed boundary: {redact(str(e))}"
            result.warnings.append(msg)
            self.emit(ev.Warned(exp.name, plan.run_id, msg))

    def _attempt_task(self, task: TaskSpec, plan: ExportPlan, dest, threads: int, spent: int = 0) -> TaskResult:
        """Retry transient failures with exponential backoff. Chunk tries are recorded in state and capped by
        chunk_max_attempts (so a crash does not reset the count); other tasks get max_retries retries."""
        exp = plan.export
        chunked = task.index is not None and exp.chunk_checkpoint
        limit = exp.chunk_max_attempts if chunked else exp.tuning.max_retries + 1
        retries = 0

        def before_sleep(state: RetryCallState) -> None:
            nonlocal retries
            retries += 1
            err = state.outcome.exception()
            self.emit(ev.Retrying(exp.name, plan.run_id, state.attempt_number, str(err),
                                  state.next_action.sleep if state.next_action else 0, task.index))

        def once() -> TaskResult:
            if self.cancelled.is_set():
                raise RivetError("RIVET_RUN_CANCELLED", "cancelled", "run again to resume", ExitClass.TRANSIENT)
            attempt = 1
            if chunked:
                attempt = self.store.start_task(plan.run_id, task.index, max_attempts=spent + limit)
            def started(worker: str) -> None:   # called by the executor once the task is placed
                if task.index is not None:
                    self.emit(ev.ChunkStarted(exp.name, plan.run_id, task.index, task.lo, task.hi, attempt, worker))
            try:
                tr = self.executor.run_task(task, plan, self.config.source, dest, self.emit, threads, started)
            except Exception as e:
                err = e if isinstance(e, RivetError) else internal(e)
                if chunked:
                    self.store.fail_task(plan.run_id, task.index, redact(err.message))
                if task.index is not None:
                    self.emit(ev.ChunkFinished(exp.name, plan.run_id, task.index, 0, "failed", redact(err.message)))
                raise err from e
            if task.index is not None:
                self.emit(ev.ChunkFinished(exp.name, plan.run_id, task.index, tr.rows, "completed", worker=tr.worker))
            return tr

        backoff = exp.tuning.retry_backoff_ms / 1000
        retrying = Retrying(retry=retry_if_exception(_is_transient), stop=stop_after_attempt(limit),
                            wait=wait_exponential(multiplier=backoff, min=backoff, max=60), before_sleep=before_sleep,
                            reraise=True)
        tr = retrying(once)
        tr.retries = retries
        return tr


def run_exports(config: Config, store, emit: ev.Emit = ev.ignore, options: RunOptions | None = None) -> list[ExportResult]:
    return Runner(config, store, emit, options).run()


def worst_exit(results: list[ExportResult]) -> ExitClass:
    return max((r.exit_class for r in results), default=ExitClass.OK)


__all__ = ["Runner", "RunOptions", "ExportResult", "run_exports", "worst_exit", "execute_task"]
