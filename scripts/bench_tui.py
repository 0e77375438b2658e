"""Frame cost of the exports screen: 1,000 exports in the config, 8 running, engine events at a realistic rate.

    .venv/bin/python scripts/bench_tui.py [--seconds 10] [--exports 1000] [--running 8] [--batches-per-s 50]

The app runs headless at 160x48 with its real 4 Hz refresh. A feeder thread plays the runner: ExportStarted, then
BatchWritten at --batches-per-s per running export and a ChunkFinished every second, all through the same
feed the runner uses (rivet_tui/feed.py). Measured on the UI thread:
  flush   the 4 Hz tick: apply the drained events, diff the model, patch changed cells inside batch_update
  paint   the compositor update that follows, plus turning it into terminal escape codes (headless mode skips
          the write; we render the segments anyway so the cost is counted)
  frame   flush + the paint it caused
  key     key press → the screen repainted with the moved cursor (the "under 100 ms" budget)
No database is contacted: the exports never really run; only their events do.
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from textual._compositor import CompositorUpdate  # noqa: E402
from textual.app import App  # noqa: E402
from textual.screen import Screen  # noqa: E402

from engine import events as ev  # noqa: E402
from engine.config import load_config  # noqa: E402
from engine.state.store import StateStore  # noqa: E402
from rivet_tui.app import RivetApp  # noqa: E402

MODES = ("full", "incremental", "chunked", "time_window")
EXTRA = {"full": "", "incremental": 'cursor_column = "id"\n', "chunked": 'chunk_column = "id"\nchunk_size = 1000\n',
         "time_window": 'time_column = "at"\ndays_window = 7\n'}


def write_config(directory: Path, n: int) -> Path:
    parts = ['[source]\ntype = "postgres"\nurl = "postgresql://bench@127.0.0.1:5432/none"\n']
    for i in range(n):
        mode = MODES[i % len(MODES)]
        parts.append(f'[[exports]]\nname = "export_{i:04d}"\ntable = "t{i}"\nmode = "{mode}"\n{EXTRA[mode]}'
                     f'destination = {{ type = "local", path = "out/{i}" }}\n')
    path = directory / "rivet.toml"
    path.write_text("\n".join(parts))
    return path


class Meter:
    def __init__(self):
        self.flush: list[float] = []
        self.paint: list[float] = []
        self.frame: list[float] = []
        self.last_paint_end = 0.0
        self._pending_flush: float | None = None

    def install(self) -> None:
        meter = self
        flush, update, display = RivetApp.tick, Screen._on_timer_update, App._display

        def timed_flush(app):
            t = time.perf_counter()
            flush(app)
            dt = time.perf_counter() - t
            meter.flush.append(dt)
            meter._pending_flush = dt

        def timed_update(screen):
            t = time.perf_counter()
            update(screen)
            end = time.perf_counter()
            meter.paint.append(end - t)
            meter.last_paint_end = end
            if meter._pending_flush is not None:
                meter.frame.append(meter._pending_flush + end - t)
                meter._pending_flush = None

        def rendering_display(app, screen, renderable):
            if isinstance(renderable, CompositorUpdate):
                renderable.render_segments(app.console)   # what a real terminal would be sent
            display(app, screen, renderable)

        RivetApp.tick, Screen._on_timer_update, App._display = timed_flush, timed_update, rendering_display


def feeder(app: RivetApp, names: list[str], stop: threading.Event, batches_per_s: float, counter: list[int]) -> None:
    emit = app.feed
    runs = {n: f"20260418T120000Z-{i:06x}" for i, n in enumerate(names)}
    for n in names:
        mode = app.config.export(n).mode
        emit(ev.ExportStarted(n, runs[n], mode, 400 if mode == "chunked" else None, 0, 50_000_000))
    period = 1 / batches_per_s
    tick, chunk = 0, 0
    while not stop.is_set():
        for n in names:
            emit(ev.BatchWritten(n, runs[n], 50_000, 2_000_000, chunk))
            counter[0] += 1
        tick += 1
        if tick % int(batches_per_s) == 0:
            for n in names:
                emit(ev.ChunkFinished(n, runs[n], chunk, 50_000 * int(batches_per_s), "completed"))
                counter[0] += 1
            chunk += 1
        time.sleep(period)


def summary(label: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    if not ms:
        return f"{label:<6} no samples"
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return (f"{label:<6} n={len(ms):<4} median {statistics.median(ms):6.2f} ms   p95 {p95:6.2f} ms   "
            f"worst {ms[-1]:6.2f} ms")


async def bench(args) -> None:
    with tempfile.TemporaryDirectory(prefix="rivet-bench-tui-") as tmp:
        config = load_config(write_config(Path(tmp), args.exports))
        store = StateStore(config.state_path)
        app = RivetApp(config, store)
        meter = Meter()
        meter.install()
        stop, counter = threading.Event(), [0]
        async with app.run_test(size=(160, 48)) as pilot:
            while not app.loaded:
                await pilot.pause(0.05)
            names = [e.name for e in config.exports][: args.running]   # visible rows: the worst case for paint
            thread = threading.Thread(target=feeder, args=(app, names, stop, args.batches_per_s, counter), daemon=True)
            meter.flush.clear(), meter.paint.clear(), meter.frame.clear()
            t0 = time.perf_counter()
            thread.start()
            keys: list[float] = []
            end = t0 + args.seconds
            while time.perf_counter() < end:
                await pilot.pause(0.3)
                pressed = time.perf_counter()
                await pilot.press("down")
                while meter.last_paint_end < pressed and time.perf_counter() - pressed < 2:
                    await asyncio.sleep(0.001)
                keys.append(meter.last_paint_end - pressed)
            elapsed = time.perf_counter() - t0
            stop.set()
            thread.join()
            statuses = {app.model[n].status for n in names}
            rows = app.model[names[0]].rows
        print(f"{args.exports} exports, {args.running} running, {counter[0] / elapsed:,.0f} engine events/s for "
              f"{elapsed:.1f} s; exports screen at 160x48, 4 Hz refresh (textual {__import__('textual').__version__})")
        print(summary("flush", meter.flush))
        print(summary("paint", meter.paint))
        print(summary("frame", meter.frame))
        print(summary("key", keys))
        print(f"refreshes/s {len(meter.flush) / elapsed:.1f}; running rows ended {statuses}, first has {rows:,} rows")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--exports", type=int, default=1000)
    p.add_argument("--running", type=int, default=8)
    p.add_argument("--batches-per-s", type=float, default=50, help="BatchWritten events per running export")
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
