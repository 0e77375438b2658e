"""Where tasks run. LocalExecutor = threads in this process; a cluster executor can replace it behind the
same two calls because tasks are pure (spec in, result out) and only the coordinator writes state."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int):
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="rivet-task")

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown(cancel=exc[0] is not None)
