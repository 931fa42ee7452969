"""The factorial part of a report: the grid's fraction read back from its parent run, its effects
(analysis/effects.py, pure) on the FINISHED runs, and their rendering as tables and a half-normal plot.

Effect = mean of the metric where the term's column is +1 minus where it is -1 (a flag: on − off), so a
positive main effect means the flag raised the metric on average over the other factors' settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import effects, figures, fractional, power
from . import gather, numbers

# Columns of the effect CSVs (full precision).
COLUMNS = ["kind", "term", "letters", "estimate", "se", "ci_lo", "ci_hi", "t", "p", "p_holm", "df", "method",
           "affected", "note", "mde80", "seeds_for_delta", "verdict", *power.REACHED]


@dataclass
class Factorial:
    design: fractional.Design
    analysis: effects.Analysis
    missing_arms: list[str]     # "arm (seed s)" for each design run that has no FINISHED run
    metric: str
    delta: float | None = None  # the grid's effect_of_interest
    verdicts: dict | None = None  # run --until-decided: each main effect's verdict, where reached (Decided.reached)

    def frame(self, kind: str) -> pd.DataFrame:
        a = self.analysis
        n = len(a.seeds)
        per_seed = a.n_runs / n - 1 if n else 0  # OLS: df = (runs per seed − 1)(seeds − 1), so each seed adds
        df_at = (lambda k: a.df + (k - n) * per_seed) if a.method == "OLS" else (lambda k: a.df)
        rows = [{"kind": e.term.kind, "term": e.term.name, "letters": e.term.letters, "estimate": e.estimate,
                 "se": e.se, "ci_lo": e.ci_lo, "ci_hi": e.ci_hi, "t": e.t, "p": e.p, "p_holm": e.p_holm,
                 "df": a.df, "method": a.method, "affected": e.affected, "note": e.note,
                 **{k: v for k, v in power.columns(e.estimate, e.se, a.df, n, self.delta, df_at).items()
                    if k not in ("se", "df")}} for e in a.family(kind)]
        if self.verdicts is not None:  # the looks' verdicts; the chains were not decided on
            for row, e in zip(rows, a.family(kind)):
                row |= (self.verdicts.get(f"factorial: {e.term.factor}", power.NO_VERDICT) if kind == "main"
                        else power.NO_VERDICT)
        return pd.DataFrame(rows, columns=COLUMNS)

    def main_effect(self, flag: str) -> effects.Effect | None:
        return next((e for e in self.analysis.family("main") if e.term.factor == flag), None)


def levels(run: pd.Series, factors: tuple[str, ...], task) -> tuple[int, ...]:
    """±1 per factor of a report row (its on side: a boolean flag true, readout final_states; gather.is_on)."""
    return tuple(1 if gather.is_on(run, task, f) else -1 for f in factors)


def build(runs: pd.DataFrame, seeds: list[int], fraction, metric: str,
          delta: float | None = None, *, task) -> Factorial | None:
    """The factorial analysis of the grid's factorial cells (`fraction`: the plan's Fraction; None: the grid
    has no factorial design)."""
    if fraction is None:
        return None
    d = fraction.design
    names, obs = observations(runs, d, metric, task)
    if not obs:
        return None
    a = effects.analyze(d, obs, seeds)
    missing = [f"{names.get(lv) or _arm_name(d, lv)} (seed {s})" for s, lv in a.missing]
    return Factorial(d, a, missing, metric, delta)


def observations(runs: pd.DataFrame, d: fractional.Design, metric: str, task) -> tuple[dict, list]:
    """The factorial cells' runs with the metric: ({levels: arm}, [(seed, levels, value)])."""
    mine = runs[runs["designs"].astype(str).str.split(",").map(lambda ds: "factorial" in ds)]
    mine = mine.dropna(subset=[metric])
    names = {levels(r, d.factors, task): r["arm"] for _, r in mine.iterrows()}
    return names, [(int(r["seed"]), levels(r, d.factors, task), float(r[metric])) for _, r in mine.iterrows()]


def _arm_name(d: fractional.Design, lv: tuple[int, ...]) -> str:
    on = [f for f, x in zip(d.factors, lv) if x > 0]
    return "+".join(["baseline", *on])


