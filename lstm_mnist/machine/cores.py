"""Where each of N worker processes runs: spread over every visible GPU (several per GPU allowed), each
pinned to its own share of the CPU cores, torch's threads sized to that share. The settings are config keys
outside the run identity."""
from __future__ import annotations

import json
import os
from pathlib import Path


AUTO_PER_GPU = 4  # `--workers auto` without a gpu-check figure for this GPU: 4 per GPU, bounded by the cores


_unpinned: list[int] | None = None  # this process's cores before pin() narrowed them


def settings(index: int, n_workers: int, share: list[int] | None = None) -> dict:
    """Config overrides (device, num_threads) for worker `index` of `n_workers`; num_threads is the size of
    the worker's core share (`share`, as the host's lease gives it; else its own slice of this invocation's
    cores), the same number pin_to() gives torch."""
    import torch  # in the functions that use it: leasing cores needs no torch (seconds of imports)

    n_gpus = torch.cuda.device_count()
    threads = len(cpu_share(index, n_workers) if share is None else share)
    if n_gpus:
        return {"device": f"cuda:{index % n_gpus}", "num_threads": threads}
    return {"device": "cpu", "num_threads": threads}


def _visible_cores() -> list[int]:
    """The cores this process may run on, as they were before pin(): a pinned worker still computes the
    same shares as its parent did."""
    if _unpinned is not None:
        return list(_unpinned)
    return affinity() or list(range(os.cpu_count() or 1))


def visible_count() -> int:
    return len(_visible_cores())


def cpu_share(index: int, n_workers: int) -> list[int]:
    """Worker `index`'s own contiguous slice of the visible cores, so N workers' threads never fight over
    one core; with more workers than cores, worker i gets core i mod cores (round-robin sharing)."""
    if not 0 <= index < n_workers:
        raise ValueError(f"worker index {index} outside 0..{n_workers - 1}")
    cores = _visible_cores()
    if n_workers > len(cores):
        return [cores[index % len(cores)]]
    return cores[index * len(cores) // n_workers:(index + 1) * len(cores) // n_workers]


def pin(index: int, n_workers: int) -> list[int]:
    """Bind this process to worker `index`'s core share (see `pin_to`)."""
    return pin_to(cpu_share(index, n_workers))


def pin_to(share: list[int]) -> list[int]:
    """Bind this process to these cores and size torch's thread pool to them; returns the share, or [] where
    the OS cannot pin (not Linux, or the cores are not ours to take): the process then runs as before."""
    global _unpinned
    if not hasattr(os, "sched_setaffinity"):
        return []
    before = _visible_cores()
    try:
        os.sched_setaffinity(0, share)
    except OSError:
        return []
    _unpinned = before
    import torch

    torch.set_num_threads(len(share))
    return share


def affinity() -> list[int]:
    """The cores this process runs on now (after pin()); [] where the OS cannot say."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return []


def share_text(cores: list[int]) -> str:
    """A core share for a run tag, in Linux's cpulist style: [0, 1, 2, 3] -> "0-3", [0, 2] -> "0,2"."""
    if not cores:
        return "unpinned"
    ordered = sorted(set(cores))
    runs = [[ordered[0], ordered[0]]]
    for c in ordered[1:]:
        if c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def auto_workers(report: str | Path = "reports/gpu-check.json", mps: bool = False) -> tuple[int, str]:
    """`--workers auto`: what gpu-check last recommended for this GPU (times the GPUs, at most one worker
    per core), else 4 per GPU bounded by the cores, and on a CPU one worker per core. The text says which
    rule applied, for the user and the run's tags."""
    import torch

    cores, n_gpus = visible_count(), torch.cuda.device_count()
    if not n_gpus:
        return cores, f"no GPU: one worker per CPU core ({cores})"
    name = torch.cuda.get_device_name(0)
    per_gpu = _recommended(Path(report), name, mps)
    if per_gpu:
        n = max(1, min(per_gpu * n_gpus, cores))
        return n, (f"gpu-check ({report}) recommended {per_gpu} per {name}{' with MPS' if mps else ''}; "
                   f"x {n_gpus} GPU{'s' * (n_gpus > 1)}, at most {cores} (the CPU cores)")
    n = max(1, min(AUTO_PER_GPU * n_gpus, cores))
    return n, (f"{AUTO_PER_GPU} per GPU x {n_gpus} GPU{'s' * (n_gpus > 1)}, at most {cores} (the CPU cores); "
               f"no gpu-check figure for {name} in {report} (`python -m lstm_mnist gpu-check` measures one)")


def _recommended(report: Path, gpu_name: str, mps: bool) -> int | None:
    """The per-GPU worker count a GPU gpu-check run on this GPU model recommended, if there is one."""
    try:
        figures = json.loads(report.read_text())
        if figures.get("cpu_smoke") or figures["gpu"]["name"] != gpu_name:
            return None
        n = figures["recommended"]["mps" if mps else "plain"]["workers"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # no report, an unreadable one, or one without this figure: the default rule applies
    return n if type(n) is int and n >= 1 else None


def from_arg(text: str, report: str | Path = "reports/gpu-check.json", mps: bool = False) -> tuple[int, str]:
    """`--workers N|auto` -> (N, why); a bad value is a one-line ConfigError."""
    from ..errors import ConfigError

    if text.strip().lower() == "auto":
        return auto_workers(report, mps)
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"--workers {text}: give a whole number >= 1, or auto")
    return int(text), "given on the command line"
