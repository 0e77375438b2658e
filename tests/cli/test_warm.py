"""The warm server (rivet_tui/warm.py, docs/warm.md): `rivet warm start`, then every `rivet` command whose stdin is
not a terminal forks from it. What a user checks: the same rows, files, exit codes, stderr and signals as a
command run on its own; the server's log names what it served; a terminal, RIVET_WARM=0, another rivet (key) or a
stopped server means a command runs on its own as before.

Real processes throughout: the server, its clients (`python -m rivet_tui`, the console script's entry) and
PostgreSQL. Each test has its own socket directory (RIVET_WARM_DIR), so no other test's command is ever served.
"""
from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import export_config, read_table
from tests.reliability.common import env_with, wait_for, write_config

CLIENT = [sys.executable, "-m", "rivet_tui"]     # rivet_tui/__main__.py: the console script's entry (warm.entry)
ROWS = 3000


@pytest.fixture(scope="module")
def warm_items(pg):
    pg.sql("DROP TABLE IF EXISTS warm_items")
    pg.sql("CREATE TABLE warm_items (id bigint PRIMARY KEY, label text NOT NULL)")
    pg.sql(f"INSERT INTO warm_items SELECT g, 'item ' || g FROM generate_series(1, {ROWS}) g")
    return pg


def warm_env(folder: Path) -> dict:
    """A process environment whose commands may be served (tests/conftest.py sets RIVET_WARM=0 for the others)."""
    return {k: v for k, v in env_with({"RIVET_WARM_DIR": str(folder)}).items() if k != "RIVET_WARM"}


@pytest.fixture
def server(tmp_path):
    """A warm server of its own (socket directory under tmp_path, mode 0700); stopped (killed if need be) after."""
    folder = tmp_path / "warm"
    folder.mkdir(mode=0o700)
    env = warm_env(folder)
    started = subprocess.run([*CLIENT, "warm", "start", "--json"], env=env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=120)
    assert started.returncode == 0, started.stderr
    status = json.loads(started.stdout)
    yield Server(env, folder, status)
    try:
        os.kill(status["pid"], signal.SIGKILL)
    except ProcessLookupError:
        pass


