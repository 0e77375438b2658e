"""Plan screen (`p`): the diff `rivet plan` computes, per export, coloured like a diff; `a` applies it.

The sealed plan comes from engine.plans.build_plan(config, store, names) and its diff from diff_plan(artifact); `a`
applies that artifact (check_applicable, then the runner runs exactly its SQL). Without the engine function this
screen says so and `a` stays disabled (never a fake plan).
"""
from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from rivet_tui.bridge import PLAN, as_dict

STATE_MARK = {"new": ("+", "green"), "done": ("=", "dim"), "redo": ("~", "yellow")}


def _chunks(ranges: list[dict], state: str) -> str:
    picked = [c for c in ranges if c.get("state") == state]
    shown = ", ".join(f"#{c['index']} [{c.get('lo')}..{c.get('hi')}]" for c in picked[:4])
    more = f", … {len(picked) - 4} more" if len(picked) > 4 else ""
    return f"{len(picked)} chunk{'s' if len(picked) != 1 else ''}" + (f": {shown}{more}" if picked else "")


def render_diff(d: dict) -> Text:
    """One export's ExportDiff. Markers say it without colour: + new, = already done, ~ to redo / changes, ! warning."""
    out = Text()
    out.append(d["export"], style="bold")
    out.append(f"  {d.get('strategy', '')}", style="cyan")
    if d.get("rows_estimate") is not None:
        out.append(f"  ~{d['rows_estimate']:,} rows", style="dim")
    if d.get("first_run"):
        out.append("  first run", style="bold green")
    out.append("\n")
    strategy = d.get("strategy")
    if strategy == "incremental":
        frm = d.get("cursor_from")
        out.append("  ~ cursor    ", style="yellow")
        out.append("(none: reads everything)" if frm is None else str(frm), style="dim" if frm is None else "")
        out.append(" → ")
        to = d.get("cursor_to")
        out.append(f"{to if to is not None else '(empty source)'}\n", style="bold yellow")
    elif strategy == "chunked":
        ranges = d.get("chunk_ranges") or []
        for state in ("new", "redo", "done"):
            count = d.get(f"chunks_{state}", 0)
            if count or state == "new":
                mark, style = STATE_MARK[state]
                label = {"new": "new", "redo": "to redo", "done": "done"}[state]
                out.append(f"  {mark} {label:<9} {_chunks(ranges, state)}\n", style=style)
    else:
        out.append(f"  + {'all rows' if strategy == 'full' else 'the time window'}, one snapshot\n", style="green")
    for change in d.get("schema_changes") or []:
        out.append(f"  ~ schema    {change}\n", style="magenta")
    for warning in d.get("warnings") or []:
        out.append(f"  ! warning   {warning}\n", style="bold red")
    return out


class PlanScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, names: list[str], prepared: tuple[dict, list] | None = None) -> None:
        """`prepared` = (artifact, diffs) already built (screenshots use fixed ones); else the engine plans."""
        super().__init__()
        self.names = names
        self.prepared = prepared
        self.diffs: list[dict] | None = None
        self.artifact: dict | None = None
        self.unavailable = False

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Static(id="plan-head")
        with VerticalScroll(id="plan-scroll"):
            yield Static(id="plan-body")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "rivet · plan"
        head = self.query_one("#plan-head", Static)
        what = self.names[0] if len(self.names) == 1 else f"{len(self.names)} exports"
        fn = PLAN.resolve()
        if fn is None:
            self.unavailable = True
            head.update(Text(f"Plan of {what}: unavailable", style="bold"))
            self.query_one("#plan-body", Static).update(Text(
                f"{PLAN.unavailable}.\n\nThe plan diff (cursor from → to, chunk ranges new / done / to redo, schema "
                "changes, warnings) appears here once the engine provides it. Nothing was planned; `a` (apply) is "
                "disabled.\n\nPress escape to go back.", style="yellow"))
            return
        if self.prepared is not None:
            self._planned(self.prepared)
            return
        head.update(Text(f"Planning {what}… (no data is read)", style="bold"))
        self.app.background(self._plan, fn, name=f"plan {what}", done=self._planned)

    def _plan(self, build_plan) -> tuple[dict, list]:
        from engine.plans import diff_plan
        artifact = build_plan(self.app.config, self.app.store, self.names)
        return artifact, diff_plan(artifact)

    def _planned(self, result: tuple[dict, list]) -> None:
        self.artifact, diffs = result
        self.diffs = [as_dict(d) for d in diffs]
        body = Text()
        for d in self.diffs:
            body.append_text(render_diff(d))
            body.append("\n")
        what = self.names[0] if len(self.names) == 1 else f"{len(self.names)} exports"
        self.query_one("#plan-head", Static).update(Text.assemble(
            (f"Plan of {what}", "bold"), "   + new  = done  ~ changes  ! warnings   ", ("a", "bold"), " applies"))
        self.query_one("#plan-body", Static).update(body)
        for name in self.planned_names():
            if self.app.model[name].status not in ("running", "queued", "stopping"):
                self.app.model.set_status(name, "planned")
        self.app.refresh_bindings()

    def planned_names(self) -> list[str]:
        return [d["export"] for d in self.diffs or [] if d["export"] in self.app.model.states]

    def can_apply(self) -> bool:
        return bool(self.diffs)

    def selected_export(self) -> str | None:
        return self.names[0] if len(self.names) == 1 else None

    def action_apply_plan(self) -> None:
        from rivet_tui.screens.confirm import ConfirmScreen
        if not self.can_apply():
            return
        names = self.planned_names()
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")

        def go(yes: bool | None) -> None:
            if yes:
                self.app.pop_screen()
                self.app.apply_plan(self.artifact)
        self.app.push_screen(ConfirmScreen(
            f"Apply plan {self.artifact['plan_id']}? It runs {len(names)} export(s) now, exactly as planned: {shown}.",
            yes="Apply", no="Cancel"), go)