# ---------------------------------------------------------------- display
def show(f: Factorial, kind: str) -> pd.DataFrame:
    """Main effects (kind "main") or 2FI chains ("2fi"): Δ, CI, SE, t, p, Holm; † marks a leaning estimate."""
    df = f.frame(kind)
    label = "flag" if kind == "main" else "interaction (alias chain)"
    return pd.DataFrame({
        label: [t + ("†" if aff else "") for t, aff in zip(df["term"], df["affected"])],
        f"effect Δ {f.metric}": [note or numbers.num(x, sign=True) for x, note in zip(df["estimate"], df["note"])],
        "95% CI": ["–" if pd.isna(lo) else f"[{numbers.num(lo, sign=True)}, {numbers.num(hi, sign=True)}]"
                   for lo, hi in zip(df["ci_lo"], df["ci_hi"])],
        "SE": [numbers.num(x) for x in df["se"]], "t": [numbers.num(x, 2) for x in df["t"]],
        "p": [numbers.p_value(p) for p in df["p"]], "p (Holm)": [numbers.p_value(p) for p in df["p_holm"]],
        "MDE (80%)": [numbers.num(x) for x in df["mde80"]],
        **({"seeds for δ": ["–" if pd.isna(x) else f"{x:.0f}" for x in df["seeds_for_delta"]],
            "verdict": said(df)} if df["verdict"].astype(bool).any() else {})})


def said(rows: pd.DataFrame, digits: int = 4) -> list[str]:
    """Each row's verdict with where it was reached: "effect at 6 seeds, 98.5% CI [−0.0066, −0.0003]" (the
    interval that verdict read; "undecided at 8 seeds" without one); "" where the row has no verdict."""
    out = []
    for v, n, level, lo, hi in zip(rows["verdict"], *(rows[k] for k in power.REACHED)):
        if not v or pd.isna(n):
            out.append(v or "")
        elif v == power.UNDECIDED or pd.isna(lo):
            out.append(f"{v} at {n:.0f} seeds")
        else:
            out.append(f"{v} at {n:.0f} seeds, {100 * level:.3g}% CI "
                       f"[{numbers.num(lo, digits, True)}, {numbers.num(hi, digits, True)}]")
    return out


def notes(f: Factorial) -> list[str]:
    a, d = f.analysis, f.design
    if a.method == effects.OLS:
        error = (f"error variance from the {a.method} fit (seed as a block, every estimable contrast in the "
                 f"model): σ̂ = {a.sigma:.4g} on {a.df:g} residual degrees of freedom")
    else:
        why = "one seed" if len(a.seeds) == 1 else f"{len(a.seeds)} seeds but too few runs"
        error = (f"{why}, so no residual degrees of freedom: standard errors are Lenth's pseudo standard "
                 f"error (PSE = {a.sigma:.4g}) over the "
                 f"{len(a.effects) - sum(np.isnan(e.estimate) for e in a.effects)} "
                 f"contrasts, t reference with {a.df:.3g} degrees of freedom; simultaneous margin {a.sme:.4g}")
    out = [f"Factorial design {d.title} ({d.resolution_text}, {d.runs} runs per seed"
           + (f"; generators {', '.join(d.generator_text())}" if d.p else "") + f") over "
           f"{', '.join(f'{ch} = {x}' for ch, x in zip(d.letters, d.factors))}; {a.n_runs} runs from seeds "
           f"{', '.join(map(str, a.seeds))}. Effect = mean({f.metric}) where the term is + minus where it is −; "
           f"p two-sided, Holm-adjusted within the main effects and separately within the interaction chains; "
           + error + "."]
    if d.p:
        out.append("Each interaction row is a whole alias chain: the design estimates the sum of its members, "
                   "not each one.")
    if d.resolution is not None and d.resolution < 4:
        out.append(f"Resolution {fractional.ROMAN[d.resolution]}: each main effect is aliased with the two-factor "
                   "interactions named beside it (its row estimates their sum); a screening design.")
    if a.outside:
        out.append(f"{a.outside} FINISHED run{'s' * (a.outside > 1)} of this grid are not runs of this fraction "
                   "(the grid file changed) and were left out of the effects.")
    if f.missing_arms:
        out.append(f"† missing runs ({'; '.join(f.missing_arms)}): the effects were fitted by least squares on the "
                   "runs that are there; rows marked † are no longer orthogonal to the others and lean on the model.")
    return out


def half_normal_png(f: Factorial, out: Path) -> Path:
    points = effects.half_normal(f.analysis.effects)
    key = ", ".join(f"{ch} = {x}" for ch, x in zip(f.design.letters, f.design.factors))
    return figures.half_normal_png(points, f.metric, f.design.title, out / f"half_normal_{f.metric}.png", key)


def worth_columns(f: Factorial | None, flags: list[str]) -> dict[str, list[float]]:
    """The factorial main effect of each flag, for the report's "worth" table (NaN where not a factor)."""
    cols = {k: [] for k in ("ff_diff_mean", "ff_diff_ci_lo", "ff_diff_ci_hi", "ff_p_holm")}
    for flag in flags:
        e = f.main_effect(flag) if f else None
        for k, v in zip(cols, (e.estimate, e.ci_lo, e.ci_hi, e.p_holm) if e else (np.nan,) * 4):
            cols[k].append(v)
    return cols
