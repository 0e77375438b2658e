"""Where a task's body runs. Concurrency (how many chunks are in flight) is always local threads in the
coordinator; an executor decides where each task's work happens. Tasks are pure (spec in, result out) and only
the coordinator writes state, so a cluster executor can run them on other machines behind this one call."""
from __future__ import annotations


class LocalExecutor:
    """Run the task in the calling thread of this process."""
    name = "local"

    def run_task(self, task, plan, source_cfg, dest, emit, threads: int | None):
        from engine.runner import execute_task
        return execute_task(task, plan, source_cfg, dest, emit, threads)

    def close(self) -> None:
        pass


def make_executor(config) -> LocalExecutor:
    kind = getattr(config.executor, "type", "local")
    if kind == "local":
        return LocalExecutor()
    from engine.errors import RivetError
    raise RivetError("RIVET_EXECUTOR_UNKNOWN", f"executor type {kind!r} is not available",
                     'use [executor] type = "local"')
