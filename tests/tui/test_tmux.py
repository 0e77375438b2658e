"""Smoke test of the real `rivet` command in a real terminal: tmux (private socket), 160x48, keys sent, screen read."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from engine.state.store import StateStore
from tests.helpers import ROOT, manifest, run_json
from tests.tui.conftest import EVENTS, GHOST, ORDERS, ROWS, make_config

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


def start(tmux, tmp_path, args: str) -> Path:
    """Run `python -m rivet_tui.cli ARGS` in the tmux session; returns the file its exit code lands in."""
    env = {"PYTHONPATH": str(ROOT), "TERM": "xterm-256color", "COLORTERM": "truecolor"}
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    code_file = tmp_path / "exit_code"
    # LINES/COLUMNS from the test runner's environment would override the real terminal size; CI forces headless
    command = (f"cd {shlex.quote(str(tmp_path))} && env -u LINES -u COLUMNS -u CI {exports} "
               f"{shlex.quote(sys.executable)} -m rivet_tui.cli {args}; echo $? > {shlex.quote(str(code_file))}")
    tmux("new-session", "-d", "-s", "rivet", "-x", "160", "-y", "48", command)
    return code_file


def exit_code(code_file: Path, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while not code_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert code_file.exists(), f"still running after {timeout}s"
    return int(code_file.read_text().strip())


def test_rivet_tui_in_a_real_terminal(tmp_path, shop, tmux):
    fillers = "".join(GHOST.replace('name = "ghost"', f'name = "fill_{i:03d}"') for i in range(100))
    make_config(tmp_path, shop, EVENTS + GHOST + fillers + EVENTS.replace('name = "events"', 'name = "late"'))
    code_file = start(tmux, tmp_path, "tui -c rivet.toml")
    for text in ("Export", "events", "ghost", "Committed", "Quit", "palette"):
        screen = tmux.wait_for(text)
    assert "Quit" in screen.splitlines()[47], "the footer belongs on row 48 of 48:\n" + screen
    tmux("send-keys", "-t", "rivet", "r")                # events is the first row
    screen = tmux.wait_for("done")
    assert "500" in screen
    tmux("send-keys", "-t", "rivet", "/")
    tmux.wait_for("filter: part of a name")
    tmux("send-keys", "-t", "rivet", "-l", "gho")
    screen = tmux.wait_for("1 of 103 shown")
    assert "ghost" in screen and " events " not in screen and "fill_" not in screen, screen   # one row left
    tmux("send-keys", "-t", "rivet", "Escape")
    tmux.wait_for("fill_000")
    # sorted by name, the last row scrolled into view: its line alone is repainted as it runs, so it must be the
    # right line
    tmux("send-keys", "-t", "rivet", "s")
    tmux.wait_for("sort: name")
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
    assert exit_code(code_file) == 0
    assert os.path.exists(tmp_path / ".rivet/state.duckdb")


def test_rivet_run_on_a_terminal_opens_the_tui_and_quit_now_leaves_state_resumable(tmp_path, shop, tmux):
    """`rivet run` on a TTY starts the exports in the TUI; q, y stops at the next batch of the task in flight; q, y
    again quits at once (the task in flight is abandoned, as if killed). The next headless run resumes and
    completes."""
    slow = ORDERS.replace("chunk_size = 2000", "chunk_size = 5000").replace("parallel = 2", "parallel = 1")
    # one batch a chunk, then an 8 s pause: the stop (checked between batches) stays pending long enough for the
    # second q to meet it, however loaded the machine
    make_config(tmp_path, shop, slow + "[exports.tuning]\nbatch_size = 5000\nthrottle_ms = 8000\n")
    code_file = start(tmux, tmp_path, "run -c rivet.toml")
    tmux.wait_for("running")                            # started without a key press
    tmux.wait_for(" 1/4")
    tmux("send-keys", "-t", "rivet", "q")
    tmux.wait_for("Stop and quit")
    tmux("send-keys", "-t", "rivet", "y")
    tmux.wait_for("stopping")
    tmux("send-keys", "-t", "rivet", "q")
    tmux.wait_for("Quit now")
    tmux("send-keys", "-t", "rivet", "y")
    assert exit_code(code_file, timeout=10) == 2         # transient: run again
    store = StateStore(tmp_path / ".rivet/state.duckdb")
    tasks = store.chunk_tasks(store.latest_chunk_run("orders")["run_id"])
    # it did not wait for chunk #1 in flight: left running (abandoned) or already put back to pending by the stop
    assert tasks[0]["status"] == "completed" and tasks[1]["status"] in ("running", "pending"), tasks
    make_config(tmp_path, shop, slow)                   # tuning is not part of the plan: the run still resumes
    [result] = run_json(tmp_path / "rivet.toml")["exports"]
    assert result["status"] == "succeeded"
    assert manifest(tmp_path / "out/orders")["row_count"] == ROWS
