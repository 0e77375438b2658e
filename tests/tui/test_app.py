"""The TUI driven by Pilot against the real engine and a real PostgreSQL database (no mocks)."""
from __future__ import annotations

import re

from rivet_tui.app import RivetApp
from rivet_tui.screens.confirm import ConfirmScreen
from rivet_tui.screens.detail import DetailScreen
from tests.helpers import manifest, read_table, run_json
from tests.tui.conftest import EVENTS, GHOST, ORDERS, ROWS, SIZE, cell, make_config, run, toasts, until


def test_run_selected_goes_running_then_done(tmp_path, shop):
    # A lock held on the table keeps the run waiting in its source guard until "running" has been seen on screen:
    # a throttle alone raced a loaded CI machine (the first refresh already showed "done").
    import psycopg
    config, store = make_config(tmp_path, shop, ORDERS + EVENTS)

    async def body():
        app = RivetApp(config, store)
        seen: list[str] = []
        with psycopg.connect(shop.url) as blocker:
            blocker.execute("LOCK TABLE tui_orders IN ACCESS EXCLUSIVE MODE")
            async with app.run_test(size=SIZE) as pilot:
                await until(pilot, lambda: app.loaded, what="state loaded")
                assert cell(app, "orders", "status") == "· idle"
                await pilot.press("r")                      # the cursor starts on the first row: orders

                def status() -> str:
                    seen.append(cell(app, "orders", "status"))
                    return seen[-1]
                await until(pilot, lambda: status() == "▶ running", what="orders running")
                blocker.rollback()                          # the guard gets its lock; the export reads
                await until(pilot, lambda: status() in ("✓ done", "✗ failed"), what="orders to finish")
                assert status() == "✓ done", app.model["orders"].error
                await pilot.pause(0.3)
                assert cell(app, "orders", "rows") == f"{ROWS:,}"
                assert cell(app, "orders", "progress").endswith("10/10")
                await until(pilot, lambda: cell(app, "orders", "committed") == "chunk #9", what="committed boundary")
                assert cell(app, "events", "status") == "· idle"   # only the selected export ran
    run(body)
    assert manifest(tmp_path / "out/orders")["row_count"] == ROWS == read_table(tmp_path / "out/orders").num_rows


def test_failing_export_shows_error_in_notification_and_detail(tmp_path, shop):
    config, store = make_config(tmp_path, shop, GHOST + ORDERS)

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.press("r")
            await until(pilot, lambda: cell(app, "ghost", "status") == "✗ failed", what="ghost to fail")
            await until(pilot, lambda: "RIVET_SOURCE_NO_SUCH_TABLE" in toasts(app), timeout=5, what="a notification")
            assert "no_such_table" in toasts(app) and "hint" in toasts(app)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, DetailScreen), timeout=5)
            await pilot.pause(0.5)
            errors = str(app.screen.query_one("#errors").render())
            assert "error[RIVET_SOURCE_NO_SUCH_TABLE]" in errors and "hint:" in errors
            journal = "\n".join(line.text for line in app.screen.query_one("#journal").lines)
            assert journal.count("ExportFinished") == 1 and "failed" in journal   # live, not twice (stored too)
            screen_text = app.export_screenshot()
            assert "Traceback" not in screen_text
            await pilot.press("escape")
            assert cell(app, "orders", "status") == "· idle"
    run(body)


