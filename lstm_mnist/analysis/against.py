"""Two grids of one design compared effect by effect: does a setting (precision, the epoch budget, the device)
change what each flag is worth? Pure (numpy/scipy), no MLflow.

For each effect, the difference "this grid − the other" with its standard error, paired where the grids share
cells:
  a factorial effect   paired by cell (the same arm at the same seed in both): the effect of the per-cell
                       differences, from the seed-blocked fit of those differences (effects.analyze), i.e. the
                       setting × term interaction; unpaired: this − other, se = √(se₁² + se₂²), Welch's df
  a paired Δ by seed   (leave-one-out, add-one-in) paired by seed: the mean of the per-seed differences of the
                       two grids' Δ, a paired t on n − 1; unpaired: Welch's t of the two sets of per-seed Δ
Each family (main effects, interaction chains, each design's comparisons) is corrected by Holm, separately for
the two questions asked of it: "differs" (two-sided t of the difference against 0) and "the same within δ"
(two one-sided tests of |difference| ≥ δ, TOST p = the larger one-sided p). A row is "the same within δ" when its
Holm-adjusted TOST p < α, else "differs" when its Holm-adjusted two-sided p < α, else "undecided".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps

from . import effects, stats
from .fractional import Design
from .power import interval

NAN = float("nan")
SAME, DIFFERS, UNDECIDED = "the same within δ", "differs", "undecided"


@dataclass(frozen=True)
class Difference:
    """One effect in both grids and their difference (this − other)."""
    family: str          # "main", "2fi", "leave_one_out", "add_one_in"
    term: str            # the flag, or an interaction's alias chain
    this: float          # the effect in this grid
    other: float         # the effect in the other grid
    diff: float          # this − other (paired: the effect of the per-cell or per-seed differences)
    se: float
    df: float
    paired: bool         # True: paired by cell (factorial) or by seed (paired Δ)
    n: int               # the cells (factorial) or seeds (paired Δ) the difference rests on
    p: float = NAN       # two-sided: the difference is 0
    p_holm: float = NAN
    p_same: float = NAN  # TOST: |difference| ≥ δ
    p_same_holm: float = NAN
    verdict: str = ""

    @property
    def ci(self) -> tuple[float, float]:
        """The 95% t-interval of the difference."""
        return interval(self.diff, self.se, self.df, 0.95)


def t_p(estimate: float, se: float, df: float) -> float:
    """Two-sided p of estimate/se on df degrees of freedom. se = 0 (every paired difference the same) is the limit:
    p = 0 for a non-zero estimate, 1 for zero (stats.paired's convention)."""
    if not (se >= 0 and df >= 1):
        return NAN
    if se == 0:
        return 0.0 if estimate != 0 else 1.0
    return float(2 * sps.t.sf(abs(estimate) / se, df))


def tost_p(estimate: float, se: float, df: float, delta: float) -> float:
    """Two one-sided tests of H0: |true difference| ≥ delta; the larger of the two one-sided p-values (se = 0: the
    limit, 0 inside (−δ, δ), 1 outside)."""
    if not (se >= 0 and df >= 1):
        return NAN
    if se == 0:
        return 0.0 if abs(estimate) < delta else 1.0
    below = sps.t.sf((estimate + delta) / se, df)   # H0: difference ≤ −δ
    above = sps.t.cdf((estimate - delta) / se, df)  # H0: difference ≥ +δ
    return float(max(below, above))


def welch_df(se1: float, df1: float, se2: float, df2: float) -> float:
    """Welch–Satterthwaite degrees of freedom of a difference of two independent estimates."""
    num = (se1 ** 2 + se2 ** 2) ** 2
    den = se1 ** 4 / df1 + se2 ** 4 / df2 if df1 > 0 and df2 > 0 else 0.0
    return num / den if den > 0 else NAN


def unpaired(family: str, term: str, a: tuple, b: tuple) -> Difference:
    """(estimate, se, df, n) of each grid's own effect, the grids independent (no cell in common)."""
    (ea, sa, da, na), (eb, sb, db, nb) = a, b
    se = math.hypot(sa, sb) if np.isfinite(sa) and np.isfinite(sb) else NAN
    return Difference(family, term, ea, eb, ea - eb, se, welch_df(sa, da, sb, db), False, na + nb)


def factorial(d: Design, this: Mapping, other: Mapping, this_fit: effects.Analysis,
              other_fit: effects.Analysis) -> list[Difference]:
    """Each term of the design in both grids. `this`/`other`: (seed, ±1 levels) -> the metric of each grid's
    cells; the cells both hold are paired (at least two seeds' worth, so the differences have an error term),
    else the two fits are compared as independent."""
    common = sorted(set(this) & set(other))
    paired_fit = None
    if len({s for s, _ in common}) >= 2:
        paired_fit = effects.analyze(d, [(s, lv, this[(s, lv)] - other[(s, lv)]) for s, lv in common])
    out = []
    for i, (ea, eb) in enumerate(zip(this_fit.effects, other_fit.effects)):
        family, term = ea.term.kind, ea.term.name
        if paired_fit is not None:
            e = paired_fit.effects[i]
            out.append(Difference(family, term, ea.estimate, eb.estimate, e.estimate, e.se, paired_fit.df, True,
                                  len(common)))
        else:
            out.append(unpaired(family, term, (ea.estimate, ea.se, this_fit.df, this_fit.n_runs),
                                (eb.estimate, eb.se, other_fit.df, other_fit.n_runs)))
    return [x for x in out if x.family in ("main", "2fi")]


def by_seed(family: str, term: str, this: Mapping[int, float], other: Mapping[int, float]) -> Difference:
    """A paired Δ (seed -> Δ in each grid): paired by the seeds both hold (at least two), else Welch."""
    ea, eb = stats.mean(list(this.values())), stats.mean(list(other.values()))
    r = stats.paired(this, other)
    if r.n >= 2:
        return Difference(family, term, ea, eb, r.mean_diff, r.se, r.df, True, r.n)

    def own(values) -> tuple:
        v = np.asarray(list(values), dtype=float)
        return (stats.mean(v), stats.std(v) / math.sqrt(len(v)) if len(v) > 1 else NAN, len(v) - 1, len(v))

    return unpaired(family, term, own(this.values()), own(other.values()))


def judge(rows: Sequence[Difference], delta: float, alpha: float = 0.05) -> list[Difference]:
    """p-values, Holm within each family (for each question apart), and each row's verdict at δ."""
    rows = [replace(r, p=t_p(r.diff, r.se, r.df), p_same=tost_p(r.diff, r.se, r.df, delta)) for r in rows]
    out = list(rows)
    for family in dict.fromkeys(r.family for r in rows):
        idx = [i for i, r in enumerate(rows) if r.family == family]
        ph = stats.holm([rows[i].p for i in idx])
        sh = stats.holm([rows[i].p_same for i in idx])
        for i, p, s in zip(idx, ph, sh):
            verdict = SAME if s < alpha else DIFFERS if p < alpha else UNDECIDED
            out[i] = replace(rows[i], p_holm=p, p_same_holm=s, verdict=verdict)
    return out
