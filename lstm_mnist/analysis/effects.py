"""Effects of a two-level factorial design: main effects and two-factor-interaction chains. Pure
(numpy/scipy; no pandas, no MLflow).

Model, with x in {-1, +1}: y = mu + delta_seed + sum_j beta_j x_j + (one term per other alias class) + e.
Seeds are blocks. Every estimable contrast of the fraction is in the model (saturated within a seed), so
with r >= 2 seeds the error is the seeds' disagreement: residual degrees of freedom (n - 1)(r - 1) for
a complete design. An effect is twice its coefficient, i.e. the mean where its column is +1 minus the
mean where it is -1; for an orthogonal design its standard error is 2 sigma / sqrt(N).
With one seed there are no residual degrees of freedom: the error comes from Lenth's (1989) pseudo
standard error over the m contrasts, with t(m/3) as the reference distribution.
Missing runs (a FAILED cell, a seed short) are fitted by least squares on what is there; the effects
whose column is no longer orthogonal to the others are marked `affected`, and terms that cannot be
estimated at all (the highest-order ones are dropped first) are NaN with a reason.
Facts and constants: ../shared/docs/factorial.md.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats as sps

from . import stats
from .fractional import Design, spell

NAN = float("nan")
OLS, LENTH = "seed-blocked least squares", "Lenth pseudo standard error"


@dataclass(frozen=True)
class Term:
    """One estimable contrast: a main effect, a 2FI alias chain, or a class of higher-order terms only."""
    kind: str             # "main" | "2fi" | "higher"
    name: str             # "width" | "bidirectional:readout = dropout:augmentation = early_stopping:width"
    letters: str          # "D" | "AG = BF = CD"
    columns: tuple        # factor indices whose product is the column (the chain's leading word)
    factor: str = ""      # a main effect's factor (its name also lists its 2FI aliases at resolution III)


def terms(d: Design) -> list[Term]:
    """Main effects in letter order (with their two-factor aliases below resolution IV), then the 2FI
    chains, then the higher-order classes."""
    out = []
    for i, (w, aliases) in enumerate(d.main_effects()):
        out.append(Term("main", " = ".join([d.factors[i], *map(d.name, aliases)]),
                        " = ".join([d.letters[i], *map(spell, aliases)]), (i,), d.factors[i]))
    for chain in d.interaction_chains():
        out.append(Term("2fi", d.chain_name(chain), " = ".join(spell(w) for w in chain), _cols(d, chain[0])))
    for cls in d.classes:
        if len(cls[0]) > 2:
            out.append(Term("higher", " = ".join(d.name(w) for w in cls[:2]) + (" = ..." if len(cls) > 2 else ""),
                            " = ".join(spell(w) for w in cls), _cols(d, cls[0])))
    return out


def _cols(d: Design, w) -> tuple:
    return tuple(d.letters.index(ch) for ch in sorted(w))


@dataclass(frozen=True)
class Effect:
    term: Term
    estimate: float       # mean(+) - mean(-) of the term's column (2 x the coefficient)
    se: float
    ci_lo: float
    ci_hi: float
    t: float
    p: float              # two-sided
    p_holm: float = NAN   # Holm within its family: main effects, 2FI chains
    affected: bool = False  # missing runs made the column non-orthogonal: the estimate leans on the model
    note: str = ""


@dataclass
class Analysis:
    method: str           # OLS or LENTH
    n_runs: int
    seeds: list           # seeds with at least one run
    df: float             # residual degrees of freedom (OLS) or m/3 (Lenth)
    sigma: float          # residual standard deviation (OLS) or the PSE (Lenth; of an effect, not a run)
    effects: list[Effect]  # every term, in `terms` order
    missing: list = field(default_factory=list)  # (seed, levels) of the design's runs that are absent
    sme: float = NAN      # Lenth's simultaneous margin of error (NaN for OLS)
    outside: int = 0      # runs left out: their settings are not a run of this fraction

    def family(self, kind: str) -> list[Effect]:
        return [e for e in self.effects if e.term.kind == kind]


def analyze(d: Design, observations: Sequence[tuple[int, Sequence[int], float]], seeds: Sequence[int] = ()) -> Analysis:
    """Effects from (seed, ±1 levels in the design's factor order, response) observations. `seeds` are the
    seeds the grid attempted (a seed with no run at all is reported missing)."""
    rows = set(d.matrix)
    obs = [(s, tuple(int(x) for x in lv), float(y)) for s, lv, y in observations if np.isfinite(y)]
    outside = sum(lv not in rows for _, lv, _ in obs)  # a run of another fraction (the grid file changed)
    obs = [o for o in obs if o[1] in rows]
    present = sorted({s for s, _, _ in obs})
    if not present:
        raise ValueError("no observations to analyze")
    have = {(s, lv) for s, lv, _ in obs}
    missing = [(s, row) for s in sorted({*seeds, *present}) for row in d.matrix if (s, row) not in have]
    all_terms = terms(d)
    levels = np.array([lv for _, lv, _ in obs], dtype=float)
    y = np.array([v for _, _, v in obs])
    columns = np.column_stack([np.prod(levels[:, t.columns], axis=1) for t in all_terms])
    blocks = np.column_stack([[1.0 if s == b else 0.0 for s, _, _ in obs] for b in present])
    kept = _estimable(blocks, columns)
    X = np.column_stack([blocks, columns[:, kept]])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    xtx_inv = np.linalg.inv(X.T @ X)
    nb = blocks.shape[1]
    coef = dict(zip(kept, beta[nb:]))
    inv = {j: xtx_inv[nb + i, nb:] for i, j in enumerate(kept)}
    df = len(y) - X.shape[1]
    affected = {j: not _orthogonal(inv[j], i, len(y)) for i, j in enumerate(kept)}
    if len(present) >= 2 and df > 0:
        rss = float(np.sum((y - X @ beta) ** 2))
        sigma = math.sqrt(rss / df)
        effects = [_ols_effect(t, coef.get(j), inv.get(j), kept.index(j) if j in kept else None, sigma, df,
                               affected.get(j, False)) for j, t in enumerate(all_terms)]
        return _holm(Analysis(OLS, len(y), present, df, sigma, effects, missing, outside=outside))
    return _lenth(all_terms, coef, affected, len(y), present, missing, outside)


def _estimable(blocks: np.ndarray, columns: np.ndarray) -> list[int]:
    """Indices of the term columns that can join the blocks without losing rank, in order (main effects
    and 2FI chains first, so missing runs cost the highest-order classes first)."""
    kept, X = [], blocks
    for j in range(columns.shape[1]):
        trial = np.column_stack([X, columns[:, j]])
        if np.linalg.matrix_rank(trial) == trial.shape[1]:
            kept.append(j)
            X = trial
    return kept


def _orthogonal(row: np.ndarray, i: int, n: float) -> bool:
    """Whether a term's row of (X'X)^-1 is what a balanced design gives: 1/N on the diagonal, 0 elsewhere."""
    expected = np.zeros_like(row)
    expected[i] = 1.0 / n
    return bool(np.allclose(row, expected, atol=1e-12, rtol=1e-9))


def _ols_effect(t: Term, b, inv_row, i, sigma: float, df: int, affected: bool) -> Effect:
    if b is None:
        return Effect(t, NAN, NAN, NAN, NAN, NAN, NAN, note="not estimable (missing runs)")
    se = 2 * sigma * math.sqrt(inv_row[i])
    est = 2 * b
    return _effect(t, est, se, df, affected)


def _effect(t: Term, est: float, se: float, df: float, affected: bool) -> Effect:
    if not se > 0:
        return Effect(t, est, se, NAN, NAN, NAN, NAN, affected=affected, note="no error variance")
    half = sps.t.ppf(0.975, df) * se
    tt = est / se
    return Effect(t, est, se, est - half, est + half, tt, float(2 * sps.t.sf(abs(tt), df)), affected=affected)


def lenth_pse(contrasts: Sequence[float]) -> float:
    """Lenth's pseudo standard error: s0 = 1.5 median|c|; PSE = 1.5 median{|c| : |c| < 2.5 s0}."""
    c = np.abs(np.asarray(contrasts, dtype=float))
    s0 = 1.5 * np.median(c)
    return float(1.5 * np.median(c[c < 2.5 * s0])) if np.any(c < 2.5 * s0) else NAN


