"""`report --against OTHER`: this grid's effects beside another grid's of the same design and task, their
differences and a verdict at δ for each (analysis/against.py, pure); what differs between the two grids'
settings, what is paired, and what each grid cost. Answers "does bf16 change any effect?", "does the 4-epoch
answer predict the 35-epoch one?", "is the GPU's answer the CPU's?".
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from ..analysis import against as pure
from ..config import UserError
from . import compare, factorial, numbers
from .compare import Report

COLUMNS = ["family", "term", "this", "other", "diff", "diff_ci_lo", "diff_ci_hi", "se", "df", "paired", "n", "p",
           "p_holm", "p_same", "p_same_holm", "verdict"]
FAMILIES = {"main": "main effect", "2fi": "interaction chain", "leave_one_out": "leave-one-out",
            "add_one_in": "add-one-in"}


class AgainstError(UserError):
    """Two grids that cannot be compared effect by effect; one line says why and what to do."""


@dataclass
class Against:
    """This grid's effects against the other's (`this − other`), and what makes them two grids."""
    this: str                 # the grids' names
    other: str
    experiments: tuple        # (this grid's experiment, the other's)
    metric: str
    delta: float
    rows: list                # analysis/against.Difference, in family order
    differs: dict = field(default_factory=dict)   # setting -> (this grid's value, the other's)
    time: dict = field(default_factory=dict)      # "this"/"other" -> (grid wall time s, summed train time s)

    @property
    def labels(self) -> tuple[str, str]:
        """The two grids as columns and notes name them: their names, with the experiments where the names agree."""
        if self.this != self.other:
            return self.this, self.other
        return tuple(f"{n} ({e})" for n, e in zip((self.this, self.other), self.experiments))

    @property
    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([{**{k: getattr(r, k) for k in COLUMNS if k not in ("diff_ci_lo", "diff_ci_hi")},
                              "diff_ci_lo": r.ci[0], "diff_ci_hi": r.ci[1]} for r in self.rows], columns=COLUMNS)


def build(this: Report, other: Report) -> Against:
    """Both grids' effects and their differences; grids of another task or design are one line."""
    a, b = this.grid, other.grid
    names = f"grid {a.name!r} and grid {b.name!r}"
    if (a.name, a.experiment) == (b.name, b.experiment):
        raise AgainstError(f"--against {b.name}: that is this grid itself; name another grid (or the same name in "
                           "another experiment, with --against-experiment)")
    if a.task.name != b.task.name:
        raise AgainstError(f"--against: {names} study different tasks ({a.task.name}, {b.task.name}); compare grids "
                           "of one task")
    if _design(this) != _design(other):
        raise AgainstError(f"--against: {names} are of different designs ({_design_text(this)}; "
                           f"{_design_text(other)}); compare two grids of one design (the same file but a setting)")
    delta = a.delta or b.delta
    if not delta:
        raise AgainstError(f"--against: neither {names} has an effect_of_interest (δ), which the verdicts need; add "
                           "effect_of_interest = 0.002 (say) to one grid file and rerun it (its trained cells are "
                           "skipped)")
    rows = _factorial(this, other) + [r for design in compare.REFERENCE for r in _paired(this, other, design)]
    return Against(a.name, b.name, (a.experiment, b.experiment), this.metric, delta,
                   pure.judge(rows, delta), _differs(this, other),
                   {"this": (a.wall_time_s, float(a.runs["train_time_s"].sum())),
                    "other": (b.wall_time_s, float(b.runs["train_time_s"].sum()))})


def _design(r: Report) -> tuple:
    """What makes two grids the same design: the fraction (factors, generators) and each paired comparison."""
    f = r.grid.fraction
    pairs = tuple(sorted(zip(r.comparisons["design"], r.comparisons["flag"])))
    return (f.factors, f.generators) if f else (), pairs


def _design_text(r: Report) -> str:
    f = r.factorial
    parts = [f"{f.design.title} over {', '.join(f.design.factors)}"] if f else []
    designs = sorted(set(r.comparisons["design"]))
    return f"{r.grid.name}: " + ", ".join(parts + designs or ["no design"])


def _factorial(this: Report, other: Report) -> list:
    f, g = this.factorial, other.factorial
    if not (f and g):
        return []
    d = f.design

    def cells(r: Report) -> dict:
        return {(s, lv): y for s, lv, y in factorial.observations(r.grid.runs, d, r.metric, r.grid.task)[1]}

    return pure.factorial(d, cells(this), cells(other), f.analysis, g.analysis)


