"""What crosses the wire to a cluster worker, and what the worker runs (docs/dask.md).

The coordinator builds a `TaskEnvelope` per chunk attempt: the TaskSpec, the ExportPlan (without its task list),
the DestinationConfig + export name + run id + the run's start time (the worker opens its own Destination), and
the SourceConfig WITHOUT its password. Credentials never travel: a worker resolves them from its own environment
(`CredentialRule`), exactly as the destination credentials are resolved from the variables the config names.

`run_envelope` is the function a worker runs: it calls the same pure `execute_task` as the local executor, collects
the events it emits (replayed by the coordinator, in order) and returns an `Outcome` — never raises, because a
RivetError does not survive pickling (its constructor takes more than the message).
"""
from __future__ import annotations

import os
import pickle
import sys
import threading
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import quote

from engine import events as ev
from engine import secrets, urls
from engine.config import DestinationConfig, SourceConfig
from engine.destinations import open_destination
from engine.errors import ExitClass, RivetError, internal
from engine.planner import ExportPlan, TaskSpec
from engine.run.task import execute_task
from engine.secrets import redact
from engine.sources import open_source

PASSWORD_VAR = "RIVET_SOURCE_PASSWORD"     # a worker's password when [source] names no variable for it
# Workers report on this topic: {"key", "worker"} of an attempt still running, or {"key", "worker", "outcome"} of
# one that ended quickly (the pickled Outcome). The scheduler keeps only its last 1,000 messages per topic
# (distributed.admin.low-level-log-length).
TASK_TOPIC = "rivet-task"
# An attempt announces itself once it has run this long: a chunk that ends sooner is placed by its outcome (it names
# the worker) and saves the message through the scheduler, ~1.3 ms of CPU per chunk (docs/dask.md)
ANNOUNCE_AFTER_S = 0.25
# A quick attempt's outcome up to this size travels in its report; a bigger one is fetched as the task's result
OUTCOME_REPORT_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class CredentialRule:
    """Where a worker finds the source password: `password` = the variable holds the password (password_env, or
    RIVET_SOURCE_PASSWORD), `url` = the variable holds a connection URL whose password is taken (url_env).
    `needed` is False when the coordinator's URL carries no password (trust/peer/certificate auth)."""
    var: str = PASSWORD_VAR
    kind: str = "password"                  # password | url
    needed: bool = False


def credential_rule(source: SourceConfig, raw_source: dict) -> CredentialRule:
    """Decide the rule from the [source] table as written (names only, never values)."""
    needed = bool(urls.password_of(source.url))
    for key, kind in (("password_env", "password"), ("url_env", "url")):
        name = raw_source.get(key)
        if isinstance(name, str) and name and "${" not in name:
            return CredentialRule(name, kind, needed)
    return CredentialRule(PASSWORD_VAR, "password", needed)


def strip_password(source: SourceConfig) -> SourceConfig:
    """The SourceConfig a worker receives: the URL without a password (userinfo or password= query keys)."""
    return replace(source, url=urls.without_password(source.url))


def with_worker_password(source: SourceConfig, rule: CredentialRule) -> SourceConfig:
    """On the worker: put the password from this machine's environment back into the URL."""
    if not rule.needed:
        return source
    value = os.environ.get(rule.var) or ""
    password = urls.password_of(value) if rule.kind == "url" else value
    if not password:
        what = "a URL with a password" if rule.kind == "url" else "the source password"
        raise RivetError("RIVET_EXECUTOR_WORKER_CREDENTIALS",
                         f"worker has no source password: environment variable {rule.var} ({what}) is not set",
                         f"set {rule.var} in every worker's environment; credentials are never shipped to workers")
    secrets.register(password)
    secrets.register(quote(password, safe=""))
    return replace(source, url=urls.with_password(source.url, password))


@dataclass(frozen=True)
class TaskEnvelope:
    task: TaskSpec
    plan: ExportPlan                        # with tasks=[] (each envelope carries one task)
    source: SourceConfig                    # password removed
    credentials: CredentialRule
    destination: DestinationConfig          # names credential variables, holds no secret
    export_name: str
    run_id: str
    started: datetime                       # fills {date} exactly as on the coordinator
    retract_on_commit: str | None = None    # the coordinator's Destination.retract_on_commit (its _SUCCESS)


@dataclass
class Outcome:
    worker: str
    result: object = None                   # runner.TaskResult on success
    events: list[ev.Event] = field(default_factory=list)
    error: dict | None = None               # RivetError fields on failure
    trace: str = ""                         # traceback of an unexpected exception (shown with RIVET_DEBUG)


def error_fields(e: RivetError) -> dict:
    return {"code": e.code, "message": e.message, "hint": e.hint, "exit_class": int(e.exit_class),
            "transient": e.transient}


def error_from_fields(d: dict) -> RivetError:
    return RivetError(d["code"], d["message"], d["hint"], ExitClass(d["exit_class"]), d["transient"])


def worker_name() -> str:
    """This worker's address (tcp://host:port): the name shown beside a chunk in the TUI and the journal."""
    try:
        from distributed import get_worker
        return str(get_worker().address)
    except (ImportError, ValueError):
        return threading.current_thread().name


