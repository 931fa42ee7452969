"""Run an ablation grid (`python -m lstm_mnist ablate FILE`): resumable, failure-isolated, parallel.

Plan (plan.py), claim and record (writer.py: this process is the only MLflow writer), train (pool.py: worker
processes only train and report over pipes of their own). A cell is skipped when its config_hash already has
a FINISHED run in the experiment; a RUNNING run whose owner process is dead is marked FAILED ("stale:
process died") and rerun. Before a cell is trained it is claimed (claims/): any number of `ablate` processes
on the same grid and store train each cell once and share one parent run.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from .. import claims
from ..analysis import fractional
from ..engine import drive as engine
from ..engine.pool import Queue
from ..engine.progress import Progress, say
from ..engine.writer import Tally, Writer
from ..machine import host, lease
from ..tracking import artifacts, groups, query, records, store
from . import grid
from .options import Options
from .plan import Job, Plan, plan, recorded, table


@dataclass(frozen=True)
class Invocation:
    """How this invocation trains: jobs at once, this host's core lease, pinning, where lines go, the claims'
    storage (None: the journal beside the tracking store) and Ray (engine/ray_tasks.RayOptions, or None)."""
    n_workers: int
    held: lease.Lease
    out: Callable = say
    pin: bool = True
    storage_url: str | None = None
    ray: object = None


def invocation(opts: Options, n_workers: int, held: lease.Lease) -> Invocation:
    """How this invocation trains, once its workers and core lease are known."""
    return Invocation(n_workers, held, opts.out, opts.pin, opts.storage_url, opts.ray)


@dataclass
class Planned:
    """A grid planned by this invocation against the store: every cell of the grid, those of this share, what is
    left to train (longest first), the identities it covers (a tuned grid adds its tuned cells') and its claims."""
    spec: grid.GridSpec
    every: list
    jobs: list
    todo: list
    share: set
    claims: claims.Claims


# ---------------------------------------------------------------- the whole command
def main(spec: grid.GridSpec, opts: Options) -> int:
    """A plain grid (runner.py chose it): plan, then train what is not done; 0 when no cell of the share failed
    (cells another process claimed are that process's to finish), else 1. The host's cores are leased from the
    start (before the plan's seconds of reading), so invocations started together divide them from their first
    cell."""
    if opts.dry_run:
        return _dry_run(spec, opts.shard, opts.force, opts.out)
    with engine.capacity(opts.workers, opts.ray, spec.start) as (n_workers, held):
        return plan_and_run(spec, invocation(opts, n_workers, held), opts.shard, opts.force)


def _dry_run(spec: grid.GridSpec, shard: tuple[int, int] | None, force: bool, out) -> int:
    fraction = grid.design(spec)
    if fraction:
        out("\n".join(fractional.describe(fraction)))
    out(table(plan(spec, shard, force)))
    return 0


def prepare(spec: grid.GridSpec, inv: Invocation, shard: tuple[int, int] | None = None,
            force: bool = False) -> Planned:
    """The grid planned against the store, and its claims (opened with the time of planning: a cell finished
    elsewhere after it is skipped)."""
    planned = datetime.now()  # before the store is read
    every: list[Job] = []
    jobs = plan(spec, shard, force, every)
    # Longest cells first: with several workers the grid then ends with short cells, not one long straggler.
    todo = sorted((j for j in jobs if j.state in ("todo", "stale")), key=lambda j: -spec.task.hook("cost")(j.cfg))
    for j in jobs:
        if j.state == "elsewhere":
            inv.out(f"{j.cell.name}: {j.note}")
    return Planned(spec, every, jobs, todo, {j.config_hash for j in jobs},
                   open_claims(spec, inv.storage_url, planned))


def plan_and_run(spec: grid.GridSpec, inv: Invocation, shard: tuple[int, int] | None = None, force: bool = False,
                 sequential: dict | None = None) -> int:
    """Plan and train; `sequential` joins the plan recorded on the parent run (a grid run --until-decided: its
    looks)."""
    p = prepare(spec, inv, shard, force)
    tally = Tally(total=len(p.jobs), skipped=sum(j.state == "done" for j in p.jobs))
    record = recorded(spec, p.every, sequential=sequential)
    if not p.todo:  # the plan is still this grid's latest: the report reads its members from it
        inv.out(f"all {len(p.jobs)} cells of {spec.name} already FINISHED in experiment {spec.experiment}: "
                "nothing to train")
        c = store.client()
        close_parent(open_parent(p, inv.n_workers, c, record), tally, records.FINISHED, c)
        return 0
    older = sum(j.older for j in p.todo)
    inv.out(f"{spec.name}: {len(p.jobs)} cells, {len(p.jobs) - len(p.todo)} already FINISHED, {len(p.todo)} to "
            f"train with {inv.n_workers} worker{'s' * (inv.n_workers > 1)} (experiment {spec.experiment})"
            + (f"; {older} of them trained before under another protocol version" if older else ""))
    return execute(p, inv, tally, record)


def open_claims(spec: grid.GridSpec, storage_url: str | None = None, since: datetime | None = None) -> claims.Claims:
    """The grid's claims: a journal file beside the tracking store (one machine), or the RDB at --storage
    (several machines against one tracking server)."""
    storage = claims.open_storage(storage_url, store.local_dir() / "claims.journal")
    return claims.Claims(storage, f"grid {spec.experiment}/{spec.name}", since)


def open_parent(p: Planned, n_workers: int, c, record: Plan) -> str:
    """The grid's one parent run (made under a claim, or reopened), with this invocation's tags and plan."""
    tags = {**parent_tags(p.spec), "command": host.invocation(), "workers": str(n_workers)}  # provenance: groups
    parent = engine.held_run(p.claims, "parent", lambda: groups.parent_run(p.spec.experiment, "grid", p.spec.name,
                                                                         tags, c), tags, c)
    records.log_dict(parent, record.to_dict(), artifacts.PLAN, c)
    return parent


def close_parent(parent: str, tally: Tally, status: str, c) -> None:
    """This invocation's counts on the grid's parent, which it closes. `cells_done` is logged at step = the count
    itself: when two invocations end together, MLflow shows the largest."""
    metrics = tally.metrics()
    done = int(metrics.pop("cells_done"))
    records.log_metric(parent, "cells_done", done, step=done, c=c)
    records.end_run(parent, status, metrics, c=c)


def execute(p: Planned, inv: Invocation, tally: Tally, record: Plan, schedule=None, total: int | None = None) -> int:
    """Train `p.todo` (a plain grid), or what `schedule(writer, parent)` hands out (a tuned grid: its trials, then
    each arm's tuned cells; `total` of them), under the grid's one parent run, through the engine (this
    process, worker processes, or Ray tasks); 0 unless a cell failed."""
    c = store.client()
    p.claims.reap()
    for j in p.todo:
        for run_id in j.stale_ids:
            records.mark_failed(c, run_id, "stale: process died")
    parent = open_parent(p, inv.n_workers, c, record)
    progress = Progress(total or len(p.todo), inv.n_workers, inv.out, "trials and cells" if schedule else "cells")
    writer = Writer(parent, c, tally, progress, p.claims)
    source = schedule(writer, parent) if schedule else Queue(p.todo, writer)
    status = records.KILLED  # unless the loop ends or raises: Ctrl-C
    try:
        engine.drive(source, writer, inv.n_workers, inv.held, inv.pin, inv.ray)
        status = records.FAILED if tally.failed else records.FINISHED
    except Exception:
        status = records.FAILED
        raise
    finally:
        p.claims.release_all()
        try:
            source.finish()
            if tally.elsewhere:  # another invocation trained some: count what the store holds now
                tally.done_in_store = _finished_in_store(p.spec, p.share, c)
            close_parent(parent, tally, status, c)
        except Exception as e:  # the store is away: a later start reopens the parent anyway
            inv.out(f"the grid's parent run {parent} stays RUNNING until the next start ({type(e).__name__})")
        inv.out(summary(p.spec, tally, status))
    return 1 if tally.failed else 0


def _finished_in_store(spec: grid.GridSpec, share: set[str], c) -> int:
    """Planned cells with a FINISHED run in the experiment, whichever grid trained them (resume's rule)."""
    runs = query.search(spec.experiment, statuses=(records.FINISHED,), c=c)
    return len({r.tags.get("config_hash") for r in runs} & share)


def parent_tags(spec: grid.GridSpec) -> dict:
    """The grid file, and its factorial design in words for the UI (the report reads the plan's)."""
    tags = {"grid_file": spec.path}
    fraction = grid.design(spec)
    if fraction:
        tags["factorial_design"] = f"{fraction.title} {fraction.resolution_text}"
    return tags


def summary(spec: grid.GridSpec, tally: Tally, status: str) -> str:
    m = tally.metrics()
    head = (f"{spec.name} {'interrupted' if status == records.KILLED else 'done'}: "
            + (f"{tally.trials} tuning trials ended, " if tally.trials else "")
            + f"{m['cells_done']}/{tally.total} cells FINISHED ({tally.finished} trained now, "
            f"{tally.skipped} already), "
            f"{len(tally.failed)} failed, {len(tally.elsewhere)} left to another process, {m['wall_time_s']:.0f}s")
    return "\n".join([head, *(f"  FAILED {name}: {reason}" for name, reason in tally.failed)])
