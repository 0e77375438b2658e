"""The operator's console (docs/tui.md): many exports, honest progress, stop, refusals, plan, history, keys.

Pilot against the real engine and the session PostgreSQL database. Where a test plays engine events itself (a phase
the engine may not emit yet, events arriving out of order), it pushes them through the same feed the runner uses.
"""
from __future__ import annotations

import io
import re
import threading
from dataclasses import dataclass, field

from rich.console import Console

from engine import events as ev
from engine.run.runner import Runner
from rivet_tui.app import RivetApp, print_session_summary
from rivet_tui.screens.confirm import ConfirmScreen
from rivet_tui.screens.detail import DetailScreen
from rivet_tui.screens.history import HistoryScreen
from rivet_tui.screens.plan import PlanScreen
from tests.helpers import manifest
from tests.tui.conftest import EVENTS, GHOST, ORDERS, ROWS, SIZE, cell, make_config, run, toasts, until
from tests.tui.test_snapshots import screen_text


def named(block: str, old: str, new: str) -> str:
    return block.replace(f'name = "{old}"', f'name = "{new}"')


def screen(app) -> str:
    return "\n".join(screen_text(app.export_screenshot()))


def totals(app) -> str:
    return str(app.screen.query_one("#totals").render())


def columns(app) -> list[str]:
    return [c.key for c in app.screen.query_one("#exports").columns_shown]


@dataclass(frozen=True)
class PhaseChanged(ev.Event):
    """engine.events.PhaseChanged as the engine contract defines it (the engine may not emit it yet)."""
    phase: str
    at: float = field(default=0.0)


PHASE_EVENT = getattr(ev, "PhaseChanged", PhaseChanged)


def test_fifty_exports_failed_first_totals_jump_and_columns_by_width(tmp_path, shop):
    blocks = "".join(named(EVENTS, "events", f"e{i:02d}") for i in range(47))
    blocks += "".join(named(GHOST, "ghost", f"ghost{i}") for i in (1, 2, 3))
    config, store = make_config(tmp_path, shop, blocks)

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=(80, 24), notifications=True) as pilot:
            await until(pilot, lambda: app.loaded)
            # 80x24: the six columns that matter, the name frozen when scrolling sideways
            assert columns(app) == ["name", "status", "progress", "rows", "rate", "eta"]
            assert app.screen.query_one("#exports").fixed_columns == 1
            assert "ghost1" not in screen(app)             # 50 rows: the last ones are off screen
            assert "4 at once" in app.sub_title             # [run] parallel_exports default (no options given)
            app.start_runs(["ghost1", "ghost2", "ghost3", "e46"])
            await until(pilot, lambda: all(app.model[n].status in ("failed", "done")
                                           for n in ("ghost1", "ghost2", "ghost3", "e46")), what="the four runs")
            await pilot.pause(0.5)
            text = screen(app)
            for n in ("ghost1", "ghost2", "ghost3"):       # failed first: on screen now, with the glyph
                assert re.search(rf"{n}\s+✗ failed", text), text
            assert "✗ 3 failed" in totals(app) and "✓ 1 done" in totals(app) and "· 46 idle" in totals(app)
            assert "Σ 500 rows" in totals(app)
            assert "▶ 0 running" in app.sub_title
            log = app.screen.query_one("#session-log")
            assert not log.has_class("closed")             # the first error opened the session log
            assert sum("RIVET_SOURCE_NO_SUCH_TABLE" in line.text for line in log.lines) >= 3
            await pilot.press("l")
            assert log.has_class("closed")
            assert app.screen.selected_export() == "e00"    # the selection stays on its export as rows move
            await pilot.press("n")                          # the failed are above: wraps to the first
            assert app.screen.selected_export() == "ghost1"
            await pilot.press("n")
            assert app.screen.selected_export() == "ghost2"
            await pilot.press("n", "n")
            assert app.screen.selected_export() == "ghost1"
            await pilot.press("N")
            assert app.screen.selected_export() == "ghost3"
            await pilot.press("s")                          # sort by name
            assert "sort: name" in totals(app)
            await pilot.pause(0.3)
            assert app.screen.query_one("#exports").shown[:2] == ["e00", "e01"]
            # 220 columns: duration, started, destination and the last error join
            await pilot.resize_terminal(220, 50)
            await pilot.pause(0.5)
            assert {"duration", "started", "destination", "error"} <= set(columns(app))
            assert cell(app, "ghost2", "error").startswith("RIVET_SOURCE_NO_SUCH_TABLE")
            assert cell(app, "ghost2", "destination") == "out/ghost"
            assert "None" not in screen(app)
    run(body)


