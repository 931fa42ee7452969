"""`python -m lstm_mnist ablate FILE --until-decided [--max-seeds N] [--block B]`: the grid at its seeds, then
B more seeds of the whole design at a time, up to N, looking after each block and stopping once every effect
is "effect" or "no effect ≥ δ" (δ: the grid's effect_of_interest). A tuned grid (a [tune] table) is tuned in
the first block, each arm with its equal budget; every block then trains its tuned cells at the tuned values
(and, with `fixed = true`, its untuned cells, which get looks of their own in the report); the looks decide
on the tuned effects.

Each block is an ordinary `ablate` of the grid with more seeds (grids/ablate.py: claims, resume, workers, one
parent run); the plan recorded on the parent names the looks (seeds, α per look, seed order), and after each
look looks.json and the metric `undecided` (step = seeds) record what it said. The looks are fixed before the
first one, and a rerun replays them from the runs (nothing is trained twice), so a killed invocation resumes
where it stopped and reaches the same verdicts.
"""
from __future__ import annotations

import dataclasses

from ..analysis import power, sequential
from ..config import ConfigError
from ..engine import drive as engine
from . import ablate, grid
from .tuned import run as tuned
from ..tracking import artifacts, query, records
from .options import Options
from .plan import read_plan



def design(spec: grid.GridSpec, max_seeds: int | None, block: int) -> tuple[sequential.Looks, list[int]]:
    """The looks and the seed order (the file's seeds, then the next unused integers), checked."""
    first = len(spec.seeds)
    if not spec.effect_of_interest:
        raise ConfigError(f"--until-decided needs the smallest effect that matters: add effect_of_interest = δ to "
                          f"{spec.path} (in test F1 units, e.g. effect_of_interest = 0.002)")
    if first < 2:
        raise ConfigError(f"--until-decided needs at least 2 seeds to start from (a t-test needs a spread); "
                          f"{spec.path} has seeds = {list(spec.seeds)}: give two or more")
    most = first + 4 if max_seeds is None else max_seeds
    if most < first:
        raise ConfigError(f"--max-seeds {most} is below the {first} seeds {spec.path} starts from: give "
                          f"--max-seeds {first} or more")
    if block < 1:
        raise ConfigError(f"--block {block}: give the seeds added per look, 1 or more")
    order, s = list(spec.seeds), max(spec.seeds) + 1
    while len(order) < most:
        if s not in order:
            order.append(s)
        s += 1
    clash = sorted(set(spec.tune.seeds) & set(order)) if spec.tune is not None else []
    if clash:  # the trials' seeds must never be a replicate's
        raise ConfigError(f"tune_seed = {spec.tune.seed} trains trials at seed {clash[0]}, one of the seeds "
                          f"--until-decided may add ({', '.join(map(str, order))}): choose a tune_seed outside them "
                          f"in {spec.path}, e.g. tune_seed = {max(order) + 100}")
    return sequential.Looks(first, block, most), order


def plan_entry(spec: grid.GridSpec, looks: sequential.Looks, order: list[int]) -> dict:
    """The looks as the plan records them (Plan.sequential), with the grid's [budget]: both are fixed at the first
    look."""
    return {**looks.record(), "metric": spec.task.metric, "seed_order": order,
            "effect_of_interest": spec.effect_of_interest,
            "budget": dict(spec.budget)}


def check_recorded(spec: grid.GridSpec, entry: dict) -> None:
    """The looks are fixed at the first one: a rerun must ask for the same. They are read from the grid's latest
    plan, else from the looks.json any earlier look left (a plain `ablate` in between writes a plan without
    them)."""
    parents = query.parents(spec.experiment, "grid", spec.name)
    if not parents:
        return
    latest = max(parents, key=query.last_invoked)
    recorded = read_plan(latest.run_id, spec.name, missing_ok=True)
    before = recorded.sequential if recorded else None
    if not before:
        left = query.read_json_artifact(latest.run_id, artifacts.LOOKS)
        if isinstance(left, dict) and isinstance(left.get("design"), dict):
            before = {**left["design"], "seed_order": left.get("seed_order"), "metric": left.get("metric"),
                      "effect_of_interest": left.get("effect_of_interest"), "budget": left.get("budget")}
    now = entry
    keys = ("first", "block", "most", "alpha", "seed_order", "metric", "effect_of_interest")
    if before and any(before.get(k) != now[k] for k in keys):
        raise ConfigError(
            f"grid {spec.name!r} was run --until-decided with looks at {before['looks']} seeds (from "
            f"{before['first']} seeds, --block {before['block']} --max-seeds {before['most']}, effect_of_interest "
            f"{before['effect_of_interest']}); the looks are fixed before the first one, so rerun with those, or "
            f"copy the grid file to a new name for another design")
    if before and before.get("budget") is not None and before["budget"] != now["budget"]:  # older records lack it
        was, asks = before["budget"], now["budget"]
        changed = ", ".join(f"{k} = {was.get(k, '(unset)')} -> {asks.get(k, '(unset)')}"
                            for k in sorted(set(was) | set(asks)) if was.get(k) != asks.get(k))
        raise ConfigError(
            f"grid {spec.name!r} was run --until-decided under another [budget] ({changed}); its looks have seen "
            f"the cells of that budget, so put it back in {spec.path}, or copy the grid file to a new name for "
            "another budget")