class _Report:
    """How an attempt reaches the coordinator besides its return value (docs/dask.md, "How an outcome comes back").

    One that runs ANNOUNCE_AFTER_S announces its worker while it runs, so a long chunk shows where it is. One that
    ends sooner sends its whole outcome in the same kind of message instead, and the coordinator takes it from
    there rather than fetching the task's result (a request from the client through the scheduler to the worker
    and back): of a 100-row chunk's CPU that fetch was ~30 % (scheduler, worker and client together). The task
    still returns the outcome, so a message that never arrives costs only the fetch."""

    def __init__(self, name: str):
        self._name, self._lock, self._announced, self._ended = name, threading.Lock(), False, False
        self._worker: Any = None
        try:
            from distributed import get_worker
            worker = get_worker()
        except (ImportError, ValueError):   # not on a Dask worker (tests call run_envelope directly)
            return
        self._worker, self._key = worker, str(worker.get_current_task())
        # timed on the worker's event loop, not on a thread of its own: a thread per attempt that starts and ends
        # can deadlock a worker on CPython 3.11 before 3.11.12 (engine/run/task.py, _ReaderThreads)
        worker.loop.add_callback(worker.loop.call_later, ANNOUNCE_AFTER_S, self._announce)

    def _announce(self) -> None:   # on the worker's event loop
        with self._lock:
            if self._ended:
                return
            self._announced = True
        self._worker.log_event(TASK_TOPIC, {"key": self._key, "worker": self._name})

    def ended(self, out: Outcome) -> None:
        if self._worker is None:
            return
        with self._lock:
            self._ended = True
            if self._announced:   # a long attempt: its result is fetched, as the coordinator already waits on it
                return
        try:
            data = pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # noqa: BLE001 - the task's own result then carries it (or Dask says why it cannot)
            return
        if len(data) <= OUTCOME_REPORT_MAX_BYTES:
            self._worker.log_event(TASK_TOPIC, {"key": self._key, "worker": self._name, "outcome": data})


def _abandoned() -> bool:
    """The coordinator gave up on this attempt (cancelled after a worker loss): stop instead of running twice."""
    try:
        from distributed import get_worker
        w = get_worker()
        key = w.get_current_task()
        ts = w.state.tasks.get(key)
        return ts is None or ts.state in ("cancelled", "released", "forgotten")
    except (ImportError, ValueError, AttributeError, KeyError):
        return False


def run_envelope(envelope: TaskEnvelope) -> Outcome:
    """The function a Dask worker runs for one chunk attempt. Pure: reads the source window, commits parts to the
    destination, returns rows/parts/events. Never touches the state file (it never imports engine.state)."""

    name = worker_name()
    out = Outcome(name)
    report = _Report(name)

    def collect(event: ev.Event) -> None:
        out.events.append(event)
        if isinstance(event, ev.BatchWritten) and _abandoned():
            raise RivetError("RIVET_EXECUTOR_ABANDONED", "the coordinator abandoned this attempt",
                             "another attempt of this chunk runs instead", ExitClass.TRANSIENT, transient=True)

    dest = None
    try:
        source = with_worker_password(envelope.source, envelope.credentials)
        dest = open_destination(envelope.destination, envelope.export_name, envelope.run_id, envelope.started)
        dest.retract_on_commit = envelope.retract_on_commit
        tr = execute_task(envelope.task, envelope.plan, source, dest, collect)
        tr.worker = name
        out.result = tr
    except RivetError as e:
        out.error = error_fields(e)
    except Exception as e:  # noqa: BLE001 - a bug on the worker: one line back, traceback kept for RIVET_DEBUG
        out.error = error_fields(internal(e))
        out.trace = traceback.format_exc()
    finally:
        # A local spool is shared by every task of the run (the coordinator removes it at the end); a cloud
        # destination's spool is this task's own temp dir.
        if dest is not None and dest.kind != "local":
            dest.close()
    report.ended(out)
    return out


def profiler_can_hang(version: tuple[int, ...] | None = None) -> bool:
    """Whether Dask's worker profiler can deadlock this Python (the running one by default): CPython 3.11 before
    3.11.12, gh-106883, a thread ending while the profiler reads every thread's frames (docs/dask.md)."""
    v = tuple(version or sys.version_info[:3])
    return v[:2] == (3, 11) and v < (3, 11, 12)


def interpreter_check(version: tuple[int, ...], profiling: bool) -> tuple[str, bool, str, str]:
    """A worker whose Python can deadlock under Dask's profiler fails `rivet doctor` while the profiler runs."""
    where = "python {}.{}.{}".format(*version)
    if profiling and profiler_can_hang(version):
        return ("python", False, f"{where} with the Dask worker profiler on can deadlock the worker (CPython "
                "gh-106883)", "upgrade the workers to Python 3.11.12 or newer, or set "
                "distributed.worker.profile.enabled: false in their Dask config")
    return "python", True, where, ""


def probe_worker(source: SourceConfig, rule: CredentialRule,
                 destinations: list[tuple[DestinationConfig, str]]) -> list[tuple[str, bool, str, str]]:
    """`rivet doctor` on one worker: the package imports (this runs), its Python cannot hang under Dask's profiler,
    the source answers with this worker's own credentials, each destination takes a small object. Returns (check,
    ok, detail, hint) tuples."""
    from datetime import timezone

    import dask

    def failed(what: str, e: Exception) -> tuple[str, bool, str, str]:
        if isinstance(e, RivetError):
            return what, False, f"error[{e.code}]: {e.message}", e.hint
        return what, False, redact(f"{type(e).__name__}: {e}"), ""

    checks = [interpreter_check(sys.version_info[:3], bool(dask.config.get("distributed.worker.profile.enabled", True)))]
    try:
        with open_source(with_worker_password(source, rule)) as src:
            checks.append(("source", True, src.server_version(), ""))
    except Exception as e:  # noqa: BLE001
        checks.append(failed("source", e))
    now = datetime.now(timezone.utc)
    for cfg, export in destinations:
        try:
            dest = open_destination(cfg, export, "doctor", now)
            dest.probe()
            checks.append((f"destination {export}", True, f"{dest.uri} writable", ""))
        except Exception as e:  # noqa: BLE001
            checks.append(failed(f"destination {export}", e))
    return checks