def test_remapped_keys_from_config(tmp_path, shop):
    from tests.tui.test_snapshots import screen_text
    config, store = make_config(tmp_path, shop, EVENTS, keys='run = "x"\nboard = ["B", "f2"]\nnot_a_binding = "z"')

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(pilot, lambda: app.loaded)
            assert "not_a_binding" in toasts(app)       # a typo in [tui.keys] is reported, not ignored
            await pilot.press("r")
            await pilot.pause(0.5)
            assert cell(app, "events", "status") == "· idle" and not app.model["events"].session_runs
            await pilot.press("x")
            await until(pilot, lambda: cell(app, "events", "status") == "✓ done", what="events to run with x")
            assert cell(app, "events", "rows") == "500"
            await pilot.press("f2")
            await until(pilot, lambda: type(app.screen).__name__ == "BoardScreen", timeout=5)
            await pilot.press("escape")
            await pilot.press("question_mark")
            await pilot.pause(0.3)
            lines = screen_text(app.export_screenshot())
            [run_line] = [line for line in lines if "Run the selected export" in line]
            assert run_line.split()[1:3] == ["x", "run"], run_line   # the help shows the key as remapped
            [board_line] = [line for line in lines if "Progression board" in line]
            assert "B" in board_line.split() and "f2" in board_line.split(), board_line
    run(body)


def test_quit_while_running_asks_then_state_stays_consistent(tmp_path, shop):
    slow = ORDERS.replace("chunk_size = 2000", "chunk_size = 1000").replace("parallel = 2", "parallel = 1")
    config, store = make_config(tmp_path, shop, slow + "[exports.tuning]\nbatch_size = 250\nthrottle_ms = 250\n")

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.press("r")
            await until(pilot, lambda: app.model["orders"].chunks_done >= 2, what="two chunks done")
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=5, what="the quit question")
            assert "orders" in str(app.screen.query_one("#question").render())
            await pilot.press("n")                      # keep running: nothing stops
            await pilot.pause(0.3)
            assert not app.runner.cancelled.is_set() and cell(app, "orders", "status") == "▶ running"
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=5)
            await pilot.press("y")
            await until(pilot, lambda: app.return_value is not None, timeout=60, what="the app to exit")
        return app.return_value
    code = run(body)
    assert code == 2                                    # transient: run again to resume
    run_state = store.latest_chunk_run("orders")
    tasks = store.chunk_tasks(run_state["run_id"])
    assert run_state["status"] != "completed" and not [t for t in tasks if t["status"] == "running"]
    done = [t for t in tasks if t["status"] == "completed"]
    assert 2 <= len(done) < len(tasks) == 20            # stopped early, and what finished was committed
    assert not (tmp_path / "out/orders/_SUCCESS").exists()
    # the next headless run (tuning changed: not part of the plan) resumes the same chunk run: every row once
    make_config(tmp_path, shop, slow)
    [result] = run_json(tmp_path / "rivet.toml")["exports"]
    assert result["status"] == "succeeded" and result["run_id"] == run_state["run_id"]
    table = read_table(tmp_path / "out/orders")
    assert table.num_rows == ROWS == len(set(table.column("id").to_pylist()))
    assert manifest(tmp_path / "out/orders")["row_count"] == ROWS


def test_board_shows_committed_then_reconcile_verifies(tmp_path, shop):
    config, store = make_config(tmp_path, shop, ORDERS + EVENTS)

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE, notifications=True) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.press("R")                      # run all
            await until(pilot, lambda: all(app.model[n].status == "done" for n in ("orders", "events")),
                        what="both exports done")
            await pilot.press("b")
            await until(pilot, lambda: type(app.screen).__name__ == "BoardScreen", timeout=5)
            board = app.screen.query_one("#board")

            def board_cell(row, col):
                return board.get_cell(row, col).plain.strip()
            await until(pilot, lambda: board_cell("orders", "committed") == "chunk #9" and
                        board_cell("events", "committed") == "500", timeout=10, what="committed on the board")
            assert board_cell("orders", "verified") == "-" and board_cell("orders", "lag") == "unverified"
            assert board_cell("events", "lag") == "n/a"   # incremental: no verified boundary (PG contract, docs/architecture.md)
            await pilot.press("c")                      # reconcile the selected row (orders)
            await until(pilot, lambda: board_cell("orders", "verified") == "chunk #9", timeout=30,
                        what="verified after reconcile")
            assert board_cell("orders", "lag") == "in sync"
            assert board_cell("orders", "reconcile").startswith("match")
    run(body)
    [row] = store.progression("orders")
    assert row["last_verified_chunk_index"] == row["last_committed_chunk_index"] == 9


