"""Warm start (docs/warm.md): `rivet warm start` keeps one process up with rivet and its libraries imported; each
later `rivet …` command forks from it instead of importing them again (≈ 0.45 of a small export's ≈ 0.55 s).

The `rivet` process the caller starts is then a small client: it passes its argv, environment, working directory,
umask and stdio descriptors over a Unix socket, the server forks a child that runs the command, and the client
forwards its signals to the child and ends with the child's exit status (or dies of the child's signal). A client
killed outright takes its child with it; a child dies with the server. Not handed over: a terminal on stdin,
RIVET_WARM=0, `rivet warm …`, or no server for this process's key (`key()`: interpreter, rivet's files,
site-packages, the environment read at import). This module stays light: standard library only, imported lazily.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import socket

ENV_SWITCH = "RIVET_WARM"                      # "0": never hand a command over
DIR_ENV = "RIVET_WARM_DIR"                     # where sockets live (default: $XDG_RUNTIME_DIR or /tmp, per user)
# read when the interpreter or a library loads (the locale picks the stdio encoding): part of the key
IMPORT_ENV_PREFIXES = ("PYTHON", "ARROW_", "LD_", "MALLOC_", "OMP_", "LC_", "LANG")
FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
DEFAULT_IDLE_S = 900.0
LOG_MAX_BYTES = 10 * 1024 * 1024               # the server's log: two lines per command, one old generation kept
READ = 1                                       # selectors.EVENT_READ (selectors is imported by the server only)
INTERNAL_EXIT = 6                              # ExitClass.INTERNAL, without importing engine.errors here
PRELOAD = ("rivet_tui.cli", "rivet_tui.headless", "engine.run.runner", "engine.sources.postgres",
           "engine.sources.mysql", "engine.sources.mssql", "engine.state", "engine.planner", "pyarrow.parquet")


# ---- where and which ------------------------------------------------------------------------------------------

def runtime_dir() -> str:
    """The per-user socket directory (mode 0700, owned by this user)."""
    base = os.environ.get(DIR_ENV)
    if base:
        return base
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(xdg, "rivet-warm") if xdg else f"/tmp/rivet-warm-{os.getuid()}"


def _private(path: str) -> bool:
    """Only a directory this user owns and nobody else can enter may hold a socket we hand our stdio to."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_uid == os.getuid() and st.st_mode & 0o077 == 0


