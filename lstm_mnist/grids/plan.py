"""A grid's plan: every cell resolved against the data (its identity) and the store (done, todo, stale,
RUNNING elsewhere, trained under another protocol version); the order cells run in; the dry-run table and
the plan recorded on the parent run (planned.py: the report's members)."""
from __future__ import annotations

from .. import config
from ..engine.jobs import Job
from ..engine import writer
from ..tracking import artifacts, query, records
from ..training import checkpoint as ckpt
from . import grid
from .planned import Fraction, Plan, PlanError, PlannedCell


# ---------------------------------------------------------------- planning
def plan(spec: grid.GridSpec, shard: tuple[int, int] | None = None, force: bool = False,
         every: list[Job] | None = None) -> list[Job]:
    """Every cell of this machine's share, with its identity and its state in the store. `every`, when
    given, receives every cell of the grid (all shards): the plan recorded on the parent run."""
    jobs = [resolve_cell(spec, cell) for cell in grid.expand(spec)]
    if every is not None:
        every.extend(jobs)
    if shard:
        mine = grid.shard([j.config_hash for j in jobs], *shard)
        jobs = [j for j in jobs if j.config_hash in mine]
    runs, older = {}, set()
    for r in query.search(spec.experiment):
        tags = r.tags
        runs.setdefault(tags.get("config_hash"), []).append(r)
        if r.status == records.FINISHED and tags.get("protocol_version", "0") != str(config.PROTOCOL_VERSION):
            older.add(tags.get("settings_key") or tags.get("config_hash"))  # before the tag: the old identity
    for j in jobs:
        classify(j, runs.get(j.config_hash, []), force)
        resumable(j, runs.get(j.config_hash, []))
        j.older = j.state != "done" and config.settings_key(j.cfg, j.fingerprint) in older
    return jobs


def resumable(job: Job, runs: list) -> None:
    """A cell to train that left a checkpoint (its process died, or was stopped) goes on from it, in the run the
    checkpoint names (else the newest of its unfinished runs: exact resume makes any of them log the same
    epochs): that run is not failed as stale, but reopened."""
    if job.state not in ("todo", "stale"):
        return
    side = ckpt.peek(writer.slot(job.config_hash))
    open_ = [r for r in runs if r.status != records.FINISHED and (r.status != records.RUNNING or
                                                                 r.run_id in job.stale_ids)]
    if side is None or not open_:
        return
    named = [r for r in open_ if r.run_id == side.get("run_id")]
    run = (named or sorted(open_, key=lambda r: r.start_time))[-1]
    job.resume_run = run.run_id
    if run.run_id in job.stale_ids:
        job.stale_ids.remove(run.run_id)
    job.state = "stale" if job.stale_ids else "todo"
    job.note = f"resumes from its checkpoint after epoch {side['epoch']} (run {run.run_id})"


def resolve_cell(spec: grid.GridSpec, cell: grid.Cell) -> Job:
    """A cell with its resolved config and identity (config_hash: the config, the data it will see, the protocol)."""
    cfg = spec.task.build(grid.values(spec, cell), f"{spec.path} cell {cell.name}")
    fp = spec.task.data_fingerprint(cfg)  # the built-in task's hook imports torch here, not when a plan is read
    return Job(cell, cfg, config.identity(cfg, fp), pinned=frozenset({*spec.base, *spec.budget}), fingerprint=fp,
               tags=grid.tags(spec, cell))


def classify(job: Job, runs: list, force: bool) -> None:
    """The job's state from the runs with its config_hash: done, stale (RUNNING, owner dead), elsewhere, todo."""
    if any(r.status == records.FINISHED for r in runs) and not force:
        job.state = "done"
        return
    for r in (r for r in runs if r.status == records.RUNNING):
        alive = records.owner_alive(r.tags)
        if alive is False:
            job.state, job.note = "stale", "left RUNNING by a dead process"
            job.stale_ids.append(r.run_id)
        elif not force:
            where = r.tags.get("owner_host", "an unknown process")
            job.state, job.note = "elsewhere", f"RUNNING on {where} (run {r.run_id}); not touched"
            return


def recorded(spec: grid.GridSpec, jobs: list[Job], **extra) -> Plan:
    """The grid's plan as its parent run records it (plan.json): the report's members are exactly these cells,
    in these roles; `extra`: a tuned grid's `tuning`, an --until-decided grid's `sequential`."""
    fraction = grid.design(spec)
    cells = tuple(PlannedCell(j.cell.name, j.cell.arm, j.cell.seed, j.config_hash, j.cell.roles, j.cell.variant)
                  for j in jobs)
    named = None if spec.task.named is None else spec.task_spec
    return Plan(cells, config.PROTOCOL_VERSION, spec.effect_of_interest,
                Fraction(fraction.factors, fraction.generators) if fraction else None, **extra, task=named)


def read_plan(parent_run_id: str, name: str, missing_ok: bool = False) -> Plan | None:
    """The grid's latest plan; one recorded by an older version (or none: a grid from before plans) is a one-line
    PlanError, or None with `missing_ok`."""
    raw = query.read_json_artifact(parent_run_id, artifacts.PLAN)
    try:
        return Plan.from_dict(raw, f"grid {name!r}")
    except PlanError:
        if missing_ok:
            return None
        raise


def table(jobs: list[Job]) -> str:
    """The dry-run table: one line per cell."""
    w = max([28, *(len(j.cell.arm) for j in jobs)])
    v = 8 if any(j.cell.variant for j in jobs) else 0  # a tuned grid: fixed (untuned) or both (nothing searched)
    head = f"{'variant':<{v}} " if v else ""
    rows = [f"{'arm':<{w}} {'design':<14} {head}{'seed':>4}  {'config_hash':<16}  state"]
    for j in jobs:
        state = "done" if j.state == "done" else "todo" if j.state == "todo" else f"todo ({j.note})"
        if j.state == "elsewhere":
            state = f"skip ({j.note})"
        variant = f"{j.cell.variant:<{v}} " if v else ""
        rows.append(f"{j.cell.arm:<{w}} {j.cell.design:<14} {variant}{j.cell.seed:>4}  {j.config_hash:<16}  {state}")
    n_done = sum(j.state == "done" for j in jobs)
    rows.append(f"{len(jobs)} cells: {n_done} done, {len(jobs) - n_done} not done")
    n_older = sum(j.older for j in jobs)
    if n_older:
        rows.append(f"{n_older} of the cells not done were trained under another protocol version (the code changed "
                    f"what a run computes; this is version {config.PROTOCOL_VERSION}): they are trained again")
    return "\n".join(rows)