def test_progress_resets_when_queued_and_rows_keep_step_with_chunks(tmp_path, shop):
    slow = ORDERS.rstrip() + "\n[exports.tuning]\nbatch_size = 500\nthrottle_ms = 20\n"
    config, store = make_config(tmp_path, shop, slow)

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.press("r")
            await until(pilot, lambda: cell(app, "orders", "status") == "✓ done", what="the first run")
            await pilot.pause(0.3)
            assert cell(app, "orders", "rows") == f"{ROWS:,}"
            # the second run waits at its start until the row has been looked at: the check does not race it
            go, real_run_export = threading.Event(), app.runner.run_export
            def held_run_export(*args, **kwargs):
                go.wait(30)
                return real_run_export(*args, **kwargs)
            app.runner.run_export = held_run_export
            await pilot.press("r")                          # again: no figure of the first run may stay
            await pilot.pause(0)
            app.tick()
            assert cell(app, "orders", "rows") == "-" and cell(app, "orders", "progress").split()[1] in (
                "starting", "connecting", "planning", "reading")
            go.set()
            seen = []

            def step() -> bool:
                s = app.model["orders"]
                seen.append((s.chunks_done, s.rows))
                return s.status == "done"
            await until(pilot, step, what="the second run")
            # every observation: the rows of the chunks counted done are counted too, and at most the two chunks
            # in flight (parallel = 2) have rows beyond them
            assert all(done * 2000 <= rows <= (done + 2) * 2000 for done, rows in seen), seen
            await until(pilot, lambda: cell(app, "orders", "progress").endswith("10/10"), timeout=5)
    run(body)


def test_phases_spinner_and_finalizing_instead_of_full_bar(tmp_path, shop):
    config, store = make_config(tmp_path, shop, EVENTS + named(ORDERS, "orders", "chunky"))

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            feed, now = app.feed, app.clock()
            feed(ev.ExportStarted("events", "r1", "full", None, 0, 1000, at=now))
            feed(PHASE_EVENT("events", "r1", "reading", at=now))
            app.tick()
            assert re.fullmatch(r"\S reading \d+s", cell(app, "events", "progress"))   # no fraction yet
            feed(ev.BatchWritten("events", "r1", 400, 4000))
            app.tick()
            assert cell(app, "events", "progress").endswith("40%")
            feed(ev.BatchWritten("events", "r1", 600, 6000))     # every row read, the run goes on
            app.tick()
            assert re.fullmatch(r"\S finalizing \d+s", cell(app, "events", "progress"))
            assert cell(app, "events", "eta") == "-"
            feed(PHASE_EVENT("events", "r1", "committing", at=now))
            app.tick()
            assert re.fullmatch(r"\S committing \d+s", cell(app, "events", "progress"))
            feed(ev.ExportFinished("events", "r1", "succeeded", 1000, 1, 10000, 1500))
            app.tick()
            assert cell(app, "events", "progress").endswith("100%") and cell(app, "events", "status") == "✓ done"
            # a chunked run whose last chunk is done but not committed yet
            feed(ev.ExportStarted("chunky", "r2", "chunked", 2, 0, 4000, at=now))
            for i in (0, 1):
                feed(ev.ChunkStarted("chunky", "r2", i, "1", "2", at=now + i))
                feed(ev.BatchWritten("chunky", "r2", 2000, 100, i))
                feed(ev.ChunkFinished("chunky", "r2", i, 2000, "completed", at=now + i + 1))
            app.tick()
            assert "finalizing" in cell(app, "chunky", "progress") and "100%" not in cell(app, "chunky", "progress")
            # a resumed chunk run: this run's chunks, in step with this run's rows, and the resumed ones apart
            feed(ev.ExportFinished("chunky", "r2", "succeeded", 4000, 2, 200, 2000))
            feed(ev.ExportStarted("chunky", "r3", "chunked", 10, 4, 10_000, at=now))
            feed(ev.ChunkFinished("chunky", "r3", 4, 1000, "completed", at=now + 1))
            feed(ev.BatchWritten("chunky", "r3", 1000, 100, 4))
            app.tick()
            assert cell(app, "chunky", "progress").endswith(" 1/6 ↻4") and cell(app, "chunky", "rows") == "1,000"
    run(body)


