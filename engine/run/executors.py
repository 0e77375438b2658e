"""Where a task's body runs. Concurrency (how many chunks are in flight) is always local threads in the
coordinator; an executor decides where each task's work happens. Tasks are pure (spec in, result out) and only
the coordinator writes state, so a cluster executor can run them on other machines behind this one call.

`LocalExecutor` runs the task in the calling thread. `DaskExecutor` submits it to a Dask cluster (docs/dask.md):
each call blocks its coordinator thread until the worker's outcome is back, replays the worker's events in order,
and turns a lost worker into a transient RivetError so the runner's retries and chunk_max_attempts count it.
"""
from __future__ import annotations

import os
import pickle
import queue
import socket
import sys
import threading
import time
import tomllib
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Protocol
from urllib.parse import urlsplit

from engine import events as ev
from engine.config import SourceConfig
from engine.errors import ExitClass, RivetError, internal
from engine.planner import ExportPlan, TaskSpec, run_started_at
from engine.run.remote import (TASK_TOPIC, TaskEnvelope, credential_rule, error_from_fields, run_envelope,
                               strip_password)
from engine.run.task import ReadSlot, TaskResult, execute_task
from engine.urls import is_loopback

if TYPE_CHECKING:
    from engine.destinations import Destination

CONNECT_TIMEOUT_S = 10
RECONNECT_AFTER_S = 30


