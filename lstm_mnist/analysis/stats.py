"""Statistics for the report: pure functions on plain sequences (numpy/scipy only; no pandas, no MLflow).

Seeds are replicates, so every interval is a t-interval over seeds and every comparison is paired by
seed (the same seed gives two arms the same split, initialisation stream and batch order). Where the
data cannot support a number (fewer than two values, no spread in the differences) the functions
return NaN together with a reason, so a table can print the reason instead of a misleading number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps

NAN = float("nan")
TOO_FEW = "too few seeds"
NO_SPREAD = "identical differences"


def _arr(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=float)


def mean(values: Sequence[float]) -> float:
    return float(np.mean(_arr(values))) if len(values) else NAN


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof=1): NaN with fewer than two values."""
    return float(np.std(_arr(values), ddof=1)) if len(values) >= 2 else NAN


def ci95(values: Sequence[float]) -> tuple[float, float]:
    """Two-sided 95% t-interval for the mean: mean ± t(0.975, n-1) · s/√n; NaNs with n < 2."""
    n = len(values)
    if n < 2:
        return NAN, NAN
    half = sps.t.ppf(0.975, n - 1) * std(values) / math.sqrt(n)
    return mean(values) - half, mean(values) + half


@dataclass(frozen=True)
class Paired:
    """A paired comparison (treated − control, matched by seed)."""
    n: int                 # number of seeds present in both arms
    mean_diff: float
    ci_lo: float
    ci_hi: float
    p: float               # two-sided paired t-test (0 or 1 when every difference is the same: see paired)
    d_z: float             # Cohen's d_z = mean(diff) / sd(diff)
    reason: str = ""       # why p / d_z / CI are NaN ("" when they are numbers)
    se: float = NAN        # standard error of mean_diff (sd/√n), on df = n − 1 degrees of freedom
    df: float = NAN


def paired_diffs(treated: Mapping[int, float], control: Mapping[int, float]) -> tuple[list[int], np.ndarray]:
    """Seeds present in both arms, and treated − control per seed (seeds missing in one arm drop out)."""
    seeds = sorted(set(treated) & set(control))
    return seeds, _arr([treated[s] - control[s] for s in seeds])


def paired_t_p(diffs: Sequence[float]) -> float:
    """Two-sided p of the paired t-test: t = mean/(sd/√n) on n−1 degrees of freedom."""
    d = _arr(diffs)
    if len(d) < 2 or std(d) == 0:
        return NAN
    t = mean(d) / (std(d) / math.sqrt(len(d)))
    return float(2 * sps.t.sf(abs(t), len(d) - 1))


def cohen_dz(diffs: Sequence[float]) -> float:
    d = _arr(diffs)
    if len(d) < 2 or std(d) == 0:
        return NAN
    return mean(d) / std(d)


def paired(treated: Mapping[int, float], control: Mapping[int, float]) -> Paired:
    _, d = paired_diffs(treated, control)
    if len(d) < 2:
        return Paired(len(d), mean(d), NAN, NAN, NAN, NAN, TOO_FEW)
    lo, hi = ci95(d)
    if std(d) == 0:  # every seed moved by exactly the same amount: no t statistic exists, but the evidence
        # does: identical non-zero differences are the limit t -> inf (p = 0), identical zeros t = 0 (p = 1).
        return Paired(len(d), mean(d), lo, hi, 0.0 if mean(d) != 0 else 1.0, NAN, NO_SPREAD, 0.0, len(d) - 1)
    return Paired(len(d), mean(d), lo, hi, paired_t_p(d), cohen_dz(d), "", std(d) / math.sqrt(len(d)), len(d) - 1)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values for one family; NaNs (no test: too few seeds) stay NaN and are not
    in the family. A comparison with identical differences has a defined p (see `paired`), so it counts.

    The k-th smallest of m p-values becomes max over j ≤ k of min(1, (m − j + 1) · p_(j)).
    """
    p = _arr(pvalues)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    out = np.full(len(p), NAN)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()
