"""The read-ahead between a task's source reader and its part writer (engine/run/task.py `prefetch`).

A hand-over must never wait without watching the other side: when the writer fails (a full disk) while the reader
has already read everything and waits to hand over the end of the stream, both must stop — the old code waited on
a full queue forever, holding the export's lock, and every later cron run exited 2."""
from __future__ import annotations

import threading

import pytest

from engine.errors import RivetError
from engine.run.task import prefetch


def finishes(fn, timeout: float = 30.0) -> bool:
    """Run fn on a thread; True if it returned (or raised) within the timeout."""
    box: dict = {}

    def target():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001
            box["error"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive()


def source(total: int, exhausted: threading.Event):
    yield from range(total)
    exhausted.set()      # the reader asked past the last item: it now hands over the end of the stream


@pytest.mark.parametrize("total", [3, 4])
def test_writer_failing_near_the_end_of_the_read_does_not_hang(total):
    # depth 2: while the writer holds item 0 the reader queues the rest and then waits to hand over the end
    exhausted = threading.Event()

    def run():
        with pytest.raises(OSError):
            for _ in prefetch(source(total, exhausted), depth=2):
                assert exhausted.wait(10), "the reader never reached the end of the stream"
                raise OSError(28, "No space left on device")
    assert finishes(run), "the writer's failure left the reader (and the run) waiting forever"


def test_writer_failing_mid_stream_stops_the_reader():
    exhausted = threading.Event()

    def run():
        with pytest.raises(OSError):
            for n in prefetch(source(10_000, exhausted), depth=2):
                if n == 5:
                    raise OSError(28, "No space left on device")
    assert finishes(run)
    assert not exhausted.is_set()        # the reader stopped instead of reading everything


def test_reader_error_reaches_the_writer():
    def batches():
        yield 1
        raise RivetError("RIVET_SOURCE_CONNECTION_LOST", "server closed the connection")
    with pytest.raises(RivetError, match="server closed"):
        list(prefetch(batches()))


def test_reader_is_closed_and_interrupted_when_the_writer_stops():
    events = []

    class Stream:
        def __init__(self):
            self.gate = threading.Event()

        def __iter__(self):
            yield 1
            self.gate.wait(30)      # a read blocked on the network until interrupted
            yield 2

        def interrupt(self):
            events.append("interrupt")
            self.gate.set()

    def run():
        with pytest.raises(ValueError):
            for _ in prefetch(Stream()):
                raise ValueError("writer failed")
    assert finishes(run, 20)
    assert events == ["interrupt"]


def test_all_items_arrive_in_order():
    assert list(prefetch(range(1000), depth=3)) == list(range(1000))


def test_streams_read_side_by_side_deliver_every_item_once():
    merged = list(prefetch([iter(range(0, 500)), iter(range(500, 1000)), iter(())], depth=2))
    assert sorted(merged) == list(range(1000))


def test_one_failing_stream_of_several_fails_the_read_and_stops_the_others():
    class Endless:
        """A sub-window still reading when its sibling fails: it must be interrupted, not left running."""
        def __init__(self):
            self.interrupted = threading.Event()

        def __iter__(self):
            return self

        def __next__(self):
            if self.interrupted.wait(0.01):
                raise StopIteration
            return 1

        def interrupt(self):
            self.interrupted.set()

    def failing():
        yield 1
        raise RivetError("RIVET_SOURCE_QUERY", "sub-window 2 failed", "")

    other = Endless()

    def run():
        with pytest.raises(RivetError, match="sub-window 2 failed"):
            for _ in prefetch([other, failing()]):
                pass
    assert finishes(run, 20)
    assert other.interrupted.is_set()
