"""Where each of N worker processes runs: spread over every visible GPU (several per GPU allowed),
or, on a CPU, a share of its cores. The settings are config keys outside the run identity."""
from __future__ import annotations

import os

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
