"""Run an ablation grid (`python -m lstm_mnist ablate FILE`): resumable, failure-isolated, parallel.

One writer: this process is the only one that writes to MLflow. Worker processes (`--workers N`) only
train and send each epoch's record and the final result back over a pipe of their own, so MLflow's
SQLite store never sees two writers and a worker never holds a half-written run.
A cell is skipped when its config_hash already has a FINISHED run in the experiment; a RUNNING run whose
owner process (tags owner_host, owner_pid) is dead is marked FAILED ("stale: process died") and rerun.
Before a cell is trained it is claimed (claims.py): any number of `ablate` processes on the same grid and
store (two terminals, several machines against one tracking server and one --storage) train each cell
once, and share one parent run.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection, wait

from . import claims, config, data, grid, membership, outages, track, workers
from .config import Config

QUICK_FILE = "experiments/ablation-quick.toml"


def say(text: str) -> None:
    print(text, flush=True)  # live even when stdout is a pipe or a log file


@dataclass
class Job:
    """A cell resolved against the data and the store."""
    cell: grid.Cell
    cfg: Config
    config_hash: str
    state: str = "todo"          # todo | done | stale (RUNNING, owner dead) | elsewhere (RUNNING, owner alive)
    note: str = ""
    stale_ids: list = field(default_factory=list)
    pinned: frozenset = frozenset()  # keys the study's base file or [budget] sets (workers leave them alone)
    fingerprint: str = ""        # the data's fingerprint (part of the identity)
    older: bool = False          # not done, but trained under another protocol version (so trained again)


@dataclass
class Tally:
    """What this invocation did; logged on the parent run at the end."""
    total: int = 0
    skipped: int = 0
    finished: int = 0
    failed: list = field(default_factory=list)   # (cell name, reason)
    elsewhere: list = field(default_factory=list)  # cells another invocation claimed (it trains them)
    done_in_store: int | None = None  # FINISHED cells in the store at the end, other invocations' included
    t0: float = field(default_factory=time.perf_counter)

    def metrics(self) -> dict:
        done = self.skipped + self.finished if self.done_in_store is None else self.done_in_store
        return {"cells_total": self.total, "cells_done": done, "cells_skipped": self.skipped,
                "cells_failed": len(self.failed), "wall_time_s": time.perf_counter() - self.t0}


# ---------------------------------------------------------------- planning
def plan(study: grid.Study, shard: tuple[int, int] | None = None, force: bool = False,
         every: list[Job] | None = None) -> list[Job]:
    """Every cell of this machine's share, with its identity and its state in the store. `every`, when
    given, receives every cell of the grid (all shards): the plan recorded on the parent run."""
    jobs = [_job(study, cell) for cell in grid.expand(study)]
    if every is not None:
        every.extend(jobs)
    if shard:
        mine = grid.shard([j.config_hash for j in jobs], *shard)
        jobs = [j for j in jobs if j.config_hash in mine]
    runs, older = {}, set()
    for r in track.search(study.experiment):
        tags = r.data.tags
        runs.setdefault(tags.get("config_hash"), []).append(r)
        if r.info.status == track.FINISHED and tags.get("protocol_version", "0") != str(config.PROTOCOL_VERSION):
            older.add(tags.get("settings_key") or tags.get("config_hash"))  # before the tag: the old identity
    for j in jobs:
        _classify(j, runs.get(j.config_hash, []), force)
        j.older = j.state != "done" and j.cfg.settings_key(j.fingerprint) in older
    return jobs


def _job(study: grid.Study, cell: grid.Cell) -> Job:
    cfg = config.build(grid.values(study, cell), f"{study.path} cell {cell.name}")
    fp = data.fingerprint(cfg.data_dir)
    return Job(cell, cfg, cfg.identity(fp), pinned=frozenset({*study.base, *study.budget}), fingerprint=fp)


def _classify(job: Job, runs: list, force: bool) -> None:
    if any(r.info.status == track.FINISHED for r in runs) and not force:
        job.state = "done"
        return
    for r in (r for r in runs if r.info.status == track.RUNNING):
        alive = track.owner_alive(r.data.tags)
        if alive is False:
            job.state, job.note = "stale", "left RUNNING by a dead process"
            job.stale_ids.append(r.info.run_id)
        elif not force:
            where = r.data.tags.get("owner_host", "an unknown process")
            job.state, job.note = "elsewhere", f"RUNNING on {where} (run {r.info.run_id}); not touched"
            return


def plan_record(jobs: list[Job]) -> dict:
    """The grid's plan as the parent run records it (plan.json): the report's members are exactly these cells."""
    cells = [{"cell": j.cell.name, "arm": j.cell.arm, "seed": j.cell.seed, "design": j.cell.design,
              "designs": ",".join(j.cell.designs), "flag": j.cell.flag, "config_hash": j.config_hash} for j in jobs]
    return {"protocol_version": config.PROTOCOL_VERSION, "cells": cells}


def cost(cfg: Config) -> float:
    """A cell's relative training cost: the LSTM's multiply-adds per time step (4 gates, every layer and
    direction), times the epoch budget. Only its order matters (it sorts the work)."""
    dirs, h, width = 1 + cfg.bidirectional, cfg.hidden_size, 28
    per_step = 0
    for _ in range(cfg.num_layers):
        per_step += dirs * 4 * h * (width + h)
        width = dirs * h
    return per_step * cfg.max_epochs * (cfg.train_samples or 48000)


def table(jobs: list[Job]) -> str:
    """The dry-run table: one line per cell."""
    w = max([28, *(len(j.cell.arm) for j in jobs)])
    rows = [f"{'arm':<{w}} {'design':<14} {'seed':>4}  {'config_hash':<16}  state"]
    for j in jobs:
        state = "done" if j.state == "done" else "todo" if j.state == "todo" else f"todo ({j.note})"
        if j.state == "elsewhere":
            state = f"skip ({j.note})"
        rows.append(f"{j.cell.arm:<{w}} {j.cell.design:<14} {j.cell.seed:>4}  {j.config_hash:<16}  {state}")
    n_done = sum(j.state == "done" for j in jobs)
    rows.append(f"{len(jobs)} cells: {n_done} done, {len(jobs) - n_done} not done")
    n_older = sum(j.older for j in jobs)
    if n_older:
        rows.append(f"{n_older} of the cells not done were trained under another protocol version (the code changed "
                    f"what a run computes; this is version {config.PROTOCOL_VERSION}): they are trained again")
    return "\n".join(rows)


# ---------------------------------------------------------------- the whole command
def main(path: str, n_workers: int = 1, shard: tuple[int, int] | None = None, dry_run: bool = False,
         force: bool = False, out=say, pin: bool = True, storage_url: str | None = None) -> int:
    """Plan, then train what is not done; 0 when no cell of the share failed (cells another process
    claimed are that process's to finish), else 1."""
    study = grid.load(path)
    planned = datetime.now()  # before the store is read: a cell finished elsewhere after this is skipped
    every: list[Job] = []
    jobs = plan(study, shard, force, every)
    if dry_run:
        fraction = grid.design(study)
        if fraction:
            out("\n".join(fraction.describe()))
        out(table(jobs))
        return 0
    # Longest cells first: with several workers the grid then ends with short cells, not one long straggler.
    todo = sorted((j for j in jobs if j.state in ("todo", "stale")), key=lambda j: -cost(j.cfg))
    for j in jobs:
        if j.state == "elsewhere":
            out(f"{j.cell.name}: {j.note}")
    tally = Tally(total=len(jobs), skipped=sum(j.state == "done" for j in jobs))
    grid_claims = open_claims(study, storage_url, planned)
    if not todo:  # the plan is still this grid's latest: the report reads its members from it
        out(f"all {len(jobs)} cells of {study.name} already FINISHED in experiment {study.experiment}: nothing to train")
        c = track.client()
        parent = open_parent(study, n_workers, grid_claims, every, c)
        track.end_run(parent, track.FINISHED, tally.metrics(), c=c)
        return 0
    older = sum(j.older for j in todo)
    out(f"{study.name}: {len(jobs)} cells, {len(jobs) - len(todo)} already FINISHED, {len(todo)} to train "
        f"with {n_workers} worker{'s' * (n_workers > 1)} (experiment {study.experiment})"
        + (f"; {older} of them trained before under another protocol version" if older else ""))
    return _execute(study, todo, n_workers, tally, out, pin, grid_claims, {j.config_hash for j in jobs}, every)


def open_claims(study: grid.Study, storage_url: str | None = None, since: datetime | None = None) -> claims.Claims:
    """The grid's claims: a journal file beside the tracking store (one machine), or the RDB at --storage
    (several machines against one tracking server)."""
    storage = claims.open_storage(storage_url, track.local_dir() / "claims.journal")
    return claims.Claims(storage, f"grid {study.experiment}/{study.name}", since)


def open_parent(study: grid.Study, n_workers: int, grid_claims: claims.Claims, every: list[Job], c) -> str:
    """The grid's one parent run (made under a claim, or reopened), with this invocation's tags and plan."""
    tags = {**parent_tags(study), "command": workers.invocation(), "workers": str(n_workers), **track.provenance()}
    parent, made = grid_claims.once("parent", lambda: track.parent_run(study.experiment, "grid", study.name, tags, c),
                                    valid=lambda run_id: track.exists(run_id, c))
    if not made:  # created by another invocation (now, or an earlier one): continue it
        track.reopen(parent, tags, c)
    track.log_dict(parent, plan_record(every), membership.PLAN_FILE, c)
    return parent


def _execute(study: grid.Study, todo: list[Job], n_workers: int, tally: Tally, out, pin: bool = True,
             grid_claims: claims.Claims | None = None, share: set[str] = frozenset(),
             every: list[Job] | None = None) -> int:
    c = track.client()
    grid_claims = grid_claims or open_claims(study)
    grid_claims.reap()
    for j in todo:
        for run_id in j.stale_ids:
            track.mark_failed(c, run_id, "stale: process died")
    parent = open_parent(study, n_workers, grid_claims, every if every is not None else todo, c)
    writer = Writer(study, parent, c, tally, Progress(len(todo), n_workers, out), grid_claims)
    status = track.KILLED  # unless the loop ends or raises: Ctrl-C
    grid_claims.start_heartbeat()
    try:
        with writer.progress:
            if n_workers == 1:
                _serial(todo, writer)
            else:
                _parallel(todo, n_workers, writer, pin)
        status = track.FAILED if tally.failed else track.FINISHED
    except Exception:
        status = track.FAILED
        raise
    finally:
        grid_claims.stop_heartbeat()
        writer.kill_open()
        grid_claims.release_all()
        try:
            if tally.elsewhere:  # another invocation trained some: count what the store holds now
                tally.done_in_store = _finished_in_store(study, share, c)
            metrics = tally.metrics()
            done = int(metrics.pop("cells_done"))  # logged at step = the count itself: when two invocations end
            track.log_metric(parent, "cells_done", done, step=done, c=c)  # together, MLflow shows the largest
            track.end_run(parent, status, metrics, c=c)
        except Exception as e:  # the store is away: a later start reopens the parent anyway
            out(f"the grid's parent run {parent} stays RUNNING until the next start ({type(e).__name__})")
        out(summary(study, tally, status))
    return 1 if tally.failed else 0


def _finished_in_store(study: grid.Study, share: set[str], c) -> int:
    """Planned cells with a FINISHED run in the experiment, whichever grid trained them (resume's rule)."""
    runs = track.search(study.experiment, statuses=(track.FINISHED,), c=c)
    return len({r.data.tags.get("config_hash") for r in runs} & share)


def parent_tags(study: grid.Study) -> dict:
    """The grid file, and its factorial design (factors in letter order, generator words) for the report."""
    tags = {"grid_file": study.path}
    fraction = grid.design(study)
    if fraction:
        tags |= {"factorial_factors": ",".join(fraction.factors), "factorial_generators": ",".join(fraction.generators),
                 "factorial_design": f"{fraction.title} {fraction.resolution_text}"}
    return tags


def summary(study: grid.Study, tally: Tally, status: str) -> str:
    m = tally.metrics()
    head = (f"{study.name} {'interrupted' if status == track.KILLED else 'done'}: "
            f"{m['cells_done']}/{tally.total} cells FINISHED ({tally.finished} trained now, {tally.skipped} already), "
            f"{len(tally.failed)} failed, {len(tally.elsewhere)} left to another process, {m['wall_time_s']:.0f}s")
    return "\n".join([head, *(f"  FAILED {name}: {reason}" for name, reason in tally.failed)])


# ---------------------------------------------------------------- the one writer
class Writer:
    """Claims, opens, fills and closes the child runs; every MLflow write of a grid goes through here.
    The client is `track.client()`'s: a store outage blocks the call (bounded by --store-wait), so epochs
    reported meanwhile wait in the workers' pipes and are written once the store is back."""

    def __init__(self, study: grid.Study, parent: str, c, tally: Tally, progress: "Progress",
                 grid_claims: claims.Claims | None = None):
        self.study, self.parent, self.c, self.tally, self.progress = study, parent, c, tally, progress
        self.claims = grid_claims
        self.open_runs: dict[str, track.RunRecord] = {}   # cell name -> its open run (owner-tagged by open_run)

    def claim(self, job: Job) -> bool:
        """Whether this process trains the cell: no other invocation holds it or finished it meanwhile."""
        if self.claims is None:
            return True
        got = self.claims.take(job.config_hash)
        if isinstance(got, str):
            self.tally.elsewhere.append(job.cell.name)
            self.progress.line(f"skip {job.cell.name}: {got}")
            return False
        return True

    def open(self, job: Job, where: dict | None = None) -> bool:
        """Open the cell's run; False (the cell failed, with its one-line reason) when it cannot be written."""
        tags = {**grid.tags(self.study, job.cell), **(where or {})}
        try:
            self.open_runs[job.cell.name] = track.open_run(job.cfg, job.config_hash,
                                                           data.fingerprint(job.cfg.data_dir), job.cell.name,
                                                           self.parent, tags, self.c)
        except outages.StoreDown:
            raise
        except Exception as e:  # e.g. an artifact folder that cannot be written: this cell, not the grid
            self._settle(job, done=False)
            self.tally.failed.append((job.cell.name, f"could not open its run: {_one_line(e)}"))
            self.progress.failed(job, self.tally.failed[-1][1], 0.0)
            return False
        self.progress.started(job)
        return True

    def epoch(self, job: Job, epoch: int, record: dict) -> None:
        self.open_runs[job.cell.name].log_epoch(epoch, record)

    def finished(self, job: Job, result, seconds: float) -> None:
        rec = self.open_runs[job.cell.name]  # popped once ended: until then kill_open can still close it
        try:
            rec.log_result(result)
            track.end_run(rec.run_id, track.FINISHED, c=self.c)
        except outages.StoreDown:
            raise
        except Exception as e:  # a figure, disk or store error fails this cell alone, never the grid
            self.failed(job, f"could not record result: {_one_line(e)}", seconds)
            return
        del self.open_runs[job.cell.name]
        self._settle(job, done=True, run_id=rec.run_id)
        self.tally.finished += 1
        self.progress.finished(job, result.test.get("test_f1", float("nan")), seconds, result.device_name)

    def failed(self, job: Job, reason: str, seconds: float) -> None:
        track.mark_failed(self.c, self.open_runs[job.cell.name].run_id, reason)
        del self.open_runs[job.cell.name]  # only once ended: if that raised, kill_open still closes it
        self._settle(job, done=False)
        self.tally.failed.append((job.cell.name, reason))
        self.progress.failed(job, reason, seconds)

    def _settle(self, job: Job, done: bool, **attrs) -> None:
        if self.claims is not None:
            self.claims.settle(job.config_hash, done, **attrs)

    def kill_open(self) -> None:
        """Runs still open when the grid stops (Ctrl-C, a crash here) end KILLED, never left RUNNING; when the
        store itself is away they stay RUNNING, and the next start's stale-run rule closes them."""
        for rec in self.open_runs.values():
            try:
                track.mark_failed(self.c, rec.run_id, "interrupted", track.KILLED)
            except Exception:
                break
        self.open_runs.clear()


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:300]