def test_stop_is_resumable_refusals_say_why_and_the_summary_follows(tmp_path, shop):
    slow = ORDERS.replace("chunk_size = 2000", "chunk_size = 1000").replace("parallel = 2", "parallel = 1")
    config, store = make_config(tmp_path, shop, slow + "[exports.tuning]\nbatch_size = 250\nthrottle_ms = 250\n"
                                + EVENTS)

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.press("r")                          # orders (first row)
            await until(pilot, lambda: app.model["orders"].chunks_done >= 2, what="two chunks done")
            assert "▶ 1 running" in app.sub_title
            await pilot.press("c")                          # reconcile makes no sense while it runs
            await until(pilot, lambda: "Refused" in toasts(app), timeout=5, what="the refusal")
            assert "orders is running" in toasts(app) and "None" not in toasts(app)
            assert app.model["orders"].last_reconcile is None
            await pilot.press("plus")
            assert "5 at once" in app.sub_title
            await pilot.press("minus", "minus")
            assert "3 at once" in app.sub_title
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=5, what="the quit question")
            question = str(app.screen.query_one("#question").render())
            assert "orders: stops after the batch in hand" in question and "Stopping may take a few seconds" in question
            assert "resumable" in question
            await pilot.press("y")
            await until(pilot, lambda: app.return_value is not None, timeout=60, what="the app to exit")
        return app
    app = run(body)
    assert app.return_value == 2                          # transient: run again to resume
    assert app.model["orders"].status == "stopped"
    out = io.StringIO()
    print_session_summary(app, Console(file=out, width=160))
    text = out.getvalue()
    assert re.search(r"orders\s+│\s+stopped", text), text
    assert f"resume with: rivet run -c {config.path} -e orders" in text
    stopped_run = store.latest_chunk_run("orders")["run_id"]
    fast, _ = make_config(tmp_path, shop, slow + EVENTS)   # without the throttle: tuning is not part of the plan
    [orders, _] = Runner(fast, store).run()               # a plain run resumes the same chunk run
    assert orders.status == "succeeded" and orders.run_id == stopped_run
    assert manifest(tmp_path / "out/orders")["row_count"] == ROWS


def test_plan_says_up_to_date_and_that_a_new_chunk_run_reexports_everything(tmp_path, shop):
    config, store = make_config(tmp_path, shop, EVENTS + ORDERS)
    Runner(config, store).run()                           # events' cursor at the maximum, orders' chunk run complete

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            app.action_plan_all()
            await until(pilot, lambda: isinstance(app.screen, PlanScreen) and app.screen.diffs, timeout=60,
                        what="the plan")
            body_text = str(app.screen.query_one("#plan-body").render())
            events_part = body_text.split("orders")[0]
            assert "= up to date" in events_part and "cursor 500" in events_part
            assert "→" not in events_part and "~" not in events_part   # no cursor 500 → 500, no row estimate
            assert "re-exports every row" in body_text.split("orders", 1)[1]
    run(body)


def test_history_plots_the_last_runs_and_marks_failures(tmp_path, shop):
    config, store = make_config(tmp_path, shop, EVENTS + GHOST)
    Runner(config, store).run()
    shop.sql("INSERT INTO tui_events SELECT g, 'late' FROM generate_series(501, 520) g")
    try:
        Runner(config, store).run()
    finally:
        shop.sql("DELETE FROM tui_events WHERE id > 500")

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.press("h")                          # events, the first row
            await until(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.runs is not None,
                        timeout=10, what="the history")
            assert [r["rows"] for r in app.screen.runs] == [500, 20]   # oldest first
            listing = str(app.screen.query_one("#history-runs").render())
            assert listing.count("✓ done") == 2
            plot = str(app.screen.query_one("#plot-rows").render())
            assert "rows per run" in plot
            await pilot.press("escape")
            app.screen.query_one("#exports").select_key("ghost")
            await pilot.press("h")                          # ghost: both runs failed
            await until(pilot, lambda: isinstance(app.screen, HistoryScreen) and app.screen.export == "ghost"
                        and app.screen.runs is not None, timeout=10, what="ghost's history")
            assert "✗ marks the 2" in str(app.screen.query_one("#history-head").render())
            assert str(app.screen.query_one("#history-runs").render()).count("RIVET_SOURCE_NO_SUCH_TABLE") == 2
    run(body)


