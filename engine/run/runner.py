"""The coordinator: plan each export, run its tasks on an executor, record each part, certify the run.

Per export, under the export's lock (engine/locks.py) and the source's guard (`Source.hold`: PostgreSQL holds
ACCESS SHARE locks on what the export reads, so no table rewrite can hide rows from it):
plan → tasks (engine/run/task.py, on the executor) → one file-log row per part as each task returns → certify
(engine/run/commit.py: manifest → _SUCCESS → cursor/schema/chunk run → committed progression) → metrics →
ExportFinished. Only this module and commit.py write state during a run; tasks are pure.
"""
from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from contextlib import nullcontext
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from engine import events as ev
from engine import guardrails, layouts
from engine.config import Config, ExportConfig
from engine.destinations import Destination, open_destination
from engine.errors import ExitClass, RivetError, internal
from engine.faults import fault
from engine.formats import csv_text
from engine.locks import export_lock
from engine.manifest import SUCCESS
from engine.planner import ExportPlan, TaskSpec, plan_export, plan_windows, relation_of, run_started_at
from engine.run.commit import RunCommit, certify, iso
from engine.run.executors import Executor, make_executor
from engine.run.task import STOPPED, ReadSlot, TaskResult, stopped_error
from engine.secrets import redact
from engine.sources import LOCKED, Source, open_source
from engine.state import StateStore
from engine.state.store import ExportRows
from engine.state.rows import LoggedPart

JOURNALED = (ev.ExportStarted, ev.ChunkStarted, ev.ChunkFinished, ev.PartCommitted, ev.Retrying, ev.Warned,
             ev.ExportFinished)

def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class RunOptions:
    names: list[str] = field(default_factory=list)
    parallel_exports: int | None = None      # None: the config's [run] parallel_exports
    resume: bool = False
    force: bool = False
    strict: bool = False
    lock_wait_s: float = 60.0


@dataclass
class ExportResult:
    name: str
    status: str                      # succeeded | failed | skipped | refused | stopped
    run_id: str | None = None
    rows: int = 0
    files: int = 0
    bytes: int = 0
    duration_ms: int = 0
    retries: int = 0
    error: RivetError | None = None
    warnings: list[str] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)        # parts this run committed
    superseded: list[str] = field(default_factory=list)   # parts it replaced (repair)

    @property
    def exit_class(self) -> ExitClass:
        return self.error.exit_class if self.error else ExitClass.OK

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "run_id": self.run_id, "rows": self.rows,
                "files": self.files, "bytes": self.bytes, "duration_ms": self.duration_ms, "retries": self.retries,
                "error": self.error.to_dict() if self.error else None, "warnings": self.warnings,
                "parts": self.parts, "superseded": self.superseded}


@dataclass(frozen=True)
class Repair:
    """A repair run (engine/repair.py): export again some windows (index, lo, hi) of chunk run `run_id` as new
    parts. The parts they replace are marked superseded only once the new manifest and _SUCCESS are durable."""
    run_id: str
    chunk_column: str
    windows: tuple[tuple[int, str, str], ...]
    repair_id: str


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, RivetError) and exc.transient


