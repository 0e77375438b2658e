"""Plan screen (`p`): the diff `rivet plan` computes, per export, marked like a diff; `a` applies it.

The sealed plan comes from engine.plans.build_plan(config, store, names) and its diff from diff_plan(artifact); `a`
applies that artifact (check_applicable, then the runner runs exactly its SQL).
"""
from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static

from rivet_tui import messages as msg
from rivet_tui.format import chunk_bounds, human_count
from rivet_tui.screens.base import RivetScreen

STATE_MARK = {"new": ("+", "green"), "done": ("=", "dim"), "redo": ("~", "yellow")}


def _chunks(ranges: list[dict], state: str, keyset: str | None) -> str:
    picked = [c for c in ranges if c.get("state") == state]
    listed = ", ".join(f"#{c['index']} [{chunk_bounds(c, keyset, sep='..')}]" for c in picked[:4])
    more = f", … {len(picked) - 4} more" if len(picked) > 4 else ""
    unit = "page" if keyset else "chunk"
    return f"{len(picked)} {unit}{'s' if len(picked) != 1 else ''}" + (f": {listed}{more}" if picked else "")


def up_to_date(d: dict) -> bool:
    """An incremental export whose cursor already is the source's maximum: the run reads nothing new."""
    return d.get("strategy") == "incremental" and d.get("cursor_from") is not None \
        and d.get("cursor_from") == d.get("cursor_to")


def render_diff(d: dict, no_color: bool = False) -> Text:
    """One export's ExportDiff. Markers say it without colour: + new, = already done / up to date, ~ to redo /
    changes, ! warning."""
    def style(s: str) -> str:
        return "" if no_color else s

    out = Text()
    out.append(d["export"], style="bold")
    out.append(f"  {d.get('strategy') or ''}", style=style("cyan"))
    strategy = d.get("strategy")
    if d.get("rows_estimate") is not None and not up_to_date(d):
        what = "rows in the table" if strategy == "incremental" and d.get("cursor_from") is not None else "rows"
        out.append(f"  ~{human_count(d['rows_estimate'])} {what}", style=style("dim"))
    if d.get("first_run"):
        out.append("  first run", style="bold" if no_color else "bold green")
    out.append("\n")
    if strategy == "incremental":
        frm, to = d.get("cursor_from"), d.get("cursor_to")
        if up_to_date(d):
            out.append(f"  = up to date  cursor {frm} is the source's maximum: nothing new to read\n",
                       style=style("dim"))
        else:
            out.append("  ~ cursor    ", style=style("yellow"))
            out.append("(none: reads everything)" if frm is None else str(frm), style=style("dim") if frm is None else "")
            out.append(" → ")
            out.append(f"{to if to is not None else '(empty source)'}\n", style="bold" if no_color else "bold yellow")
        if d.get("settle_horizon") is not None:
            out.append(f"  settle      rows after {d['settle_horizon']} (source clock) held back\n", style=style("dim"))
    elif strategy == "chunked":
        ranges = d.get("chunk_ranges") or []
        if not d.get("first_run") and not d.get("chunks_done") and not d.get("chunks_redo"):
            out.append("  + a new chunk run: re-exports every row (no unfinished chunk run to resume)\n",
                       style=style("green"))
        for state in ("new", "redo", "done"):
            count = d.get(f"chunks_{state}") or 0
            if count or state == "new":
                mark, colour = STATE_MARK[state]
                label = {"new": "new", "redo": "to redo", "done": "done"}[state]
                out.append(f"  {mark} {label:<9} {_chunks(ranges, state, d.get('keyset'))}\n", style=style(colour))
    else:
        out.append(f"  + {'all rows' if strategy == 'full' else 'the time window'}, one snapshot\n",
                   style=style("green"))
    for change in d.get("schema_changes") or []:
        out.append(f"  ~ schema    {change}\n", style=style("magenta"))
    for warning in d.get("warnings") or []:
        out.append(f"  ! warning   {warning}\n", style="bold" if no_color else "bold red")
    return out


class PlanScreen(RivetScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]
    handles = frozenset({"apply"})

    def __init__(self, names: list[str], prepared: tuple[dict, list] | None = None) -> None:
        """`prepared` = (artifact, diffs) already built (screenshots use fixed ones); else the engine plans."""
        super().__init__()
        self.names = names
        self.prepared = prepared
        self.diffs: list[dict] | None = None
        self.artifact: dict | None = None

    @property
    def what(self) -> str:
        return self.names[0] if len(self.names) == 1 else f"{len(self.names)} exports"

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Static(id="plan-head")
        with VerticalScroll(id="plan-scroll"):
            yield Static(id="plan-body")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.title = "rivet · plan"
        if self.prepared is not None:
            self.show(*self.prepared)
            return
        self.query_one("#plan-head", Static).update(Text(f"Planning {self.what}… (no data is read)", style="bold"))
        self.app.start_job(msg.Job(f"plan {self.what}"), self._plan, target=self)

    def _plan(self, job: msg.Job) -> msg.PlanBuilt:
        from engine.plans import build_plan, diff_plan
        artifact = build_plan(self.app.config, self.app.store, self.names)
        return msg.PlanBuilt(job, artifact, diff_plan(artifact))

    def on_plan_built(self, message: msg.PlanBuilt) -> None:
        self.show(message.artifact, message.diffs)

    def on_work_failed(self, message: msg.WorkFailed) -> None:
        message.stop()   # the app has said it already
        self.query_one("#plan-head", Static).update(Text(f"Plan of {self.what} failed: {message.error.code}",
                                                         style="bold"))
        self.query_one("#plan-body", Static).update(Text(message.error.message + (
            f"\nhint: {message.error.hint}" if message.error.hint else "") + "\n\nNothing was planned; escape goes back."))

    def show(self, artifact: dict, diffs: list) -> None:
        self.artifact = artifact
        self.diffs = [d if isinstance(d, dict) else d.to_dict() for d in diffs]
        body = Text()
        for d in self.diffs:
            body.append_text(render_diff(d, self.app.no_color))
            body.append("\n")
        self.query_one("#plan-head", Static).update(Text.assemble(
            (f"Plan of {self.what}", "bold"), "   + new  = done / up to date  ~ changes  ! warnings   ",
            ("a", "bold"), " applies"))
        self.query_one("#plan-body", Static).update(body)
        for name in self.planned_names():
            if self.app.model[name].status not in ("running", "queued", "stopping"):
                self.app.model.set_status(name, "planned")
        self.app.refresh_bindings()

    def planned_names(self) -> list[str]:
        return [d["export"] for d in self.diffs or [] if d["export"] in self.app.model.states]

    def can(self, action: str) -> bool:
        return bool(self.diffs)

    def selected_export(self) -> str | None:
        return self.names[0] if len(self.names) == 1 else None

    def apply(self) -> None:
        from rivet_tui.screens.confirm import ConfirmScreen
        if not self.diffs:
            return
        names = self.planned_names()
        listed = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")

        def go(yes: bool | None) -> None:
            if yes:
                self.app.pop_screen()
                self.app.apply_plan(self.artifact)
        self.app.push_screen(ConfirmScreen(
            f"Apply plan {self.artifact['plan_id']}? It runs {len(names)} export(s) now, exactly as planned: {listed}.",
            yes="Apply", no="Cancel"), go)
