"""History (`h`): an export's last runs from the state's metrics (what `rivet metrics` prints), as plots: rows,
duration and throughput per run, failed runs marked with ✗ (drawn by textual-plotext), and the same runs as a list."""
from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.widgets import Footer, Header, Static
from textual_plotext import PlotextPlot

from rivet_tui import messages as msg
from rivet_tui.format import human_bytes, human_count, human_duration, stamp_text
from rivet_tui.journal import short_error
from rivet_tui.screens.base import RivetScreen
from rivet_tui.viewmodel import status_of, status_style, status_text

RUNS = 30
GOOD = ("succeeded", "skipped")
PLOTS = (("rows", "rows per run"), ("seconds", "duration per run (s)"), ("rate", "rows/s per run"))


def run_figures(run: dict) -> dict:
    seconds = (run.get("duration_ms") or 0) / 1000
    rows = run.get("rows") or 0
    return {"rows": rows, "seconds": seconds, "rate": rows / seconds if seconds else 0.0}


class HistoryScreen(RivetScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, export: str) -> None:
        super().__init__()
        self.export = export
        self.runs: list[dict] | None = None    # oldest first

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield Static(f"Loading the last {RUNS} runs of {self.export}…", id="history-head")
        with Grid(id="history-plots"):
            for key, _ in PLOTS:
                yield PlotextPlot(id=f"plot-{key}")
        yield Static(id="history-runs")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.title = f"rivet · history · {self.export}"
        self.app.start_job(msg.Job(f"history of {self.export}", self.export), self._load, target=self)

    def _load(self, job: msg.Job) -> msg.HistoryLoaded:
        return msg.HistoryLoaded(job, self.app.store.metrics(self.export, last=RUNS))

    def selected_export(self) -> str:
        return self.export

    def on_history_loaded(self, message: msg.HistoryLoaded) -> None:
        self.runs = list(reversed(message.runs))
        self.draw()

    def on_work_failed(self, message: msg.WorkFailed) -> None:
        message.stop()
        self.query_one("#history-head", Static).update(f"History of {self.export} could not be read: "
                                                        f"{message.error.code} {message.error.message}")

    def draw(self) -> None:
        runs = self.runs or []
        mono = self.app.no_color
        failed = sum(1 for r in runs if r.get("status") not in GOOD)
        head = Text(f"{self.export}: last {len(runs)} run(s), oldest left", style="bold")
        if failed:
            head.append(f" · ✗ marks the {failed} that did not succeed")
        if not runs:
            head = Text(f"{self.export} has no runs in the state yet: run it (r) and come back.")
        self.query_one("#history-head", Static).update(head)
        xs = list(range(1, len(runs) + 1))
        figures = [run_figures(r) for r in runs]
        for key, title in PLOTS:
            plot = self.query_one(f"#plot-{key}", PlotextPlot)
            plt = plot.plt
            plt.clear_data()
            plt.clear_figure()
            plt.title(title)
            plt.xlabel("run")
            good = [(x, f[key]) for x, f, r in zip(xs, figures, runs) if r.get("status") in GOOD]
            bad = [(x, f[key]) for x, f, r in zip(xs, figures, runs) if r.get("status") not in GOOD]
            if good:
                plt.bar([x for x, _ in good], [y for _, y in good], marker="sd" if mono else "hd", width=0.5,
                        label="ok")
            if bad:
                plt.scatter([x for x, _ in bad], [y for _, y in bad], marker="✗", label="failed",
                            color=None if mono else "red")
            if xs:
                plt.xticks(xs if len(xs) <= 10 else xs[::max(1, len(xs) // 10)])
            plot.refresh()
        listing = Text()
        listing.append(f"{'started (UTC)':<20} {'status':<11} {'rows':>12} {'bytes':>10} {'time':>8} {'rows/s':>10}"
                       "  error\n", style="bold")
        for run, f in list(zip(runs, figures))[::-1][:8]:   # newest first
            status = status_of(run.get("status") or "", {"code": run.get("error_code")})
            listing.append(f"{stamp_text(run.get('started_at')):<20} ")
            listing.append(f"{status_text(status):<11}", style=status_style(status, mono))
            listing.append(f" {human_count(f['rows']):>12} {human_bytes(run.get('bytes') or 0):>10} "
                           f"{human_duration(f['seconds']):>8} {human_count(f['rate']):>10}  "
                           f"{short_error({'code': run['error_code'], 'error': run.get('error_message')}) if run.get('error_code') else ''}\n")
        self.query_one("#history-runs", Static).update(listing)
