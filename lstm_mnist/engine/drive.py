"""The engine every command trains through (`ablate`, tuned grids, `tune`): a work source hands out jobs, the
writer records them, and they train in this process, in worker processes (pool.py) or as Ray tasks
(ray_tasks.py).

A work source is a `Source` (below); a job may carry trial hooks (jobs.TrialHooks), which the writer calls.
The runs that hold the jobs' runs (a grid's parent, a study's parent, an arm's tuning run) are made
once under a claim (`held_run`), however many invocations start together.
"""
from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Protocol

from .. import claims
from ..errors import ConfigError, Preempted
from ..machine import lease
from ..tracking import groups, query
from .jobs import Job
from .pool import parallel, serial
from .writer import Writer


class Source(Protocol):
    """What the engine trains: a plain grid's queue (pool.Queue), a tuned grid's schedule, a study's trials."""

    def take(self, where: dict) -> Job | None:
        """The next job, claimed and its run open (`where`: the tags of where it trains), or None when none can
        start now."""

    def more(self) -> bool:
        """Whether work may still come (a job now, or once another process's trials end)."""

    def beating(self) -> list[tuple]:
        """(storage, trial id) of the trials this process trains: the heartbeat keeps them alive."""

    def finish(self) -> None:
        """At the end, finished or not: what this process leaves unfinished is handed back."""


SIGNALS_ENV = "LSTM_MNIST_PREEMPT_SIGNALS"  # the signals that stop a command to be resumed: default TERM,USR1


def preempt_signals() -> list[signal.Signals]:
    """SIGTERM (what a scheduler, `kill` and a spot instance's shutdown send) and SIGUSR1 (SLURM's usual requeue
    signal, `sbatch --signal=B:USR1@120`), or those $LSTM_MNIST_PREEMPT_SIGNALS names (e.g. "TERM,USR2")."""
    names = [n.strip().upper() for n in os.environ.get(SIGNALS_ENV, "TERM,USR1").split(",") if n.strip()]
    out = []
    for name in names:
        try:
            out.append(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])
        except KeyError:
            raise ConfigError(f"{SIGNALS_ENV}={os.environ[SIGNALS_ENV]!r}: {name} is not a signal; give names such "
                              "as TERM,USR1") from None
    return out


@contextmanager
def preemptible():
    """While the engine trains, a preemption signal stops it as Preempted: the handler only records it, and the
    engine's loop (between its steps) and the training in this process (at a step's end) raise it where
    stopping leaves nothing half written; the caller ends the runs KILLED and keeps every checkpoint. Registered
    before any trainer starts, so Lightning leaves these signals to us (it installs its own only where none
    is)."""
    from ..training import resume

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, lambda signum, frame: resume.request_stop(signum)) for s in preempt_signals()}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        resume.clear_stop()


def drive(source: Source, writer: Writer, n_workers: int, held: lease.Lease, pin: bool = True, ray=None,
          most: int | None = None) -> None:
    """Train what `source` hands out until it has nothing more, `n_workers` jobs at once (on Ray: what the
    cluster holds, at most `most`); a heartbeat marks this process's claims (and the trials `source.beating()`
    names) alive meanwhile. Runs still open when it stops early end KILLED (a preemption signal: Preempted,
    their checkpoints kept for the next start)."""
    heartbeat = claims.Heartbeat(writer.claims, source.beating)
    heartbeat.start()
    try:
        with writer.progress, preemptible():
            if ray is not None:
                from . import ray_tasks

                ray_tasks.run(source, writer, ray, writer.progress.line, most)
            elif n_workers == 1:
                serial(source, writer, held, pin)
            else:
                parallel(source, n_workers, writer, held, pin)
    except Preempted as e:
        writer.kill_open(f"preempted ({e}): resumes from its checkpoint at the next start")
        raise
    finally:
        heartbeat.stop()
        writer.kill_open()


@contextmanager
def capacity(n_workers: int, ray=None, runs=None):
    """(cells trained at once, this host's core lease): `n_workers` local workers; or, with Ray, what the
    cluster holds now (Ray places the cells; this host only writes, on one leased share). `runs`: a config the
    work trains at; trained here, a device or precision this host lacks is one line now, not a failed run each."""
    if ray is None and runs is not None and (runs.device != "auto" or runs.precision != "32"):
        from ..training import devices

        devices.resolve_device(runs)
    if ray is not None:
        from . import ray_tasks

        n_workers = ray_tasks.join(ray)
    with lease.Lease(1 if ray is not None else n_workers) as held:
        yield n_workers, held


def held_run(held_by: claims.Claims, key: str, make: Callable[[], str], tags: dict, c, reopen: bool = True) -> str:
    """The one run `make()` creates for `key` under a claim; made by another invocation (now, or an earlier
    one), it is continued: reopened RUNNING with this invocation's `tags` (unless `reopen` is False)."""
    run_id, made = claims.once(held_by, key, make, valid=lambda r: query.exists(r, c))
    if not made and reopen:
        groups.reopen(run_id, tags, c)
    return run_id
