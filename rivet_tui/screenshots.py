"""`make screenshots`: render each screen with fixed data, a fixed clock and a fixed size to screenshots/*.svg (+ .png).

The same scenes feed the SVG snapshot tests (tests/tui/test_snapshots.py), so the README pictures are what the
tests check. Data is real where it can be without a database: a real config file, a real state file (timestamps
pinned), and engine events pushed through the same feed the runner uses, with the app's clock under our control.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from engine import events as ev
from engine.config import load_config
from engine.plans import ExportDiff
from engine.state.store import StateStore
from rivet_tui.feed import EventFeed

SIZE = (160, 48)
T0 = datetime(2026, 4, 18, 12, 20, 0, tzinfo=UTC).timestamp()
OUT = Path(__file__).resolve().parent.parent / "screenshots"

EXPORTS = [  # name, mode, extra config
    ("orders", "chunked", 'chunk_column = "id"\nchunk_size = 250000\nparallel = 4'),
    ("customers", "full", ""),
    ("events", "incremental", 'cursor_column = "updated_at"'),
    ("line_items", "chunked", 'chunk_column = "id"\nchunk_size = 500000\nparallel = 2'),
    ("payments", "full", ""),
    ("refunds", "incremental", 'cursor_column = "id"'),
    ("sessions", "time_window", 'time_column = "started_at"\ndays_window = 7'),
    ("invoices", "chunked", 'chunk_column = "id"\nchunk_size = 100000'),
    ("audit_log", "incremental", 'cursor_column = "at"'),
    ("products", "full", ""),
    ("inventory", "chunked", 'chunk_column = "sku_id"\nchunk_size = 50000'),
    ("shipments", "incremental", 'cursor_column = "updated_at"'),
]


class FakeClock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def write_demo_config(directory: Path) -> Path:
    """A real rivet.toml (the source is never contacted: no scene starts a run)."""
    blocks = ['[source]\ntype = "postgres"\nurl = "postgresql://rivet@db.internal:5432/shop"\n']
    for name, mode, extra in EXPORTS:
        blocks.append(f'[[exports]]\nname = "{name}"\ntable = "public.{name}"\nmode = "{mode}"\n{extra}\n'
                      f'destination = {{ type = "local", path = "out/{name}" }}\n')
    path = directory / "rivet.toml"
    path.write_text("\n".join(blocks))
    return path


def _iso(seconds_before_t0: float) -> str:
    return datetime.fromtimestamp(T0 - seconds_before_t0, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seed_state(store: StateStore) -> None:
    """Last runs and progression boundaries, then pin every timestamp so the pictures never change."""
    for name, status in (("payments", "succeeded"), ("refunds", "succeeded"), ("inventory", "succeeded"),
                         ("invoices", "failed"), ("audit_log", "refused"), ("products", "succeeded")):
        store.set_last_run(name, f"20260418T0{len(name) % 10}0000Z-seed", status)
    store.record_committed_chunked("orders", 15, "20260418T113000Z-a1b2c3")
    store.record_verified_chunked("orders", 12, "20260418T113000Z-a1b2c3")
    store.record_committed_incremental("events", "2026-04-18T11:59:58.120000Z", "20260418T120000Z-d4e5f6")
    store.record_committed_incremental("refunds", "48211", "20260418T060000Z-0a0b0c")
    store.record_committed_chunked("inventory", 39, "20260418T050000Z-111111")
    store.record_verified_chunked("inventory", 39, "20260418T050000Z-111111")
    store.record_committed_chunked("line_items", 40, "20260417T230000Z-222222")
    store.record_verified_chunked("line_items", 40, "20260417T230000Z-222222")
    store.record_committed_chunked("invoices", 7, "20260418T010000Z-333333")
    store.record_committed_incremental("shipments", "2026-04-17T23:59:59Z", "20260418T000500Z-444444")
    store.close()   # the store's writer keeps the file open; DuckDB refuses a second, differently configured open
    con = duckdb.connect(str(store.path))
    try:
        for i, (name,) in enumerate(con.execute("SELECT export_name FROM export_progression ORDER BY 1").fetchall()):
            con.execute("UPDATE export_progression SET last_committed_at = ?, last_verified_at ="
                        " CASE WHEN last_verified_strategy IS NULL THEN NULL ELSE ? END WHERE export_name = ?",
                        [_iso(600 + 3600 * i), _iso(300 + 3600 * i + 1800), name])
        con.execute("UPDATE export_state SET last_run_at = ?", [_iso(900)])
    finally:
        con.close()


async def settle(pilot, seconds: float = 0.4) -> None:
    """Let messages and workers catch up, then run every screen's periodic refresh once more (a loaded machine may
    not have fired the timers yet; the fake clock does not move meanwhile) and let it paint."""
    await pilot.pause(seconds)
    pilot.app.tick()
    await pilot.pause()


async def wait_loaded(app, pilot) -> None:
    for _ in range(100):
        if app.loaded:
            break
        await pilot.pause(0.05)
    await settle(pilot)


async def feed_running(app, pilot, clock: FakeClock) -> None:
    """Four exports mid-run, one chunk retried, one failure: real engine events through the runner's feed."""
    # Events go through a feed of our own, applied at known clock times: the app's 4 Hz tick (which drains the
    # app's feed) must not apply them at whatever moment it fires, or rates and samples would differ run to run.
    emit = EventFeed()

    def drain() -> None:
        app.model.apply_all(emit.drain())
    runs = {"orders": ("20260418T121500Z-5f1c2a", 16, 4_000_000), "customers": ("20260418T121630Z-77ab01", None, 1_250_000),
            "events": ("20260418T121800Z-0c9d3e", None, None), "line_items": ("20260418T121845Z-a9e4b7", 40, 19_800_000)}
    starts = {"orders": 300, "customers": 210, "events": 120, "line_items": 75}
    for name, (run_id, chunks, estimate) in runs.items():
        emit(ev.ExportStarted(name, run_id, app.config.export(name).mode, chunks, 0, estimate, at=clock() - starts[name]))
    await pilot.pause()
    emit(ev.ExportStarted("invoices", "20260418T121000Z-e0f1a2", "chunked", 12, 0, 1_200_000, at=clock() - 500))
    emit(ev.ChunkStarted("invoices", "20260418T121000Z-e0f1a2", 3, "300001", "400000", 1, "rivet-task_0",
                         at=clock() - 420))
    emit(ev.ExportFinished("invoices", "20260418T121000Z-e0f1a2", "failed", 300_000, 3, 41_200_000, 95_000, 2,
                           {"code": "RIVET_SOURCE_QUERY_FAILED", "exit_class": 2,
                            "error": "export 'invoices': 1 of 12 chunks failed; first: canceling statement due to "
                                     "statement timeout", "hint": "raise statement_timeout_s in [exports.tuning], "
                                                                  "or use smaller chunks"}, at=clock() - 405))
    # a run stopped by the operator (the engine before "stopped" existed: a cancelled failure), an empty one
    emit(ev.ExportStarted("sessions", "20260418T120500Z-5e5510", "time_window", None, 0, 880_000, at=clock() - 900))
    emit(ev.ExportFinished("sessions", "20260418T120500Z-5e5510", "failed", 120_000, 1, 4_100_000, 61_000, 0,
                           {"code": "RIVET_RUN_CANCELLED", "exit_class": 2, "error": "cancelled",
                            "hint": "run again to resume"}, at=clock() - 839))
    emit(ev.ExportStarted("products", "20260418T121900Z-00e3f1", "full", None, 0, 0, at=clock() - 61))
    emit(ev.ExportFinished("products", "20260418T121900Z-00e3f1", "skipped", 0, 0, 0, 1_200, at=clock() - 60))
    app.model.queue("shipments")
    for name, done, size in (("orders", 6, 250_000), ("line_items", 3, 500_000)):  # chunks done before the picture
        run_id = runs[name][0]
        for i in range(done):
            at = clock() - starts[name] + 5 + i * 40
            emit(ev.ChunkStarted(name, run_id, i, str(i * size + 1), str((i + 1) * size), 1,
                                 f"rivet-task_{i % 4}", at=at))
            emit(ev.BatchWritten(name, run_id, size, size * 38, i, at=at + 30))
            clock.t, now = at + 30, clock.t   # count these rows when they were written, not now
            drain()
            clock.t = now
            emit(ev.PartCommitted(name, run_id, f"{name}_chunk{i}_20260418_1216{i:02d}_000_{i:06x}.parquet",
                                  size, size * 38, i, at=at + 30))
            emit(ev.ChunkFinished(name, run_id, i, size, "completed", None, f"rivet-task_{i % 4}", at=at + 31))
    drain()
    await pilot.pause()
    orders = runs["orders"][0]
    emit(ev.ChunkStarted("orders", orders, 6, "1500001", "1750000", 1, "rivet-task_2", at=clock() - 40))
    emit(ev.Retrying("orders", orders, 1, "server closed the connection unexpectedly", 2.0, 6, at=clock() - 21))
    emit(ev.ChunkStarted("orders", orders, 6, "1500001", "1750000", 2, "rivet-task_2", at=clock() - 19))
    for step in range(24):
        clock.advance(0.5)
        for name, (run_id, chunks, _) in runs.items():
            rows = {"orders": 41_000, "customers": 9_500, "events": 2_100, "line_items": 60_000}[name]
            emit(ev.BatchWritten(name, run_id, rows + 97 * (step % 5), rows * 38, 6 if chunks else None))
        drain()   # what the 4 Hz tick does, here at a known clock
        await pilot.pause()
    app.model["orders"].last_reconcile = {"status": "mismatch", "at": T0 - 1510}
    app.model["inventory"].last_reconcile = {"status": "match", "at": T0 - 5400}
    app.model["line_items"].last_reconcile = {"status": "match", "at": T0 - 7300}
    app.progression_version += 1