# ---------------------------------------------------------------- executing cells
def worker_config(job: Job, index: int, n_workers: int) -> Config:
    """The cell's config on worker `index`: its device and threads (not identity) unless the study sets them."""
    extra = {k: v for k, v in workers.settings(index, n_workers).items() if k not in job.pinned}
    return config.build({**job.cfg.to_dict(), **extra})


def _serial(todo: list[Job], writer: Writer) -> None:
    """One cell at a time in this process (no worker startup cost; Ctrl-C lands here directly)."""
    from . import train

    for job in todo:
        if not writer.claim(job) or not writer.open(job):
            continue
        t0 = time.perf_counter()
        try:
            result = train.fit(worker_config(job, 0, 1), on_epoch=lambda e, r: writer.epoch(job, e, r))
        except outages.StoreDown:
            raise
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

    def __init__(self, n_workers: int, pin: bool = True):
        self.ctx = mp.get_context("spawn")  # fork would copy CUDA state and MLflow's connections into children
        self.n, self.pin, self.procs = n_workers, pin, {}
        for i in range(n_workers):
            self.spawn(i)

    def spawn(self, i: int) -> None:
        if i in self.procs:  # replacing a dead worker
            self._close(self.procs.pop(i))
        in_read, in_write = self.ctx.Pipe(duplex=False)
        out_read, out_write = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_worker, args=(i, self.n, in_read, out_write, self.pin), daemon=True,
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
        got = []
        for end in wait(list(ends), timeout):
            try:
                got.append((ends[end], end.recv()))
            except (EOFError, OSError):
                end.close()
                got.append((ends[end], None))
        return got

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


