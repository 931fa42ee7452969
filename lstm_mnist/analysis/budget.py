"""Budget curves (Dodge et al., EMNLP 2019, "Show Your Work"): the expected best validation score after k trials.

The N trial values define an empirical distribution; drawing k trials from it with replacement, the best of them
is v(i) (sorted ascending) with probability (i/N)^k - ((i-1)/N)^k, so E[max_k] = sum_i v(i) * that, exactly and
without sampling; the expected minimum is the mirror image. The band around a curve is a percentile bootstrap
over the N values (the curve recomputed on each resample), so it shows how much the curve rests on a few trials.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

TIE = 1e-12  # |E_a(k) - E_b(k)| at or below this is a tie in order_settles


def _values(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"expected a non-empty 1-d sequence of trial values, got shape {v.shape}")
    if np.isnan(v).any():
        raise ValueError(f"trial values contain NaN ({int(np.isnan(v).sum())} of {v.size})")
    return v


def _ks(ks: int | Sequence[int]) -> np.ndarray:
    k = np.atleast_1d(np.asarray(ks))
    if k.ndim != 1 or k.size == 0 or not np.issubdtype(k.dtype, np.number) or (k != np.round(k)).any():
        raise ValueError(f"ks must be an int or a non-empty sequence of ints, got {ks!r}")
    if (k < 1).any():
        raise ValueError(f"every k must be >= 1, got {ks!r}")
    return k.astype(int)


def _weights(n: int, ks: np.ndarray) -> np.ndarray:
    """(len(ks), n): P(the best of k draws is the i-th smallest of n values) = (i/n)^k - ((i-1)/n)^k."""
    cdf = (np.arange(n + 1) / n)[None, :] ** ks[:, None]
    return np.diff(cdf, axis=1)


def expected_best(values: Sequence[float], ks: int | Sequence[int], maximize: bool = True) -> np.ndarray:
    """Expected best of k i.i.d. draws (with replacement) from the values, for each k in ks (always 1-d)."""
    v, k = _values(values), _ks(ks)
    sign = 1.0 if maximize else -1.0
    return sign * (_weights(v.size, k) @ np.sort(sign * v))


@dataclass(frozen=True)
class Curve:
    ks: np.ndarray    # numbers of trials
    mean: np.ndarray  # expected best at each k
    lo: np.ndarray    # percentile bootstrap band at each k
    hi: np.ndarray
    n: int            # number of trial values behind the curve


def curve(values: Sequence[float], maximize: bool = True, ks: int | Sequence[int] | None = None,
          n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Curve:
    """Expected best at each k (default 1..N) with a `level` percentile bootstrap band over the N values."""
    v = _values(values)
    k = _ks(np.arange(1, v.size + 1) if ks is None else ks)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    sign = 1.0 if maximize else -1.0
    w = _weights(v.size, k)
    resamples = np.random.default_rng(seed).integers(0, v.size, (n_boot, v.size))
    boot = sign * (np.sort(sign * v[resamples], axis=1) @ w.T)  # (n_boot, len(k)), every resample at once
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(boot, [tail, 100 - tail], axis=0)
    return Curve(k, expected_best(v, k, maximize), lo, hi, int(v.size))


def order_settles(a_values: Sequence[float], b_values: Sequence[float], maximize: bool = True) -> int:
    """The smallest k0 in 1..K (K = the shorter arm's count) from which sign(E_a(k) - E_b(k)) no longer changes.

    1: the curves never swap order (a tie counts as an order of its own); K: the order changed at the last k.
    """
    a, b = _values(a_values), _values(b_values)
    k = np.arange(1, min(a.size, b.size) + 1)
    diff = expected_best(a, k, maximize) - expected_best(b, k, maximize)
    order = np.where(np.abs(diff) <= TIE, 0, np.sign(diff))
    changed = np.flatnonzero(order != order[-1])
    return int(changed[-1]) + 2 if changed.size else 1
