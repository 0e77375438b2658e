"""The read-ahead between a task's source reader and its part writer (engine/run/task.py `prefetch`).

A hand-over must never wait without watching the other side: when the writer fails (a full disk) while the reader
has already read everything and waits to hand over the end of the stream, both must stop — the old code waited on
a full queue forever, holding the export's lock, and every later cron run exited 2."""
from __future__ import annotations

import threading
import time

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


def test_on_end_fires_once_the_streams_end_while_the_writer_still_has_items():
    """The read slot is given back here (task.ReadSlot): the next chunk's read may start while this writer drains."""
    ended = threading.Event()
    calls = []

    def on_end():
        calls.append(1)
        ended.set()
    seen = []
    for n in prefetch([iter(range(5))], depth=2, on_end=on_end):
        seen.append(n)
        if n == 3:   # items 4 and the end are queued: the reader has finished
            assert ended.wait(10), "the end of the reads was not reported while item 4 waited for the writer"
    assert seen == list(range(5)) and calls == [1]


def test_on_end_fires_once_when_the_writer_stops_first():
    calls = []
    with pytest.raises(OSError):
        for n in prefetch([iter(range(10_000)), iter(range(10_000))], depth=2, on_end=lambda: calls.append(1)):
            if n == 5:
                raise OSError(28, "No space left on device")
    assert calls == [1]


def test_the_next_chunk_reads_while_the_last_one_is_written_and_reads_never_exceed_parallel(pg, tmp_path,
                                                                                              monkeypatch):
    """parallel = 1: one chunk reads the source at a time, and the next chunk's read starts as soon as the previous
    chunk's reads end, while that chunk's writer still drains its queue and commits its part."""
    from engine.run import task as task_mod
    from tests.helpers import export_config, read_table, run_json, write_config
    chunks = 4
    pg.sql("DROP TABLE IF EXISTS overlap_items; CREATE TABLE overlap_items (id bigint PRIMARY KEY, v text);"
           "INSERT INTO overlap_items SELECT g, md5(g::text) FROM generate_series(1, 4000) g")
    cfg = write_config(tmp_path / "rivet.toml", export_config(
        pg.url, name="overlap", table="overlap_items", mode="chunked",
        extra="chunk_size = 1000\nparallel = 1\n[exports.tuning]\nbatch_size = 100\nthrottle_ms = 0"))
    lock = threading.Lock()
    started, reading, peak, overlapped = [0], [0], [0], []   # reads started; reading now; most at once
    real = task_mod.prefetch

    def watched(streams, depth=task_mod.READ_AHEAD, on_end=None, readers=None):
        with lock:
            k = started[0]
            started[0] += 1
            reading[0] += 1
            peak[0] = max(peak[0], reading[0])

        def ended():
            with lock:
                reading[0] -= 1
            if on_end is not None:
                on_end()
        yield from real(streams, depth, on_end=ended, readers=readers)
        if k + 1 < chunks:   # this chunk's reads are over, its writer not yet done: the next read must start now
            for _ in range(100):
                if started[0] > k + 1:
                    break
                time.sleep(0.1)
            overlapped.append(started[0] > k + 1)
    monkeypatch.setattr(task_mod, "prefetch", watched)
    out = run_json(cfg)
    assert out["exports"][0]["status"] == "succeeded" and out["exports"][0]["rows"] == 4000, out
    assert overlapped == [True] * (chunks - 1) and peak[0] == 1
    assert sorted(read_table(tmp_path / "out").column("id").to_pylist()) == list(range(1, 4001))


def test_fewer_readers_than_streams_read_each_stream_once_and_never_more_at_once():
    """A split window: SPLIT_PIECES sub-windows per reader; a reader takes the next one as its own ends."""
    lock = threading.Lock()
    now, peak = [0], [0]

    def stream(lo: int):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        try:
            yield from range(lo, lo + 100)
        finally:
            with lock:
                now[0] -= 1
    ends = []
    merged = list(prefetch([stream(i * 100) for i in range(8)], depth=2, readers=2, on_end=lambda: ends.append(1)))
    assert sorted(merged) == list(range(800)) and peak[0] == 2 and ends == [1]


def test_streams_not_started_are_closed_when_the_writer_stops():
    """Each sub-window holds a cursor: those a reader never reached must be closed too, and on_end still fires."""
    closed = []

    class Window:
        def __init__(self, n):
            self.n = n

        def __iter__(self):
            return iter(range(1000))

        def close(self):
            closed.append(self.n)
    ends = []
    with pytest.raises(OSError):
        for item in prefetch([Window(n) for n in range(6)], depth=2, readers=2, on_end=lambda: ends.append(1)):
            if item == 10:
                raise OSError(28, "No space left on device")
    assert sorted(closed) == list(range(6)) and ends == [1]


def test_reads_reuse_their_threads():
    """A thread per read used to start and end with every chunk. On CPython 3.11 before 3.11.12 a thread ending while
    another reads every thread's frames (Dask's worker profiler, every 10 ms) can deadlock the process
    (python/cpython#106883): a Dask worker hung so in the bench."""
    threads: list[threading.Thread] = []   # held, so no two are the same object
    idle = sum(t.name == "rivet-read" for t in threading.enumerate())   # left by earlier tests in this process

    def stream():
        threads.append(threading.current_thread())
        yield 1

    for _ in range(20):
        assert list(prefetch(stream())) == [1]
    assert {t.name for t in threads} == {"rivet-read"}
    assert len({id(t) for t in threads}) <= max(idle, 1), "a new thread per read"


def test_a_forked_child_reads_on_threads_of_its_own():
    """The reader threads are the parent's: a child forked after a read must not wait for one of them."""
    import os
    assert list(prefetch(iter([1]))) == [1]   # the parent now has an idle reader thread
    pid = os.fork()
    if pid == 0:   # the child: exit 0 only if a read still completes
        os._exit(0 if list(prefetch(iter([2]))) == [2] else 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the child's read waited for a thread it does not have")