def _parallel(todo: list[Job], n_workers: int, writer: Writer, pin: bool = True) -> None:
    """N cells at once in worker processes; this process hands out cells and writes what they report."""
    track.share_sqlite_store()  # WAL: a reader such as `mlflow ui` cannot block this (the one) writer into a timeout
    pool = Pool(n_workers, pin)
    pending, busy = deque(todo), {}   # busy: worker index -> (job, start time)
    try:
        while pending or busy:
            for i in sorted(set(pool.procs) - set(busy)):
                job = _next(pending, writer, i, pool)
                if job:
                    pool.send(i, (job.cell.name, worker_config(job, i, pool.n).to_dict()))  # a dead one: _reap
                    busy[i] = job, time.perf_counter()
            if not busy:
                continue  # nothing could be opened this turn: the next turn takes the next cells
            for i, message in pool.receive(timeout=1.0):
                _receive(i, message, busy, writer)
            _reap(pool, busy, writer, respawn=bool(pending))  # every turn: chatty workers must not hide a dead one
    finally:
        pool.kill()


def _next(pending: deque, writer: Writer, i: int, pool: Pool) -> Job | None:
    """The next cell worker i trains: claimed by this process, its run open."""
    cores = workers.share_text(workers.cpu_share(i, pool.n)) if pool.pin else "unpinned"
    while pending:
        job = pending.popleft()
        if writer.claim(job) and writer.open(job, {"worker": str(i), "cpu_affinity": cores}):
            return job
    return None


