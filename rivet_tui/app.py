"""RivetApp: the Textual face of the engine (docs/tui.md).

Threads: every engine call runs in a thread worker started by `start_job`; its outcome comes back as one typed
message (messages.py); anything a worker raises is turned into a message by the one handler of worker failures
(`on_worker_state_changed`). The runner's events land in feed.EventFeed and are applied to the view model at the
4 Hz tick, which then redraws the screen on top (`RivetScreen.refresh_view`) by diff.

Keys: keys.py (every binding has an id; `[tui.keys]` in rivet.toml remaps it with `set_keymap`).
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import ClassVar

from rich.console import Console
from textual.app import App
from textual.binding import Binding, BindingType
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.css.query import NoMatches
from textual.message import Message
from textual.message_pump import MessagePump
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from engine import guardrails
from engine.config import Config
from engine.errors import ExitClass, RivetError, internal
from engine.run.runner import ExportResult, Runner, RunOptions, worst_exit
from rivet_tui import messages as msg
from rivet_tui.feed import EventFeed
from rivet_tui.format import shown
from rivet_tui.journal import JournalLine
from rivet_tui.keys import ACTIONS, KEY_IDS, KEYS, bindings
from rivet_tui.screens.base import RivetScreen
from rivet_tui.viewmodel import STATUSES, STOP_CODES, ExportModel, refusal, status_text

TICK_S = 0.25
MAX_AT_ONCE = 64
TOAST_ONE_BY_ONE = 3     # more failures than this in one tick: one toast names them all


def initial_parallel(config: Config, options: RunOptions | None) -> int:
    """How many exports run at once: `rivet run --parallel-exports` when given, else `[run] parallel_exports` of
    the config (default 4)."""
    if options is not None and options.parallel_exports:
        return max(1, options.parallel_exports)
    return max(1, config.run.parallel_exports)


class RivetCommands(Provider):
    """Command palette: every action once, with its key, plus "run <export>" / "detail <export>" for each export."""

    def _actions(self) -> list[tuple[str, str, Callable]]:
        app: RivetApp = self.app  # type: ignore[assignment]
        out = [(k.label, f"{app.key_of(k.id)} · {k.help}", partial(app.palette_action, k.action)) for k in KEYS]
        out.append(("Plan all", "Plan every export: diff against state", app.action_plan_all))
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
            for verb, fn in (("Run", app.start_one), ("Detail", app.open_detail), ("History", app.open_history)):
                text = f"{verb} {export}"
                score = matcher.match(text)
                if score > 0:
                    yield Hit(score, matcher.highlight(text), partial(fn, export), help=f"{verb} export {export}")


class RivetApp(App[int]):
    CSS_PATH = "styles/app.tcss"
    TITLE = "rivet"
    ENABLE_COMMAND_PALETTE = True
    COMMANDS = App.COMMANDS | {RivetCommands}
    BINDINGS: ClassVar[list[BindingType]] = bindings()

    def __init__(self, config: Config, store, run_names: list[str] | None = None, run_all: bool = False, *,
                 options: RunOptions | None = None, clock: Callable[[], float] = time.time):
        super().__init__()
        self.config, self.store = config, store
        self.options = options or RunOptions()
        # where this session's run report goes when the console exits (the run detail names it)
        self.session_id = guardrails.session_id(datetime.now(UTC))
        self.report_dir = guardrails.report_dir(config.state_path, self.session_id)
        self.parallel = initial_parallel(config, options)
        self.clock = clock
        self.model = ExportModel(config.exports, clock, config.base_dir)
        self.feed = EventFeed()
        self.runner = Runner(config, store, self.feed, replace(self.options, names=[]))
        self._startup = list(run_names or []) or ([e.name for e in config.exports] if run_all else [])
        self.started_with_runs = bool(self._startup)
        self.queue: deque[str] = deque()
        self.running: dict[str, Worker] = {}
        self._jobs: dict[Worker, tuple[msg.Job, MessagePump | None]] = {}
        self.results: dict[str, ExportResult] = {}      # the last run of each export in this session
        self._plans: dict[str, tuple] = {}              # export → (ExportPlan, plan_id) queued by apply
        self._batch_left = 0
        self.stopping = False
        self.abandoned = False
        self._progression_stale = False
        self._loading_progression = False
        self.loaded = False
        self.session_started = datetime.now(UTC)        # journal rows after this are shown from memory, live
        self.monotonic_start = time.monotonic()
        self.progression_rows: dict[str, dict] = {}
        self.progression_version = 0
        self.census = self.model.census()               # (counts per status, running names), once per tick
        self.keymap = {k: v for k, v in config.tui_keys.items() if k in KEY_IDS}   # id → keys, for help too

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def on_mount(self) -> None:
        from rivet_tui.screens.exports import ExportsScreen
        # The default executor has cpu+4 threads; running exports must not starve state reads.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=MAX_AT_ONCE + 16, thread_name_prefix="rivet-ui"))
        unknown = sorted(set(self.config.tui_keys) - KEY_IDS)
        self.set_keymap(self.keymap)
        if unknown:
            self.notify(f"[tui.keys] has no binding named {', '.join(unknown)}; known: {', '.join(sorted(KEY_IDS))}",
                        title="Unknown key binding", severity="warning", timeout=10, markup=False)
        self.push_screen(ExportsScreen())
        self.start_job(msg.Job("load state"), self._load_state)
        self.set_interval(TICK_S, self.tick)
        self.set_interval(1.0, self._maybe_reload_progression)
        self.update_header()

    def _load_state(self, job: msg.Job) -> msg.StateLoaded:
        store = self.store
        summary = store.summary()
        ended_badly = [r["export_name"] for r in summary if r.get("last_status") in ("failed", "refused", "stopped")
                       and r["export_name"] in self.model.states]
        last_errors: dict[str, dict] = {}
        for name in ended_badly:
            for run in store.metrics(name, 1):
                if run.get("error_code"):
                    last_errors[name] = {"code": run["error_code"], "error": run.get("error_message") or ""}
        return msg.StateLoaded(job, summary, store.progression(), store.latest_events("Reconciled"), last_errors)

    def on_state_loaded(self, message: msg.StateLoaded) -> None:
        self.model.load_summary(message.summary, message.last_errors)
        self.model.load_progression(message.progression)
        for name, row in message.reconciles.items():   # the board's "Last reconcile" survives a restart
            state = self.model.states.get(name)
            if state is not None and state.last_reconcile is None:
                p = row["payload"]
                status = "match" if p.get("ok") else ("mismatch" if p.get("summary", {}).get("mismatch") else "unknown")
                at = datetime.fromisoformat(str(row["at"]).replace("Z", "+00:00")).timestamp()
                state.last_reconcile = {"status": status, "at": at, "summary": p.get("summary", {}),
                                        "verified_written": p.get("verified_written", False)}
        self.progression_rows = {r["export_name"]: r for r in message.progression}
        self.progression_version += 1
        self._loaded()

    def _loaded(self) -> None:
        self.loaded = True
        if self._startup:
            names, self._startup = self._startup, []
            self.start_runs(names)
        self.tick()

    def _maybe_reload_progression(self) -> None:
        if self._progression_stale and not self._loading_progression:
            self._progression_stale = False
            self.reload_progression()

    def reload_progression(self) -> None:
        self._loading_progression = True
        self.start_job(msg.Job("load progression"), lambda job: msg.ProgressionLoaded(job, self.store.progression()))

    def on_progression_loaded(self, message: msg.ProgressionLoaded) -> None:
        self._loading_progression = False
        self.model.load_progression(message.rows)
        self.progression_rows = {r["export_name"]: r for r in message.rows}
        self.progression_version += 1

    # -- the tick: engine events in, screen redrawn ----------------------------------------------------------------
    def tick(self) -> None:
        self.drain()
        self.census = self.model.census()
        self.update_header()
        for screen in reversed(self.screen_stack):   # the screen on top, or the one under a dialog
            if isinstance(screen, RivetScreen):
                if screen.composed:   # a screen just pushed draws itself in on_mount
                    try:
                        screen.refresh_view()
                    except NoMatches:   # the app is closing: the screen's widgets went before the screen
                        pass
                break

    def drain(self) -> None:
        """Apply the engine events since the last drain; tell the operator about runs that ended badly."""
        ended = self.model.apply_all(self.feed.drain())
        if not ended or self.stopping:
            return
        if len(ended) > TOAST_ONE_BY_ONE:
            names = ", ".join(e.export for e in ended[:6]) + (" …" if len(ended) > 6 else "")
            self.notify(f"{names}\n(l shows the session log; n jumps to the next failed)",
                        title=f"{len(ended)} exports ended badly", severity="error", timeout=12, markup=False)
            return
        for e in ended:
            status = self.model[e.export].status
            error = e.error or {}
            text = f"{e.export}: {shown(error.get('error'))}" + (f"\nhint: {error['hint']}" if error.get("hint") else "")
            self.notify(text, title=f"{status_text(status)} · {shown(error.get('code'))}",
                        severity="warning" if status == "stopped" else "error", timeout=12, markup=False)

    def update_header(self) -> None:
        counts = self.census[0]
        parts = [self.config.path.name, f"{len(self.model.states)} exports",
                 f"{STATUSES['running'].glyph} {counts.get('running', 0) + counts.get('stopping', 0)} running",
                 f"{self.parallel} at once (+/-)"]
        if self.stopping:
            parts.append("stopping")
        text = " · ".join(parts)
        if self.sub_title != text:
            self.sub_title = text

    # -- background work: one way in, one place for failures ------------------------------------------------------
    def start_job(self, job: msg.Job, work: Callable[[msg.Job], Message], target: MessagePump | None = None) -> Worker:
        """Run `work(job)` in a thread; the message it returns is posted to `target` (default: the app)."""
        def run():
            outcome = work(job)
            if not self.stopping or job.kind == "export":
                (target or self).post_message(outcome)
            return outcome
        worker = self.run_worker(run, name=job.what, group=job.kind, thread=True, exit_on_error=False)
        self._jobs[worker] = (job, target)
        return worker

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state not in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        job, target = self._jobs.pop(event.worker, (None, None))
        if job is None or event.state != WorkerState.ERROR:
            return
        exc = event.worker.error
        err = exc if isinstance(exc, RivetError) else internal(exc)
        if os.environ.get("RIVET_DEBUG"):
            import traceback
            traceback.print_exception(exc, file=sys.stderr)
        if job.kind == "export":   # the engine returns a result for every run; this is a bug in it
            self.model.fail(job.export, err.to_dict())
            self.post_message(msg.ExportRunEnded(job, ExportResult(job.export, "failed", error=err)))
        self.post_message(msg.WorkFailed(job, err))
        if target is not None:   # the screen that waits for the outcome says so too
            target.post_message(msg.WorkFailed(job, err))

    def on_work_failed(self, message: msg.WorkFailed) -> None:
        job, err = message.job, message.error
        if job.what == "load progression":
            self._loading_progression = False
        elif job.what == "load state" and not self.loaded:
            self._loaded()   # still start what `rivet run` asked for: each run reports its own error
        line = JournalLine(self.clock(), "Error", f"{job.what}: {err.code} {err.message}", "error", job.export or "")
        self.model.log_line(line)
        self.notify(f"{job.what}: {err.message}" + (f"\nhint: {err.hint}" if err.hint else ""),
                    title=err.code, severity="error", timeout=12, markup=False)

    # -- running exports ---------------------------------------------------------------------------------------
    def start_runs(self, names: list[str]) -> None:
        """Queue exports; up to `parallel` run at once."""
        if self.stopping:
            return
        queued = 0
        for n in names:
            if n not in self.running and n not in self.queue:
                self.queue.append(n)
                self.model.queue(n)
                queued += 1
        self._batch_left += queued
        self._dispatch()

    def start_one(self, name: str) -> None:
        """Run this export now, whatever the queue holds (the operator asked for it)."""
        if self.stopping:
            self.notify("stopping: nothing new starts", severity="warning")
            return
        if reason := refusal("run", self.model[name]):
            self.notify(reason, title="Refused", severity="warning", markup=False)
            return
        if name in self.queue:
            self.queue.remove(name)
            self._batch_left -= 1
        self._plans.pop(name, None)   # `r` is a plain run, not the plan applied earlier
        self._launch(name, batch=False)

    def _dispatch(self) -> None:
        while self.queue and len(self.running) < self.parallel and not self.stopping:
            self._launch(self.queue.popleft(), batch=True)

    def _launch(self, name: str, batch: bool) -> None:
        exp = self.config.export(name)
        plan, plan_id = self._plans.pop(name, (None, None))
        self.model.launch(name, f"applying plan {plan_id}" if plan_id else "run requested")

        def run(job: msg.Job) -> msg.ExportRunEnded:
            return msg.ExportRunEnded(job, self.runner.run_export(exp, plan))   # an applied plan is journaled
        self.running[name] = self.start_job(msg.Job(f"run {name}", name, "export", batch), run)

    def on_export_run_ended(self, message: msg.ExportRunEnded) -> None:
        job, result = message.job, message.result
        self.drain()   # the run's own events (ExportFinished) count before its end
        if self.running.get(job.export) is None:
            return
        del self.running[job.export]
        if result.error is not None and result.error.code in STOP_CODES:
            result = replace(result, status="stopped")
        self.results.pop(job.export, None)
        self.results[job.export] = result
        self._progression_stale = True
        if job.batch:
            self._batch_left -= 1
            if self._batch_left == 0 and not self.stopping:
                self._batch_summary()
        elif result.status in ("succeeded", "skipped") and not self.stopping:
            self.notify(f"{job.export}: {result.rows:,} rows, {result.files} files", title="Export done", timeout=4)
        if self.stopping:
            if not self.running:
                self.exit(self.exit_code_for_session())
            return
        self._dispatch()

    def _batch_summary(self) -> None:
        counts: dict[str, int] = {}
        for r in self.results.values():
            counts[r.status] = counts.get(r.status, 0) + 1
        text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        bad = sum(n for s, n in counts.items() if s not in ("succeeded", "skipped"))
        self.notify(text, title="Runs finished", severity="warning" if bad else "information", timeout=8)

    def exit_code_for_session(self) -> int:
        if not self.started_with_runs and not self.stopping:
            return 0
        return int(worst_exit(list(self.results.values())))

    # -- selection -------------------------------------------------------------------------------------------
    def rivet_screen(self) -> RivetScreen | None:
        return self.screen if isinstance(self.screen, RivetScreen) else None

    def _selected(self, action: str) -> str | None:
        """The export the action is for, or None after telling the operator why nothing happens."""
        screen = self.rivet_screen()
        name = screen.selected_export() if screen else None
        if name is None:
            self.notify("No export selected", severity="warning")
            return None
        if reason := refusal(action, self.model[name]):
            self.notify(reason, title="Refused", severity="warning", markup=False)
            return None
        return name

    def palette_action(self, action: str) -> None:
        """Command palette entry point: run an action as its key would (after the palette has closed)."""
        self.call_later(self.run_action, action)

    def key_of(self, key_id: str) -> str:
        """The key(s) bound to an id now, as the footer writes them."""
        default = next(k.key for k in KEYS if k.id == key_id)
        keys = self.keymap.get(key_id, default)
        keys = keys if isinstance(keys, str) else ",".join(keys)
        return " ".join(self.get_key_display(Binding(key.strip(), "")) for key in keys.split(","))

    # -- key actions --------------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action not in ACTIONS:
            return True
        if isinstance(self.screen, ModalScreen):
            return False
        screen = self.rivet_screen()
        if action in RivetScreen.SCREEN_ACTIONS:
            return True if screen and action in screen.handles and screen.can(action) else None
        return True

    def action_run_selected(self) -> None:
        if name := self._selected("run"):
            self.start_one(name)

    def action_run_all(self) -> None:
        if self.stopping:
            return
        names = [n for n in self.model.names() if n not in self.running]
        self.start_runs(names)
        self.notify(f"{len(names)} exports queued, {self.parallel} at once (+/- to change)", timeout=4)

    def action_more_at_once(self) -> None:
        self.parallel = min(MAX_AT_ONCE, self.parallel + 1)
        self._dispatch()
        self.update_header()

    def action_fewer_at_once(self) -> None:
        self.parallel = max(1, self.parallel - 1)
        self.update_header()

    def action_plan(self) -> None:
        if name := self._selected("plan"):
            self._open_plan([name])

    def action_plan_all(self) -> None:
        self._open_plan([n for n in self.model.names() if refusal("plan", self.model[n]) is None])

    def _open_plan(self, names: list[str]) -> None:
        from rivet_tui.screens.plan import PlanScreen
        self.push_screen(PlanScreen(names))

    def action_apply(self) -> None:
        if screen := self.rivet_screen():
            screen.apply()

    def action_reconcile(self) -> None:
        name = self._selected("reconcile")
        if not name:
            return
        self.notify(f"reconciling {name}: counting the source per chunk…", timeout=3)
        self.model.note(name, "Reconcile", "reconcile started")

        def work(job: msg.Job) -> msg.Reconciled:
            from engine.reconcile import reconcile_export
            return msg.Reconciled(job, reconcile_export(self.config, self.config.export(name), self.store))
        self.start_job(msg.Job(f"reconcile {name}", name), work)

    def on_reconciled(self, message: msg.Reconciled) -> None:
        """Show a ReconcileReport: match / mismatch / unknown per chunk; the board then re-reads verified."""
        name, report = message.job.export, message.report
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
                where = f"chunk #{c.index} [{shown(c.lo)} .. {shown(c.hi)}]" if c.index is not None else "whole export"
                self.model.note(name, "Reconcile", f"{c.status} {where}: source {shown(c.source_rows)} rows, "
                                f"recorded {shown(c.recorded_rows)}" + (f" ({c.note})" if c.note else ""), "error")
        self.notify(f"{name}: {status} ({counts})" + (" · verified advanced" if report.verified_written else ""),
                    title="Reconcile", severity="information" if ok else "error", timeout=8, markup=False)
        self.model.dirty.add(name)
        self.progression_version += 1
        self.reload_progression()

    def action_validate(self) -> None:
        name = self._selected("validate")
        if not name:
            return
        self.notify(f"validating {name}: files against their manifests…", timeout=3)

        def work(job: msg.Job) -> msg.Validated:
            from engine.validate import validate
            return msg.Validated(job, validate(self.config, self.store, [name]))
        self.start_job(msg.Job(f"validate {name}", name), work)

    def on_validated(self, message: msg.Validated) -> None:
        """Show ValidateReports: every part present with its size, hash and rows; foreign files as warnings."""
        name, reports = message.job.export, message.reports
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
        def work(job: msg.Job) -> msg.PlanReady:
            from engine.plans import check_applicable, plans_from_artifact
            check_applicable(artifact, self.config, self.store, False)
            return msg.PlanReady(job, artifact, plans_from_artifact(artifact, self.config))
        self.start_job(msg.Job("apply plan"), work)

    def on_plan_ready(self, message: msg.PlanReady) -> None:
        for plan in message.plans:
            self._plans[plan.export.name] = (plan, message.artifact["plan_id"])
        self.start_runs([p.export.name for p in message.plans])

    def action_detail(self) -> None:
        if name := self._selected("detail"):
            self.open_detail(name)

    def open_detail(self, name: str) -> None:
        from rivet_tui.screens.detail import DetailScreen
        self.push_screen(DetailScreen(name))

    def action_history(self) -> None:
        if name := self._selected("history"):
            self.open_history(name)

    def open_history(self, name: str) -> None:
        from rivet_tui.screens.history import HistoryScreen
        self.push_screen(HistoryScreen(name))

    def action_board(self) -> None:
        from rivet_tui.screens.board import BoardScreen
        if isinstance(self.screen, BoardScreen):
            self.pop_screen()
        else:
            self.push_screen(BoardScreen())

    def action_filter(self) -> None:
        if screen := self.rivet_screen():
            screen.show_filter()

    def action_sort(self) -> None:
        if screen := self.rivet_screen():
            screen.next_sort()

    def action_next_failed(self) -> None:
        if screen := self.rivet_screen():
            screen.jump_failed(+1)

    def action_previous_failed(self) -> None:
        if screen := self.rivet_screen():
            screen.jump_failed(-1)

    def action_log(self) -> None:
        if screen := self.rivet_screen():
            screen.toggle_log()

    def action_help(self) -> None:
        from rivet_tui.screens.help import HelpScreen
        self.push_screen(HelpScreen())

    # -- stopping ----------------------------------------------------------------------------------------------
    def stop_outlook(self) -> list[str]:
        """What a stop interrupts: one line per running export."""
        return [f"  {name}: {self.model[name].stop_point()}" for name in self.running]

    async def action_quit(self) -> None:
        from rivet_tui.screens.confirm import ConfirmScreen
        running = list(self.running)
        if self.stopping:
            def abandon(yes: bool | None) -> None:
                if yes:
                    self.abandoned = True
                    self.exit(int(ExitClass.TRANSIENT))
            self.push_screen(ConfirmScreen(
                f"Still waiting for {', '.join(running)} to finish the work in flight.\n\n"
                "Quit now? The work in flight is abandoned; nothing is lost: the next `rivet run` "
                "resumes from what was committed.", yes="Quit now", no="Keep waiting"), abandon)
            return
        if not running:
            self.exit(self.exit_code_for_session())
            return
        lines = self.stop_outlook()
        shown_lines = lines[:8] + ([f"  … and {len(lines) - 8} more"] if len(lines) > 8 else [])
        queued = f"\n{len(self.queue)} queued export(s) will not start." if self.queue else ""

        def stop(yes: bool | None) -> None:
            if yes:
                self.stop_and_quit()
        self.push_screen(ConfirmScreen(
            f"Stop and quit? {len(running)} export(s) will be interrupted (status: stopped, resumable):\n"
            + "\n".join(shown_lines) + queued +
            "\n\nWhat was committed stays; nothing new starts. Stopping may take a few seconds. "
            "The next `rivet run` resumes.", yes="Stop and quit", no="Keep running"), stop)

    def stop_and_quit(self) -> None:
        self.stopping = True
        self.runner.cancel()
        not_started = RivetError("RIVET_RUN_STOPPED", "stopped by the user before it started",
                                 "run it again with `rivet run`", ExitClass.TRANSIENT)
        for name in self.queue:
            self.model.set_status(name, "stopped")
            self.results.pop(name, None)
            self.results[name] = ExportResult(name, "stopped", error=not_started)
        self.queue.clear()
        self._plans.clear()
        if not self.running:
            self.exit(self.exit_code_for_session())
            return
        for name in self.running:
            self.model.set_status(name, "stopping")
        self.notify(f"Stopping: waiting for {len(self.running)} export(s) to finish the work in flight "
                    "(press q again to quit at once)", title="Quitting", timeout=30)
        self.update_header()

    def get_system_commands(self, screen: Screen):
        for cmd in super().get_system_commands(screen):
            if cmd.title not in ("Quit", "Keys"):   # ours: q asks first while exports run; ? lists every key
                yield cmd


def print_session_summary(app: RivetApp, console: Console) -> None:
    """After the TUI: the `rivet run --no-tui` summary of what ran, and how to resume what was interrupted."""
    from rivet_tui.headless import print_summary
    results = list(app.results.values())
    if not results:
        return
    print_summary(console, results, time.monotonic() - app.monotonic_start)
    interrupted = [r.name for r in results if r.status == "stopped"]
    if interrupted:
        try:
            config = app.config.path.relative_to(Path.cwd())
        except ValueError:
            config = app.config.path
        console.print(f"resume with: rivet run -c {config} " + " ".join(f"-e {n}" for n in interrupted),
                      markup=False, highlight=False)


def run_app(config: Config, store, run_names: list[str] | None = None, run_all: bool = False, *,
            options: RunOptions | None = None, summary_output: str | None = None) -> int:
    """Open the TUI (the CLI calls this for `rivet`, `rivet tui`, and `rivet run` on a TTY); returns the exit code.

    With run_names / run_all the given exports start at once (`rivet run`). The loop is ours (not asyncio.run) so
    that "quit now" can leave without joining the threads of an abandoned task: the state stays consistent, as after
    a kill (docs/tui.md, "Stopping").
    """
    app = RivetApp(config, store, run_names=run_names, run_all=run_all, options=options)
    started = datetime.now(UTC)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        code = app.run(loop=loop)
    finally:
        if not app.abandoned:        # abandoned: exports still run on it until the process ends
            app.runner.close()
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
    code = int(code if code is not None else app.return_code or 0)
    print_session_summary(app, Console(stderr=True))
    if app.results:   # a session that ran exports leaves a run report too (docs/guardrails.md)
        from rivet_tui.headless import save_run_report
        save_run_report(Console(stderr=True), config.state_path, list(app.results.values()), started, code,
                        summary_output, session=app.session_id)
    if app.abandoned:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code