class Executor(Protocol):
    """Where a task's body runs. `started(worker)` is called once the task is placed; `stop` asks a running task to
    end between batches (RIVET_RUN_STOPPED); `read_slot`, when given, is released as soon as the task's source
    reads end (task.ReadSlot)."""
    name: str

    def run_task(self, task: TaskSpec, plan: ExportPlan, source_cfg: SourceConfig, dest: Destination,
                 emit: ev.Emit, started: Callable[[str], None] | None = None,
                 stop: threading.Event | None = None, read_slot: ReadSlot | None = None) -> TaskResult: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Run the task in the calling thread of this process."""
    name = "local"

    def run_task(self, task: TaskSpec, plan: ExportPlan, source_cfg: SourceConfig, dest: Destination,
                 emit: ev.Emit, started: Callable[[str], None] | None = None,
                 stop: threading.Event | None = None, read_slot: ReadSlot | None = None) -> TaskResult:
        if started is not None:
            started(threading.current_thread().name)
        return execute_task(task, plan, source_cfg, dest, emit, stop, read_slot)

    def close(self) -> None:
        pass


def make_executor(config, names: list[str] | None = None) -> Executor:
    """The executor [executor] asks for. `names`: the exports this run selects (default all), checked up front."""
    kind = getattr(config.executor, "type", "local")
    if kind == "local":
        return LocalExecutor()
    if kind == "dask":
        return DaskExecutor(config, names)
    raise RivetError("RIVET_EXECUTOR_UNKNOWN", f"executor type {kind!r} is not available",
                     'use [executor] type = "local" or "dask"')


def require_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise RivetError("RIVET_EXECUTOR_DASK_MISSING", 'executor type "dask" needs Dask, which is not installed',
                         "pip install 'rivet-export[dask]'") from None


def is_local_address(address: str) -> bool:
    """A scheduler on a loopback address (or in-process) can only have workers on this machine."""
    parts = urlsplit(address if "://" in address else "tcp://" + address)
    if parts.scheme == "inproc":
        return True
    return is_loopback(parts.hostname or "")


class DaskExecutor:
    """Run each chunk attempt on a Dask worker via `Client.submit(run_envelope, envelope, pure=False, key=...)`."""
    name = "dask"

    def __init__(self, config, names: list[str] | None = None):
        require_distributed()
        self.address = config.executor.address
        if not self.address:
            raise RivetError("RIVET_EXECUTOR_NO_ADDRESS", 'executor type "dask" needs the scheduler address',
                             'add address = "tcp://scheduler:8786" to [executor], or pass --scheduler ADDR')
        self.local = is_local_address(self.address)
        if not self.local:
            shared = {"s3", "gcs", "azure", "stdout"}   # stdout parts stream from the coordinator (below)
            bad = [e.name for e in config.select(names) if e.destination.type not in shared]
            if bad:
                raise RivetError("RIVET_EXECUTOR_LOCAL_DESTINATION",
                                 f"export {bad[0]!r} writes to a local path, which the workers of the cluster at "
                                 f"{self.address} do not share", "use an s3/gcs/azure destination, run the cluster "
                                 "on this machine (scheduler on 127.0.0.1), or run with --executor local",
                                 ExitClass.REFUSED)
        self.rule = credential_rule(config.source, _raw_source(config.path))
        self._client = None
        self._failed: tuple[float, RivetError] | None = None   # (when, why) of the last failed connection
        self._lock = threading.Lock()
        self._inflight: dict[str, queue.Queue] = {}     # key → notices from the client's event loop
        self._where: dict[str, str] = {}                # key → worker the attempt started on
        self._local = LocalExecutor()

    # -- the seam ----------------------------------------------------------------------------------------------
    def run_task(self, task: TaskSpec, plan: ExportPlan, source_cfg: SourceConfig, dest: Destination,
                 emit: ev.Emit, started: Callable[[str], None] | None = None,
                 stop: threading.Event | None = None, read_slot: ReadSlot | None = None) -> TaskResult:
        # read_slot: unused; a worker reads for as long as the coordinator's thread waits for it (runner)
        if dest.kind == "stdout":   # one ordered byte stream: only this process can write it
            return self._local.run_task(task, plan, source_cfg, dest, emit, started, stop)
        if dest.kind == "local":
            dest.spool_dir()        # the coordinator owns the shared spool dir, so its dest.close() removes it
        client = self.client()
        envelope = self.envelope(task, plan, source_cfg, dest)
        key = f"rivet-{plan.export.name}-{plan.run_id}-{task.index}-{uuid.uuid4().hex[:8]}"
        notices: queue.Queue = queue.Queue()
        self._inflight[key] = notices
        try:
            future = client.submit(run_envelope, envelope, pure=False, key=key, retries=0)
            future.add_done_callback(lambda _f: notices.put(("done", None)))
            return self._await(future, notices, task, emit, started)
        finally:
            self._inflight.pop(key, None)
            self._where.pop(key, None)

    def envelope(self, task, plan, source_cfg, dest):
        return TaskEnvelope(task=task, plan=replace(plan, tasks=[]), source=strip_password(source_cfg),
                            credentials=self.rule, destination=plan.export.destination,
                            export_name=plan.export.name, run_id=plan.run_id, started=run_started_at(plan.run_id),
                            retract_on_commit=dest.retract_on_commit)

    def _await(self, future, notices: queue.Queue, task, emit, started):
        where = None
        reported = None   # the pickled outcome a quick attempt sent with its report (remote._Report)
        while True:
            try:
                kind, worker = notices.get(timeout=1.0)
            except queue.Empty:
                if self._client is None or self._client.status in ("closed", "closing"):
                    raise RivetError("RIVET_EXECUTOR_SCHEDULER_LOST", f"lost the Dask scheduler at {self.address}",
                                     "check the scheduler; rerun to resume", ExitClass.TRANSIENT, transient=True)
                continue
            if kind == "outcome":   # reports come before the task's end (one stream, in order): wait for it
                reported = worker
                continue
            if kind == "started":
                if where is not None and worker != where:   # Dask re-ran it elsewhere: a worker died under it
                    kind, worker = "lost", where
                else:
                    where = worker
                    if started is not None:
                        started(worker)
                    continue
            if kind == "lost":
                future.cancel()    # a rescheduled copy notices between batches and removes its parts
                raise RivetError("RIVET_EXECUTOR_WORKER_LOST",
                                 f"Dask worker {worker} died while running chunk {task.index}",
                                 "the chunk is retried; parts of the lost attempt stay out of the manifest",
                                 ExitClass.TRANSIENT, transient=True)
            return self._outcome(future, task, emit, started if where is None else None, reported)

    def _outcome(self, future, task, emit, started=None, reported: bytes | None = None):
        """The attempt's result, its events replayed first: the one its report carried, else fetched from the
        cluster. `started`: the attempt ended before it announced itself (remote.ANNOUNCE_AFTER_S), so its outcome
        names the worker."""
        if future.status != "finished":
            raise _future_error(future, task, self.address)
        out = pickle.loads(reported) if reported is not None else future.result()
        if started is not None:
            started(out.worker)
        for event in out.events:     # the worker could not reach the coordinator's emit: replay, in order
            emit(event)
        if out.error:
            if out.trace and os.environ.get("RIVET_DEBUG"):
                sys.stderr.write(f"worker {out.worker}:\n{out.trace}")
            raise error_from_fields(out.error)
        return out.result

    # -- the cluster -------------------------------------------------------------------------------------------
    def client(self):
        """Connect once. A failed connection is remembered for RECONNECT_AFTER_S and re-raised at once, so a run
        with a thousand chunks and no scheduler fails in seconds instead of trying (and timing out) per attempt."""
        with self._lock:
            if self._client is not None:
                return self._client
            if self._failed is not None and time.monotonic() - self._failed[0] < RECONNECT_AFTER_S:
                e = self._failed[1]
                raise RivetError(e.code, e.message, e.hint, e.exit_class)   # a fresh one per thread
            try:
                client = connect(self.address)
                try:
                    client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
                except TimeoutError:   # tasks would wait forever in the scheduler's queue
                    client.close()
                    raise RivetError("RIVET_EXECUTOR_NO_WORKERS", f"the Dask scheduler at {self.address} has no "
                                     "workers", f"start workers: dask worker {self.address}",
                                     ExitClass.TRANSIENT) from None
            except RivetError as e:
                e.transient = False    # retrying inside this run would only wait out the same timeout again
                self._failed = (time.monotonic(), e)
                raise
            client.subscribe_topic(TASK_TOPIC, self._on_task)
            client.subscribe_topic("all", self._on_cluster)
            self._client, self._failed = client, None
            return client

    def _on_task(self, event) -> None:
        """On the client's event loop: a worker runs an attempt, or one ended quickly (its outcome comes along)."""
        msg = event[1]
        notices = self._inflight.get(msg.get("key"))
        if notices is None:   # another run's attempt (the topic is shared), or one this run gave up
            return
        if "outcome" in msg:
            notices.put(("outcome", msg["outcome"]))
        else:
            self._where.setdefault(msg["key"], msg.get("worker"))
            notices.put(("started", msg.get("worker")))

    def _on_cluster(self, event) -> None:
        """On the client's event loop: a worker left; every attempt it was running is lost."""
        msg = event[1]
        if not isinstance(msg, dict) or msg.get("action") != "remove-worker":
            return
        gone = msg.get("worker")
        keys = set(msg.get("processing-tasks") or ()) | {k for k, w in list(self._where.items()) if w == gone}
        for key in keys:
            notices = self._inflight.get(key)
            if notices is not None:
                notices.put(("lost", gone))

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            # Unsubscribed first: the scheduler publishes this client's own "remove-client" on topic "all", and
            # to a subscriber that is closing it logs a CRITICAL "Closed comm" traceback, once per run.
            for topic in (TASK_TOPIC, "all"):
                client.unsubscribe_topic(topic)
            client.close()


