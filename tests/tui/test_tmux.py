"""Smoke test of the real `rivet` command in a real terminal: tmux (private socket), 160x48, keys sent, screen read."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.helpers import ROOT
from tests.tui.conftest import EVENTS, GHOST, make_config

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux not installed (apt-get install -y tmux)")


class Tmux:
    def __init__(self):
        self.socket = f"rivet-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10).stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "rivet")

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{self.screen()}")

    def alive(self) -> bool:
        return subprocess.run(["tmux", "-L", self.socket, "has-session", "-t", "rivet"],
                              capture_output=True).returncode == 0


@pytest.fixture
def tmux():
    t = Tmux()
    yield t
    t("kill-server")


def test_rivet_tui_in_a_real_terminal(tmp_path, shop, tmux):
    fillers = "".join(GHOST.replace('name = "ghost"', f'name = "fill_{i:03d}"') for i in range(100))
    make_config(tmp_path, shop, EVENTS + GHOST + fillers + EVENTS.replace('name = "events"', 'name = "late"'))
    env = {"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    code_file = tmp_path / "exit_code"
    # LINES/COLUMNS from the test runner's environment would override the real terminal size
    command = (f"cd {shlex.quote(str(tmp_path))} && env -u LINES -u COLUMNS {exports} {shlex.quote(sys.executable)} "
               "-m rivet_tui.cli tui "
               f"-c rivet.toml; echo $? > {shlex.quote(str(code_file))}")
    tmux("new-session", "-d", "-s", "rivet", "-x", "160", "-y", "48", command)
    for text in ("Export", "events", "ghost", "Committed", "Quit", "palette"):
        screen = tmux.wait_for(text)
    assert "Quit" in screen.splitlines()[47], "the footer belongs on row 48 of 48:\n" + screen
    tmux("send-keys", "-t", "rivet", "r")                # events is the first row
    screen = tmux.wait_for("done")
    assert "500" in screen
    tmux("send-keys", "-t", "rivet", "/")
    tmux("send-keys", "-t", "rivet", "-l", "gho")
    time.sleep(0.5)
    screen = tmux.screen()
    assert "ghost" in screen and "incremental" not in screen   # filtered to one row
    tmux("send-keys", "-t", "rivet", "Escape")
    tmux.wait_for("incremental")
    # the last row, scrolled into view: its line alone is repainted as it runs, so it must be the right line
    tmux("send-keys", "-t", "rivet", "C-End")
    tmux.wait_for(" late ")
    tmux("send-keys", "-t", "rivet", "r")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        late = [line for line in tmux.screen().splitlines() if " late " in line]
        if late and "done" in late[0]:
            break
        time.sleep(0.1)
    assert late and "done" in late[0] and "500" in late[0], tmux.screen()
    assert all("idle" in line for line in tmux.screen().splitlines() if "fill_" in line)
    tmux("send-keys", "-t", "rivet", "?")
    tmux.wait_for("remap any of the ids")
    tmux("send-keys", "-t", "rivet", "Escape")
    time.sleep(0.3)
    tmux("send-keys", "-t", "rivet", "q")
    deadline = time.monotonic() + 20
    while not code_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert code_file.read_text().strip() == "0"
    assert os.path.exists(tmp_path / ".rivet/state.duckdb")
