"""A host-wide core lease: invocations on one host (and their workers) divide its cores instead of each
taking all of them.

Every `ablate` or `tune` process that trains holds a lease: a small file in a folder shared by the host's
processes, naming the process (host:pid:start, so a recycled pid is not mistaken for it) and how many
workers it runs. Before each cell (or trial) a worker asks for its share: all live holders' workers, in the
order the holders started, split the visible cores as `cores.cpu_share` splits them among one invocation's
workers. So two invocations started together get half the cores each, and when one ends the other's next
cell takes them all. A holder that dies is ignored from then on (its file names a dead process) and its
file removed by the next reader: nothing to release by hand.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from . import cores, host

ENV = "LSTM_MNIST_LEASE_DIR"  # where the lease files live (default: a per-user folder in the temp directory)


def folder() -> Path:
    default = Path(tempfile.gettempdir()) / f"lstm-mnist-cores-{os.getuid() if hasattr(os, 'getuid') else 0}"
    return Path(os.environ.get(ENV) or default)


class Lease:
    """This process's lease on a share of the host's cores, for `workers` workers; a context manager."""

    def __init__(self, workers: int):
        self.workers, self.pid = workers, os.getpid()
        self.path = folder() / f"{self.pid}.json"

    def __enter__(self) -> "Lease":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"stamp": host.process_stamp(self.pid), "workers": self.workers}))
        tmp.replace(self.path)  # whole or absent: a reader never sees half a file
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)

    def share(self, index: int) -> list[int]:
        return share(index, self.pid)


def holders() -> list[tuple[int, int]]:
    """(pid, workers) of every live lease on this host, oldest process first; dead ones' files removed."""
    live = []
    for path in folder().glob("*.json"):
        try:
            entry = json.loads(path.read_text())
            stamp, n = str(entry["stamp"]), int(entry["workers"])
            _, pid, start = stamp.split(":")
            pid = int(pid)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # removed meanwhile (files are replaced whole, never seen half-written)
        if host.process_stamp(pid) != stamp:  # gone, or the pid now belongs to another process
            path.unlink(missing_ok=True)
            continue
        live.append((int(start) if start.isdigit() else 0, pid, max(1, n)))
    return [(pid, n) for _, pid, n in sorted(live)]


def share(index: int, holder_pid: int | None = None) -> list[int]:
    """The cores worker `index` of the lease held by `holder_pid` (default: this process) may use now: its
    slice when every live holder's workers split the visible cores; all of its own share when it holds no
    lease (then the host has no other claimant it knows of)."""
    pid = holder_pid or os.getpid()
    live = holders()
    offset, total, mine = 0, sum(n for _, n in live), None
    for holder, n in live:
        if holder == pid:
            mine = (offset, n)
        offset += n
    if mine is None or not 0 <= index < mine[1]:
        return cores.cpu_share(0, 1)
    return cores.cpu_share(mine[0] + index, total)