def lenth_multipliers(m: int) -> tuple[float, float]:
    """(ME, SME) multipliers for m contrasts: t(0.975, m/3) and t(gamma, m/3), gamma = (1 + 0.95^(1/m)) / 2."""
    d = m / 3
    return float(sps.t.ppf(0.975, d)), float(sps.t.ppf((1 + 0.95 ** (1 / m)) / 2, d))


def _lenth(all_terms, coef, affected, n, present, missing, outside) -> Analysis:
    """One seed (or no residual degrees of freedom): Lenth's PSE over every estimated contrast."""
    est = {j: 2 * b for j, b in coef.items()}
    m = len(est)
    pse = lenth_pse(list(est.values())) if m else NAN
    me, sme = lenth_multipliers(m) if m else (NAN, NAN)
    effects = []
    for j, t in enumerate(all_terms):
        if j not in est:
            effects.append(Effect(t, NAN, NAN, NAN, NAN, NAN, NAN, note="not estimable (missing runs)"))
        else:
            effects.append(_effect(t, est[j], pse, m / 3, affected.get(j, False)))
    a = Analysis(LENTH, n, present, m / 3, pse, effects, missing, sme=sme * pse, outside=outside)
    return _holm(a)


def _holm(a: Analysis) -> Analysis:
    """Holm-adjusted p within the main effects, and separately within the 2FI chains."""
    out = list(a.effects)
    for kind in ("main", "2fi"):
        idx = [i for i, e in enumerate(out) if e.term.kind == kind]
        for i, p in zip(idx, stats.holm([out[i].p for i in idx])):
            out[i] = _replace(out[i], p_holm=p)
    a.effects = out
    return a


def _replace(e: Effect, **kw) -> Effect:
    return dataclasses.replace(e, **kw)


def half_normal(effects: Sequence[Effect]) -> list[tuple[str, float, float]]:
    """(label, half-normal quantile, |effect|) for the Daniel plot, smallest first: Phi^-1(0.5 + 0.5(i - 0.5)/m)."""
    known = sorted((e for e in effects if np.isfinite(e.estimate)), key=lambda e: abs(e.estimate))
    m = len(known)
    return [(e.term.letters.split(" = ")[0], float(sps.norm.ppf(0.5 + 0.5 * (i - 0.5) / m)), abs(e.estimate))
            for i, e in enumerate(known, 1)]  # labelled by letters (A, AG, ...): the plot carries the key
