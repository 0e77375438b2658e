"""Every key of the TUI, in one table: bindings (each with an id, so `[tui.keys]` in rivet.toml remaps it through
App.set_keymap), the footer, the help screen and the command palette are all built from KEYS."""
from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Key:
    id: str              # the name used in [tui.keys]
    key: str             # default key (Textual key name)
    action: str
    label: str           # footer and command palette
    help: str            # help screen and command palette
    footer: bool = True  # shown in the footer (the footer drops what does not fit, from the right)


KEYS: tuple[Key, ...] = (
    Key("detail", "enter", "detail", "Detail", "Run detail of the selected export: journal, errors, throughput"),
    Key("run", "r", "run_selected", "Run", "Run the selected export now"),
    Key("filter", "slash", "filter", "Filter", "Filter exports by name, mode or status"),
    Key("help", "question_mark", "help", "Help", "Show every key"),
    Key("quit", "q", "quit", "Quit", "Quit (asks first while exports run; they stop, resumable)"),
    Key("validate", "v", "validate", "Validate", "Validate the selected export's files against its manifest"),
    Key("plan", "p", "plan", "Plan", "Plan the selected export: diff against state"),
    Key("reconcile", "c", "reconcile", "Reconcile", "Reconcile the selected export: source counts per chunk"),
    Key("run_all", "R", "run_all", "Run all", "Run every export (queued; how many at once: + and -)"),
    Key("apply", "a", "apply", "Apply", "Apply the plan on screen (asks first)"),
    Key("sort", "s", "sort", "Sort", "Sort by status, name, rows/s, ETA or last run (next in turn)", footer=False),
    Key("next_failed", "n", "next_failed", "Next failed", "Move to the next failed export", footer=False),
    Key("previous_failed", "N", "previous_failed", "Previous failed", "Move to the previous failed export",
        footer=False),
    Key("history", "h", "history", "History", "History of the selected export: its last runs as plots",
        footer=False),
    Key("board", "b", "board", "Board", "Progression board: committed vs verified", footer=False),
    Key("log", "l", "log", "Log", "Show or hide the session log (every warning and error of this session)",
        footer=False),
    Key("more_at_once", "plus", "more_at_once", "More at once", "Run one more export at once", footer=False),
    Key("fewer_at_once", "minus", "fewer_at_once", "Fewer at once", "Run one fewer export at once (running ones "
        "finish)", footer=False),
)
KEY_IDS = frozenset(k.id for k in KEYS)
ACTIONS = frozenset(k.action for k in KEYS)


def bindings() -> list[Binding]:
    return [Binding(k.key, k.action, k.label, id=k.id, show=k.footer, tooltip=k.help) for k in KEYS]
