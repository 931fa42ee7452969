"""The looks of a grid run `--until-decided`: each effect re-estimated on the first n seeds at every planned
look, with the look's verdict (analysis/sequential.py) and the verdict it settled on. The runner decides
with this code after each block, and the report recomputes it from the runs, so both read the same numbers.

An effect is each paired comparison (leave-one-out, add-one-in) and each factorial main effect; the
two-factor-interaction chains are reported but not decided on.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..analysis import figures, power, sequential
from .compare import comparisons
from .factorial import _num, build as factorial_build
from .gather import Grid

COLUMNS = ["look", "seeds", "effect", "estimate", "se", "df", "alpha", "ci_lo", "ci_hi", "tost_lo", "tost_hi",
           "look_verdict", "verdict"]


@dataclass
class Looks:
    """What the looks said: one row per (look, effect) up to the seeds the grid holds."""
    design: sequential.Looks
    metric: str
    order: list[int]           # the seeds in the order the looks add them
    delta: float
    frame: pd.DataFrame        # COLUMNS

    @property
    def last(self) -> pd.DataFrame:
        return self.frame[self.frame["look"] == self.frame["look"].max()] if len(self.frame) else self.frame

    @property
    def seeds_used(self) -> int:
        return int(self.last["seeds"].iloc[0]) if len(self.frame) else 0

    def verdicts(self) -> dict[str, str]:
        return dict(zip(self.last["effect"], self.last["verdict"]))

    def undecided(self) -> list[str]:
        return [e for e, v in self.verdicts().items() if v == power.UNDECIDED]


def design_of(record: dict) -> tuple[sequential.Looks, list[int], str]:
    """(the looks, the seed order, the metric) as the plan records them."""
    return sequential.Looks.from_record(record), [int(s) for s in record["seed_order"]], record["metric"]


def effects(g: Grid, metric: str) -> list[tuple[str, float, float, float]]:
    """(effect, estimate, se, df) of every effect the looks decide on, as the report computes it."""
    out = []
    for _, c in comparisons(g, metric).iterrows():
        out.append((f"{c['design']}: {c['flag']}", c["diff_mean"], c["se"], c["df"]))
    ff = factorial_build(g.runs, g.seeds, g.fraction, metric, g.delta)
    for e in (ff.analysis.family("main") if ff else []):
        out.append((f"factorial: {e.term.factor}", e.estimate, e.se, ff.analysis.df))
    return out


def on_seeds(g: Grid, seeds: list[int]) -> Grid:
    """The grid as it stood with these seeds only."""
    return dataclasses.replace(g, runs=g.runs[g.runs["seed"].isin(seeds)].reset_index(drop=True), seeds=sorted(seeds))


def build(g: Grid, record: dict) -> Looks:
    """Every planned look the grid's seeds reach (a look needs every run of its seeds), recomputed from the runs."""
    design, order, metric = design_of(record)
    delta = float(g.delta)
    per_seed = g.runs.groupby("seed")["arm"].nunique()
    have = set(per_seed[per_seed == g.runs["arm"].nunique()].index)  # seeds with the whole design
    rows, history = [], {}
    for k, n in enumerate(design.seeds, 1):
        if not set(order[:n]) <= have:
            break
        at = on_seeds(g, order[:n])
        a = design.alpha_at(n)
        for name, est, se, df in effects(at, metric):
            v = sequential.look_verdict(est, se, df, delta, design, n)
            history.setdefault(name, []).append(v)
            lo, hi = sequential.look_interval(est, se, df, design, n)
            tlo, thi = power.interval(est, se, df, 1 - 2 * a)
            rows.append({"look": k, "seeds": n, "effect": name, "estimate": est, "se": se, "df": df, "alpha": a,
                         "ci_lo": lo, "ci_hi": hi, "tost_lo": tlo, "tost_hi": thi, "look_verdict": v,
                         "verdict": sequential.settle(history[name])})
    return Looks(design, metric, order, delta, pd.DataFrame(rows, columns=COLUMNS))