async def scene_exports(app, pilot, clock) -> None:
    await feed_running(app, pilot, clock)
    await settle(pilot)


async def scene_plan(app, pilot, clock) -> None:
    from rivet_tui.screens.plan import PlanScreen
    ranges = ([{"index": i, "lo": str(i * 250000 + 1), "hi": str((i + 1) * 250000), "state": "done"} for i in range(12)]
              + [{"index": i, "lo": str(i * 250000 + 1), "hi": str((i + 1) * 250000), "state": "redo"}
                 for i in (12, 13)]
              + [{"index": i, "lo": str(i * 250000 + 1), "hi": str((i + 1) * 250000), "state": "new"}
                 for i in range(14, 18)])
    diffs = [
        ExportDiff("orders", "chunked", False, rows_estimate=4_480_000, chunks_new=4, chunks_done=12, chunks_redo=2,
                   chunk_ranges=ranges),
        ExportDiff("events", "incremental", False, cursor_from="2026-04-18T11:59:58.120000Z",
                   cursor_to="2026-04-18T12:19:41.904211Z", rows_estimate=38_400,
                   schema_changes=["added column channel (text)", "amount: numeric(12,2) → numeric(14,2)"]),
        ExportDiff("customers", "full", False, rows_estimate=1_250_000),
        ExportDiff("sessions", "time_window", True, rows_estimate=880_000,
                   warnings=["column user_agent (text) has no index; the window scan reads the whole table"]),
        ExportDiff("refunds", "incremental", False, cursor_from="48211", cursor_to="48211", rows_estimate=1_000_000),
        ExportDiff("inventory", "chunked", False, rows_estimate=2_000_000, chunks_new=40,
                   chunk_ranges=[{"index": i, "lo": str(i * 50000 + 1), "hi": str((i + 1) * 50000), "state": "new"}
                                 for i in range(40)]),
    ]
    artifact = {"plan_id": "plan-20260418T122000Z-9c1e7d", "exports": [{"name": d.export} for d in diffs]}
    await app.push_screen(PlanScreen([d.export for d in diffs], prepared=(artifact, diffs)))
    await settle(pilot)


