"""Where each of N worker processes runs: spread over every visible GPU (several per GPU allowed),
or, on a CPU, a share of its cores. The settings are config keys outside the run identity."""
from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import torch


def settings(index: int, n_workers: int) -> dict:
    """Config overrides (device, num_threads) for worker `index` of `n_workers`."""
    n_gpus = torch.cuda.device_count()
    if n_gpus:
        return {"device": f"cuda:{index % n_gpus}", "num_threads": max(1, _cores() // n_workers)}
    return {"device": "cpu", "num_threads": max(1, _cores() // n_workers)}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine() -> str:
    """What this machine is, in one line: OS, architecture, CPU model and count, and its GPUs if any."""
    import platform

    model = ""
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    except OSError:
        model = platform.processor()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return (f"{platform.system()} {platform.machine()}, {_cores()} CPU cores{f' ({model})' if model else ''}"
            + (f", {len(gpus)} x {gpus[0]}" if gpus else ", no GPU"))


def process_stamp(pid: int) -> str | None:
    """host:pid:start-time of a live process, None when it is gone (or a zombie). The start time makes a
    recycled pid look like what it is: another process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (not Linux): the pid alone
        return f"{socket.gethostname()}:{pid}:?"
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces; fields after it do not
    return None if fields[0] == "Z" else f"{socket.gethostname()}:{pid}:{fields[19]}"


def die_with_parent() -> None:
    """A worker must not outlive its killed main process (SIGKILL skips all cleanup): its cell or trial
    is then retried by the next start. Linux kills it for us (PR_SET_PDEATHSIG); elsewhere a watcher
    thread notices the new parent pid within a second."""
    try:
        import ctypes

        if ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL) == 0:  # 1 = PR_SET_PDEATHSIG
            return
    except (OSError, AttributeError):
        pass
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