def _receive(i: int, message: tuple | None, busy: dict, writer: Writer) -> None:
    if message is None:
        return  # its outbox ended: _reap fails its cell once the process has exited
    kind, _, name, *payload = message
    if i not in busy or busy[i][0].cell.name != name:
        return  # late word from a worker that died (its cell already failed), maybe since replaced
    job, _ = busy[i]
    if kind == "epoch":
        writer.epoch(job, *payload)
        return
    del busy[i]
    (writer.finished if kind == "done" else writer.failed)(job, *payload)


def _reap(pool: Pool, busy: dict, writer: Writer, respawn: bool) -> None:
    """A worker that died (killed for memory, a crash in CUDA) fails its cell; replaced only while cells wait."""
    for i, code in pool.dead():
        if i in busy:
            job, t0 = busy.pop(i)
            writer.failed(job, f"worker process died (exit code {code})", time.perf_counter() - t0)
        if respawn:
            pool.spawn(i)
        else:
            Pool._close(pool.procs.pop(i))


def _worker(index: int, n_workers: int, inbox: Connection, outbox: Connection, pin: bool = True) -> None:
    """A worker process: train each config it is handed, report epochs and the result; never touch MLflow."""
    import signal

    from . import train

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle; it kills us
    workers.die_with_parent()
    if pin:
        workers.pin(index, n_workers)  # its own cores: N workers' threads do not fight over the same ones
    try:
        while True:  # until killed (Pool.kill), or the main process is gone (end of file on the inbox)
            name, values = inbox.recv()
            t0 = time.perf_counter()  # the cell's own time, without this process's start-up
            try:
                result = train.fit(config.build(values), on_epoch=lambda e, r: outbox.send(("epoch", index, name, e, r)))
            except (EOFError, OSError):
                raise
            except Exception as e:
                outbox.send(("failed", index, name, f"{type(e).__name__}: {e}", time.perf_counter() - t0))
                continue
            outbox.send(("done", index, name, result, time.perf_counter() - t0))
    except (EOFError, OSError):  # the main process is gone: nobody to report to
        return


