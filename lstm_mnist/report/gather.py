"""A grid's runs as the report's rows: the grid found in the store (the latest run, or by name), its members
by its plan (members.py), each run's flags, metrics, training time and settings."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import metrics
from .. import task as task_protocol
from ..config import UserError
from ..grids.plan import read_plan
from ..grids.planned import Fraction, Tuning
from ..tracking import query, store
from . import members


class ReportError(UserError):
    """No data to report on (no experiment, no grid, no FINISHED runs); one line says which."""


@dataclass
class Grid:
    experiment: str
    name: str
    parent_id: str          # the latest parent run: the report's artifacts go there
    parents: int            # parent runs of this grid (a grid runner may open one per invocation)
    runs: pd.DataFrame      # one row per kept FINISHED child run
    seeds: list[int]        # every seed the grid attempted (any status): the requested replicates
    dropped: Counter        # why runs were left out: status, duplicate
    parent_tags: dict = field(default_factory=dict)  # the latest parent's tags: grid file, command, design, provenance
    wall_time_s: float = 0.0  # summed over the grid's parent runs (each invocation records its own)
    outside: list = field(default_factory=list)     # FINISHED runs tagged with the grid but not in its plan
    missing: list = field(default_factory=list)     # planned cells without a FINISHED run
    mismatched: list = field(default_factory=list)  # runs left out: settings other than the grid's common ones
    tune: Tuning | None = None  # a tuned grid's [tune] as its plan records it (arms: searched keys, tuning runs)
    fixed: pd.DataFrame | None = None  # a tuned grid with `fixed = true`: its untuned members (runs: the tuned)
    delta: float | None = None  # the grid's effect_of_interest: each row's verdict
    sequential: dict | None = None  # run with --until-decided: its looks' design (report/looks.py)
    fraction: Fraction | None = None  # the factorial design the grid planned
    task: task_protocol.Task = field(kw_only=True)  # the model under study (its flags: the rows' factor columns)


# ---------------------------------------------------------------- reading the store
def find_grid(experiment: str, grid: str | None) -> tuple[str, object, list]:
    """(grid name, its latest parent run, all its parent runs); the latest grid when none is named."""
    parents = query.parents(experiment, "grid")
    if not parents:
        raise ReportError(f"no ablation grid runs in MLflow experiment {experiment!r} at {store.tracking_uri()}; "
                          "run `make ablation` first (or pass --experiment)")
    names = {p.tags.get("grid_name", "") for p in parents}
    name = grid or max(parents, key=query.last_invoked).tags.get("grid_name")
    mine = [p for p in parents if p.tags.get("grid_name") == name]
    if not mine:
        raise ReportError(f"no grid named {grid!r} in experiment {experiment!r}; grids there: "
                          f"{', '.join(sorted(n for n in names if n))}")
    return name, max(mine, key=query.last_invoked), mine


def load(experiment: str, grid: str | None = None) -> Grid:
    """The grid's members (members.py: by the latest invocation's plan), as report rows."""
    name, latest, parents = find_grid(experiment, grid)
    plan = read_plan(latest.run_id, name)
    m = members.by_plan(experiment, name, plan)
    if not m.runs:
        left = counts(m.dropped) or "none"
        raise ReportError(f"grid {name!r} in experiment {experiment!r} has no FINISHED runs yet ({left} otherwise); "
                          "run `make ablation` to finish it")
    task = task_protocol.load(plan.task or task_protocol.BUILTIN)  # a plan that names none: the default task
    rows = [{**_row(r, task), **_planned(m.cells[r.run_id])} for r in m.runs]
    tune = plan.tuning
    fixed = None
    if tune:  # the tuned members are the report's; the untuned ones (fixed = true) its "before tuning" view
        fixed, _ = members.agreeing([r for r in rows if r["variant"] in ("fixed", "both")])
        rows = [members.ignoring(r, tune.space) for r in rows if r["variant"] in ("tuned", "both")]
        fixed = pd.DataFrame(fixed) if tune.fixed and fixed else None
        if not rows:
            raise ReportError(f"grid {name!r} in experiment {experiment!r} has no FINISHED tuned cells yet (its arms' "
                              "studies are not complete); run `make ablation` with its file to finish it")
    rows, mismatched = members.agreeing(rows)
    runs = pd.DataFrame(rows)
    # A rerun reopens the grid's parent and logs its own wall_time_s: the grid's time is the sum of them all.
    wall = sum(v for p in parents for _, v in query.metric_history(p.run_id, "wall_time_s"))
    return Grid(experiment, name, latest.run_id, len(parents), runs, m.seeds, m.dropped, dict(latest.tags),
                wall, m.outside, m.missing, mismatched, tune, fixed, plan.effect_of_interest, plan.sequential,
                plan.factorial, task=task)


def _planned(cell) -> dict:
    """The plan's word on a member's arm, seed and roles (a run may have been trained under another grid)."""
    (design, flag, _), *_ = cell.roles
    return {"arm": cell.arm, "seed": cell.seed, "design": design, "designs": ",".join(cell.designs), "flag": flag,
            "variant": cell.variant, "roles": cell.roles}


PROVENANCE = ("data_fingerprint", "protocol_version", "settings_key", "torch_version", "lightning_version",
              "mlflow_version")


def _seed(run) -> int:
    return int(run.tags.get("seed", run.params.get("seed", -1)))


def is_on(row, task: task_protocol.Task, flag: str) -> bool:
    """Whether a report row has the flag on: its column true, or its config values the flag's on side (a flag
    named as its key holds the key's value: readout's column holds "final_states")."""
    v = row[flag] if flag in row else None
    return (isinstance(v, (bool, np.bool_)) and bool(v)) or task.flag(flag).is_on(row)


def _row(run, task: task_protocol.Task) -> dict:
    tags, params, scores = run.tags, run.params, run.metrics
    arm = tags.get("arm", run.name)
    design = tags.get("design", "other")
    row = {"run_id": run.run_id, "arm": arm, "design": design, "designs": tags.get("designs") or design,
           "flag": tags.get("flag", ""), "seed": _seed(run),
           "config_hash": tags.get("config_hash", run.run_id), "start_time": run.start_time,
           "parent_run_id": run.parent_id, "git_commit": tags.get("git_commit", ""),
           "git_dirty": tags.get("git_dirty", ""), "machine": tags.get("machine", ""),
           "variant": tags.get("variant", ""), "tuned_values": tags.get("tuned_values", ""),
           # what a reader needs to check a result against their own copy: the data, the protocol, the libraries
           **{k: tags.get(k, "") for k in PROVENANCE}}
    row.update({f.name: _flag_column(f, params) for f in task.flags})
    row.update({k: scores.get(k, np.nan) for k in metrics.SUMMARY if k != "train_time_s"})
    row.update({k: v for k, v in scores.items() if k not in row})
    row["train_time_s"] = _train_time(run)
    row["settings"] = members.settings(run, task)
    return row


def _flag_column(flag: task_protocol.Flag, params: dict):
    """A flag's column in a report row: for a flag named as its one config key, the run's value of that key (a
    bool as True/False; another as recorded, e.g. readout's "final_states"; the off side's when not recorded);
    for any other flag, whether the run has it on."""
    if flag.keys != (flag.name,):
        return flag.is_on(params)
    off, value = flag.off[flag.name], params.get(flag.name)
    if isinstance(off, bool):
        return value == "True"
    return str(off) if value is None else value


def _train_time(run) -> float:
    """The sum of the run's per-epoch `epoch_time_s`; its wall time when no epoch was logged."""
    epochs = query.metric_history(run.run_id, "epoch_time_s")
    if epochs:
        return float(sum(v for _, v in epochs))
    end = run.end_time or run.start_time
    return (end - run.start_time) / 1000


def counts(counter: Counter) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counter.items()) if n)


def latest_grid_experiment(grid: str | None = None) -> str:
    """The experiment of the newest grid (of that name) in the store: `make report` without --experiment."""
    latest = query.latest_parent(("grid",), grid)
    if latest is None:
        named = f"named {grid!r} " if grid else ""
        raise ReportError(f"no ablation grid runs {named}in the tracking store {store.tracking_uri()}; run "
                          "`make ablation` first (or pass --experiment)")
    return store.client().get_experiment(latest.experiment_id).name