def test_filter_counts_and_says_no_match(tmp_path, shop):
    config, store = make_config(tmp_path, shop, EVENTS + GHOST + named(EVENTS, "events", "late"))

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.press("slash", *"gho")
            await until(pilot, lambda: "1 of 3 shown" in totals(app), timeout=5, what="the filter count")
            await pilot.press("backspace", "backspace", "backspace", *"zzz")
            await until(pilot, lambda: "0 of 3 shown" in totals(app), timeout=5, what="no row")
            assert app.screen.query_one("#no-match").display
            assert "no match" in str(app.screen.query_one("#no-match").render())
            await pilot.press("escape")
            await until(pilot, lambda: app.screen.query_one("#exports").row_count == 3, timeout=5)
            assert not app.screen.query_one("#no-match").display
    run(body)


def test_detail_journal_in_time_order_and_sparkline_without_spikes(tmp_path, shop):
    config, store = make_config(tmp_path, shop, ORDERS)

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen._ready, timeout=10)
            t0 = app.clock() - 30
            feed = app.feed
            feed(ev.ExportStarted("orders", "r1", "chunked", 2, 0, 4000, at=t0))
            # two chunks in parallel: their events reach the UI out of time order
            feed(ev.ChunkFinished("orders", "r1", 1, 2000, "completed", at=t0 + 20))
            feed(ev.ChunkStarted("orders", "r1", 0, "1", "2000", at=t0 + 1))
            feed(ev.ChunkStarted("orders", "r1", 1, "2001", "4000", at=t0 + 2))
            feed(ev.ChunkFinished("orders", "r1", 0, 2000, "completed", at=t0 + 10))
            feed(ev.BatchWritten("orders", "r1", 10_000, 100))   # a chunk's rows landing in one batch
            app.tick()
            await pilot.pause(0.3)
            journal = [line.text for line in app.screen.query_one("#journal").lines]
            kinds = [k for line in journal for k in ("ExportStarted", "ChunkStarted", "ChunkFinished") if k in line]
            assert kinds == ["ExportStarted", "ChunkStarted", "ChunkStarted", "ChunkFinished", "ChunkFinished"]
            spark = app.screen.query_one("#spark").data
            assert max(spark) == 10_000 / 5                 # a 5 s average: the batch's rows over 5 s, no spike
    run(body)


def test_palette_lists_each_action_once_with_its_key(tmp_path, shop):
    from rivet_tui.app import RivetCommands
    from rivet_tui.keys import KEYS
    config, store = make_config(tmp_path, shop, EVENTS, keys='run = "x"')

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            provider = RivetCommands(app.screen)
            hits = [h async for h in provider.discover()]
            names = [str(h.display) for h in hits]
            assert len(names) == len(set(names)) == len(KEYS) + 1   # + "Plan all"
            helps = {str(h.display): h.help for h in hits}
            assert helps["Run"].startswith("x · ") and helps["Filter"].startswith("/ · ")
            assert not any("N at a time" in h for h in helps.values())
            system = [c.title for c in app.get_system_commands(app.screen)]
            assert "Quit" not in system and "Keys" not in system     # ours: q asks first, ? lists every key
    run(body)


def test_run_detail_names_the_sessions_run_report(tmp_path, shop):
    """The run detail of an export run in this session names the report the console writes when it exits
    (docs/guardrails.md); the report is then written exactly there."""
    from datetime import UTC, datetime

    from rivet_tui.headless import save_run_report
    config, store = make_config(tmp_path, shop, ORDERS)

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.press("r")
            await until(pilot, lambda: cell(app, "orders", "status") == "✓ done", what="the run")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen._ready, timeout=10)
            await pilot.pause(0.3)
            text = str(app.screen.query_one("#summary").render())
            expected = tmp_path / ".rivet" / "runs" / app.session_id / "summary.md"
            shown = expected.relative_to(config.base_dir)     # beside the config, as the destinations are shown
            assert f"run report: {shown}" in " ".join(text.split()), text
        written = save_run_report(Console(file=io.StringIO()), config.state_path, list(app.results.values()),
                                  datetime.now(UTC), 0, session=app.session_id)
        assert written / "summary.md" == expected and expected.exists()
        assert "orders" in expected.read_text()
    run(body)
