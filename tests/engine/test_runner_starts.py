"""A chunk's start is counted in state with the writer's next group, not waited for (engine/run/runner.py,
_attempt_task): the attempt number a run shows is the one state holds, across runs, and a start that state refuses
(another actor moved the chunk meanwhile) fails that chunk and leaves none of its rows in the destination."""
from __future__ import annotations

from engine import events as ev
from engine.config import load_config
from engine.run.runner import Runner, RunOptions
from engine.state import StateStore
from tests.helpers import export_config, read_table, write_config

ROWS = 1000


def _config(pg, tmp_path):
    return load_config(write_config(tmp_path / "rivet.toml", export_config(
        pg.url, name="starts", table="start_items", mode="chunked", extra="chunk_size = 250\nparallel = 2")))


def _table(pg) -> None:
    pg.sql("DROP TABLE IF EXISTS start_items")
    pg.sql("CREATE TABLE start_items (id bigint PRIMARY KEY, at timestamp)")
    pg.sql(f"INSERT INTO start_items SELECT g, '2026-01-01' FROM generate_series(1, {ROWS}) g")


def _ids(out) -> list[int]:
    return sorted(read_table(out).column("id").to_pylist())


def test_attempt_numbers_shown_are_the_ones_state_counts(pg, tmp_path):
    _table(pg)
    pg.sql("UPDATE start_items SET at = 'infinity' WHERE id = 600")   # chunk 2 is refused: no Arrow value holds it
    config = _config(pg, tmp_path)
    store = StateStore(config.state_path)
    first = Runner(config, store).run()[0]
    assert first.status == "refused" and first.error.code == "RIVET_SOURCE_UNREPRESENTABLE"

    pg.sql("UPDATE start_items SET at = '2026-01-01' WHERE id = 600")
    seen: list[ev.Event] = []
    again = Runner(config, store, seen.append, RunOptions()).run()[0]
    assert again.status == "succeeded" and again.run_id == first.run_id        # resumed the same chunk run
    started = {e.chunk_index: e.attempt for e in seen if isinstance(e, ev.ChunkStarted)}
    assert started == {2: 2}                                                    # only the failed chunk ran again
    tasks = {t["chunk_index"]: t["attempts"] for t in store.chunk_tasks(first.run_id)}
    assert tasks == {0: 1, 1: 1, 2: 2, 3: 1}
    assert _ids(config.base_dir / "out") == list(range(1, ROWS + 1))


def test_a_start_state_refuses_fails_the_chunk_and_takes_its_parts_back(pg, tmp_path):
    _table(pg)
    config = _config(pg, tmp_path)
    store = StateStore(config.state_path)
    own_start = store.start_task_soon

    def another_actor_first(run_id, idx, max_attempts=3):
        if idx == 1:   # something else moved chunk 1 to running between the plan and this run's start
            own_start(run_id, idx, max_attempts).result()
        return own_start(run_id, idx, max_attempts)
    store.start_task_soon = another_actor_first      # type: ignore[method-assign]

    seen: list[ev.Event] = []
    result = Runner(config, store, seen.append, RunOptions()).run()[0]
    assert result.status == "failed" and result.error.code == "RIVET_STATE_TRANSITION"
    assert [(e.chunk_index, e.status) for e in seen if isinstance(e, ev.ChunkFinished) and e.status == "failed"] \
        == [(1, "failed")]
    out = config.base_dir / "out"
    assert _ids(out) == [i for i in range(1, ROWS + 1) if not 251 <= i <= 500]   # chunk 1's rows are not there
    assert not (out / "_SUCCESS").exists()
    logged = {f["chunk_index"] for f in store.files("starts", run_id=result.run_id)}
    assert logged == {0, 2, 3}