def describe(spec: grid.GridSpec, looks: sequential.Looks, order: list[int]) -> str:
    lines = [f"--until-decided on {spec.task.metric}, δ = {spec.effect_of_interest:g}: {looks.k} looks, the seeds "
             "added in the "
             f"order {', '.join(map(str, order))}",
             *(f"  look {i} at {n} seeds (seeds {', '.join(map(str, order[:n]))}): α_k = {a:.4f}"
               for i, (n, a) in enumerate(zip(looks.seeds, looks.alphas), 1)),
             f"  {sequential.METHOD}; Σ α_k = {looks.alpha:g}"]
    if spec.tune is not None and spec.tune.repeats > 1:
        lines.append("  the seeds' tuning repeats, in the order: " + ", ".join(
            f"{seed}: r{r}" for seed, r in spec.tune.repeat_of(order).items()))
    lines.append("The first look's cells:")
    return "\n".join(lines)


def main(spec: grid.GridSpec, opts: Options) -> int:
    """Blocks of seeds until every effect is decided or the seeds reach the most; 0 unless a cell failed.
    `opts.judge(experiment, grid name, looks, seeds)` says what the looks say once a block is in the store: the
    report's estimates under the stopping rule (report/looks.judge, handed in by the caller)."""
    looks, order = design(spec, opts.max_seeds, opts.block)
    entry = plan_entry(spec, looks, order)
    out, judge = opts.out, opts.judge
    if opts.dry_run:
        out(describe(spec, looks, order))
        return (tuned.main if spec.tune is not None else ablate.main)(spec, opts)
    check_recorded(spec, entry)
    with engine.capacity(opts.workers, opts.ray, spec.start) as (n_workers, held):
        inv = ablate.invocation(opts, n_workers, held)
        for k, n in enumerate(looks.seeds, 1):
            at = dataclasses.replace(spec, seeds=tuple(order[:n]))
            # A tuned grid: its searches run once (the first block), every block's tuned cells at their values.
            rc = (tuned.train(at, inv, sequential=entry) if spec.tune
                  else ablate.plan_and_run(at, inv, sequential=entry))
            if rc:
                out(f"look {k} at {n} seeds waits: a cell failed (above); rerun the same command to train it again "
                    "and go on (a look needs its whole block)")
                return 1
            decided, parent, waits = judge(spec.experiment, spec.name, entry, order[:n])
            if decided is None:
                out(f"look {k} at {n} seeds waits for {waits}; that process makes the look, or rerun this command "
                    "when it ends")
                return 0
            records.log_dict(parent, {**decided.record(), "budget": entry["budget"]}, artifacts.LOOKS)
            records.log_metric(parent, "undecided", len(decided.undecided()), step=n)
            out(f"look {k}/{looks.k} at {n} seeds (α_k = {looks.alpha_at(n):.4f}): "
                + "; ".join(f"{e}: {v}" for e, v in decided.verdicts().items()))
            if not decided.undecided():
                out(f"{spec.name}: every effect decided at {n} seeds (of at most {looks.most}); "
                    f"`make report ARGS=\"--grid {spec.name} --experiment {spec.experiment}\"`")
                return 0
    out(f"{spec.name}: {len(decided.undecided())} effects still {power.UNDECIDED} at {looks.most} seeds, the most "
        f"planned ({', '.join(decided.undecided())}); the looks were fixed in advance, so more seeds need a new grid "
        "file")
    return 0
