"""The CLI as a fresh process, without paying its imports every time: forked from a launcher that imported
the heavy libraries once.

`python -m lstm_mnist ...` spends about 8 s of CPU importing torch, Lightning (with torchmetrics and
torchvision) and MLflow before it reads its first argument; the suite starts some 70 of them on 2 cores.
A launcher process (one per test session, shared by `pytest -n`'s processes, started on first use) imports
those libraries and nothing of the harness, starts no thread and runs no torch op, then forks one child per
command: the child takes the command's cwd, environment, argv and stdin/stdout/stderr, imports `lstm_mnist`
fresh and runs it as `python -m lstm_mnist` would (runpy, `__main__`, atexit handlers, exit status), so
each command is its own process with its own pid that tests signal, kill and watch as before. What differs
from a cold start is only that those libraries were imported earlier; `fresh=True` (or a
`prefix` command) starts a real interpreter for the tests about imports and process start-up. A command's
forkserver (its grid's or study's workers) is a fork of it taken before it ran (`_forkserver_in_waiting`),
and `code=` runs `python -c code` the same way (processes racing for a store or a claim).

`popen(...)` returns a Popen look-alike (pid, stdout, stderr, poll, wait, communicate, send_signal, kill,
returncode); `run(...)` a CompletedProcess.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRELOADED = ("torch", "torchvision", "torchmetrics", "lightning", "mlflow", "optuna", "pandas", "scipy.stats",
             "matplotlib", "mlflow.store.tracking.sqlalchemy_store", "mlflow.pytorch", "sqlalchemy.dialects.sqlite")
_server: dict = {}  # the launcher this pytest process uses: {"path": its socket, "stamp": pid:start time}


# ---------------------------------------------------------------- the launcher (python -m tests.launcher SOCKET)
def serve(path: str, owner: int) -> None:
    import importlib

    import matplotlib

    matplotlib.use("Agg")
    for name in PRELOADED:
        importlib.import_module(name)
    from mlflow.utils import requirements_utils

    requirements_utils._init_packages_to_modules_map()  # MLflow's map of installed packages (2 s of CPU a process)
    import gc

    gc.collect()
    gc.freeze()  # the preloaded heap out of the collector's sight: children do not copy it by collecting
    if threading.active_count() != 1:  # a thread would be lost (and its locks held) in every child
        raise SystemExit(f"launcher: a preloaded library started threads: {threading.enumerate()}")
    base_path = [p for p in sys.path if p and Path(p).resolve() != REPO]
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    waiting: dict[int, socket.socket] = {}  # child pid -> the connection told its exit status
    while alive(owner):  # the test session (every pytest process of it) is still there
        ready, _, _ = select.select([srv], [], [], 0.05)
        if ready:
            conn, _ = srv.accept()
            pid = _start(conn, srv, waiting, base_path)
            waiting[pid] = conn
        while waiting:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = waiting.pop(pid, None)
            if conn is not None:
                try:
                    conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                except OSError:
                    pass
                conn.close()
    import shutil

    shutil.rmtree(Path(path).parent, ignore_errors=True)  # its socket, pid file and lock: the session is over


def _send(sock: socket.socket, message: dict, fds: list[int]) -> None:
    """One request on a Unix socket: its length (16 bytes, with the fds), then its JSON."""
    body = json.dumps(message).encode()
    socket.send_fds(sock, [str(len(body)).encode().ljust(16)], fds)
    sock.sendall(body)


def _receive(conn: socket.socket, max_fds: int) -> tuple[dict | None, list[int]]:
    """The request `_send` sent, and its fds; (None, []) at end of file."""
    try:
        head, fds, _, _ = socket.recv_fds(conn, 16, max_fds)
    except OSError:
        return None, []
    if not head:
        return None, []
    size, body = int(head.decode()), b""
    while len(body) < size:
        body += conn.recv(size - len(body))
    return json.loads(body), fds


def _exit_code(e: SystemExit) -> int:
    """The status `python` ends with on SystemExit (a code that is not a number is printed, status 1)."""
    if e.code is None or isinstance(e.code, int):
        return e.code or 0
    print(e.code, file=sys.stderr)
    return 1


def _start(conn: socket.socket, srv: socket.socket, waiting: dict, base_path: list[str]) -> int:
    request, fds = _receive(conn, 3)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        conn.sendall(f"{pid}\n".encode())
        return pid
    srv.close()
    for other in waiting.values():
        other.close()
    conn.close()
    # Out of the serving loop and to the interpreter's own exit: non-daemon threads joined, atexit handlers,
    # objects finalized (an SQLite store's connections closed, its WAL checkpointed), as after `python -m`.
    raise SystemExit(_child(request, fds, base_path))


def _child(request: dict, fds: list[int], base_path: list[str]) -> int:
    """Become the command's process and run it; returns its exit code."""
    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in set(fds):
            if fd > 2:
                os.close(fd)
        # What a fresh interpreter installs, also where the suite runs with SIGINT ignored (`make test &`,
        # nohup), which a child would inherit and Python then keep: Ctrl-C tests need it. (The launcher is
        # itself a Python process: SIGPIPE and the rest are already as Python sets them.)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import multiprocessing.process
        import random

        import numpy as np

        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        multiprocessing.process.ORIGINAL_DIR = os.getcwd()  # set when multiprocessing was imported (spawn uses it)
        random.seed()
        np.random.seed()  # each process its own entropy, as a fresh one has
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = [os.getcwd(), *extra, *base_path]  # `python -m`: the cwd first, then PYTHONPATH
        if os.environ.get("PYTHONUNBUFFERED"):
            sys.stdout.reconfigure(write_through=True)
            sys.stderr.reconfigure(write_through=True)
        source = request.get("code")
        sys.argv = ["-c" if source else "-m", *request["args"]]
        _forkserver_in_waiting()
        import runpy

        try:
            if source:  # python -c SOURCE ARGS
                sys.path[0] = ""
                exec(compile(source, "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
            else:
                runpy.run_module("lstm_mnist", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            code = _exit_code(e)
        except KeyboardInterrupt:
            code = 128 + signal.SIGINT
        except BaseException:  # noqa: BLE001 - printed as the interpreter would, then exit 1
            import traceback

            traceback.print_exc()
    except BaseException:  # noqa: BLE001 - the set-up itself failed: say so on the command's stderr
        import traceback

        traceback.print_exc()
    return code


def _forkserver_in_waiting() -> None:
    """A grid's or a study's forkserver (machine/host.worker_context) made from a fork of this command's
    process taken before the command runs, instead of a fresh interpreter that imports torch and Lightning
    again (15-40 s of CPU on these 2 cores; the suite starts dozens).

    The fork waits, as this process's child, holding nothing but a socket. When the command starts its
    forkserver, the fds multiprocessing passes it, the environment and the working directory are handed
    to the waiting fork, which runs multiprocessing's own forkserver code with them, as the fresh
    interpreter would. So the forkserver is, as for a user, a child of the command that never opened a
    store (SQLite's locks do not survive a fork of a process that had the database open), and workers,
    their pids, exit codes, kills and the forkserver's end when the command dies are the user's. What
    differs is only that torch and the rest were imported before. One forkserver per command this way
    (a second start is a real one); the fork ends when the command does. Tests that start a real
    interpreter (`fresh=True`, `prefix`) keep the fresh forkserver covered."""
    import multiprocessing.util

    mine, its = socket.socketpair()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        mine.close()
        _wait_to_serve(its)
    its.close()
    real, taken = multiprocessing.util.spawnv_passfds, []

    def spawnv_passfds(path, args, passfds):
        at = args.index("-c") if "-c" in args else -1
        if taken or at < 0 or not args[at + 1].startswith("from multiprocessing.forkserver import main"):
            return real(path, args, passfds)
        taken.append(pid)
        _send(mine, {"args": list(args[at + 1:]), "passfds": list(passfds), "env": dict(os.environ),
                     "cwd": os.getcwd()}, list(passfds))
        if mine.recv(1) != b"1":
            raise OSError("the forkserver in waiting did not start")
        return pid

    multiprocessing.util.spawnv_passfds = spawnv_passfds


def _wait_to_serve(conn: socket.socket) -> None:
    """The fork in waiting: until the command hands it a forkserver's fds (then it becomes that forkserver)
    or ends (end of file: it ends too). Never returns."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to the group is the command's, not ours
        old = conn.detach()
        conn = socket.socket(fileno=fcntl.fcntl(old, fcntl.F_DUPFD, 1000))  # out of the passed fds' way
        os.close(old)
        request, fds = _receive(conn, 16)
        if request is None:
            os._exit(0)
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 1000) for fd in fds]  # out of the targets' way first
        for fd in fds:
            os.close(fd)
        keep = {0, 1, 2, *request["passfds"], conn.fileno()}
        for fd in map(int, os.listdir("/proc/self/fd")):  # a fresh process holds only the passed fds
            if fd not in keep and fd not in high:
                try:
                    os.close(fd)
                except OSError:
                    pass
        for fd, target in zip(high, request["passfds"]):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        conn.sendall(b"1")
        conn.close()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.argv = ["-c", *request["args"][1:]]
        exec(compile(request["args"][0], "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as e:
        code = _exit_code(e)
    except BaseException:  # noqa: BLE001 - printed as the interpreter would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# ---------------------------------------------------------------- the client (in the tests)
def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first); None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _stamp(pid: int) -> str:
    """pid:start time of a live process ("" when it is gone or a zombie): a pid alone may have been reused."""
    fields = proc_stat(pid)
    return f"{pid}:{fields[19]}" if fields and fields[0] != "Z" else ""


def alive(pid: int) -> bool:
    return bool(_stamp(pid))


def _still(stamp: str) -> bool:
    """The process `stamp` was taken of is still running (not a later one with its pid)."""
    return bool(stamp) and _stamp(int(stamp.split(":")[0])) == stamp


def _launcher() -> str:
    """The socket of the session's launcher, started by the first pytest process that needs it. One for all
    of `pytest -n N`'s processes (each would otherwise spend 25 s of CPU on the same imports); it serves
    until the session's main process is gone."""
    if _server and _still(_server["stamp"]):
        return _server["path"]
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # the same in every worker process of one `pytest -n`
    owner = os.getppid() if run else os.getpid()     # xdist's main process, or this one
    folder = Path(tempfile.gettempdir()) / f"lstm-mnist-launcher-{run or os.getpid()}"
    folder.mkdir(exist_ok=True)
    path, pid_file = folder / "socket", folder / "pid"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one start, however many processes ask at once
        stamp = pid_file.read_text() if pid_file.exists() else ""  # an earlier session's launcher, maybe
        if not _still(stamp):
            path.unlink(missing_ok=True)
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            proc = subprocess.Popen([sys.executable, "-m", "tests.launcher", str(path), str(owner)], cwd=REPO,
                                    env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"the test launcher did not start (exit {proc.wait()})")
            stamp = _stamp(proc.pid)
            pid_file.write_text(stamp)
    _server.update(path=str(path), stamp=stamp)
    return str(path)


class Launched:
    """A command forked by the launcher, with Popen's interface."""

    def __init__(self, args, cwd, env, stdout, stderr, text, code=None):
        fds, mine = [os.open(os.devnull, os.O_RDONLY)], {}
        for i, want in enumerate((stdout, stderr), start=1):
            if want == subprocess.STDOUT:
                fds.append(fds[1])
            elif want == subprocess.PIPE:
                mine[i], w = os.pipe()
                fds.append(w)
            elif want == subprocess.DEVNULL:
                fds.append(os.open(os.devnull, os.O_WRONLY))
            else:  # None: this process's own; else a file or a descriptor
                fds.append(os.dup(i if want is None else want if isinstance(want, int) else want.fileno()))
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(_launcher())
        _send(self._sock, {"args": list(map(str, args)), "cwd": str(cwd), "env": env, "code": code}, fds)
        for fd in set(fds):
            os.close(fd)
        self._reply = self._sock.makefile("r")
        self.pid = int(self._reply.readline())
        self.stdout, self.stderr = (open(mine[i], "r" if text else "rb") if i in mine else None for i in (1, 2))
        self.returncode: int | None = None
        self.args = args

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._sock], [], [], 0)[0]:
            line = self._reply.readline()
            self.returncode = int(line) if line else -signal.SIGKILL  # the launcher itself gone
            self._sock.close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            select.select([self._sock], [], [], 0.5 if left is None else min(left, 0.5))
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple:
        out: dict = {}
        readers = [threading.Thread(target=lambda k=k, s=s: out.__setitem__(k, s.read()), daemon=True)
                   for k, s in (("out", self.stdout), ("err", self.stderr)) if s is not None]
        for t in readers:
            t.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in readers:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return out.get("out"), out.get("err")

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def popen(args, cwd, env: dict | None = None, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text: bool = True,
          fresh: bool = False, prefix: tuple[str, ...] = (), code: str | None = None):
    """`python -m lstm_mnist *args` (or `python -c code *args`) in `cwd`, with os.environ + PYTHONPATH=the
    repo + `env`."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    if fresh or prefix:
        head = ["-c", code] if code else ["-m", "lstm_mnist"]
        return subprocess.Popen([*prefix, sys.executable, *head, *map(str, args)], cwd=cwd, env=full_env,
                                stdout=stdout, stderr=stderr, text=text)
    return Launched(args, cwd, full_env, stdout, stderr, text, code)


def run(args, cwd, env: dict | None = None, timeout: float = 300, fresh: bool = False,
        code: str | None = None) -> subprocess.CompletedProcess:
    proc = popen(args, cwd, env, fresh=fresh, code=code)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(list(args), proc.returncode, out, err)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
