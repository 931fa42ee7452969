"""The CLI as a fresh process, without paying its imports every time: forked from a launcher that imported
the heavy libraries once.

`python -m lstm_mnist ...` spends about 8 s of CPU importing torch, Lightning (with torchmetrics and
torchvision) and MLflow before it reads its first argument; the suite starts some 70 of them on 2 cores.
A launcher process (one per pytest process, started on first use) imports those libraries and nothing of
the harness, starts no thread and runs no torch op, then forks one child per command: the child takes the
command's cwd, environment, argv and stdin/stdout/stderr, imports `lstm_mnist` fresh and runs it as
`python -m lstm_mnist` would (runpy, `__main__`, atexit handlers, exit status), so each command is its own
process with its own pid that tests signal, kill and watch as before. What differs from a cold start is
only that those libraries were imported earlier, under the launcher's environment; `fresh=True` (or a
`prefix` command) starts a real interpreter for the tests about imports and process start-up.

`popen(...)` returns a Popen look-alike (pid, stdout, stderr, poll, wait, communicate, send_signal, kill,
returncode); `run(...)` a CompletedProcess.
"""
from __future__ import annotations

import atexit
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
             "matplotlib")
_server: dict = {}  # this pytest process's launcher: {"proc": Popen, "path": socket path}


# ---------------------------------------------------------------- the launcher (python -m tests.launcher SOCKET)
def serve(path: str) -> None:
    import importlib

    import matplotlib

    matplotlib.use("Agg")
    for name in PRELOADED:
        importlib.import_module(name)
    import gc

    gc.collect()
    gc.freeze()  # the preloaded heap out of the collector's sight: children do not copy it by collecting
    if threading.active_count() != 1:  # a thread would be lost (and its locks held) in every child
        raise SystemExit(f"launcher: a preloaded library started threads: {threading.enumerate()}")
    parent, base_path = os.getppid(), [p for p in sys.path if p and Path(p).resolve() != REPO]
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    waiting: dict[int, socket.socket] = {}  # child pid -> the connection told its exit status
    while os.getppid() == parent:
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


def _start(conn: socket.socket, srv: socket.socket, waiting: dict, base_path: list[str]) -> int:
    head, fds, _, _ = socket.recv_fds(conn, 16, 3)
    size = int(head.decode())
    body = b""
    while len(body) < size:
        body += conn.recv(size - len(body))
    request = json.loads(body)
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
        sys.argv = ["-m", *request["args"]]
        import runpy

        try:
            runpy.run_module("lstm_mnist", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            code = 128 + signal.SIGINT
        except BaseException:  # noqa: BLE001 - printed as the interpreter would, then exit 1
            import traceback

            traceback.print_exc()
    except BaseException:  # noqa: BLE001 - the set-up itself failed: say so on the command's stderr
        import traceback

        traceback.print_exc()
    return code


# ---------------------------------------------------------------- the client (in the tests)
def _launcher() -> str:
    proc = _server.get("proc")
    if proc is not None and proc.poll() is None:
        return _server["path"]
    path = os.path.join(tempfile.mkdtemp(prefix="launcher-"), "socket")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.launcher", path], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the test launcher did not start (exit {proc.wait()})")
    _server.update(proc=proc, path=path)
    atexit.register(proc.kill)
    return path


class Launched:
    """A command forked by the launcher, with Popen's interface."""

    def __init__(self, args, cwd, env, stdout, stderr, text):
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
        body = json.dumps({"args": list(map(str, args)), "cwd": str(cwd), "env": env}).encode()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(_launcher())
        socket.send_fds(self._sock, [str(len(body)).encode().ljust(16)], fds)
        self._sock.sendall(body)
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
          fresh: bool = False, prefix: tuple[str, ...] = ()):
    """`python -m lstm_mnist *args` in `cwd`, with os.environ + PYTHONPATH=the repo + `env`."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    if fresh or prefix:
        return subprocess.Popen([*prefix, sys.executable, "-m", "lstm_mnist", *map(str, args)], cwd=cwd, env=full_env,
                                stdout=stdout, stderr=stderr, text=text)
    return Launched(args, cwd, full_env, stdout, stderr, text)


def run(args, cwd, env: dict | None = None, timeout: float = 300, fresh: bool = False) -> subprocess.CompletedProcess:
    proc = popen(args, cwd, env, fresh=fresh)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return subprocess.CompletedProcess(list(args), proc.returncode, out, err)


if __name__ == "__main__":
    serve(sys.argv[1])