def _paired(this: Report, other: Report, design: str) -> list:
    """Each flag of a leave-one-out or add-one-in design: its per-seed Δ in both grids."""
    out = []
    for flag in [f for d, f in zip(this.comparisons["design"], this.comparisons["flag"]) if d == design]:
        out.append(pure.by_seed(design, flag, _deltas(this, design, flag), _deltas(other, design, flag)))
    return out


def _deltas(r: Report, design: str, flag: str) -> dict:
    """Seed -> Δ (with − without the flag) of one comparison of a grid."""
    recorded = next(arm for arm, f, _ in compare.design_members(r.grid, design) if f == flag)
    with_, without = compare.with_and_without(design, compare.values_by_arm(r.grid, r.metric), recorded)
    return {s: with_[s] - without[s] for s in sorted(set(with_) & set(without))}


def _differs(this: Report, other: Report) -> dict:
    """The settings (every identity key but the flags and the seed) in which the two grids' runs differ."""
    def common(r: Report) -> dict:
        return json.loads(r.grid.runs["settings"].mode().iloc[0])

    x, y = common(this), common(other)
    return {k: (x.get(k), y.get(k)) for k in sorted({*x, *y}) if x.get(k) != y.get(k)}


# ---------------------------------------------------------------- display


def show(x: Against) -> pd.DataFrame:
    """The comparison as the report shows it: each effect in both grids, the difference, its CI and verdict."""
    df = x.frame
    this, other = x.labels
    return pd.DataFrame({
        "effect": [f"{FAMILIES.get(f, f)}: {t}" for f, t in zip(df["family"], df["term"])],
        this: [numbers.num(v, sign=True) for v in df["this"]], other: [numbers.num(v, sign=True) for v in df["other"]],
        "difference": [numbers.num(v, sign=True) for v in df["diff"]],
        "95% CI": [f"[{numbers.num(lo, sign=True)}, {numbers.num(hi, sign=True)}]"
                   for lo, hi in zip(df["diff_ci_lo"], df["diff_ci_hi"])],
        "paired": [f"{'by cell' if f in ('main', '2fi') else 'by seed'} ({n})" if p else
                   f"no ({n} {'runs' if f in ('main', '2fi') else 'seeds'})"
                   for f, p, n in zip(df["family"], df["paired"], df["n"])],
        "p (Holm)": [numbers.p_value(p) for p in df["p_holm"]],
        "TOST p (Holm)": [numbers.p_value(p) for p in df["p_same_holm"]],
        "verdict": df["verdict"]})


def title(x: Against) -> str:
    return (f"Against grid {x.other} ({x.experiments[1]}): each effect on {x.metric} in both grids, this − other, "
            f"at δ = {x.delta:g}")


def notes(x: Against) -> list[str]:
    """What differs, what is paired, how the family is corrected, and what each grid cost."""
    this, other = x.labels
    differs = "; ".join(f"{k} = {a} here, {b} in {other}" for k, (a, b) in x.differs.items())
    paired = [r for r in x.rows if r.paired]
    out = [f"Compared with grid {x.other} (experiment {x.experiments[1]}): the two grids differ in "
           f"{differs or 'no setting (the same settings)'}."
           + (f" Paired: {len(paired)} of {len(x.rows)} rows, each factorial effect by cell (the same arm at the same "
              "seed in both grids: the effect of the per-cell differences, its error from their seed-blocked fit) and "
              "each paired Δ by seed (the mean of the per-seed differences of the two grids' Δ)." if paired else
              " No cell is in both grids (other seeds), so each difference is of two independent estimates "
              "(se = √(se₁² + se₂²), Welch's degrees of freedom).")
           + f" Verdicts at δ = {x.delta:g}: \"the same within δ\" when two one-sided tests reject |difference| ≥ δ "
           "(the larger one-sided p, Holm-adjusted within each family: main effects, interaction chains, each design's "
           "comparisons, below α = 0.05); else \"differs\" when the two-sided t-test of the difference (Holm-adjusted "
           "the same way) rejects 0; else \"undecided\". The 95% CI is per row, unadjusted."]
    (wa, ta), (wb, tb) = x.time["this"], x.time["other"]
    if ta and tb:
        out.append(f"Cost: {this} trained for {ta / 60:.1f} min summed over its runs (grid wall time "
                   f"{wa / 60:.1f} min), "
                   f"{other} for {tb / 60:.1f} min ({wb / 60:.1f} min): {other}/{this} = {tb / ta:.2f} in training "
                   f"time" + (f", {wb / wa:.2f} in wall time." if wa and wb else "."))
    return out
