"""Cells trained in worker processes (`--workers N`), or one at a time in this process.

Each worker has two pipes of its own (an inbox of cells, an outbox of reports) and never touches MLflow: it
trains and reports each epoch and the result, and this process (the one writer) records them. A worker
killed at any instant, even halfway through a report, reads as end-of-file on its own outbox only; one
stopped halfway through a report (SIGSTOP) is killed after MESSAGE_S and its cell fails alone. Each cell
runs on the cores the host-wide lease gives its worker at that moment (machine/lease.py), so several
invocations on one host divide the cores between them.
"""
from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from .. import config
from ..machine import cores, host, lease
from ..tracking import outages, store
from .jobs import Job
from .writer import Writer

MESSAGE_S = 60.0  # a report that has begun must arrive whole within this long (a 2 MB result takes milliseconds)
WAIT_S = 1.0      # with no job to start and none running: how long to wait before asking again


def worker_config(job: Job, index: int, n_workers: int, share: list[int]):
    """The cell's config on worker `index`: its device, and as many threads as its share of the cores (not
    identity), unless the grid's base file or [budget] sets them."""
    extra = cores.settings(index, n_workers, share)
    return config.rebuilt(job.cfg, **{k: v for k, v in extra.items() if k not in job.pinned})


def first_open(pending: deque, writer: Writer, where: dict) -> Job | None:
    """Pop cells until one is claimed by this process and its run opened (others: claimed elsewhere, or
    failed to open); None when none is left."""
    while pending:
        job = pending.popleft()
        if writer.claim(job) and writer.open(job, where):
            return job
    return None


class Queue:
    """A plain grid's work: its cells in order, each claimed and its run opened when a worker takes it. A tuned
    grid's source (grids/tuned/schedule.py) has the same methods and hands out trials as well."""

    def __init__(self, todo: list[Job], writer: Writer):
        self.pending, self.writer = deque(todo), writer

    def take(self, where: dict) -> Job | None:
        """The next job, claimed by this process and its run open; None when none can start now."""
        return first_open(self.pending, self.writer, where)

    def more(self) -> bool:
        """Whether work may still come (a tuned grid's may arrive later: a study another process completes)."""
        return bool(self.pending)

    def beating(self) -> list[tuple]:
        """No trials: a plain grid's cells are kept alive by their claims alone."""
        return []

    def finish(self) -> None:
        """At the grid's end, finished or not: a plain grid has nothing to record beyond its cells."""


class Stop(Exception):
    """Raised from a trial's epoch report in this process (serial): its pruner stops it."""


class Gone(Exception):
    """Raised from a cell's resume report in this process (serial): the writer failed it (its run cannot be
    written); nothing is left to record."""


def serial(source, writer: Writer, held: lease.Lease, pin: bool = True) -> None:
    """One job at a time in this process (no worker startup cost; Ctrl-C lands here directly)."""
    from ..training import resume, train

    while source.more():
        resume.check_stop()  # a preemption signal: stop between two cells (within one: at a step's end)
        share = held.share(0)  # what the lease gives now: other invocations may have started or ended
        job = source.take({"cpu_affinity": cores.share_text(share if pin else [])})
        if job is None:
            time.sleep(WAIT_S)  # the rest waits on work another process is doing (a study's last trials)
            continue
        if pin:
            cores.pin_to(share)
        t0 = time.perf_counter()

        def epoch(e, r, job=job):
            why = writer.epoch(job, e, r)
            if why:
                raise Stop(why)
        def resumed(e, history, why, job=job):
            if not writer.resumed(job, e, history, why):  # its fresh run could not be opened: the cell failed
                raise Gone
        try:
            result = train.fit(worker_config(job, 0, 1, share), on_epoch=epoch, slot=job.slot, on_resume=resumed)
        except outages.StoreDown:
            raise
        except Gone:
            continue
        except Stop as e:
            writer.pruned(job, str(e), time.perf_counter() - t0)
            continue
        except Exception as e:
            writer.failed(job, f"{type(e).__name__}: {e}", time.perf_counter() - t0)
            continue
        writer.finished(job, result, time.perf_counter() - t0)


