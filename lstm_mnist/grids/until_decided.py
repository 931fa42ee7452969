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
from ..engine.progress import say
from ..tracking import artifacts, query, records
from .plan import read_plan



def design(study: grid.GridSpec, max_seeds: int | None, block: int) -> tuple[sequential.Looks, list[int]]:
    """The looks and the seed order (the file's seeds, then the next unused integers), checked."""
    first = len(study.seeds)
    if not study.effect_of_interest:
        raise ConfigError(f"--until-decided needs the smallest effect that matters: add effect_of_interest = δ to "
                          f"{study.path} (in test F1 units, e.g. effect_of_interest = 0.002)")
    if first < 2:
        raise ConfigError(f"--until-decided needs at least 2 seeds to start from (a t-test needs a spread); "
                          f"{study.path} has seeds = {list(study.seeds)}: give two or more")
    most = first + 4 if max_seeds is None else max_seeds
    if most < first:
        raise ConfigError(f"--max-seeds {most} is below the {first} seeds {study.path} starts from: give "
                          f"--max-seeds {first} or more")
    if block < 1:
        raise ConfigError(f"--block {block}: give the seeds added per look, 1 or more")
    order, s = list(study.seeds), max(study.seeds) + 1
    while len(order) < most:
        if s not in order:
            order.append(s)
        s += 1
    clash = sorted(set(study.tune.seeds) & set(order)) if study.tune is not None else []
    if clash:  # the trials' seeds must never be a replicate's
        raise ConfigError(f"tune_seed = {study.tune.seed} trains trials at seed {clash[0]}, one of the seeds "
                          f"--until-decided may add ({', '.join(map(str, order))}): choose a tune_seed outside them "
                          f"in {study.path}, e.g. tune_seed = {max(order) + 100}")
    return sequential.Looks(first, block, most), order


def plan_entry(study: grid.GridSpec, looks: sequential.Looks, order: list[int]) -> dict:
    """The looks as the plan records them (Plan.sequential), with the grid's [budget]: both are fixed at the first
    look."""
    return {**looks.record(), "metric": study.task.metric, "seed_order": order,
            "effect_of_interest": study.effect_of_interest,
            "budget": dict(study.budget)}


def check_recorded(study: grid.GridSpec, entry: dict) -> None:
    """The looks are fixed at the first one: a rerun must ask for the same. They are read from the grid's latest
    plan, else from the looks.json any earlier look left (a plain `ablate` in between writes a plan without
    them)."""
    parents = query.parents(study.experiment, "grid", study.name)
    if not parents:
        return
    latest = max(parents, key=query.last_invoked)
    recorded = read_plan(latest.run_id, study.name, missing_ok=True)
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
            f"grid {study.name!r} was run --until-decided with looks at {before['looks']} seeds (from "
            f"{before['first']} seeds, --block {before['block']} --max-seeds {before['most']}, effect_of_interest "
            f"{before['effect_of_interest']}); the looks are fixed before the first one, so rerun with those, or "
            f"copy the grid file to a new name for another design")
    if before and before.get("budget") is not None and before["budget"] != now["budget"]:  # older records lack it
        was, asks = before["budget"], now["budget"]
        changed = ", ".join(f"{k} = {was.get(k, '(unset)')} -> {asks.get(k, '(unset)')}"
                            for k in sorted(set(was) | set(asks)) if was.get(k) != asks.get(k))
        raise ConfigError(
            f"grid {study.name!r} was run --until-decided under another [budget] ({changed}); its looks have seen "
            f"the cells of that budget, so put it back in {study.path}, or copy the grid file to a new name for "
            "another budget")


def describe(study: grid.GridSpec, looks: sequential.Looks, order: list[int]) -> str:
    lines = [f"--until-decided on {study.task.metric}, δ = {study.effect_of_interest:g}: {looks.k} looks, the seeds "
             "added in the "
             f"order {', '.join(map(str, order))}",
             *(f"  look {i} at {n} seeds (seeds {', '.join(map(str, order[:n]))}): α_k = {a:.4f}"
               for i, (n, a) in enumerate(zip(looks.seeds, looks.alphas), 1)),
             f"  {sequential.METHOD}; Σ α_k = {looks.alpha:g}"]
    if study.tune is not None and study.tune.repeats > 1:
        lines.append("  the seeds' tuning repeats, in the order: " + ", ".join(
            f"{seed}: r{r}" for seed, r in study.tune.repeat_of(order).items()))
    lines.append("The first look's cells:")
    return "\n".join(lines)


def main(path: str, judge, n_workers: int = 1, max_seeds: int | None = None, block: int = 1, dry_run: bool = False,
         out=say, pin: bool = True, storage_url: str | None = None, ray=None) -> int:
    """Blocks of seeds until every effect is decided or the seeds reach the most; 0 unless a cell failed.
    `judge(experiment, grid name, looks, seeds)` says what the looks say once a block is in the store: the
    report's estimates under the stopping rule (report/looks.judge; analysis/sequential.decide)."""
    study = grid.load(path)
    looks, order = design(study, max_seeds, block)
    entry = plan_entry(study, looks, order)
    if dry_run:
        out(describe(study, looks, order))
        if study.tune is not None:
            return tuned.main(path, n_workers, dry_run=True, out=out)
        return ablate.main(path, n_workers, dry_run=True, out=out)
    check_recorded(study, entry)
    with engine.capacity(n_workers, ray, study.start) as (n_workers, held):
        inv = ablate.Invocation(n_workers, held, out, pin, storage_url, ray)
        for k, n in enumerate(looks.seeds, 1):
            at = dataclasses.replace(study, seeds=tuple(order[:n]))
            # A tuned grid: its searches run once (the first block), every block's tuned cells at their values.
            rc = (tuned.train(at, inv, sequential=entry) if study.tune
                  else ablate.plan_and_run(at, inv, sequential=entry))
            if rc:
                out(f"look {k} at {n} seeds waits: a cell failed (above); rerun the same command to train it again "
                    "and go on (a look needs its whole block)")
                return 1
            decided, parent, waits = judge(study.experiment, study.name, entry, order[:n])
            if decided is None:
                out(f"look {k} at {n} seeds waits for {waits}; that process makes the look, or rerun this command "
                    "when it ends")
                return 0
            records.log_dict(parent, {**decided.record(), "budget": entry["budget"]}, artifacts.LOOKS)
            records.log_metric(parent, "undecided", len(decided.undecided()), step=n)
            out(f"look {k}/{looks.k} at {n} seeds (α_k = {looks.alpha_at(n):.4f}): "
                + "; ".join(f"{e}: {v}" for e, v in decided.verdicts().items()))
            if not decided.undecided():
                out(f"{study.name}: every effect decided at {n} seeds (of at most {looks.most}); "
                    f"`make report ARGS=\"--grid {study.name} --experiment {study.experiment}\"`")
                return 0
    out(f"{study.name}: {len(decided.undecided())} effects still {power.UNDECIDED} at {looks.most} seeds, the most "
        f"planned ({', '.join(decided.undecided())}); the looks were fixed in advance, so more seeds need a new grid "
        "file")
    return 0