def key() -> str:
    """Which rivet this process would be: the server serves only clients with its own key."""
    import hashlib
    h = hashlib.sha256()
    # the interpreter and how it was started (-X importtime, -O, -W … take effect only in a process of its own)
    h.update(f"{sys.executable}\0{sys.version}\0{tuple(sys.flags)}\0{sys._xoptions}\0{sys.warnoptions}\0".encode())
    for name in sorted(os.environ):
        if name.startswith(IMPORT_ENV_PREFIXES):
            h.update(f"{name}={os.environ[name]}\0".encode())
    here = os.path.dirname(os.path.abspath(__file__))
    for root in (here, os.path.join(os.path.dirname(here), "engine")):
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for f in sorted(files):
                st = os.stat(os.path.join(folder, f))
                h.update(f"{folder}/{f}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    for entry in sys.path:   # a package installed, upgraded or removed changes its site-packages directory
        if entry.endswith("-packages") and os.path.isdir(entry):
            h.update(f"{entry}:{os.stat(entry).st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


def socket_path(k: str | None = None) -> str:
    return os.path.join(runtime_dir(), f"{k or key()}.sock")


def arrow_allocator() -> None:
    """Arrow's jemalloc pool instead of its default (mimalloc): the same exports peak 8-25 % lower in RSS at the same
    speed (200 small tables 360 → 275 MiB, 5 M rows from MariaDB 301 → 257 MiB; docs/performance.md). Arrow reads the
    variable when it loads, so this runs before anything imports pyarrow; only on Linux, where pyarrow's wheels carry
    jemalloc (elsewhere Arrow would warn and keep its default). An ARROW_DEFAULT_MEMORY_POOL already set wins."""
    if sys.platform.startswith("linux"):
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")


# ---- the client: every `rivet` command starts here ------------------------------------------------------------

def entry() -> None:
    """The `rivet` console script: hand the command to a warm server if one serves this rivet, else run it here."""
    arrow_allocator()   # before the key: the variable is part of it, and the server's children get it as here
    code = handover(sys.argv[1:])
    if code is not None:
        exit_now(code)
    from rivet_tui.cli import entry as run_here
    run_here()


def handover(args: list[str]) -> int | None:
    """The command's exit status once a warm server ran it, or None: no server (or not eligible), run it here."""
    if os.environ.get(ENV_SWITCH) == "0" or (args and args[0] == "warm"):
        return None
    try:
        if os.isatty(0):
            return None
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:   # a closed stdio descriptor cannot be passed: run here
        return None
    folder = runtime_dir()
    if not _private(folder) or not any(name.endswith(".sock") for name in os.listdir(folder)):
        return None   # no server at all: skip the key (it stats every file of rivet's packages)
    conn = _connect(socket_path())
    if conn is None:
        return None
    try:
        return _client(conn, args)
    finally:
        conn.close()


def _connect(path: str) -> socket.socket | None:
    import socket
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    return conn


def _send(conn: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    import json
    import socket
    import struct
    body = json.dumps(message).encode()
    data = [struct.pack("!I", len(body)), body]
    if fds:
        import array
        conn.sendmsg(data, [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        conn.sendall(b"".join(data))


def _client(conn: socket.socket, args: list[str]) -> int | None:
    import signal
    try:
        umask = os.umask(0)
        os.umask(umask)
        _send(conn, {"op": "run", "argv": [sys.argv[0], *args], "cwd": os.getcwd(), "env": dict(os.environ),
                     "umask": umask}, fds=[0, 1, 2])
        reader = conn.makefile("rb")
        if reader.readline().strip() != b"forked":   # the server would not (it is stopping): run it here
            return None
    except OSError:   # nothing was started (a deleted working directory, a server that just died): run it here
        return None

    def forward(signum, _frame):
        try:
            conn.sendall(b"%d\n" % signum)
        except OSError:
            pass
    for name in FORWARDED_SIGNALS:
        signal.signal(getattr(signal, name), forward)
    try:
        reply = reader.readline().split()
    except OSError:
        reply = []
    if len(reply) == 2 and reply[0] == b"exit":
        return int(reply[1])
    if len(reply) == 2 and reply[0] == b"signal":   # the command died of a signal: so does this process
        signum = int(reply[1])
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return 128 + signum
    os.write(2, b"rivet: the warm server went away while it ran this command (`rivet warm status`); "
                b"its state is as a killed run leaves it: run it again to resume\n")
    return INTERNAL_EXIT


def exit_now(code: object) -> None:
    """End this process as a normal exit would, minus the interpreter's teardown (≈ 0.1 s: every module, DuckDB,
    Arrow's pools): atexit handlers, then stdout/stderr flushed, then os._exit. `code` as SystemExit takes it."""
    import atexit
    atexit._run_exitfuncs()   # what the normal exit would run first (logging's flush among them)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe (`rivet … | head`): nothing left to deliver
            pass
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def request(op: str, k: str | None = None, timeout_s: float = 5.0) -> dict | None:
    """One control request (status, stop) to the server for key k; None when none answers."""
    import json
    conn = _connect(socket_path(k))
    if conn is None:
        return None
    try:
        conn.settimeout(timeout_s)
        _send(conn, {"op": op})
        line = conn.makefile("rb").readline()
        return json.loads(line) if line else None
    except (OSError, ValueError):
        return None
    finally:
        conn.close()


# ---- the server -------------------------------------------------------------------------------------------------

def start(idle_s: float = DEFAULT_IDLE_S, timeout_s: float = 60.0) -> dict:
    """Start a server for this rivet in the background (if none answers yet) and wait until it answers."""
    import subprocess
    import time
    k = key()
    status = request("status", k)
    if status is not None:
        return {**status, "already_running": True}
    folder = runtime_dir()
    os.makedirs(folder, mode=0o700, exist_ok=True)
    if not _private(folder):
        from engine.errors import RivetError
        raise RivetError("RIVET_WARM_DIR_UNSAFE", f"{folder} is not a directory only this user can use",
                         f"remove it, or point {DIR_ENV} at a directory of mode 0700 that you own")
    log = os.path.join(folder, f"{k}.log")
    with open(log, "ab") as out:
        # -P and cwd "/": nothing from the caller's directory shadows rivet's modules, nor stays busy
        proc = subprocess.Popen([sys.executable, "-P", "-m", "rivet_tui.warm", k, str(idle_s)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                                cwd="/", env={**os.environ, ENV_SWITCH: "0"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = request("status", k)
        if status is not None:
            return {**status, "already_running": False}
        if proc.poll() is not None and request("status", k) is None:
            break
        time.sleep(0.05)
    from engine.errors import ExitClass, RivetError
    with open(log, errors="replace") as out_text:
        tail = out_text.read()[-2000:].strip()
    raise RivetError("RIVET_WARM_START_FAILED", f"the warm server did not come up: {tail or 'no output'}",
                     f"its log: {log}", ExitClass.INTERNAL)


class _Run:
    """One forked command: its client connection and the child's pidfd."""

    def __init__(self, conn: socket.socket, pid: int):
        self.conn, self.pid = conn, pid
        self.pidfd = os.pidfd_open(pid)
        self.pending = b""


class _Server:
    """The server's loop (`python -m rivet_tui.warm KEY IDLE_S`): one thread, no DuckDB instance of its own, so a
    fork copies nothing half-done. Each command is a child; its client's connection carries the signals in and the
    exit status out; the child's pidfd says when it ended."""

    def __init__(self, k: str, idle_s: float):
        import selectors
        import time
        self.key, self.idle_s, self.path = k, idle_s, socket_path(k)
        self.sel = selectors.DefaultSelector()
        self.runs: dict[int, _Run] = {}
        self.served, self.started, self.idle_since, self.stopping = 0, time.time(), time.monotonic(), False
        self.lock = open(self.path[:-len(".sock")] + ".lock", "w")
        self.listener: socket.socket | None = None

    def log(self, msg: str) -> None:
        """One line on stdout, which is <key>.log: past LOG_MAX_BYTES it becomes <key>.log.1 and a new one starts."""
        from datetime import datetime, timezone
        print(f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ} {msg}", flush=True)
        if os.fstat(1).st_size > LOG_MAX_BYTES:
            path = self.path[:-len(".sock")] + ".log"
            os.replace(path, path + ".1")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)

    def run(self) -> None:
        import fcntl
        import signal
        import socket
        import time
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.log("another server holds this key's lock; exiting")
            return
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))   # `kill` of the server: still remove the socket
        self._preload()
        if os.path.exists(self.path):
            os.unlink(self.path)         # we hold the lock: a socket left here is a dead server's
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path + ".new")
        listener.listen(64)
        os.rename(self.path + ".new", self.path)   # a client never finds a socket that is not yet listening
        self.listener = listener
        self.sel.register(listener, READ, None)
        self.log(f"serving {self.path} (pid {os.getpid()}, idle timeout {self.idle_s:g} s)")
        self.idle_since = time.monotonic()     # idle from now, not from before the imports
        try:
            self._loop()
        finally:
            if self.listener is not None:
                self._close_listener()

    def _preload(self) -> None:
        import gc
        import importlib
        arrow_allocator()                # as entry() does before pyarrow loads (the key says it was set)
        for name in PRELOAD:
            try:
                importlib.import_module(name)
            except ImportError:          # an optional driver not installed (pymssql): the child imports on demand
                pass
        gc.collect()
        gc.freeze()                      # the imports' objects stay out of every child's collections (and shared)

    def _close_listener(self) -> None:
        assert self.listener is not None
        self.sel.unregister(self.listener)
        self.listener.close()
        self.listener = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _loop(self) -> None:
        import time
        while True:
            if not self.runs and (self.stopping or time.monotonic() - self.idle_since > self.idle_s):
                self.log("stopped" if self.stopping else f"idle for {self.idle_s:g} s; exiting")
                return
            for sk, _ in self.sel.select(timeout=1.0):
                if sk.data is None:
                    self._accept()
                elif isinstance(sk.data, _Run):
                    self._from_client(sk.data)
                else:
                    self._ended(sk.data)

    def _accept(self) -> None:
        import json
        assert self.listener is not None
        conn, _ = self.listener.accept()
        msg, fds = _receive(conn)
        op = msg.get("op") if msg else None
        if op == "run" and len(fds) == 3 and not self.stopping:
            pid = self._fork(conn, msg, fds)
            run = _Run(conn, pid)
            self.runs[pid] = run
            self.sel.register(conn, READ, run)
            self.sel.register(run.pidfd, READ, pid)
            self.served += 1
            self.log(f"run {pid}: {' '.join(msg['argv'][1:])} (cwd {msg['cwd']})")
            _reply(conn, b"forked\n")
            return
        for fd in fds:
            os.close(fd)
        if op == "status":
            _reply(conn, json.dumps({"pid": os.getpid(), "key": self.key, "socket": self.path,
                                     "served": self.served, "running": len(self.runs),
                                     "idle_timeout_s": self.idle_s, "started_at": self.started}).encode() + b"\n")
        elif op == "stop":
            self.stopping = True
            self._close_listener()
            _reply(conn, json.dumps({"stopping": True, "running": len(self.runs)}).encode() + b"\n")
        else:
            _reply(conn, b"refused\n")
        conn.close()

    def _from_client(self, run: _Run) -> None:
        """A signal to forward, or the client is gone (SIGKILL): then its command goes too."""
        try:
            data = run.conn.recv(256)
        except OSError:
            data = b""
        if not data:
            _kill(run.pid, 9)
            self.sel.unregister(run.conn)
            return
        run.pending += data
        *lines, run.pending = run.pending.split(b"\n")
        for line in lines:
            if line.strip().isdigit():
                _kill(run.pid, int(line))

    def _ended(self, pid: int) -> None:
        import time
        run = self.runs.pop(pid)
        _, status = os.waitpid(pid, 0)
        self.sel.unregister(run.pidfd)
        os.close(run.pidfd)
        line = b"signal %d\n" % os.WTERMSIG(status) if os.WIFSIGNALED(status) \
            else b"exit %d\n" % os.waitstatus_to_exitcode(status)
        self.log(f"run {pid}: {line.decode().strip()}")
        if self.sel.get_map().get(run.conn.fileno()) is not None:
            self.sel.unregister(run.conn)
        _reply(run.conn, line)
        run.conn.close()
        if not self.runs:
            self.idle_since = time.monotonic()

    def _fork(self, conn: socket.socket, msg: dict, fds: list[int]) -> int:
        pid = os.fork()
        if pid:
            for fd in fds:
                os.close(fd)
            return pid
        try:                                 # the child: let go of the server, become the client's command
            self._become(conn, msg, fds)
        except SystemExit as e:              # entry() leaves it to us when a non-daemon thread still runs
            import threading
            for t in threading.enumerate():
                if t is not threading.main_thread() and not t.daemon:
                    t.join()
            exit_now(e.code)
        except BaseException:
            import traceback
            traceback.print_exc()
            exit_now(INTERNAL_EXIT)
        return 0   # not reached: the child always exits above

    def _become(self, conn: socket.socket, msg: dict, fds: list[int]) -> None:
        import signal
        import time
        for name in FORWARDED_SIGNALS + ("SIGCHLD",):   # as in a fresh Python process: Ctrl-C raises
            signal.signal(getattr(signal, name), signal.SIG_DFL)   # KeyboardInterrupt, the rest keep the default
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _die_with_parent()
        conn.close()
        if self.listener is not None:
            self.listener.close()
        for run in self.runs.values():
            run.conn.close()
            os.close(run.pidfd)
        self.sel.close()
        self.lock.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(msg["cwd"])
        os.umask(msg["umask"])
        os.environ.clear()
        os.environ.update(msg["env"])
        time.tzset()
        encoding, errors = sys.stdout.encoding, sys.stdout.errors
        sys.stdin = open(0, "r", encoding=encoding, errors=errors, closefd=False)
        sys.stdout = open(1, "w", encoding=encoding, errors=errors, closefd=False,
                          buffering=1 if os.isatty(1) else -1)
        sys.stderr = open(2, "w", encoding=encoding, errors="backslashreplace", closefd=False, buffering=1)
        sys.argv = list(msg["argv"])
        from rivet_tui.cli import entry as run_here
        run_here()                           # ends the process itself (os._exit)
        exit_now(0)


def _reply(conn: socket.socket, line: bytes) -> None:
    try:
        conn.sendall(line)
    except OSError:
        pass


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _receive(conn: socket.socket) -> tuple[dict | None, list[int]]:
    """One length-prefixed JSON message and the descriptors sent with it."""
    import array
    import json
    import socket
    import struct
    conn.settimeout(5.0)   # the client sends at once; a mute one must not hold up the others
    fds: list[int] = []
    try:
        data, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(3 * 4))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(payload[:len(payload) - len(payload) % 4])
                fds.extend(got)
        if len(data) < 4:
            return None, fds
        size = struct.unpack("!I", data[:4])[0]
        body = data[4:]
        while len(body) < size:
            more = conn.recv(size - len(body))
            if not more:
                return None, fds
            body += more
        return json.loads(body), fds
    except (OSError, ValueError):
        return None, fds
    finally:
        conn.settimeout(None)


def _die_with_parent() -> None:
    """The child dies with the server (PR_SET_PDEATHSIG): no run outlives the process that reports its status."""
    import ctypes
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, 9)   # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


if __name__ == "__main__":
    _Server(sys.argv[1], float(sys.argv[2])).run()