def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S):
    """A distributed.Client for the scheduler, or a one-line transient RivetError."""
    require_distributed()
    from distributed import Client
    try:
        parts = urlsplit(address if "://" in address else "tcp://" + address)
        if parts.scheme in ("tcp", "tls") and parts.hostname and parts.port:
            # Dask retries a refused connection until its timeout; a plain connect says "refused" at once
            socket.create_connection((parts.hostname, parts.port), timeout=timeout_s).close()
        return Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise RivetError("RIVET_EXECUTOR_UNREACHABLE", f"cannot reach the Dask scheduler at {address}: "
                         f"{type(e).__name__}", "check the executor address (config or --scheduler) and that the scheduler "
                         "runs; rerun when it does", ExitClass.TRANSIENT) from None


def _future_error(future, task, address: str) -> RivetError:
    """A future that did not finish: the worker died too often (KilledWorker), the attempt was cancelled, or the
    worker could not even load the task (no rivet package there)."""
    try:
        exc = future.exception(timeout=5)
    except Exception as e:  # noqa: BLE001 - cancelled futures raise here
        exc = e
    name = type(exc).__name__
    if isinstance(exc, (ModuleNotFoundError, ImportError)):
        return RivetError("RIVET_EXECUTOR_WORKER_IMPORT", f"a Dask worker cannot import rivet: {exc}",
                          "install the same rivet version (pip install 'rivet-export[dask]') on every worker")
    if name in ("KilledWorker", "CancelledError", "FutureCancelledError", "TimeoutError", "CommClosedError"):
        return RivetError("RIVET_EXECUTOR_WORKER_LOST", f"chunk {task.index} did not finish on the cluster at "
                          f"{address} ({name})", "the chunk is retried; check the workers' logs if this repeats",
                          ExitClass.TRANSIENT, transient=True)
    return internal(exc) if isinstance(exc, BaseException) else internal(RuntimeError(str(exc)))


def _raw_source(path) -> dict:
    """The [source] table as written: only the names of credential variables are read from it."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f).get("source", {})
    except (OSError, tomllib.TOMLDecodeError, TypeError):
        return {}