async def scene_board(app, pilot, clock) -> None:
    await feed_running(app, pilot, clock)
    await pilot.press("b")
    await settle(pilot, 0.7)


async def until_loaded(pilot, loaded: Callable[[], bool]) -> None:
    """Wait for a screen's state read (a worker) however loaded the machine is, then settle."""
    for _ in range(400):
        if loaded():
            break
        await pilot.pause(0.05)
    await settle(pilot, 0.4)


async def scene_detail(app, pilot, clock) -> None:
    await feed_running(app, pilot, clock)
    app.open_detail("orders")
    await until_loaded(pilot, lambda: getattr(app.screen, "_ready", False))


async def scene_help(app, pilot, clock) -> None:
    await pilot.press("question_mark")
    await settle(pilot)


def seed_history(store: StateStore) -> None:
    """Twelve past runs of orders in the state's metrics (what `rivet metrics` reads), two of them failed."""
    for i in range(12):
        failed = i in (4, 9)
        seconds = 240 + 17 * (i % 5) + (600 if i == 7 else 0)
        rows = 0 if failed else 4_000_000 + 25_000 * i
        store.record_metrics(export_name="orders", run_id=f"20260417T{i:02d}0000Z-h{i:05x}", mode="chunked",
                             status="failed" if failed else "succeeded", started_at=_iso(86400 - 3600 * i),
                             finished_at=_iso(86400 - 3600 * i - seconds), duration_ms=seconds * 1000, rows=rows,
                             files=0 if failed else 16, bytes=rows * 38, retries=1 if i == 7 else 0,
                             error_code="RIVET_SOURCE_QUERY_FAILED" if failed else None,
                             error_message="canceling statement due to statement timeout" if failed else None)


