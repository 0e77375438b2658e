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