# ---------------------------------------------------------------- progress
class Progress:
    """A live bar over the cells when stdout is a terminal, plain lines otherwise; one line per cell."""

    def __init__(self, total: int, n_workers: int, out=say):
        import sys

        self.total, self.n_workers, self.out, self.done, self.failures = total, n_workers, out, 0, 0
        self.estimated, self.bar = False, None
        if sys.stdout.isatty() and out is say:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn("cells"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[fail]}"),
                           TimeRemainingColumn())
            self.task = self.bar.add_task("grid", total=total, fail="")

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def line(self, text: str) -> None:
        if self.bar:
            self.bar.console.print(text, markup=False, highlight=False)  # reasons may hold [brackets]
        else:
            self.out(text)

    def started(self, job: Job) -> None:
        if not self.bar:
            self.out(f"start {job.cell.name} ({job.cell.design}, config_hash {job.config_hash})")

    def finished(self, job: Job, test_f1: float, seconds: float, device: str) -> None:
        self._advance()
        self.line(f"[{self.done}/{self.total}] {job.cell.arm:<28} seed {job.cell.seed}  test_f1 {test_f1:.4f}  "
                  f"{seconds:.0f}s")
        self._estimate(seconds, device)

    def failed(self, job: Job, reason: str, seconds: float) -> None:
        self.failures += 1
        self._advance()
        self.line(f"[{self.done}/{self.total}] {job.cell.arm:<28} seed {job.cell.seed}  FAILED after {seconds:.0f}s: "
                  f"{reason}")

    def _advance(self) -> None:
        self.done += 1
        if self.bar:
            self.bar.update(self.task, advance=1, fail=f"{self.failures} failed" if self.failures else "")

    def _estimate(self, seconds: float, device: str) -> None:
        """After the first cell: how long the whole grid will take, and the quick file if that is hours on a CPU."""
        if self.estimated:
            return
        self.estimated = True
        total = seconds * self.total / self.n_workers
        msg = f"estimate: about {_duration(total)} for the {self.total} cells to train (first cell {seconds:.0f} s)"
        if device.startswith("cpu") and total > 3600:  # "cpu (model, N threads)"
            msg += f"; on this CPU try {QUICK_FILE} (same designs, small budget)"
        self.line(msg)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
