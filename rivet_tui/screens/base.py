"""What a screen can do for the app's keys. The app asks the screen on top through this base class, never by
getattr or by class name: a screen overrides what it supports and lists the screen-level actions in `handles`."""
from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.screen import Screen
from textual.widgets import Static


class RivetScreen(Screen):
    # Actions that only make sense on some screens; the footer shows them disabled elsewhere.
    SCREEN_ACTIONS: ClassVar[frozenset[str]] = frozenset(
        {"filter", "sort", "next_failed", "previous_failed", "log", "apply"})
    handles: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        super().__init__()
        self._texts: dict[int, tuple] = {}   # id(widget) → what show_text last put there
        self.composed = False                # its widgets exist: refresh_view may run

    def on_mount(self) -> None:
        # Textual calls this after the subclass's own on_mount (handlers run for each class, subclass first)
        self.composed = True

    def on_unmount(self) -> None:
        self.composed = False   # its widgets are going: no more refresh_view

    def show_text(self, widget: Static, content: Text | str, layout: bool = True) -> None:
        """Update a Static only when its text or styles changed (each update costs a repaint, and with `layout` a
        layout pass: pass False for a widget of fixed size)."""
        key = (content.plain, tuple(content.spans)) if isinstance(content, Text) else (content,)
        if self._texts.get(id(widget)) != key:
            self._texts[id(widget)] = key
            widget.update(content, layout=layout)

    def selected_export(self) -> str | None:
        """The export that r, p, c, v, enter and h act on."""
        return None

    def refresh_view(self) -> None:
        """Redraw from the view model (the app's 4 Hz tick calls this on the screen on top)."""

    def can(self, action: str) -> bool:
        """Whether a handled screen-level action can run right now (e.g. apply: only once a plan is on screen)."""
        return True

    def show_filter(self) -> None: ...

    def next_sort(self) -> None: ...

    def jump_failed(self, step: int) -> None: ...

    def toggle_log(self) -> None: ...

    def apply(self) -> None: ...
