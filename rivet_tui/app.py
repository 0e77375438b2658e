"""RivetApp: the Textual face of the engine (SPEC §6).

Threads: every engine call runs in a thread worker (`background`, `_run_export`); the runner's events come back as
messages (bridge.py) and land in `ExportModel`; screens redraw changed cells from the model on timers. One handler
(`on_worker_state_changed`) turns any worker failure into a notification and a line in the run detail.

Keys: every action is a Binding with an id, so `[tui.keys]` in rivet.toml remaps it (`set_keymap`); the help screen
and the command palette are built from the same table (KEYS).
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from engine.config import Config
from engine.errors import ExitClass, RivetError, internal
from engine.runner import ExportResult, Runner, RunOptions, worst_exit
from rivet_tui.bridge import (
    PLAN,
    RECONCILE,
    VALIDATE,
    EngineEvent,
    EngineFunction,
    EventBridge,
    ExportModel,
)


@dataclass(frozen=True)
class Key:
    id: str              # the name used in [tui.keys]
    key: str             # default key (Textual key name)
    action: str
    label: str           # footer
    help: str            # help screen and command palette
    needs: EngineFunction | None = None


KEYS: tuple[Key, ...] = (
    Key("run", "r", "run_selected", "Run", "Run the selected export"),
    Key("run_all", "R", "run_all", "Run all", "Run every export (queued, N at a time)"),
    Key("plan", "p", "plan", "Plan", "Plan the selected export: diff against state", PLAN),
    Key("apply", "a", "apply", "Apply", "Apply the plan on screen (asks first)", PLAN),
    Key("reconcile", "c", "reconcile", "Reconcile", "Reconcile the selected export: source counts per chunk",
        RECONCILE),
    Key("validate", "v", "validate", "Validate", "Validate the selected export's files against its manifest",
        VALIDATE),
    Key("detail", "enter", "detail", "Detail", "Run detail of the selected export: journal, errors, throughput"),
    Key("board", "b", "board", "Board", "Progression board: committed vs verified"),
    Key("filter", "slash", "filter", "Filter", "Filter exports by name, mode or status"),
    Key("help", "question_mark", "help", "Help", "Show every key"),
    Key("quit", "q", "quit", "Quit", "Quit (asks first while exports run)"),
)
KEY_IDS = {k.id for k in KEYS}

# Actions that act on "the selected export" of whatever screen is on top.
SELECTION_ACTIONS = {"run_selected", "plan", "reconcile", "validate", "detail"}


class RivetCommands(Provider):
    """Command palette: every action, plus "run <export>" / "detail <export>" for each export."""

    def _actions(self) -> list[tuple[str, str, Callable]]:
        app: RivetApp = self.app  # type: ignore[assignment]
        out = []
        for k in KEYS:
            note = f" ({k.needs.unavailable})" if k.needs and k.needs.resolve() is None else ""
            out.append((k.label if k.id != "run_all" else "Run all exports", k.help + note,
                        partial(app.palette_action, k.action)))
        out.append(("Plan all exports", "Plan every export: diff against state" +
                    (f" ({PLAN.unavailable})" if PLAN.resolve() is None else ""), app.action_plan_all))
        return out

    async def discover(self) -> Hits:
        for name, help_text, callback in self._actions():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        app: RivetApp = self.app  # type: ignore[assignment]
        for name, help_text, callback in self._actions():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
        for export in app.model.names():
            for verb, fn in (("Run", app.start_one), ("Detail", app.open_detail)):
                text = f"{verb} {export}"
                score = matcher.match(text)
                if score > 0:
                    yield Hit(score, matcher.highlight(text), partial(fn, export), help=f"{verb} export {export}")


class RivetApp(App[int]):
    CSS_PATH = "styles/app.tcss"
    TITLE = "rivet"
    ENABLE_COMMAND_PALETTE = True
    COMMANDS = App.COMMANDS | {RivetCommands}
    BINDINGS: ClassVar[list[BindingType]] = [Binding(k.key, k.action, k.label, id=k.id,
                        show=k.id not in ("detail", "filter", "help", "validate"),
                        tooltip=k.help) for k in KEYS]

    def __init__(self, config: Config, store, run_names: list[str] | None = None, run_all: bool = False, *,
                 options: RunOptions | None = None, clock: Callable[[], float] = time.time):
        super().__init__()
        self.config, self.store = config, store
        self.options = options or RunOptions()
        self.parallel = max(1, self.options.parallel_exports)
        self.clock = clock
        self.model = ExportModel(config.exports, clock)
        self.bridge = EventBridge(self.post_message)
        self.runner = Runner(config, store, self.bridge, replace(self.options, names=[]))
        self._startup = list(run_names or []) or ([e.name for e in config.exports] if run_all else [])
        self.started_with_runs = bool(self._startup)
        self._queue: deque[str] = deque()
        self._export_workers: dict[str, Worker] = {}
        self._results: list[ExportResult] = []
        self._plans: dict[str, tuple] = {}          # export → (ExportPlan, plan_id) queued by apply
        self._batch_left = 0
        self.stopping = False
        self.abandoned = False
        self._progression_stale = False
        self._loading_progression = False
        self.loaded = False
        self.session_started = datetime.now(UTC)   # journal rows after this are shown from memory, live
        self.progression_rows: dict[str, dict] = {}
        self.progression_version = 0
        self.keymap = {k: v for k, v in config.tui_keys.items() if k in KEY_IDS}   # id → keys, for help too
        self.sub_title = config.path.name

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def on_mount(self) -> None:
        from rivet_tui.screens.exports import ExportsScreen
        # The default executor has cpu+4 threads; running exports must not starve state reads.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=self.parallel + 16, thread_name_prefix="rivet-ui"))
        unknown = sorted(set(self.config.tui_keys) - KEY_IDS)
        self.set_keymap(self.keymap)
        if unknown:
            self.notify(f"[tui.keys] has no binding named {', '.join(unknown)}; known: {', '.join(sorted(KEY_IDS))}",
                        title="Unknown key binding", severity="warning", timeout=10, markup=False)
        self.push_screen(ExportsScreen())
        self.background(self._load_state, name="load state", done=self._state_loaded)
        self.set_interval(1.0, self._maybe_reload_progression)

    def _load_state(self) -> tuple[list[dict], list[dict], dict[str, dict]]:
        return self.store.summary(), self.store.progression(), self.store.latest_events("Reconciled")

    def _state_loaded(self, result: tuple[list[dict], list[dict], dict[str, dict]]) -> None:
        summary, progression, reconciles = result
        self.model.load_summary(summary)
        self.model.load_progression(progression)
        for name, row in reconciles.items():   # the board's "Last reconcile" survives a restart
            state = self.model.states.get(name)
            if state is not None and state.last_reconcile is None:
                p = row["payload"]
                status = "match" if p.get("ok") else ("mismatch" if p.get("summary", {}).get("mismatch") else "unknown")
                at = datetime.fromisoformat(str(row["at"]).replace("Z", "+00:00")).timestamp()
                state.last_reconcile = {"status": status, "at": at, "summary": p.get("summary", {}),
                                        "verified_written": p.get("verified_written", False)}
        self.progression_rows = {r["export_name"]: r for r in progression}
        self.progression_version += 1
        self.loaded = True
        if self._startup:
            names, self._startup = self._startup, []
            self.start_runs(names)

    def _maybe_reload_progression(self) -> None:
        if self._progression_stale and not self._loading_progression:
            self._progression_stale = False
            self.reload_progression()

    def reload_progression(self) -> None:
        self._loading_progression = True

        def done(rows: list[dict]) -> None:
            self._loading_progression = False
            self.model.load_progression(rows)
            self.progression_rows = {r["export_name"]: r for r in rows}
            self.progression_version += 1
        self.background(self.store.progression, name="load progression", done=done)

    # -- background work: the one place worker failures are handled ------------------------------------------------
    def background(self, fn: Callable, *args, name: str, done: Callable | None = None, group: str = "io") -> Worker:
        """Run fn(*args) in a thread worker; `done(result)` then runs on the UI thread. Errors: see below."""
        def job():
            result = fn(*args)
            if done is not None and not self.stopping:
                self.call_from_thread(done, result)
            return result
        return self.run_worker(job, name=name, group=group, thread=True, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if event.state == WorkerState.ERROR:
            exc = worker.error
            err = exc if isinstance(exc, RivetError) else internal(exc)
            if os.environ.get("RIVET_DEBUG"):
                import traceback
                traceback.print_exception(exc, file=sys.stderr)
            export = getattr(worker, "rivet_export", None)
            if export:
                self.model.fail(export, err.to_dict())
            if worker.name == "load progression":
                self._loading_progression = False
            elif worker.name == "load state" and not self.loaded:
                self._state_loaded(([], []))   # still start what `rivet run` asked for: each run reports its error
            self.notify(f"{worker.name}: {err.message}" + (f"\nhint: {err.hint}" if err.hint else ""),
                        title=err.code, severity="error", timeout=12, markup=False)
        if worker.group == "export" and event.state in (WorkerState.SUCCESS, WorkerState.ERROR,
                                                          WorkerState.CANCELLED):
            self._export_worker_done(worker)

    # -- running exports ---------------------------------------------------------------------------------------
    def start_runs(self, names: list[str]) -> None:
        """Queue exports; up to `parallel` run at once (RunOptions.parallel_exports)."""
        if self.stopping:
            return
        queued = 0
        for n in names:
            if n not in self._export_workers and n not in self._queue:
                self._queue.append(n)
                self.model.set_status(n, "queued")
                queued += 1
        self._batch_left += queued
        self._dispatch()

    def start_one(self, name: str) -> None:
        """Run this export now, whatever the queue holds (the operator asked for it)."""
        if self.stopping:
            return
        if name in self._export_workers:
            self.notify(f"{name} is already running", severity="warning")
            return
        if name in self._queue:
            self._queue.remove(name)
            self._batch_left -= 1
        self._plans.pop(name, None)   # `r` is a plain run, not the plan applied earlier
        self._launch(name)

    def _dispatch(self) -> None:
        while self._queue and len(self._export_workers) < self.parallel and not self.stopping:
            self._launch(self._queue.popleft(), batch=True)

    def _launch(self, name: str, batch: bool = False) -> None:
        exp = self.config.export(name)
        plan, plan_id = self._plans.pop(name, (None, None))
        self.model.set_status(name, "running")
        self.model.note(name, "Queued", f"applying plan {plan_id}" if plan_id else "run requested")

        def job() -> ExportResult:
            return self.runner.run_export(exp, plan)   # a plan from an artifact is journaled as applied by the runner
        worker = self.run_worker(job, name=f"run {name}", group="export", thread=True, exit_on_error=False)
        worker.rivet_export = name  # type: ignore[attr-defined]
        worker.rivet_batch = batch  # type: ignore[attr-defined]
        self._export_workers[name] = worker

    def _export_worker_done(self, worker: Worker) -> None:
        name = worker.rivet_export  # type: ignore[attr-defined]
        self._export_workers.pop(name, None)
        result = worker.result if worker.state == WorkerState.SUCCESS else None
        if result is not None:
            self._results.append(result)
        elif worker.state == WorkerState.ERROR:
            err = worker.error if isinstance(worker.error, RivetError) else internal(worker.error)
            self._results.append(ExportResult(name, "failed", error=err))
        self._progression_stale = True
        if worker.rivet_batch:  # type: ignore[attr-defined]
            self._batch_left -= 1
            if self._batch_left == 0 and not self.stopping:
                self._batch_summary()
        elif result is not None and result.status in ("succeeded", "skipped") and not self.stopping:
            self.notify(f"{name}: {result.rows:,} rows, {result.files} files", title="Export done", timeout=4)
        if self.stopping:
            if not self._export_workers:
                self.exit(self.exit_code_for_session())
            return
        self._dispatch()

    def _batch_summary(self) -> None:
        counts: dict[str, int] = {}
        for r in self._results:
            counts[r.status] = counts.get(r.status, 0) + 1
        text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        failed = counts.get("failed", 0) + counts.get("refused", 0)
        self.notify(text, title="Runs finished", severity="warning" if failed else "information", timeout=8)

    def on_engine_event(self, message: EngineEvent) -> None:
        e = message.event
        self.drain_batches()   # batches emitted before this event count before it
        self.model.apply(e)
        if e.kind == "ExportFinished" and e.error and not self.stopping:
            error = e.error
            self.notify(f"{e.export}: {error.get('error')}" + (f"\nhint: {error['hint']}" if error.get("hint") else ""),
                        title=f"{e.status} · {error.get('code')}", severity="error", timeout=12, markup=False)
        elif e.kind == "Warned":
            self.notify(f"{e.export}: {e.message}", title="Warning", severity="warning", timeout=8, markup=False)

    def drain_batches(self) -> None:
        """Apply the rows/bytes written since the last drain (the screens' ticks call this)."""
        self.model.apply_batches(self.bridge.drain())

    def exit_code_for_session(self) -> int:
        if not self.started_with_runs and not self.stopping:
            return 0
        return int(worst_exit(self._results))

    # -- selection -------------------------------------------------------------------------------------------
    def selected_export(self) -> str | None:
        pick = getattr(self.screen, "selected_export", None)
        return pick() if callable(pick) else None

    def _require_selection(self) -> str | None:
        name = self.selected_export()
        if name is None:
            self.notify("No export selected", severity="warning")
        return name

    def palette_action(self, action: str) -> None:
        """Command palette entry point: run an action as its key would (after the palette has closed)."""
        self.call_later(self.run_action, action)

    # -- key actions --------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if isinstance(self.screen, ModalScreen) and action in {k.action for k in KEYS}:
            return False
        if action in ("filter",):
            return type(self.screen).__name__ == "ExportsScreen" or None
        if action == "apply":
            ready = getattr(self.screen, "can_apply", None)
            return True if callable(ready) and ready() else None
        return True

    def action_run_selected(self) -> None:
        if name := self._require_selection():
            self.start_one(name)

    def action_run_all(self) -> None:
        names = [n for n in self.model.names() if n not in self._export_workers]
        self.start_runs(names)
        self.notify(f"{len(names)} exports queued, {self.parallel} at a time", timeout=4)

    def _unavailable(self, fn: EngineFunction) -> bool:
        if fn.resolve() is None:
            self.notify(fn.unavailable, title="Not available yet", severity="warning", timeout=6, markup=False)
            return True
        return False

    def action_plan(self) -> None:
        name = self._require_selection()
        if name:
            self._open_plan([name])

    def action_plan_all(self) -> None:
        self._open_plan(self.model.names())

    def _open_plan(self, names: list[str]) -> None:
        from rivet_tui.screens.plan import PlanScreen
        self.push_screen(PlanScreen(names))

    def action_apply(self) -> None:
        apply = getattr(self.screen, "action_apply_plan", None)
        if callable(apply):
            apply()

    def action_reconcile(self) -> None:
        name = self._require_selection()
        if not name or self._unavailable(RECONCILE):
            return
        self.notify(f"reconciling {name}: counting the source per chunk…", timeout=3)
        self.model.note(name, "Reconcile", "reconcile started")
        self.background(RECONCILE.resolve(), self.config, self.config.export(name), self.store,
                        name=f"reconcile {name}", done=partial(self._reconciled, name))

    def _reconciled(self, name: str, report) -> None:
        """Show a ReconcileReport: match / mismatch / unknown per chunk; the board then re-reads verified."""
        summary, ok = report.summary, report.ok
        status = "match" if ok else ("mismatch" if summary.get("mismatch") else "unknown")
        counts = ", ".join(f"{summary.get(k, 0)} {k}" for k in ("match", "mismatch", "unknown"))
        self.model[name].last_reconcile = {"status": status, "at": self.clock(), "summary": summary,
                                           "verified_written": report.verified_written}
        self.model.note(name, "Reconcile", f"reconcile {status}: {counts}" +
                        (" → verified boundary written" if report.verified_written else ""),
                        "info" if ok else "error")
        for c in report.checks:
            if c.status != "match":
                where = f"chunk #{c.index} [{c.lo} .. {c.hi}]" if c.index is not None else "whole export"
                self.model.note(name, "Reconcile", f"{c.status} {where}: source {c.source_rows}, recorded "
                                f"{c.recorded_rows}" + (f" ({c.note})" if c.note else ""), "error")
        self.notify(f"{name}: {status} ({counts})" + (" · verified advanced" if report.verified_written else ""),
                    title="Reconcile", severity="information" if ok else "error", timeout=8, markup=False)
        self.model.dirty.add(name)
        self.progression_version += 1
        self.reload_progression()

    def action_validate(self) -> None:
        name = self._require_selection()
        if not name or self._unavailable(VALIDATE):
            return
        self.notify(f"validating {name}: files against their manifests…", timeout=3)
        self.background(VALIDATE.resolve(), self.config, self.store, [name], name=f"validate {name}",
                        done=partial(self._validated, name))

    def _validated(self, name: str, reports: list) -> None:
        """Show ValidateReports: every part present with its size, hash and rows; foreign files as warnings."""
        failures = [f for r in reports for f in r.failures]
        warnings = [f for r in reports for f in r.warnings]
        ok = not failures
        parts, rows = sum(r.parts_checked for r in reports), sum(r.rows for r in reports)
        text = (f"valid: {parts} parts, {rows:,} rows" if ok else f"{len(failures)} problem(s)")
        if warnings:
            text += f", {len(warnings)} warning(s)"
        self.model[name].last_validate = {"status": "ok" if ok else "failed", "at": self.clock()}
        self.model.note(name, "Validate", f"validate {text}", "info" if ok else "error")
        for f in failures:
            self.model.note(name, "Validate", f"{f.object}: {f.problem}", "error")
        for f in warnings:
            self.model.note(name, "Validate", f"{f.object}: {f.problem}", "warn")
        first = f": {failures[0].object}: {failures[0].problem}" if failures else ""
        self.notify(f"{name}: {text}{first}", title="Validate", severity="information" if ok else "error",
                    timeout=8, markup=False)

    def apply_plan(self, artifact: dict) -> None:
        """Run a sealed plan exactly (the same SQL windows), as `rivet apply` does; refusals show as errors."""
        from engine.plans import check_applicable, plans_from_artifact

        def prepare():
            check_applicable(artifact, self.config, self.store, False)
            return plans_from_artifact(artifact, self.config)

        def go(plans) -> None:
            for plan in plans:
                self._plans[plan.export.name] = (plan, artifact["plan_id"])
            self.start_runs([p.export.name for p in plans])
        self.background(prepare, name="apply plan", done=go)

    def action_detail(self) -> None:
        if name := self._require_selection():
            self.open_detail(name)

    def open_detail(self, name: str) -> None:
        from rivet_tui.screens.detail import DetailScreen
        self.push_screen(DetailScreen(name))

    def action_board(self) -> None:
        from rivet_tui.screens.board import BoardScreen
        if isinstance(self.screen, BoardScreen):
            self.pop_screen()
        else:
            self.push_screen(BoardScreen())

    def action_filter(self) -> None:
        show = getattr(self.screen, "show_filter", None)
        if callable(show):
            show()

    def action_help(self) -> None:
        from rivet_tui.screens.help import HelpScreen
        self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        from rivet_tui.screens.confirm import ConfirmScreen
        running = list(self._export_workers)
        if self.stopping:
            def abandon(yes: bool | None) -> None:
                if yes:
                    self.abandoned = True
                    self.exit(int(ExitClass.TRANSIENT))
            self.push_screen(ConfirmScreen(
                f"Still waiting for {', '.join(running)} to finish the task in flight.\n\n"
                "Quit now? The work in flight is abandoned; nothing is lost: the next `rivet run` "
                "resumes from what was committed.", yes="Quit now", no="Keep waiting"), abandon)
            return
        if not running:
            self.exit(self.exit_code_for_session())
            return
        shown = ", ".join(running[:5]) + (f" and {len(running) - 5} more" if len(running) > 5 else "")

        def stop(yes: bool | None) -> None:
            if yes:
                self.stop_and_quit()
        self.push_screen(ConfirmScreen(
            f"{len(running)} export(s) running: {shown}.\n\nStop and quit? Chunks in flight finish and are "
            "committed; nothing new starts. The next `rivet run` resumes.", yes="Stop and quit", no="Keep running"),
            stop)

    def stop_and_quit(self) -> None:
        self.stopping = True
        self.runner.cancelled.set()
        for n in self._queue:
            self.model.set_status(n, "idle")
        self._queue.clear()
        self._plans.clear()
        if not self._export_workers:
            self.exit(self.exit_code_for_session())
            return
        for n in self._export_workers:
            self.model.set_status(n, "stopping")
        self.notify(f"Stopping: waiting for {len(self._export_workers)} export(s) to finish their current task "
                    "(press q again to quit at once)", title="Quitting", timeout=30)

    def get_system_commands(self, screen: Screen):
        for cmd in super().get_system_commands(screen):
            if cmd.title.lower() != "quit":   # ours asks first; theirs would not
                yield cmd
        yield SystemCommand("Quit", "Quit the application (asks first while exports run)", self.action_quit)


def run_app(config: Config, store, run_names: list[str] | None = None, run_all: bool = False, *,
            options: RunOptions | None = None) -> int:
    """Open the TUI (the CLI calls this for `rivet`, `rivet tui`, and `rivet run` on a TTY); returns the exit code.

    With run_names / run_all the given exports start at once (`rivet run`); `options.parallel_exports` caps how many
    run together. The loop is ours (not asyncio.run) so that "quit now" can leave without joining the threads of an
    abandoned task: state is consistent anyway (SPEC §3), as after a kill.
    """
    app = RivetApp(config, store, run_names=run_names, run_all=run_all, options=options)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        code = app.run(loop=loop)
    finally:
        if not app.abandoned:
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
    code = int(code if code is not None else app.return_code or 0)
    if app.abandoned:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