@dataclass
class Worker:
    proc: mp.Process
    inbox: Connection    # this process's sending end of the worker's inbox pipe
    outbox: Connection   # this process's receiving end of the worker's outbox pipe


class Pool:
    """N worker processes, each with two pipes of its own: an inbox of cells and an outbox of reports.

    Nothing is shared between workers, so a worker killed at any instant (even halfway through writing a
    report) cannot block the others: this process holds only the read end of each outbox, and a dead
    worker's outbox reads as end-of-file, a half-written message included. Every wait here has a timeout."""

    def __init__(self, n_workers: int, pin: bool = True, target=None):
        self.ctx = host.worker_context([__name__, "lstm_mnist.training.train"])
        self.n, self.pin, self.procs, self.target = n_workers, pin, {}, target or _worker
        self.lost: dict[int, str] = {}  # worker index -> why it was given up (stopped mid-message)
        for i in range(n_workers):
            self.spawn(i)

    def spawn(self, i: int) -> None:
        if i in self.procs:  # replacing a dead worker
            self._close(self.procs.pop(i))
        in_read, in_write = self.ctx.Pipe(duplex=False)
        out_read, out_write = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=self.target, args=(i, in_read, out_write), daemon=True,
                                name=f"lstm-mnist-worker-{i}")
        proc.start()
        in_read.close()   # the child's ends, now held by the child alone: when it dies, its outbox reads EOF
        out_write.close()
        self.procs[i] = Worker(proc, in_write, out_read)

    def send(self, i: int, message) -> bool:
        """Hand a worker its cell; False when the worker is already gone."""
        try:
            self.procs[i].inbox.send(message)
            return True
        except OSError:  # BrokenPipeError: it died
            return False

    def receive(self, timeout: float) -> list[tuple[int, tuple | None]]:
        """Reports that arrive within `timeout` s: (worker index, message), or (index, None) for a worker whose
        outbox ended (it died, maybe mid-message)."""
        ends = {w.outbox: i for i, w in self.procs.items() if not w.outbox.closed}
        return [(ends[end], self._recv(ends[end], end)) for end in wait(list(ends), timeout)]

    def _recv(self, i: int, end: Connection):
        """One message, read in a thread so a worker stopped halfway through writing it cannot hold this process:
        after MESSAGE_S the worker is killed (SIGKILL ends a stopped process too), its outbox ends, and the
        reader returns; None for a worker that died or was given up."""
        box: list = []

        def read():
            try:
                box.append(end.recv())
            except (EOFError, OSError):
                pass

        reader = threading.Thread(target=read, name=f"lstm-mnist-read-{i}", daemon=True)
        reader.start()
        reader.join(MESSAGE_S)
        if reader.is_alive():
            self.lost[i] = f"worker process stopped halfway through a report for {MESSAGE_S:.0f} s; killed"
            self.procs[i].proc.kill()
            reader.join(5)
        if not box:
            end.close()
            return None
        return box[0]

    def dead(self) -> list[tuple[int, int]]:
        return [(i, w.proc.exitcode) for i, w in self.procs.items() if w.proc.exitcode is not None]

    def kill(self) -> None:
        """The end of every grid, finished or not: workers hold no MLflow state, so killing one loses only its
        current cell (and a graceful stop would gain nothing)."""
        for w in self.procs.values():
            w.proc.kill()
        for w in self.procs.values():
            self._close(w)

    @staticmethod
    def _close(w: Worker) -> None:
        w.proc.kill()
        w.proc.join(timeout=5)  # reap it: no zombie left behind for the rest of this process
        w.inbox.close()
        w.outbox.close()


