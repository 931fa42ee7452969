"""Where each of N worker processes runs: spread over every visible GPU (several per GPU allowed),
or, on a CPU, a share of its cores. The settings are config keys outside the run identity."""
from __future__ import annotations

import os
import socket
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
