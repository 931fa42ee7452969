"""What the seeds can detect: power, minimum detectable effects, seeds needed, and three verdicts.

Every row of the report is a t-test of an estimate with a standard error on some degrees of freedom (a
paired comparison: the mean of n per-seed differences, se = sd/√n on n − 1; a factorial effect: its OLS
se on the residual df). For such a test at two-sided level α, a true effect δ is detected with probability
power(δ) = P(T > t_c) + P(T < −t_c), T ~ noncentral t(df, δ/se), t_c = t(1 − α/2, df): exact for the
t-test when se holds the true spread (computed by integrating over the χ² of the spread). The minimum detectable
effect (MDE) is the δ with power 80%. With an
effect of interest δ, a row says "effect" (its 1 − α CI excludes 0), "no effect ≥ δ" (two one-sided tests
at ±δ: its 1 − 2α CI lies inside (−δ, δ)), or "undecided". Pure (numpy/scipy).
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
from scipy import integrate, optimize
from scipy import stats as sps

NAN = float("nan")
POWER = 0.8
EFFECT, NO_EFFECT, UNDECIDED = "effect", "no effect ≥ δ", "undecided"


def _usable(se: float, df: float) -> bool:
    return not (math.isnan(se) or math.isnan(df)) and se > 0 and df >= 1


def power(delta: float, se: float, df: float, alpha: float = 0.05) -> float:
    """Probability that the two-sided t-test at level alpha rejects 0 when the true effect is delta."""
    if not _usable(se, df):
        return NAN
    tc = _t(1 - alpha / 2, df)
    nc = delta / se
    with np.errstate(divide="ignore", invalid="ignore"):  # scipy < 1.17 warns where it gives up; handled below
        fast = float(sps.nct.sf(tc, df, nc) + sps.nct.cdf(-tc, df, nc))
    if math.isfinite(fast) and 0.0 <= fast <= 1.0:
        return fast
    # T = (Z + nc) / √(V/df) with Z ~ N(0, 1), V ~ χ²(df): integrate over V (scipy's nct returns NaN for a
    # large noncentrality on 1 df, the two-seed case).
    def reject(v: float) -> float:
        c = tc * math.sqrt(v / df)
        return (sps.norm.sf(c - nc) + sps.norm.cdf(-c - nc)) * sps.chi2.pdf(v, df)

    lo, hi = sps.chi2.ppf([1e-12, 1 - 1e-12], df)
    return float(min(1.0, integrate.quad(reject, lo, hi, limit=200, points=[df])[0]))


def mde(se: float, df: float, alpha: float = 0.05, target: float = POWER) -> float:
    """The smallest true effect detected with probability `target` (80%): power(mde) = target."""
    if not _usable(se, df):
        return NAN
    guess = (sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(target, df)) * se  # the central-t approximation
    hi = guess
    while power(hi, se, df, alpha) < target:
        hi *= 2
    return float(optimize.brentq(lambda d: power(d, se, df, alpha) - target, 0.0, hi, xtol=se * 1e-9))


def seeds_needed(delta: float, se: float, n: int, df_at: Callable[[int], float], alpha: float = 0.05,
                 target: float = POWER, most: int = 1000) -> int | None:
    """Seeds at which an effect delta is detected with probability `target`: se shrinks as 1/√seeds from
    `se` at `n` seeds; `df_at(seeds)` is the test's degrees of freedom then. None beyond `most`."""
    if not _usable(se, float(df_at(n))) or delta == 0:
        return None
    sd = se * math.sqrt(n)  # one seed's spread of the estimate
    for k in range(2, most + 1):
        if (_usable(sd / math.sqrt(k), float(df_at(k)))
                and power(abs(delta), sd / math.sqrt(k), df_at(k), alpha) >= target):
            return k
    return None


@functools.lru_cache(maxsize=4096)
def _t(q: float, df: float) -> float:
    return float(sps.t.ppf(q, df))


def interval(estimate: float, se: float, df: float, level: float) -> tuple[float, float]:
    if not _usable(se, df):
        return NAN, NAN
    half = _t(1 - (1 - level) / 2, df) * se
    return estimate - half, estimate + half


def verdict(estimate: float, se: float, df: float, delta: float, alpha: float = 0.05) -> str:
    """"effect" when the 1 − alpha CI excludes 0; else "no effect ≥ δ" when the 1 − 2·alpha CI lies inside
    (−delta, delta) (TOST at level alpha); else "undecided"."""
    lo, hi = interval(estimate, se, df, 1 - alpha)
    if math.isnan(lo):
        return UNDECIDED
    if lo > 0 or hi < 0:
        return EFFECT
    lo, hi = interval(estimate, se, df, 1 - 2 * alpha)
    return NO_EFFECT if -delta < lo and hi < delta else UNDECIDED


def reached(estimate: float, se: float, df: float, delta: float,
            alpha: float = 0.05) -> tuple[str, float, float, float]:
    """(verdict, level, lo, hi): the verdict at alpha and the interval it reads: the 1 − alpha CI for "effect"
    (and while undecided), the 1 − 2·alpha CI (TOST) for "no effect ≥ δ"."""
    v = verdict(estimate, se, df, delta, alpha)
    level = 1 - 2 * alpha if v == NO_EFFECT else 1 - alpha
    return (v, level, *interval(estimate, se, df, level))


# Where a verdict was reached: at how many seeds, and the interval (its level, its ends) it read there. A fixed-n
# verdict is reached at the grid's seeds; an --until-decided one at its first decisive look (analysis/sequential).
REACHED = ("verdict_seeds", "verdict_level", "verdict_ci_lo", "verdict_ci_hi")
COLUMNS = ("se", "df", "mde80", "seeds_for_delta", "verdict", *REACHED)
NO_VERDICT = {"verdict": "", **dict.fromkeys(REACHED, NAN)}  # a row without a verdict (no δ; not decided on)


def columns(estimate: float, se: float, df: float, n: int, delta: float | None,
            df_at: Callable[[int], float] | None = None) -> dict:
    """A report row's power columns: the MDE at 80% power (α = 0.05 per test); with δ, the seeds that would
    detect δ with 80% power (`df_at(seeds)`: the test's df then; default a paired test's seeds − 1) and the
    verdict with where it was reached (REACHED: these n seeds, the interval the verdict read)."""
    out = {"se": se, "df": df, "mde80": mde(se, df), "seeds_for_delta": NAN, **NO_VERDICT}
    if delta:
        needed = seeds_needed(delta, se, n, df_at or (lambda k: k - 1))
        v, level, lo, hi = reached(estimate, se, df, delta)
        out |= {"seeds_for_delta": NAN if needed is None else needed, "verdict": v, "verdict_seeds": n,
                "verdict_level": level, "verdict_ci_lo": lo, "verdict_ci_hi": hi}
    return out