class Server:
    def __init__(self, env: dict, folder: Path, status: dict):
        self.env, self.folder, self.pid, self.socket = env, folder, status["pid"], Path(status["socket"])

    def rivet(self, *args, cwd=None, env=None, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([*CLIENT, *map(str, args)], env={**self.env, **(env or {})}, cwd=cwd,
                              capture_output=True, text=True, stdin=kw.pop("stdin", subprocess.DEVNULL),
                              timeout=120, **kw)

    def start(self, *args, env=None) -> subprocess.Popen:
        return subprocess.Popen([*CLIENT, *map(str, args)], env={**self.env, **(env or {})}, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def served(self) -> list[str]:
        """The commands the server forked (its log's `run PID: ARGS` lines)."""
        log = self.socket.with_suffix(".log").read_text()
        return [line.split(": ", 1)[1] for line in log.splitlines() if " run " in line and "(cwd" in line]

    def log(self) -> str:
        return self.socket.with_suffix(".log").read_text()


def config(folder: Path, table: str = "warm_items", extra: str = "") -> Path:
    """One full export of `table`; the source URL comes from the command's environment (${WARM_PG_URL})."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_config(folder / "rivet.toml", export_config("${WARM_PG_URL}", name="items", table=table,
                                                             mode="full", extra=extra))


def parquet_ids(folder: Path) -> list[int]:
    return sorted(read_table(folder).column("id").to_pylist())


def test_a_run_through_the_server_is_the_run_on_its_own(server, warm_items, tmp_path):
    """Same summary, files and rows; the child saw the client's environment (${WARM_PG_URL}), working directory
    (relative `out`) and arguments; the server logged it; RIVET_WARM=0 runs on its own."""
    env = {"WARM_PG_URL": warm_items.url}
    warm_cfg, cold_cfg = config(tmp_path / "warm-run"), config(tmp_path / "cold-run")
    warm = server.rivet("run", "-c", "rivet.toml", "--no-tui", "--json", cwd=warm_cfg.parent, env=env)
    cold = server.rivet("run", "-c", "rivet.toml", "--no-tui", "--json", cwd=cold_cfg.parent,
                        env={**env, "RIVET_WARM": "0"})
    assert warm.returncode == cold.returncode == 0, warm.stderr + cold.stderr
    w, c = json.loads(warm.stdout)["exports"][0], json.loads(cold.stdout)["exports"][0]
    assert (w["status"], w["rows"], w["files"]) == (c["status"], c["rows"], c["files"]) == ("succeeded", ROWS, 1)
    assert parquet_ids(warm_cfg.parent / "out") == parquet_ids(cold_cfg.parent / "out") == list(range(1, ROWS + 1))
    assert "items" in warm.stderr and "succeeded" in warm.stderr          # the headless progress, on our stderr
    assert server.served() == [f"run -c rivet.toml --no-tui --json (cwd {warm_cfg.parent})"]
    status = json.loads(server.rivet("warm", "status", "--json").stdout)
    assert (status["pid"], status["served"], status["running"]) == (server.pid, 1, 0)


def test_a_mariadb_run_through_the_server(server, mysql, tmp_path):
    """The MariaDB reader (mysql-connector's C extension, loaded first in the server) works in a forked child."""
    mysql.sql("CREATE TABLE warm_my (id BIGINT PRIMARY KEY, label VARCHAR(40) NOT NULL, at DATETIME(6) NULL)")
    mysql.sql(f"INSERT INTO warm_my SELECT seq, CONCAT('item ', seq), '2024-01-02 03:04:05.123456' FROM "
              f"seq_1_to_{ROWS}")
    outs = []
    for side, env in (("warm", {}), ("cold", {"RIVET_WARM": "0"})):
        (tmp_path / f"my-{side}").mkdir()
        cfg = write_config(tmp_path / f"my-{side}" / "rivet.toml",
                           export_config(mysql.url, source_type="mysql", name="items", table="warm_my", mode="full"))
        done = server.rivet("run", "-c", cfg, "--no-tui", "--json", env=env)
        assert done.returncode == 0, done.stderr
        outs.append(read_table(cfg.parent / "out").sort_by("id"))
    assert outs[0].equals(outs[1]) and outs[0].num_rows == ROWS            # same rows, types and values
    assert len(server.served()) == 1


def test_exit_codes_and_errors_pass_through(server, warm_items, tmp_path):
    cfg = config(tmp_path / "missing", table="no_such_table_here")
    env = {"WARM_PG_URL": warm_items.url}
    warm = server.rivet("run", "-c", cfg, "--no-tui", env=env)
    cold = server.rivet("run", "-c", cfg, "--no-tui", env={**env, "RIVET_WARM": "0"})
    assert warm.returncode == cold.returncode != 0
    assert "no_such_table_here" in warm.stderr
    assert [line for line in warm.stderr.splitlines() if "RIVET_" in line] == \
        [line for line in cold.stderr.splitlines() if "RIVET_" in line]
    usage = server.rivet("run", "--no-such-option")
    assert usage.returncode == 1 and "no-such-option" in usage.stderr
    assert len(server.served()) == 2   # the run and the usage error; the RIVET_WARM=0 run was not served


def slow_run(server, warm_items, tmp_path) -> tuple[Path, subprocess.Popen]:
    cfg = config(tmp_path / "slow", extra="[exports.tuning]\nbatch_size = 100\nthrottle_ms = 200")
    proc = server.start("run", "-c", cfg, "--no-tui", "--json", env={"WARM_PG_URL": warm_items.url})
    assert wait_for(lambda: len(server.served()) == 1, timeout=60), server.log()
    time.sleep(1.5)   # into the read (30 batches × 200 ms)
    return cfg, proc


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_client_reaches_the_command(server, warm_items, tmp_path, signum):
    """A signal to the process the caller started ends the command as it ends rivet on its own: SIGTERM's default
    action (killed by SIGTERM), Ctrl-C's KeyboardInterrupt (which click turns into "aborted", exit 2 — what
    `rivet run` on its own prints and returns); the next run succeeds."""
    cfg, proc = slow_run(server, warm_items, tmp_path)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    if signum == signal.SIGTERM:
        assert proc.returncode == -signal.SIGTERM
        assert wait_for(lambda: "signal 15" in server.log(), timeout=30), server.log()
    else:
        assert proc.returncode == 2 and "aborted" in err, err
        assert wait_for(lambda: "exit 2" in server.log(), timeout=30), server.log()
    again = server.rivet("run", "-c", cfg, "--no-tui", "--json", env={"WARM_PG_URL": warm_items.url})
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["exports"][0]["rows"] == ROWS


def test_a_killed_client_takes_its_command_with_it(server, warm_items, tmp_path):
    _, proc = slow_run(server, warm_items, tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert wait_for(lambda: "signal 9" in server.log(), timeout=30), server.log()
    status = json.loads(server.rivet("warm", "status", "--json").stdout)
    assert status["running"] == 0


def test_a_terminal_on_stdin_or_rivet_warm_0_runs_on_its_own(server):
    leader, follower = pty.openpty()
    try:
        on_tty = server.rivet("--version", stdin=follower)
    finally:
        os.close(leader)
        os.close(follower)
    off = server.rivet("--version", env={"RIVET_WARM": "0"})
    served = server.rivet("--version")
    assert on_tty.returncode == off.returncode == served.returncode == 0
    assert on_tty.stdout == off.stdout == served.stdout and "version" in served.stdout
    assert [s.split(" (cwd")[0] for s in server.served()] == ["--version"]


def test_another_rivet_finds_no_server(server):
    """The key covers the variables read when libraries load and rivet's own files: a change means a cold start."""
    other = server.rivet("warm", "status", env={"ARROW_IO_THREADS": "3"})
    assert other.returncode == 1 and "no warm server" in other.stderr
    served = server.rivet("--version", env={"ARROW_IO_THREADS": "3"})
    assert served.returncode == 0 and server.served() == []
    # interpreter options take effect only in a process of its own: -X importtime still reports the imports
    timed = subprocess.run([sys.executable, "-X", "importtime", "-m", "rivet_tui", "--version"], env=server.env,
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert timed.returncode == 0 and "import time:" in timed.stderr and server.served() == []
    source = Path(__file__).resolve().parents[2] / "rivet_tui" / "warm.py"
    st = os.stat(source)
    try:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert server.rivet("warm", "status").returncode == 1
    finally:
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert server.rivet("warm", "status").returncode == 0


def test_commands_at_once_each_get_their_own_child(server, warm_items, tmp_path):
    env = {"WARM_PG_URL": warm_items.url}
    cfgs = [config(tmp_path / f"c{i}") for i in range(4)]
    procs = [subprocess.Popen([*CLIENT, "run", "-c", cfg, "--no-tui", "--json"], env={**server.env, **env},
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cfg in cfgs]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in outs]
    assert [json.loads(out)["exports"][0]["rows"] for out, _ in outs] == [ROWS] * 4
    for cfg in cfgs:
        assert parquet_ids(cfg.parent / "out") == list(range(1, ROWS + 1))
    assert len(set(re.findall(r" run (\d+): run -c ", server.log()))) == 4   # four children, one each


def test_stop_lets_the_running_command_finish(server, warm_items, tmp_path):
    _, proc = slow_run(server, warm_items, tmp_path)
    stopped = server.rivet("warm", "stop")
    assert stopped.returncode == 0 and "1 command(s) still running" in stopped.stderr
    assert not server.socket.exists()
    assert server.rivet("warm", "status").returncode == 1
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert json.loads(out)["exports"][0]["rows"] == ROWS
    assert wait_for(lambda: "stopped" in server.log(), timeout=30), server.log()


def test_idle_timeout_and_a_dead_server(tmp_path):
    """Idle is counted from when the server listens: without bytecode its imports take longer than this 1 s
    timeout, and it must still answer the `warm start` that waits for it."""
    folder = tmp_path / "warm"
    folder.mkdir(mode=0o700)
    (tmp_path / "no-pyc").mkdir()
    env = {**warm_env(folder), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": str(tmp_path / "no-pyc")}
    started = subprocess.run([*CLIENT, "warm", "start", "--idle-timeout", "1", "--json"], env=env,
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert started.returncode == 0, started.stderr
    sock = Path(json.loads(started.stdout)["socket"])
    assert wait_for(lambda: not sock.exists(), timeout=30)
    assert "idle for 1 s; exiting" in sock.with_suffix(".log").read_text()
    # a socket file left by a server that died: the command runs on its own
    sock.touch()
    done = subprocess.run([*CLIENT, "--version"], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=120)
    assert done.returncode == 0 and "version" in done.stdout


def test_a_socket_directory_others_can_enter_is_not_used(tmp_path):
    folder = tmp_path / "open"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    env = warm_env(folder)
    started = subprocess.run([*CLIENT, "warm", "start"], env=env, capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=120)
    assert started.returncode == 1 and "RIVET_WARM_DIR_UNSAFE" in started.stderr


def test_the_server_log_keeps_one_old_generation(tmp_path):
    """Past LOG_MAX_BYTES the log (the server's stdout) moves to <key>.log.1 and a new one starts (a server up for
    weeks writes two lines per command)."""
    folder = tmp_path / "warm"
    folder.mkdir(mode=0o700)
    script = (
        "import os, sys\n"
        "from rivet_tui import warm\n"
        "warm.LOG_MAX_BYTES = 300\n"
        "server = warm._Server('k', 60)\n"
        "fd = os.open(server.path[:-5] + '.log', os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)\n"
        "os.dup2(fd, 1)\n"
        "for i in range(40):\n"
        "    server.log(f'line {i:02d} ' + 'x' * 20)\n")
    done = subprocess.run([sys.executable, "-c", script], env=warm_env(folder), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    numbers = [[int(line.split("line ")[1][:2]) for line in (folder / name).read_text().splitlines()]
               for name in ("k.log.1", "k.log")]
    kept = numbers[0] + numbers[1]
    assert kept == list(range(kept[0], 40)) and numbers[1]          # the newest lines, in order, none skipped
    assert (folder / "k.log").stat().st_size <= 300 + 40            # the current file restarted, not the old one
    assert sorted(p.name for p in folder.iterdir()) == ["k.lock", "k.log", "k.log.1"]
