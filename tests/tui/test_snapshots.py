"""SVG snapshots of every screen, from the same fixed-data scenes as `make screenshots` (rivet_tui/screenshots.py).

Fixed: terminal size, clock (the app's injected clock), data (real config and state file with pinned timestamps,
engine events with fixed times and run ids), textual version (pinned). Regenerate after an intended UI change with
    RIVET_UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/tui/test_snapshots.py
and look at the result (e.g. `make screenshots`, which renders the same scenes) before committing it.
"""
from __future__ import annotations

import asyncio
import difflib
import os
import re
from pathlib import Path

import pytest

from rivet_tui.screenshots import SCENES, render

SNAPSHOTS = Path(__file__).parent / "snapshots"


def screen_text(svg: str) -> list[str]:
    """The characters on screen, line by line (for a readable failure message). Rich's SVG places each run of text
    at x = 12.2 px per column and leaves plain gaps out, so rebuild the columns from x."""
    rows: dict[float, dict[int, str]] = {}
    for x, y, text in re.findall(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>([^<]*)</text>', svg):
        rows.setdefault(float(y), {})[round(float(x) / 12.2)] = text.replace("&#160;", " ").replace("&amp;", "&")
    lines = []
    for _, runs in sorted(rows.items()):
        line = ""
        for col, text in sorted(runs.items()):
            line = line.ljust(col) + text
        lines.append(line.rstrip())
    return lines


def _luminance(colour: str) -> float:
    def channel(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (int(colour[i:i + 2], 16) / 255 for i in (0, 2, 4))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two #rrggbb colours (1 to 21)."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


FRAMES = {chr(c) for c in range(0x2500, 0x2580)} | {"▏", "▕", "▔"}   # borders and scrollbars, not content


def low_contrast(svg: str, minimum: float = 3.0) -> list[tuple[str, str, str, float]]:
    """Text on screen whose colour is too close to its background: (text, fg, bg, ratio). Rich's SVG draws one
    background rect per run of cells and one <text> per run of text, 24.4 px per line."""
    fills = dict(re.findall(r"\.(terminal-\d+-r\d+) \{ fill: #([0-9a-f]{6})", svg))
    backgrounds: dict[int, list[tuple[float, float, str]]] = {}
    for fill, x, y, w in re.findall(r'<rect fill="#([0-9a-f]{6})" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" '
                                    r'height="24.65"', svg):
        backgrounds.setdefault(round((float(y) - 1.5) / 24.4), []).append((float(x), float(x) + float(w), fill))
    bad = []
    for cls, x, y, text in re.findall(r'<text class="([^"]+)" x="([\d.]+)" y="([\d.]+)"[^>]*>([^<]*)</text>', svg):
        content = text.replace("&#160;", " ").strip()
        if not content or set(content) <= FRAMES or cls not in fills:
            continue
        row = round((float(y) - 20) / 24.4)
        bg = next((f for a, b, f in backgrounds.get(row, []) if a <= float(x) + 1 < b), None)
        if bg and contrast(fills[cls], bg) < minimum:
            bad.append((content, fills[cls], bg, round(contrast(fills[cls], bg), 2)))
    return bad


@pytest.mark.parametrize("scene", list(SCENES))
def test_screen_matches_snapshot(scene, tmp_path):
    svg = asyncio.run(render(scene, tmp_path))
    expected = SNAPSHOTS / f"{scene}.svg"
    if os.environ.get("RIVET_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(exist_ok=True)
        expected.write_text(svg)
        return
    assert expected.exists(), f"no snapshot {expected.name}: run with RIVET_UPDATE_SNAPSHOTS=1 to create it"
    want = expected.read_text()
    if svg != want:
        actual = tmp_path / f"{scene}.actual.svg"
        actual.write_text(svg)
        diff = "\n".join(difflib.unified_diff(screen_text(want), screen_text(svg), "snapshot", "now", lineterm="", n=1))
        pytest.fail(f"{scene} differs from {expected} (new rendering: {actual})\n"
                    + (diff or "same characters; colours or styles changed"))


@pytest.mark.parametrize("scene", ["exports_running", "run_detail", "history", "plan_diff", "progression_board"])
def test_no_color_scenes_keep_every_text_readable(scene, tmp_path, monkeypatch):
    """NO_COLOR: Textual greys every colour by its luminance, so a red word on a dark surface would vanish (237 on
    235): every status keeps its glyph and no text, bar or sparkline falls under a 3:1 contrast."""
    monkeypatch.setenv("NO_COLOR", "1")
    svg = asyncio.run(render(scene, tmp_path))
    assert low_contrast(svg) == []
    text = "\n".join(screen_text(svg))
    if scene == "exports_running":
        for word in ("✗ failed", "! refused", "▶ running", "⏸ queued", "■ stopped", "○ skipped", "✓ done"):
            assert word in text, word