async def scene_history(app, pilot, clock) -> None:
    seed_history(app.store)
    app.open_history("orders")
    await until_loaded(pilot, lambda: getattr(app.screen, "runs", None) is not None)


# name → (scene, terminal size)
SCENES: dict[str, tuple[Callable[..., Awaitable[None]], tuple[int, int]]] = {
    "exports_running": (scene_exports, SIZE), "exports_80x24": (scene_exports, (80, 24)),
    "exports_220x50": (scene_exports, (220, 50)), "plan_diff": (scene_plan, SIZE),
    "progression_board": (scene_board, SIZE), "run_detail": (scene_detail, SIZE), "history": (scene_history, SIZE),
    "help": (scene_help, SIZE),
}


async def render(scene: str, workdir: Path) -> str:
    """The SVG of one scene, built in `workdir` (a fresh directory)."""
    from rivet_tui.app import RivetApp
    config = load_config(write_demo_config(workdir))
    store = StateStore(config.state_path)
    seed_state(store)
    clock = FakeClock()
    app = RivetApp(config, store, clock=clock)
    app.session_id = "20260418T120000Z-5e55e1"          # the run report's name, fixed like the clock
    app.report_dir = config.state_path.parent / "runs" / app.session_id
    play, size = SCENES[scene]
    async with app.run_test(size=size) as pilot:
        await wait_loaded(app, pilot)
        await play(app, pilot, clock)
        return app.export_screenshot()


def render_sync(scene: str) -> str:
    with tempfile.TemporaryDirectory(prefix="rivet-shot-") as tmp:
        return asyncio.run(render(scene, Path(tmp)))


async def demo_run(config_path: Path) -> str:
    """A picture of a real run: every export of `config_path` (the demo's, `make demo`) started with R, taken once
    rows flow and a chunk or more is done; then the run is stopped (resumable) and the app waits for it."""
    from rivet_tui.app import RivetApp
    config = load_config(config_path)
    app = RivetApp(config, StateStore(config.state_path))
    async with app.run_test(size=SIZE) as pilot:
        while not app.loaded:
            await pilot.pause(0.1)
        await pilot.press("R")
        for _ in range(3000):   # up to ~5 minutes on a busy machine
            states = app.model.states.values()
            if sum(1 for s in states if s.chunks_done >= 2) and sum(1 for s in states if s.rows) >= 2 \
                    or not app.running:
                break
            await pilot.pause(0.1)
        await pilot.pause(1.0)
        app.tick()
        await pilot.pause()
        svg = app.export_screenshot()
        app.stop_and_quit()
        while app.running:
            await pilot.pause(0.2)
    return svg


def write(name: str, svg: str) -> None:
    """screenshots/NAME.svg, and .png when rsvg-convert is there."""
    svg_path = OUT / f"{name}.svg"
    svg_path.write_text(svg)
    line = f"{svg_path.relative_to(OUT.parent)}"
    rsvg = shutil.which("rsvg-convert")
    if rsvg:
        png = svg_path.with_suffix(".png")
        # rsvg drops the leading no-break spaces of a <text> unless told to preserve white space
        svg = svg.replace("<svg ", '<svg xml:space="preserve" ', 1)
        subprocess.run([rsvg, "-w", "1600", "-o", str(png)], input=svg.encode(), check=True)
        line += f" + {png.name}"
    else:
        line += " (PNG skipped: rsvg-convert not found; apt-get install -y librsvg2-bin)"
    print(line, file=sys.stderr)


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, metavar="CONFIG",
                        help="only take screenshots/demo_run.* from a real run of CONFIG (e.g. demo/rivet.toml)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.demo:
        write("demo_run", asyncio.run(demo_run(args.demo.resolve())))
        return
    for scene in SCENES:
        write(scene, render_sync(scene))


if __name__ == "__main__":
    main()