def test_board_remembers_the_last_reconcile_across_restarts(tmp_path, shop):
    config, store = make_config(tmp_path, shop, ORDERS)
    from engine.reconcile import reconcile_export
    from engine.run.runner import Runner
    Runner(config, store).run()
    assert reconcile_export(config, config.export("orders"), store).ok   # as `rivet reconcile` in another process

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.press("b")
            await until(pilot, lambda: type(app.screen).__name__ == "BoardScreen", timeout=5)
            board = app.screen.query_one("#board")
            await until(pilot, lambda: board.get_cell("orders", "reconcile").plain.strip().startswith("match"),
                        timeout=10, what="the last reconcile from the journal")
    run(body)


def test_plan_shows_cursor_diff_and_apply_runs_it(tmp_path, shop):
    config, store = make_config(tmp_path, shop, EVENTS)
    run_json(tmp_path / "rivet.toml")                   # cursor = 500
    shop.sql("INSERT INTO tui_events SELECT g, 'late' FROM generate_series(501, 540) g")

    async def body():
        app = RivetApp(config, store)
        try:
            async with app.run_test(size=SIZE, notifications=True) as pilot:
                await until(pilot, lambda: app.loaded)
                await pilot.press("p")
                await until(pilot, lambda: getattr(app.screen, "diffs", None), timeout=30, what="the plan")
                body_text = str(app.screen.query_one("#plan-body").render())
                assert "~ cursor" in body_text and "500 → 540" in body_text
                assert app.model["events"].status == "planned"
                await pilot.press("a")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), timeout=5)
                assert "events" in str(app.screen.query_one("#question").render())
                await pilot.press("y")
                await until(pilot, lambda: app.model["events"].status == "done", what="the plan applied")
                assert app.model["events"].rows == 40
        finally:
            shop.sql("DELETE FROM tui_events WHERE id > 500")
    run(body)
    [row] = store.progression("events")
    assert row["last_committed_cursor"] == "540"
    assert any(j["event"] == "PlanApplied" for j in store.journal_for("events"))


def test_command_palette_lists_every_action(tmp_path, shop):
    from rivet_tui.app import RivetCommands
    from rivet_tui.keys import KEYS
    from tests.tui.test_snapshots import screen_text
    config, store = make_config(tmp_path, shop, EVENTS)

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            provider = RivetCommands(app.screen)
            found = [hit.display for hit in [h async for h in provider.discover()]]
            for k in KEYS:
                assert any(str(d).startswith(k.label.split()[0]) for d in found), k.label
            searched = [str(h.text) async for h in provider.search("run events")]
            assert "Run events" in searched
            await pilot.press("ctrl+p")
            await pilot.pause(0.2)
            await pilot.press(*"board")
            await pilot.pause(0.5)
            assert "Progression board" in "\n".join(screen_text(app.export_screenshot()))
            await pilot.press("enter")                  # runs the action, as its key would
            await until(pilot, lambda: type(app.screen).__name__ == "BoardScreen", timeout=5, what="the board")
    run(body)


def test_worker_errors_become_one_typed_message_a_notification_and_a_log_line(tmp_path, shop):
    from rivet_tui import messages as msg
    config, store = make_config(tmp_path, shop, EVENTS)
    seen: list = []

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE, notifications=True, message_hook=seen.append) as pilot:
            await until(pilot, lambda: app.loaded)
            app.start_job(msg.Job("a broken engine call"), lambda job: {}["missing"])   # a bug in a worker
            await until(pilot, lambda: "RIVET_INTERNAL_ERROR" in toasts(app), timeout=5, what="the notification")
            assert "a broken engine call" in toasts(app)
            [failed] = [m for m in seen if isinstance(m, msg.WorkFailed)]
            assert failed.job.what == "a broken engine call" and failed.error.code == "RIVET_INTERNAL_ERROR"
            await pilot.pause(0.5)                       # the error stays in the session log after the toast
            log = "\n".join(line.text for line in app.screen.query_one("#session-log").lines)
            assert "a broken engine call" in log and "RIVET_INTERNAL_ERROR" in log
            assert app.is_running
    run(body)


