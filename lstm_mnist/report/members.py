"""Which runs are a grid's: the rule the report and resume share.

Each `ablate` invocation records its plan on the grid's parent run (grids/planned.Plan: each cell's arm,
seed, config_hash and roles). A grid's members are, for each planned cell, the FINISHED run with that config_hash
in the experiment, whatever `grid_name` tag it carries: the rule resume uses to call a cell done, so a
copy of a grid file with one more seed reuses the shared seeds' runs in its report as it did in training.
FINISHED runs tagged with the grid but outside the plan (an older [budget], a removed seed) are not
members; they are counted and named, as are planned cells without a FINISHED run. A grid whose parent holds
no plan of this version is one line: rerunning its `ablate` command records the plan (it trains nothing done).

Then one check the designs need: members agree on every setting but the factors and the seed (the
grid varies nothing else), so no comparison or fit mixes budgets. A run that disagrees with the grid's
common settings is left out and named, never silently paired.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import functools

from .. import task as task_protocol
from ..grids.planned import Plan
from ..tracking import query, records



@functools.cache
def setting_keys(task: task_protocol.Task) -> tuple:
    """What a member's settings are compared on: every identity key of the task but the flags' and the seed."""
    flagged = {k for f in task.flags for k in f.keys}
    return tuple(sorted(k for k in task.fields if k not in task.not_identity and k not in flagged and k != "seed"))



@dataclass
class Members:
    runs: list                      # the member runs (MLflow Run objects), one per planned cell present
    cells: dict                     # run_id -> its PlannedCell
    seeds: list[int]                # the seeds the grid asks for (the plan's)
    dropped: Counter                # non-members that carry the grid's hashes: status, duplicate
    outside: list[str] = field(default_factory=list)   # FINISHED runs tagged with the grid, not in the plan
    missing: list[str] = field(default_factory=list)   # planned cells without a FINISHED run


def by_plan(experiment: str, name: str, plan: Plan) -> Members:
    """For each planned cell, its newest FINISHED run in the experiment (any grid's); the rest accounted for."""
    cells = {c.config_hash: c for c in plan.cells}
    found: dict[str, list] = {}
    dropped, outside = Counter(), []
    for r in query.search(experiment):
        tags = r.tags
        if tags.get("lstm_mnist.role") in ("grid", "study", "tuning", "trial"):  # a tuned grid's searches: not cells
            continue
        h = tags.get("config_hash")
        if h in cells:
            if r.status == records.FINISHED:
                found.setdefault(h, []).append(r)
            else:
                dropped[r.status] += 1
        elif tags.get("grid_name") == name and r.status == records.FINISHED:
            outside.append(r.name or r.run_id)
    runs, member_cells = [], {}
    for h, c in cells.items():
        if h in found:
            newest = max(found[h], key=lambda r: r.start_time)
            dropped["duplicate"] += len(found[h]) - 1
            runs.append(newest)
            member_cells[newest.run_id] = c
    missing = [c.cell for h, c in cells.items() if h not in found]
    seeds = sorted({c.seed for c in cells.values()})
    return Members(runs, member_cells, seeds, dropped, sorted(outside), missing)


def settings(run, task: task_protocol.Task) -> str:
    """The run's settings other than the factors and the seed, as one comparable string."""
    p, tags = run.params, run.tags
    # a key that entered the identity later (precision) reads as its old value on runs logged before it
    values = {k: p.get(k, task_protocol.IDENTITY_WHEN_NOT.get(k)) for k in setting_keys(task)}
    values["data_fingerprint"] = tags.get("data_fingerprint", p.get("data_fingerprint"))
    values["protocol_version"] = tags.get("protocol_version", "0")
    return json.dumps(values, sort_keys=True)


def differences(a: str, b: str) -> str:
    """'max_epochs=2 (the grid's: 35)' for each key where settings `a` differ from the common `b`."""
    x, y = json.loads(a), json.loads(b)
    return ", ".join(f"{k}={x[k]} (the grid's: {y[k]})" for k in sorted(x) if x.get(k) != y.get(k))


def ignoring(row: dict, keys) -> dict:
    """The row with these keys left out of its settings: a tuned grid's arms differ in what they searched."""
    values = json.loads(row["settings"])
    return {**row, "settings": json.dumps({k: v for k, v in values.items() if k not in keys}, sort_keys=True)}


def agreeing(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """The rows whose settings are the grid's common ones (the most frequent), and a line for each other."""
    if not rows:
        return rows, []
    common = Counter(r["settings"] for r in rows).most_common(1)[0][0]
    keep = [r for r in rows if r["settings"] == common]
    odd = [f"{r['arm']}-s{r['seed']}: {differences(r['settings'], common)}" for r in rows if r["settings"] != common]
    return keep, odd
