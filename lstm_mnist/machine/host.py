"""This host and its processes: what the machine is (for every run's tags), how this process was started,
whether a process is still the one that was recorded, where worker processes come from, naming them, and
dying with the parent."""
from __future__ import annotations

import functools
import os
import signal
import socket
import threading
import time
from pathlib import Path

from .cores import visible_count


@functools.cache
def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC ..."), "" where the OS does not say."""
    import platform

    try:
        return next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), "")
    except OSError:
        return platform.processor()


def describe() -> str:
    """What this machine is, in one line: OS, architecture, CPU model and count, and its GPUs if any."""
    import platform

    import torch  # here, not at the top: `report` and a user's mistake need no torch (seconds of imports)

    model = cpu_model()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return (f"{platform.system()} {platform.machine()}, {visible_count()} CPU cores{f' ({model})' if model else ''}"
            + (f", {len(gpus)} x {gpus[0]}" if gpus else ", no GPU"))


def invocation() -> str:
    """How this process was started, as the user would type it (`python -m lstm_mnist ablate FILE ...`)."""
    import shlex
    import sys

    argv = sys.argv or [""]
    if argv[0].endswith(("lstm_mnist/__main__.py", "-m")):
        return "python -m lstm_mnist " + shlex.join(argv[1:])
    return shlex.join(argv)


def name() -> str:
    """This host's identity in process stamps and owner tags: LSTM_MNIST_HOST when set (machines that share a
    store but not a hostname, e.g. containers all called "localhost"), else the hostname."""
    return os.environ.get("LSTM_MNIST_HOST") or socket.gethostname()


def process_stamp(pid: int) -> str | None:
    """host:pid:start-time of a live process, None when it is gone (or a zombie). The start time makes a
    recycled pid look like what it is: another process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (not Linux): the pid alone
        return f"{name()}:{pid}:?"
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces; fields after it do not
    return None if fields[0] == "Z" else f"{name()}:{pid}:{fields[19]}"


def _prctl(option: int, arg) -> bool:
    """Linux's prctl(option, arg); False where there is none (not Linux, no libc.so.6) or it failed."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def worker_context(preload: list[str]):
    """Where a grid's or a study's worker processes come from: a forkserver that imported `preload` (torch,
    Lightning, Optuna: about 8 s of CPU) once, so each worker, and each replacement of a killed one, is a
    fork that costs milliseconds. The forkserver is a fresh interpreter that never touched CUDA, MLflow or
    a store, so nothing of the kind is copied into a worker, as a plain fork of this process would do.
    Spawn (a fresh interpreter per worker) where there is no forkserver."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(preload)
    return ctx


def name_process(name: str) -> None:
    """This process's name as `ps`, `top` and /proc/PID/comm show it (Linux; at most 15 bytes; elsewhere
    nothing): a grid's workers are `lstm-mnist-w0`, `lstm-mnist-w1`, ..., a study's `lstm-mnist-t0`, ..."""
    _prctl(15, name.encode()[:15] + b"\0")  # 15 = PR_SET_NAME


def die_with_parent() -> None:
    """A worker must not outlive its killed main process (SIGKILL skips all cleanup): its cell or trial
    is then retried by the next start. The main process is the one that started this worker, also when a
    forkserver forked it: multiprocessing leaves this process a pipe that ends with the main one, and a
    thread watching it kills this process at once. (PR_SET_PDEATHSIG alone would watch the forkserver,
    which lives on while any of its workers does.) Started otherwise, the direct parent is watched: Linux
    kills us for it (PR_SET_PDEATHSIG); elsewhere a thread notices the new parent pid within a second."""
    import multiprocessing
    from multiprocessing.connection import wait

    main = multiprocessing.parent_process()
    if main is not None and main.sentinel is not None:
        def watch_main():
            wait([main.sentinel])
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch_main, name="die-with-main", daemon=True).start()
    if _prctl(1, signal.SIGKILL):  # 1 = PR_SET_PDEATHSIG
        return
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def comm(pid: int) -> str:
    """A process's name (/proc/PID/comm: `lstm-mnist-w0` for a grid's worker), '' when it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cmdline(pid: int) -> str:
    """A process's command line, its arguments joined by spaces; '' when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(pid: int) -> list[int]:
    """Live processes below `pid` (its workers, and theirs), from /proc; [] where there is none."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parents.items() if p == frontier[-1]]
        frontier.pop()
        found += kids
        frontier += kids
    return found