def parallel(source, n_workers: int, writer: Writer, held: lease.Lease, pin: bool = True) -> None:
    """N jobs at once in worker processes; this process hands out jobs (`source`: a Queue, or a tuned grid's
    schedule) and writes what they report."""
    from ..training import resume

    store.share_sqlite_store()  # WAL: a reader such as `mlflow ui` cannot block this (the one) writer into a timeout
    pool = Pool(n_workers, pin)
    busy = {}   # worker index -> (job, start time)
    try:
        while source.more() or busy:
            resume.check_stop()  # a preemption signal: stop here, between two writes (drive.preemptible)
            for i in sorted(set(pool.procs) - set(busy)):
                share = held.share(i)  # what the lease gives worker i now
                job = source.take({"worker": str(i), "cpu_affinity": cores.share_text(share if pool.pin else [])})
                if job:
                    cfg = worker_config(job, i, pool.n, share)  # pickled: its task's module imports in the worker
                    pool.send(i, (job.cell.name, cfg, share if pool.pin else [], job.slot))  # a dead one: _reap
                    busy[i] = job, time.perf_counter()
            if not busy:
                time.sleep(WAIT_S)  # what is left waits on another process (a study's last trials)
                continue
            for i, message in pool.receive(timeout=1.0):
                _receive(i, message, busy, writer, pool)
            _reap(pool, busy, writer, respawn=source.more())  # every turn: chatty workers must not hide a dead one
    finally:
        pool.kill()


def _receive(i: int, message: tuple | None, busy: dict, writer: Writer, pool: Pool) -> None:
    if message is None:
        return  # its outbox ended: _reap fails its cell once the process has exited
    kind, _, name, *payload = message
    if i not in busy or busy[i][0].cell.name != name:
        return  # late word from a worker that died (its cell already failed), maybe since replaced
    job, t0 = busy[i]
    if kind == "resume":
        if not writer.resumed(job, *payload):  # its fresh run could not be opened: the cell failed
            del busy[i]
            pool.spawn(i)
        return
    if kind == "epoch":
        why = writer.epoch(job, *payload)
        if why:  # a trial its pruner stops: the worker holds no MLflow state, so it is killed and replaced
            del busy[i]
            pool.spawn(i)
            writer.pruned(job, why, time.perf_counter() - t0)
        return
    del busy[i]
    (writer.finished if kind == "done" else writer.failed)(job, *payload)


def _reap(pool: Pool, busy: dict, writer: Writer, respawn: bool) -> None:
    """A worker that died (killed for memory, a crash in CUDA) fails its cell; replaced only while cells wait."""
    for i, code in pool.dead():
        if i in busy:
            job, t0 = busy.pop(i)
            why = pool.lost.pop(i, None) or f"worker process died (exit code {code})"
            writer.failed(job, why, time.perf_counter() - t0, died=True)
        if respawn:
            pool.spawn(i)
        else:
            Pool._close(pool.procs.pop(i))


def _worker(index: int, inbox: Connection, outbox: Connection) -> None:
    """A worker process: train each config it is handed on the cores it is handed (its lease share: its threads
    never fight another worker's), report epochs and the result; never touch MLflow."""
    import signal

    from ..training import train

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it kills us
    host.name_process(f"lstm-mnist-w{index}")
    host.die_with_parent()
    try:
        while True:  # until killed (Pool.kill), or the main process is gone (end of file on the inbox)
            name, cfg, share, slot = inbox.recv()
            if share:
                cores.pin_to(share)
            t0 = time.perf_counter()  # the cell's own time, without this process's start-up
            try:
                result = train.fit(cfg, on_epoch=lambda e, r: outbox.send(("epoch", index, name, e, r)), slot=slot,
                                   on_resume=lambda e, h, why: outbox.send(("resume", index, name, e, h, why)))
            except (EOFError, OSError):
                raise
            except Exception as e:
                outbox.send(("failed", index, name, f"{type(e).__name__}: {e}", time.perf_counter() - t0))
                continue
            outbox.send(("done", index, name, result, time.perf_counter() - t0))
    except (EOFError, OSError):  # the main process is gone: nobody to report to
        return
