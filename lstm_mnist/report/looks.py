"""The looks of a grid run `--until-decided`: each effect re-estimated on the first n seeds at every planned
look, with the look's verdict and the verdict it settled on (the rule: analysis/sequential.decide). The runner
decides with `judge` after each block (the CLI hands it to grids/until_decided.py), and the report
recomputes the looks from the runs, so both read the same numbers.

An effect is each paired comparison (leave-one-out, add-one-in) and each factorial main effect; the
two-factor-interaction chains are reported but not decided on.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd

from ..analysis import figures, power, sequential
from . import gather, numbers
from .compare import comparisons
from .factorial import build as factorial_build
from .gather import Grid

def design_of(record: dict) -> tuple[sequential.Looks, list[int], str]:
    """(the looks, the seed order, the metric) as the plan records them."""
    return sequential.Looks.from_record(record), [int(s) for s in record["seed_order"]], record["metric"]


def effects(g: Grid, metric: str) -> list[tuple[str, float, float, float]]:
    """(effect, estimate, se, df) of every effect the looks decide on, as the report computes it."""
    out = []
    for _, c in comparisons(g, metric).iterrows():
        out.append((f"{c['design']}: {c['flag']}", c["diff_mean"], c["se"], c["df"]))
    ff = factorial_build(g.runs, g.seeds, g.fraction, metric, g.delta, task=g.task)
    for e in (ff.analysis.family("main") if ff else []):
        out.append((f"factorial: {e.term.factor}", e.estimate, e.se, ff.analysis.df))
    return out


def on_seeds(g: Grid, seeds: list[int]) -> Grid:
    """The grid as it stood with these seeds only."""
    return dataclasses.replace(g, runs=g.runs[g.runs["seed"].isin(seeds)].reset_index(drop=True), seeds=sorted(seeds))


def build(g: Grid, record: dict) -> sequential.Decided:
    """Every planned look the grid's seeds reach (a look needs every run of its seeds), recomputed from the runs."""
    design, order, metric = design_of(record)
    per_seed = g.runs.groupby("seed")["arm"].nunique()
    complete = set(per_seed[per_seed == g.runs["arm"].nunique()].index)  # seeds with the whole design
    return sequential.decide(design, order, metric, float(g.delta), complete,
                             lambda seeds: effects(on_seeds(g, seeds), metric))


def judge(experiment: str, name: str, record: dict, seeds: list[int]) -> tuple[sequential.Decided | None, str, str]:
    """For `ablate --until-decided` after a block: (what the looks say, the grid's parent run, ""), or (None,
    the parent run, why the look waits) while the grid's store does not hold every run of these seeds."""
    g = gather.load(experiment, name)
    if g.missing or sorted(g.seeds) != sorted(seeds):
        return None, g.parent_id, (f"{len(g.missing)} cells another process is training ({', '.join(g.missing[:3])}"
                                   f"{', ...' * (len(g.missing) > 3)})" if g.missing else
                                   "another invocation of this grid, which has planned other seeds since")
    return build(g, record), g.parent_id, ""


# ---------------------------------------------------------------- display
def show(looks: sequential.Decided) -> pd.DataFrame:
    """One row per effect: its estimate and 1 − α_k interval at each look, then the verdict it settled on."""
    out = {}
    for k, x in looks.frame.groupby("look"):
        n = int(x["seeds"].iloc[0])
        out[f"{n} seeds (α {x['alpha'].iloc[0]:.4f})"] = {
            e: f"{numbers.num(est, sign=True)} [{numbers.num(lo, sign=True)}, {numbers.num(hi, sign=True)}]"
               + ("" if lv == power.UNDECIDED else f" {_mark(lv)}")
            for e, est, lo, hi, lv in zip(x["effect"], x["estimate"], x["ci_lo"], x["ci_hi"], x["look_verdict"])}
    df = pd.DataFrame(out)
    df.insert(0, "effect", df.index)
    df["verdict"] = df["effect"].map(looks.verdicts())
    df["decided at"] = df["effect"].map(_decided_at(looks))
    return df.reset_index(drop=True)


def _mark(v: str) -> str:
    return "(effect)" if v == power.EFFECT else "(< δ)"


def _decided_at(looks: sequential.Decided) -> dict:
    f = looks.frame[looks.frame["look_verdict"] != power.UNDECIDED]
    first = f.groupby("effect")["seeds"].min()
    return {e: (f"{int(first[e])} seeds" if e in first else "–") for e in looks.frame["effect"].unique()}


def notes(looks: sequential.Decided, report_metric: str) -> list[str]:
    d = looks.design
    status = ("no look complete yet (the first needs every cell of its seeds)" if not len(looks.frame) else
              "every effect decided" if not looks.undecided() else
              f"{len(looks.undecided())} undecided at {looks.seeds_used} seeds"
              + (" (the most seeds planned)" if looks.seeds_used >= d.most else " (more seeds planned: rerun the grid "
                 "with --until-decided to go on)"))
    out = [f"Adaptive replication (`ablate --until-decided`): seeds added in blocks of {d.block} (the whole design "
           f"per seed, in the order {', '.join(map(str, looks.order[:looks.seeds_used]))}), from {d.first} up to "
           f"{d.most}, "
           f"stopping when every effect is decided; {status}. {d.guarantee(looks.delta)}. Each column is one look: the "
           f"estimate on its first n seeds and its 1 − α_k interval; a verdict is the first decisive one."
           " Interaction chains are not decided on, and the fixed-n verdicts of the tables above are replaced "
           "by these."]
    if report_metric != looks.metric:
        out.append(f"The looks decided on {looks.metric}; this report's metric is {report_metric}, whose verdicts are "
                   "therefore not shown.")
    return out


def figure(looks: sequential.Decided, out: Path) -> Path:
    series = {e: tuple(x[k].tolist() for k in ("seeds", "estimate", "ci_lo", "ci_hi", "tost_lo", "tost_hi"))
              for e, x in looks.frame.groupby("effect", sort=False)}
    return figures.intervals_png(series, looks.delta, looks.metric, out / f"looks_{looks.metric}.png")


def apply(r) -> None:
    """Give the report (compare.Report) its looks, and replace its fixed-n verdicts with theirs: under optional
    stopping a fixed-n verdict is not valid (on another metric than the looks', no verdict is shown)."""
    r.looks = build(r.grid, r.grid.sequential)
    reached = r.looks.reached() if r.looks.metric == r.metric else {}
    rows = [reached.get(f"{d}: {f}", power.NO_VERDICT) for d, f in zip(r.comparisons["design"], r.comparisons["flag"])]
    for key in power.NO_VERDICT:
        r.comparisons[key] = [row[key] for row in rows]
    if r.factorial:
        r.factorial.verdicts = reached