def record(lk: Looks) -> dict:
    """The looks as the runner records them on the grid's parent run (looks.json)."""
    return {"design": lk.design.record(), "metric": lk.metric, "effect_of_interest": lk.delta,
            "seed_order": lk.order, "looks": [
                {"look": int(k), "seeds": int(x["seeds"].iloc[0]), "alpha": float(x["alpha"].iloc[0]),
                 "verdicts": dict(zip(x["effect"], x["verdict"]))} for k, x in lk.frame.groupby("look")]}


# ---------------------------------------------------------------- display
def show(lk: Looks) -> pd.DataFrame:
    """One row per effect: its estimate and 1 − α_k interval at each look, then the verdict it settled on."""
    out = {}
    for k, x in lk.frame.groupby("look"):
        n = int(x["seeds"].iloc[0])
        out[f"{n} seeds (α {x['alpha'].iloc[0]:.4f})"] = {
            e: f"{_num(est, sign=True)} [{_num(lo, sign=True)}, {_num(hi, sign=True)}]" + ("" if lv == power.UNDECIDED else f" {_mark(lv)}")
            for e, est, lo, hi, lv in zip(x["effect"], x["estimate"], x["ci_lo"], x["ci_hi"], x["look_verdict"])}
    df = pd.DataFrame(out)
    df.insert(0, "effect", df.index)
    df["verdict"] = df["effect"].map(lk.verdicts())
    df["decided at"] = df["effect"].map(_decided_at(lk))
    return df.reset_index(drop=True)


def _mark(v: str) -> str:
    return "(effect)" if v == power.EFFECT else "(< δ)"


def _decided_at(lk: Looks) -> dict:
    f = lk.frame[lk.frame["look_verdict"] != power.UNDECIDED]
    first = f.groupby("effect")["seeds"].min()
    return {e: (f"{int(first[e])} seeds" if e in first else "–") for e in lk.frame["effect"].unique()}


def notes(lk: Looks, report_metric: str) -> list[str]:
    d = lk.design
    status = ("no look complete yet (the first needs every cell of its seeds)" if not len(lk.frame) else
              "every effect decided" if not lk.undecided() else
              f"{len(lk.undecided())} undecided at {lk.seeds_used} seeds"
              + (" (the most seeds planned)" if lk.seeds_used >= d.most else " (more seeds planned: rerun the grid "
                 "with --until-decided to go on)"))
    out = [f"Adaptive replication (`ablate --until-decided`): seeds added in blocks of {d.block} (the whole design "
           f"per seed, in the order {', '.join(map(str, lk.order[:lk.seeds_used]))}), from {d.first} up to {d.most}, "
           f"stopping when every effect is decided; {status}. {d.guarantee(lk.delta)}. Each column is one look: the "
           f"estimate on its first n seeds and its 1 − α_k interval; a verdict is the first decisive one."
           " Interaction chains are not decided on, and the fixed-n verdicts of the tables above are replaced by these."]
    if report_metric != lk.metric:
        out.append(f"The looks decided on {lk.metric}; this report's metric is {report_metric}, whose verdicts are "
                   "therefore not shown.")
    return out


def figure(lk: Looks, out: Path) -> Path:
    series = {e: tuple(x[k].tolist() for k in ("seeds", "estimate", "ci_lo", "ci_hi", "tost_lo", "tost_hi"))
              for e, x in lk.frame.groupby("effect", sort=False)}
    return figures.intervals_png(series, lk.delta, lk.metric, out / f"looks_{lk.metric}.png")


def apply(r) -> None:
    """Give the report (compare.Report) its looks, and replace its fixed-n verdicts with theirs: under optional
    stopping a fixed-n verdict is not valid (on another metric than the looks', no verdict is shown)."""
    r.looks = build(r.grid, r.grid.sequential)
    mine = r.looks.metric == r.metric
    verdicts = r.looks.verdicts() if mine else {}
    r.comparisons["verdict"] = [verdicts.get(f"{d}: {f}", "") for d, f in zip(r.comparisons["design"],
                                                                           r.comparisons["flag"])]
    if r.factorial:
        r.factorial.verdicts = verdicts