def test_no_color_renders_without_colour_and_stays_readable(tmp_path, shop, monkeypatch):
    """Textual reads NO_COLOR (and drops it from the environment): the same screen loses every hue, and what colour
    said before is still said by glyphs and weight, readable (WCAG 3:1 or more against its background)."""
    from tests.tui.test_snapshots import low_contrast, screen_text
    config, store = make_config(tmp_path, shop, GHOST + EVENTS)

    async def screenshot() -> str:
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            app.start_runs(["ghost", "events"])
            await until(pilot, lambda: app.model["ghost"].status == "failed" and app.model["events"].status == "done",
                        what="both runs")
            await pilot.pause(0.6)
            return app.export_screenshot()

    def hues(svg: str) -> set[str]:
        style = svg.split("<style>")[-1].split("</style>")[0]
        window_buttons = {"ff5f57", "febc2e", "28c840"}
        return {c for c in re.findall(r"#([0-9a-f]{6})\b", style) if c not in window_buttons
                and max(int(c[i:i + 2], 16) for i in (0, 2, 4)) - min(int(c[i:i + 2], 16) for i in (0, 2, 4)) > 8}

    assert hues(run(screenshot))                        # coloured by default
    monkeypatch.setenv("NO_COLOR", "1")
    svg = run(screenshot)
    assert hues(svg) == set()
    assert low_contrast(svg) == []
    text = "\n".join(screen_text(svg))
    assert "✗ failed" in text and "✓ done" in text and "RIVET_SOURCE_NO_SUCH_TABLE" in text   # last error, log


def test_live_cells_repaint_correctly_when_scrolled(tmp_path, shop):
    """Rows are repainted one by one (not the whole table): updates must land on the right lines, on screen or not."""
    from engine import events as ev
    from tests.tui.test_snapshots import screen_text
    blocks = "".join(EVENTS.replace('name = "events"', f'name = "e{i:03d}"') for i in range(120))
    config, store = make_config(tmp_path, shop, blocks)

    def line_of(svg: str, name: str) -> str:
        return next((line for line in screen_text(svg) if f" {name} " in line), "")

    async def body():
        app = RivetApp(config, store)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.loaded)
            await pilot.press("s")                      # sort by name: running rows stay where they are
            await pilot.press("ctrl+end")               # scroll to the last rows
            await pilot.pause(0.3)
            for name, rows in (("e119", 12_345), ("e000", 777), ("e100", 4_242)):
                app.feed(ev.ExportStarted(name, f"run-{name}", "incremental"))
                app.feed(ev.BatchWritten(name, f"run-{name}", rows, rows * 10))
            await until(pilot, lambda: "12,345" in line_of(app.export_screenshot(), "e119"), timeout=10,
                        what="the 4 Hz refresh")
            svg = app.export_screenshot()
            assert "running" in line_of(svg, "e119") and "12,345" in line_of(svg, "e119")
            assert "4,242" in line_of(svg, "e100")
            assert line_of(svg, "e000") == ""           # scrolled away
            assert "idle" in line_of(svg, "e118")       # the neighbours did not change
            await pilot.press("ctrl+home")
            await until(pilot, lambda: "777" in line_of(app.export_screenshot(), "e000"), timeout=10)
            svg = app.export_screenshot()
            assert "running" in line_of(svg, "e000") and "777" in line_of(svg, "e000")
            assert "idle" in line_of(svg, "e001")
    run(body)