class Runner:
    def __init__(self, config: Config, store: StateStore, emit: ev.Emit = ev.ignore,
                 options: RunOptions | None = None, executor: Executor | None = None):
        self.config, self.store, self.options = config, store, options or RunOptions()
        self._emit_outer = emit
        self._own_executor = executor is None
        self.executor = executor or make_executor(config)
        self.cancelled = threading.Event()

    def close(self) -> None:
        """Let go of the executor this runner made (a Dask client); one passed in is its caller's to close."""
        if self._own_executor:
            self.executor.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cancel(self) -> None:
        """Stop: exports not started yet never start, running ones stop between batches as "stopped" (resumable)."""
        self.cancelled.set()

    # -- events ---------------------------------------------------------------------------------------------
    def emit(self, event: ev.Event) -> None:
        if isinstance(event, JOURNALED):   # the state's writer commits these with its next group, in one statement
            payload = {k: v for k, v in event.to_dict().items() if k not in ("export", "run_id", "event")}
            self.store.journal_async(event.export, event.run_id, event.kind, payload)
        self._emit_outer(event)

    # -- entry points ---------------------------------------------------------------------------------------
    @property
    def parallel_exports(self) -> int:
        """`--parallel-exports` when given, else the config's `[run] parallel_exports` (default 4)."""
        return max(1, self.options.parallel_exports or self.config.run.parallel_exports)

    def run(self) -> list[ExportResult]:
        exports = self.config.select(self.options.names)
        n = self.parallel_exports
        if n == 1 or len(exports) == 1:
            return [self.run_export(e) for e in exports]
        # Each export's last state write (metrics, last run) is committed while the next export starts; its error,
        # if any, is the export's before run() returns.
        recording: list[tuple[ExportResult, Future[None]]] = []
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="rivet-export") as pool:
            futures = [pool.submit(self.run_export, e, recording=recording) for e in exports]
            results = [f.result() for f in futures]
        for result, recorded in recording:
            try:
                recorded.result()
            except RivetError as e:
                result.error = result.error or e
        return results

    def run_plans(self, plans: list[ExportPlan]) -> list[ExportResult]:
        """Run prepared plans (from `rivet apply`): exactly their SQL, no re-planning."""
        return [self.run_export(p.export, p) for p in plans]

    def run_export(self, exp: ExportConfig, plan: ExportPlan | None = None, repair: Repair | None = None,
                   locked: bool = False,
                   recording: list[tuple[ExportResult, Future[None]]] | None = None) -> ExportResult:
        """Run one export. `locked`: the caller already holds the export's lock (repair holds it from its
        reconcile on). `recording`: return without waiting for the metrics and last-run write; its future is
        appended there with the result (the caller waits and attaches its error)."""
        if self.cancelled.is_set():   # stopped before it started: nothing to record
            error = stopped_error()
            result = ExportResult(exp.name, "stopped", error=error)
            self.emit(ev.ExportFinished(exp.name, "-", "stopped", error=error.to_dict()))
            return result
        t0 = time.monotonic()
        started = utcnow()
        result = ExportResult(exp.name, "failed")
        run_id = plan.run_id if plan else None
        try:
            lock = nullcontext() if locked else export_lock(self.config.state_path, exp.name, self.options.lock_wait_s)
            with lock:
                # the planner's state read, started now: it waits for the writer while the source connects
                stored_rows = self.store.read_export_rows(exp.name) if plan is None and repair is None else None
                self.emit(ev.PhaseChanged(exp.name, run_id or "-", "connecting"))
                with open_source(self.config.source, exp.tuning) as src, src.hold(relation_of(exp)):
                    if plan is None:
                        self.emit(ev.PhaseChanged(exp.name, "-", "planning"))
                        plan = self._plan(exp, src, repair, stored_rows)
                    run_id = result.run_id = plan.run_id
                    self._run_plan(plan, src, started, result, repair)
                if plan.plan_id and result.status in ("succeeded", "skipped"):   # re-applying is then a no-op
                    self.store.journal(exp.name, plan.run_id, "PlanApplied", {"plan_id": plan.plan_id})
        except RivetError as e:
            result.error = e
            result.status = ("stopped" if e.code == STOPPED else
                             "refused" if e.exit_class == ExitClass.REFUSED else "failed")
        except Exception as e:  # a bug: report it as one line, keep the traceback for RIVET_DEBUG
            if os.environ.get("RIVET_DEBUG"):
                traceback.print_exc()
            result.error = internal(e)
        result.duration_ms = int((time.monotonic() - t0) * 1000)
        if result.error and result.error.exit_class != ExitClass.OK:
            result.error.message = redact(result.error.message)
        later: list[Future[None]] | None = [] if recording is not None else None
        try:
            with self.store.batch(later):   # one state transaction: the writer is shared by every export in flight
                failure = result.error
                self.store.record_metrics(
                    export_name=exp.name, run_id=run_id or "-", mode=exp.mode, status=result.status,
                    started_at=iso(started), finished_at=iso(utcnow()), duration_ms=result.duration_ms, rows=result.rows,
                    files=result.files, bytes=result.bytes, retries=result.retries,
                    error_code=failure.code if failure else None,
                    error_message=failure.message if failure else None)
                self.store.set_last_run(exp.name, run_id or "-", result.status,
                                        new=plan is not None and plan.has_state_row is False)
        except RivetError as e:
            result.error = result.error or e
        if recording is not None and later:
            recording.append((result, later[0]))
        # -- guardrails hook: [notifications] (engine/guardrails.py); a failed delivery is a warning, never a failure
        schema_changed = plan is not None and bool(plan.schema_changes) and repair is None
        facts = result.to_dict()
        n = self.config.notifications
        if n is not None and "degraded" in n.on and result.status == "succeeded":
            recent = [m["duration_ms"] for m in self.store.metrics(exp.name, guardrails.SLOW_HISTORY + 1)
                      if m["status"] == "succeeded" and m["run_id"] != run_id and m["duration_ms"] is not None]
            recent = recent[:guardrails.SLOW_HISTORY]
            facts["slow"] = guardrails.slow_reason(result.duration_ms, recent)
        undelivered = guardrails.notify(n, facts, schema_changed, os.environ)
        if undelivered:
            result.warnings.append(undelivered)
            self.emit(ev.Warned(exp.name, run_id or "-", undelivered))
        self.emit(ev.ExportFinished(exp.name, run_id or "-", result.status, result.rows, result.files, result.bytes,
                                    result.duration_ms, result.retries,
                                    result.error.to_dict() if result.error else None))
        return result

    def _plan(self, exp: ExportConfig, src: Source, repair: Repair | None,
              stored_rows: Future[ExportRows] | None = None) -> ExportPlan:
        o = self.options
        if repair is not None:
            latest = self.store.latest_chunk_run(exp.name)
            if latest is None or latest["run_id"] != repair.run_id:
                raise RivetError("RIVET_REPAIR_STALE_REPORT", f"export {exp.name!r}: chunk run {repair.run_id} is no "
                                 f"longer the latest ({latest['run_id'] if latest else 'none'})",
                                 f"reconcile again: `rivet reconcile -e {exp.name}`", ExitClass.REFUSED)
            return plan_windows(exp, src, self.store, repair.run_id, repair.chunk_column, list(repair.windows))
        plan = plan_export(exp, src, self.store, strict=o.strict, resume=o.resume, force=o.force,
                           stored_rows=stored_rows)
        lost = self._reopen_lost_chunks(plan) if plan.resumed else None
        if lost:   # plan again: the reopened chunks are to do
            plan = plan_export(exp, src, self.store, strict=o.strict, resume=o.resume, force=o.force)
            plan.warnings.append(lost)
        return plan

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
    def _warn(self, plan: ExportPlan, result: ExportResult, message: str) -> None:
        result.warnings.append(message)
        self.emit(ev.Warned(plan.export.name, plan.run_id, message))

    def _run_plan(self, plan: ExportPlan, src: Source, started: datetime, result: ExportResult,
                  repair: Repair | None) -> None:
        exp, store = plan.export, self.store
        for w in plan.warnings:
            self._warn(plan, result, w)
        if plan.schema_changes and repair is None:
            msg = f"schema changed since the last run: {'; '.join(plan.schema_changes)}"
            if exp.on_schema_drift == "fail":
                raise RivetError("RIVET_SCHEMA_DRIFT", f"export {exp.name!r}: {msg}",
                                 "set on_schema_drift = \"warn\" to accept it, or fix the source", ExitClass.DRIFT)
            if exp.on_schema_drift == "warn":
                self._warn(plan, result, msg)

        # -- guardrails hook: every gated or hashed column exists, before any row is read (engine/guardrails.py)
        guardrails.precheck(exp, plan.write_schema.names, exp.destination.type)
        dest = open_destination(exp.destination, exp.name, plan.run_id, run_started_at(plan.run_id))
        to_stdout = dest.kind == "stdout"
        checkpointed = exp.mode == "chunked" and exp.chunk_checkpoint and repair is None
        if checkpointed:
            existing = store.latest_chunk_run(exp.name)
            if plan.resumed or (existing and existing["run_id"] == plan.run_id):
                store.reset_running(plan.run_id)     # tasks of a killed process go back to pending
                done = {t["chunk_index"] for t in store.chunk_tasks(plan.run_id, status="completed")}
                plan.tasks = [t for t in plan.tasks if t.index not in done]
            else:
                chunks = [(t.index, t.lo, t.hi) for t in plan.tasks if t.index is not None]
                assert len(chunks) == len(plan.tasks)   # the planner numbers every task of a chunked plan
                store.create_chunk_run(exp.name, plan.run_id, plan.plan_hash, plan.chunk_column, chunks)
        self.emit(ev.ExportStarted(exp.name, plan.run_id, exp.mode, plan.chunks_total or None, plan.chunks_done,
                                   plan.rows_estimate))
        try:
            if not to_stdout:
                dest.sweep_spool(exp.name)   # spool files of a killed earlier run (we hold the export's lock)
                if dest.head(SUCCESS) is not None:
                    dest.retract_on_commit = SUCCESS   # the prefix is in flux from this run's first part on
                    if exp.mode != "incremental" and repair is None and not plan.resumed:
                        self._warn(plan, result, prefix_holds_run(dest))
            self._run_tasks(plan, src, dest, started, result, repair)
        finally:
            dest.close()

    def _run_tasks(self, plan: ExportPlan, src: Source, dest: Destination, started: datetime, result: ExportResult,
                   repair: Repair | None) -> None:
        exp, store = plan.export, self.store
        checkpointed = exp.mode == "chunked" and exp.chunk_checkpoint and repair is None
        failures: list[RivetError] = []
        not_started = 0
        logged: list[LoggedPart] = []
        cursor_max = None
        max_bytes: dict[str, int] = {}   # shape drift (engine/layouts.py)
        if repair is not None:   # what the windows hold now, before this run adds parts to them
            redo = {w[0] for w in repair.windows}
            result.superseded = [f["path"] for f in store.files(exp.name, run_id=plan.run_id, status="committed")
                                 if f["chunk_index"] in redo]
        parallel = max(1, exp.parallel) if exp.mode == "chunked" else 1
        # each `rivet run` gives a failed chunk a fresh budget of chunk_max_attempts tries beyond those spent
        spent: dict[int | None, int] = (   # looked up by task index: None for the one task of other modes
            {t["chunk_index"]: t["attempts"] or 0 for t in store.chunk_tasks(plan.run_id)} if checkpointed else {})
        for outcomes in self._task_outcomes(plan, dest, checkpointed, spent, parallel):
            finished: list[TaskResult] = []
            for fut in outcomes:
                try:
                    tr: TaskResult | None = fut.result()
                except RivetError as e:
                    failures.append(e)
                    if exp.mode != "chunked":
                        raise
                    continue
                if tr is None:   # not started: a rewrite is queued behind the export (_attempt_task)
                    not_started += 1
                    continue
                finished.append(tr)
            if not finished:
                continue
            # one state transaction for every task that finished meanwhile, its rows of a kind in one statement;
            # file-log rows only now that the parts are durable in the destination
            with store.batch():
                for tr in finished:
                    for part in tr.parts:
                        store.log_file(exp.name, plan.run_id, part.name, part.rows, part.size_bytes,
                                       part.content_hash, tr.index, exp.format, exp.compression)
                for tr in finished:
                    if tr.index is not None and checkpointed:
                        store.complete_task(plan.run_id, tr.index, tr.rows, ",".join(p.name for p in tr.parts))
            for tr in finished:
                logged += [LoggedPart(path=p.name, rows=p.rows, size_bytes=p.size_bytes, content_hash=p.content_hash,
                                      chunk_index=tr.index, status="committed") for p in tr.parts]
                fault("after_file_log")
                result.parts += [p.name for p in tr.parts]
                result.rows += tr.rows
                result.retries += tr.retries
                if tr.cursor_max is not None and (cursor_max is None or tr.cursor_max > cursor_max):
                    cursor_max = tr.cursor_max
                layouts.merge_max(max_bytes, tr.max_bytes)
        if any(e.code == STOPPED for e in failures) or self.cancelled.is_set():
            if checkpointed:
                store.reset_running(plan.run_id)   # stopped chunks are to do again, their attempt not counted
            raise stopped_error()

        # a run that resumed or repairs a chunk run also has parts logged by earlier processes: read them all back;
        # a fresh run's file log is exactly what this loop logged (one read less per export)
        files: Sequence[LoggedPart] = store.files(exp.name, run_id=plan.run_id) if plan.resumed or repair else logged
        live = [f for f in files if f.get("status", "committed") == "committed"]
        if repair is None:
            result.files = len(live)
            result.bytes = sum(f["size_bytes"] for f in live)
            if plan.resumed:
                result.rows = sum(f["rows"] for f in live)
        if not failures and result.rows == 0 and exp.skip_empty and not live:
            result.status = "skipped"   # nothing was committed: the prefix is exactly as it was
            return
        if not failures:
            src.verify_hold()
            # -- layouts hook: shape drift against the maximum stored beside the schema (engine/layouts.py)
            stored = plan.stored_schema if plan.stored_schema is not None else store.get_schema(exp.name)
            for message in layouts.shape_drift(stored or None, max_bytes, exp.shape_drift_warn_factor):
                self._warn(plan, result, message)
        commit = RunCommit(plan, dest, run_started_at(plan.run_id) if repair else started, utcnow(),
                           failed=bool(failures), cursor_max=cursor_max,
                           advance_cursor=dest.kind != "stdout" or self.options.force, files=files,
                           max_bytes=max_bytes)
        if repair is not None:
            commit.superseded = result.superseded
            commit.manifest_id = repair.repair_id
            commit.chunk_run_note = {"repair_id": repair.repair_id}
        # -- guardrails hook (engine/guardrails.py): meta columns recorded in the manifest; quality gates measured
        # over the run's parts before the manifest; a failed gate certifies the run as failed (no _SUCCESS, no cursor)
        gate_error = None
        if exp.meta_columns is not None and exp.meta_columns.enabled:
            commit.manifest_extra["meta_columns"] = guardrails.meta_manifest(
                exp.meta_columns, run_started_at(plan.run_id),
                guardrails.hash_columns(exp.meta_columns, plan.write_schema.names))
        if exp.quality is not None and not failures and repair is None:
            report = guardrails.evaluate_quality(exp.quality, exp.format, live, dest)
            commit.manifest_extra["quality"] = report.to_manifest()
            gate_error = guardrails.quality_error(exp.name, report)
            commit.failed = gate_error is not None
        if exp.column_checksums and not commit.failed:   # the parts the manifest will name as committed
            named = [f for f in live if f["path"] not in set(commit.superseded)]
            per_part, run_sums = guardrails.part_checksums(named, dest, csv_text)
            commit.part_extra = {path: {"column_checksums": sums} for path, sums in per_part.items()}
            commit.manifest_extra["column_checksums"] = guardrails.checksums_manifest(run_sums)
        for w in certify(store, self.config.source.type, commit, self.emit):
            self._warn(plan, result, w)
        if gate_error is not None:
            if checkpointed:   # the next run starts a new chunk run instead of resuming the rejected one
                store.abandon_chunk_run(plan.run_id)
            raise gate_error
        if failures:
            first = failures[0]
            skipped = f", {not_started} not started" if not_started else ""
            raise RivetError(first.code, f"export {exp.name!r}: {len(failures)} of {len(plan.tasks)} chunks "
                             f"failed{skipped}; first: {first.message}",
                             first.hint or "rerun `rivet run` to retry the failed chunks", first.exit_class,
                             first.transient)
        if dest.kind == "stdout" and not self.options.force and exp.mode == "incremental" and cursor_max is not None:
            result.warnings.append("stdout destination: the cursor was not advanced (add --force to advance it)")
        result.status = "succeeded"

    def _task_outcomes(self, plan: ExportPlan, dest: Destination, checkpointed: bool, spent: dict[int | None, int],
                       parallel: int) -> Iterator[list[Future[TaskResult | None]]]:
        """The tasks' outcomes as they complete: every outcome ready at once, in task order, so that their state is
        written in one transaction (with 8 chunks in flight, several finish while the last batch commits).

        On this process's threads, one more task than `parallel` runs: at most `parallel` of them read the source
        (task.ReadSlot), the extra one writes the tail of a chunk whose reads have ended while the next chunk's
        read starts. Not when the export is throttled (throttle_ms, the production profile) or streams to stdout
        (its parts keep chunk order there): chunks follow one another strictly. An export of one task runs in this
        thread: a pool would add a thread and two hand-overs to every export, and most exports are one small task."""
        locked = threading.Event()
        pooled = len(plan.tasks) > 1
        overlap = (pooled and self.executor.name == "local" and not plan.export.tuning.throttle_ms
                   and dest.kind != "stdout")
        reads = threading.Semaphore(parallel) if overlap else None

        def attempt(task: TaskSpec) -> TaskResult | None:
            return self._attempt_task(task, plan, dest, checkpointed, locked, spent.get(task.index, 0), reads)
        if pooled:
            ready: queue.SimpleQueue[tuple[int, Future[TaskResult | None]]] = queue.SimpleQueue()
            threads = parallel + 1 if overlap else parallel
            with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="rivet-task") as pool:
                def deliver(i: int) -> Callable[[Future[TaskResult | None]], None]:
                    return lambda future: ready.put((i, future))
                for i, task in enumerate(plan.tasks):
                    pool.submit(attempt, task).add_done_callback(deliver(i))
                left = len(plan.tasks)
                while left:   # (not futures.wait: each call visits every pending future, 1,000s in a chunked run)
                    done = [ready.get()]
                    while not ready.empty():
                        done.append(ready.get())
                    left -= len(done)
                    yield [future for _, future in sorted(done, key=lambda d: d[0])]
            return
        for task in plan.tasks:
            outcome: Future[TaskResult | None] = Future()
            try:
                outcome.set_result(attempt(task))
            except Exception as e:   # noqa: BLE001 - raised again by outcome.result(), as a pool's future would
                outcome.set_exception(e)
            yield [outcome]

    def _attempt_task(self, task: TaskSpec, plan: ExportPlan, dest: Destination, checkpointed: bool,
                      locked: threading.Event, spent: int = 0,
                      reads: threading.Semaphore | None = None) -> TaskResult | None:
        """Retry transient failures with exponential backoff. Chunk tries are recorded in state and capped by
        chunk_max_attempts (so a crash does not reset the count); other tasks get max_retries retries.

        Once a task of the export failed with LOCKED, the tasks after it return None without starting: a rewrite
        waits behind the export's guard and every read queues behind the rewrite, so each would wait out the read
        lock timeout, holding up the rewrite and every query queued behind it, only to fail the same way (with
        1,000 chunks: hours). Their chunks stay pending for the next run."""
        if locked.is_set():
            return None
        exp = plan.export
        chunk = task.index if checkpointed else None   # state counts the tries of a checkpointed chunk only
        limit = exp.chunk_max_attempts if chunk is not None else exp.tuning.max_retries + 1
        retries = 0
        tries = 0   # this run's attempts of the chunk; state counts them on top of `spent`

        def before_sleep(state: RetryCallState) -> None:
            nonlocal retries
            retries += 1
            err = state.outcome.exception() if state.outcome else None
            self.emit(ev.Retrying(exp.name, plan.run_id, state.attempt_number, str(err),
                                  state.next_action.sleep if state.next_action else 0, task.index))

        def once() -> TaskResult | None:
            if self.cancelled.is_set():
                raise stopped_error()
            slot = ReadSlot(reads, self.cancelled) if reads is not None else None   # before the chunk shows as started
            try:
                if locked.is_set():   # the chunk that held the slot met a rewrite: this one would wait it out too
                    return None
                return attempt_once(slot)
            finally:
                if slot is not None:
                    slot.release()

        def attempt_once(slot: ReadSlot | None) -> TaskResult:
            nonlocal tries
            attempt, recorded = 1, None
            if chunk is not None:
                # The start commits with the state writer's next group, beside every other chunk's, and the task
                # does not wait for it: under the export's lock this run is the only one moving its chunks, so the
                # attempt number is known here. A start state refuses anyway fails the attempt below.
                tries += 1
                attempt = spent + tries
                recorded = self.store.start_task_soon(plan.run_id, chunk, max_attempts=spent + limit)

            def refused() -> RivetError | None:
                if recorded is None:
                    return None
                try:
                    recorded.result()
                except RivetError as no:
                    return no
                return None

            def started(worker: str) -> None:   # called by the executor once the task is placed
                if task.index is not None:
                    self.emit(ev.ChunkStarted(exp.name, plan.run_id, task.index, task.lo, task.hi, attempt, worker))
            try:
                tr = self.executor.run_task(task, plan, self.config.source, dest, self.emit, started, self.cancelled,
                                            read_slot=slot)
            except Exception as e:
                err = e if isinstance(e, RivetError) else internal(e)
                if err.code == STOPPED:
                    raise err from e     # left running: reset to pending when the run stops
                if err.code == LOCKED:
                    locked.set()
                no = refused()
                if no is not None:       # the refusal is the error to report: the chunk never was this attempt's
                    err = no
                elif chunk is not None:
                    self.store.fail_task(plan.run_id, chunk, redact(err.message))
                if task.index is not None:
                    self.emit(ev.ChunkFinished(exp.name, plan.run_id, task.index, 0, "failed", redact(err.message)))
                raise err from e
            no = refused()
            if no is not None and chunk is not None:   # its parts are never logged, nor in a manifest: take them back
                for part in tr.parts:
                    try:
                        dest.delete(part.name)
                    except Exception:  # noqa: BLE001 - best effort, as for a failed attempt's parts
                        pass
                self.emit(ev.ChunkFinished(exp.name, plan.run_id, chunk, 0, "failed", no.message))
                raise no
            if task.index is not None:
                self.emit(ev.ChunkFinished(exp.name, plan.run_id, task.index, tr.rows, "completed", worker=tr.worker))
            return tr

        backoff = exp.tuning.retry_backoff_ms / 1000
        retrying = Retrying(retry=retry_if_exception(_is_transient), stop=stop_after_attempt(limit),
                            wait=wait_exponential(multiplier=backoff, min=backoff, max=60), before_sleep=before_sleep,
                            reraise=True)
        tr = retrying(once)
        if tr is not None:
            tr.retries = retries
        return tr


def prefix_holds_run(dest: Destination) -> str:
    return (f"{dest.uri} already holds a completed run: this run adds its parts beside the earlier ones, and a "
            "reader that globs the prefix reads both. Put {run_id} or {date} in the destination path/prefix, or "
            "read through manifest.json (it names exactly the parts of the latest run)")


def run_exports(config: Config, store: StateStore, emit: ev.Emit = ev.ignore,
                options: RunOptions | None = None) -> list[ExportResult]:
    with Runner(config, store, emit, options) as runner:
        return runner.run()


def worst_exit(results: list[ExportResult]) -> ExitClass:
    return max((r.exit_class for r in results), default=ExitClass.OK)


__all__ = ["Runner", "RunOptions", "ExportResult", "Repair", "run_exports", "worst_exit", "STOPPED"]
