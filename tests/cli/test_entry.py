"""The `rivet` command's quick exit (rivet_tui.cli.entry): after main returns it skips the interpreter's teardown
(≈ 0.1 s a process), but never at the cost of output, an exit code, an atexit handler or a thread still working."""
from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT

SCRIPT = """
import atexit, sys, threading, time
from rivet_tui.cli import entry
atexit.register(lambda: print("atexit ran"))   # not flushed by itself: the quick exit must
if "--with-thread" in sys.argv:
    sys.argv.remove("--with-thread")
    threading.Thread(target=lambda: (time.sleep(0.5), print("thread finished", flush=True))).start()
entry()
"""


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_output_exit_code_and_atexit_handlers_survive_the_quick_exit(tmp_path):
    ok = run("--version")
    assert ok.returncode == 0 and ok.stdout.startswith("rivet") and "atexit ran" in ok.stdout
    missing = run("state", "show", "-c", str(tmp_path / "nope.toml"))
    assert missing.returncode == 1 and "RIVET_CONFIG_NOT_FOUND" in missing.stderr and "atexit ran" in missing.stdout
    many = run("--help")
    assert many.returncode == 0 and "Commands:" in many.stdout   # the whole help, not a truncated buffer


def test_a_non_daemon_thread_still_working_is_waited_for():
    p = run("--with-thread", "--version")
    assert p.returncode == 0 and "thread finished" in p.stdout


POOL = """
from rivet_tui import cli
def main():
    import pyarrow as pa
    print(pa.default_memory_pool().backend_name)
cli.main = main
cli.entry()
"""


def test_the_rivet_command_allocates_arrow_memory_with_jemalloc_unless_the_operator_chose():
    """jemalloc's pool peaks 8-25 % lower in RSS than Arrow's default (mimalloc) for the same exports."""
    import os
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}

    def pool(**extra: str) -> str:
        p = subprocess.run([sys.executable, "-c", POOL], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env={**env, **extra})
        assert p.returncode == 0 and not p.stderr, p.stderr
        return p.stdout.strip()
    assert pool() == "jemalloc"
    assert pool(ARROW_DEFAULT_MEMORY_POOL="system") == "system"


LOADING = """
import gc
from rivet_tui import cli
def main():
    with cli.loading():
        with cli.loading():
            inner = gc.isenabled()
        nested = gc.isenabled()
    print(inner, nested, gc.isenabled(), gc.get_freeze_count() > 0)
cli.main = main
cli.entry()
"""


def test_the_rivet_command_loads_with_the_collector_paused_and_resumes_it():
    """Importing the run path with the cycle collector on cost 45-65 ms of a one-table run (docs/performance.md);
    a collector left off would let a long run's cyclic garbage grow without bound."""
    p = subprocess.run([sys.executable, "-c", LOADING], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["False", "False", "True", "True"]


def test_a_program_that_imports_the_cli_keeps_its_collector():
    import gc

    from rivet_tui import cli
    frozen = gc.get_freeze_count()
    with cli.loading():
        assert gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == frozen
