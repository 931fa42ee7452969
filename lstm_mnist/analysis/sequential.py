"""Adaptive replication that stays honest under optional stopping: looks fixed in advance, α spent over them.

`ablate FILE --until-decided` adds whole-design seeds in blocks and looks after each block, stopping when
every effect is decided. Looking again and stopping when a row looks good inflates a fixed-n test's error
rate (five looks at α = 0.05 give about 0.14 for a t-test). The rule here is Bonferroni alpha spending over
the K looks fixed before the first one (first seeds, block, most seeds): look k, at n_k seeds, tests at
α_k = α · n_k / Σ n_j (α in proportion to the seeds seen, so the early looks, on few seeds and degrees of
freedom, spend little), and Σ α_k = α. So the chance that an effect gets a wrong verdict at any look,
whatever the data make the runner do, is at most α, for each of the two wrong verdicts ("effect" when
there is none; "no effect ≥ δ" when the effect is δ or more). It needs no assumption about how the looks'
statistics are correlated. An effect's verdict is its first decisive one (it stays: the guarantee covers
every look at once). `decide` applies the rule look by look to any estimator of the effects (the report's
paired comparisons and factorial main effects: report/looks.py). Pure (scipy via power.py, pandas).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from . import power

ALPHA = 0.05
METHOD = "Bonferroni alpha spending over looks fixed in advance (α_k ∝ seeds at look k)"


@dataclass(frozen=True)
class Looks:
    """When the runner looks: at `first` seeds, then every `block` more seeds, the last at `most`."""
    first: int
    block: int
    most: int
    alpha: float = ALPHA

    def __post_init__(self):
        if not (2 <= self.first <= self.most and self.block >= 1):
            raise ValueError(f"looks need 2 <= first ({self.first}) <= most ({self.most}) "
                             f"and block >= 1 ({self.block})")

    @property
    def seeds(self) -> list[int]:
        """The seed counts of the looks, in order."""
        return [*range(self.first, self.most, self.block), self.most]

    @property
    def k(self) -> int:
        return len(self.seeds)

    @property
    def alphas(self) -> list[float]:
        """Each look's α (its two-sided test of 0; each one-sided test of its equivalence pair): Σ = alpha."""
        total = sum(self.seeds)
        return [self.alpha * n / total for n in self.seeds]

    def alpha_at(self, n: int) -> float:
        if n not in self.seeds:
            raise ValueError(f"no look at {n} seeds (looks at {self.seeds})")
        return self.alphas[self.seeds.index(n)]

    def record(self) -> dict:
        return {"method": METHOD, "alpha": self.alpha, "first": self.first, "block": self.block, "most": self.most,
                "looks": self.seeds, "alphas": self.alphas}

    @classmethod
    def from_record(cls, r: dict) -> "Looks":
        return cls(int(r["first"]), int(r["block"]), int(r["most"]), float(r["alpha"]))

    def guarantee(self, delta: float) -> str:
        each = ", ".join(f"{n}: {a:.4f}" for n, a in zip(self.seeds, self.alphas))
        return (f"{METHOD}: {self.k} looks (seeds: α) {each}; Σ = α = {self.alpha:g}. For every effect, P(a wrong "
                f"verdict at any look) ≤ α, wherever the runner stopped (\"effect\" when the effect is 0; "
                f"\"no effect ≥ δ\" when |effect| ≥ δ = {delta:g})")


def look_verdict(estimate: float, se: float, df: float, delta: float, looks: Looks, n: int) -> str:
    """The verdict at the look on n seeds: power.verdict at its α_k (its 1 − α_k CI excludes 0: "effect"; its
    1 − 2α_k CI inside (−δ, δ): "no effect ≥ δ")."""
    return power.verdict(estimate, se, df, delta, looks.alpha_at(n))


def look_interval(estimate: float, se: float, df: float, looks: Looks, n: int) -> tuple[float, float]:
    """The look's 1 − α_k interval (the one its "effect" verdict reads)."""
    return power.interval(estimate, se, df, 1 - looks.alpha_at(n))


def settle(history: list[str]) -> str:
    """An effect's verdict after its looks so far: the first decisive one, else undecided."""
    return next((v for v in history if v != power.UNDECIDED), power.UNDECIDED)


# ---------------------------------------------------------------- the proof by simulation (tests, docs)
COLUMNS = ["look", "seeds", "effect", "estimate", "se", "df", "alpha", "ci_lo", "ci_hi", "tost_lo", "tost_hi",
           "look_verdict", "verdict"]


@dataclass
class Decided:
    """What the looks said: one row per (look, effect) up to the seeds the grid holds."""
    design: Looks
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

    def reached(self) -> dict[str, dict]:
        """Per effect, its verdict and where it was reached (power.REACHED): the first decisive look, with the
        interval that look's verdict read (1 − α_k for "effect", 1 − 2α_k for "no effect ≥ δ"); an undecided
        effect at the last look, with its 1 − α_k interval."""
        out = {}
        for name, x in self.frame.groupby("effect", sort=False):
            decisive = x[x["look_verdict"] != power.UNDECIDED]
            row = decisive.iloc[0] if len(decisive) else x.iloc[-1]
            tost = row["look_verdict"] == power.NO_EFFECT
            out[name] = {"verdict": row["verdict"], "verdict_seeds": int(row["seeds"]),
                         "verdict_level": 1 - (2 if tost else 1) * float(row["alpha"]),
                         "verdict_ci_lo": float(row["tost_lo" if tost else "ci_lo"]),
                         "verdict_ci_hi": float(row["tost_hi" if tost else "ci_hi"])}
        return out

    def undecided(self) -> list[str]:
        return [e for e, v in self.verdicts().items() if v == power.UNDECIDED]

    def record(self) -> dict:
        """The looks as the runner records them on the grid's parent run (looks.json)."""
        return {"design": self.design.record(), "metric": self.metric, "effect_of_interest": self.delta,
                "seed_order": self.order, "looks": [
                    {"look": int(k), "seeds": int(x["seeds"].iloc[0]), "alpha": float(x["alpha"].iloc[0]),
                     "verdicts": dict(zip(x["effect"], x["verdict"]))} for k, x in self.frame.groupby("look")]}


def decide(design: Looks, order: list[int], metric: str, delta: float, complete: set,
           effects_at: Callable[[list[int]], list[tuple]]) -> Decided:
    """Every planned look the `complete` seeds (those with the whole design) reach: at look k on the first n_k
    seeds of `order`, each effect (name, estimate, se, df) that `effects_at(seeds)` gives gets its look's
    verdict and interval, and the verdict it settles on."""
    rows, history = [], {}
    for k, n in enumerate(design.seeds, 1):
        if not set(order[:n]) <= complete:
            break
        a = design.alpha_at(n)
        for name, est, se, df in effects_at(order[:n]):
            v = look_verdict(est, se, df, delta, design, n)
            history.setdefault(name, []).append(v)
            lo, hi = look_interval(est, se, df, design, n)
            tlo, thi = power.interval(est, se, df, 1 - 2 * a)
            rows.append({"look": k, "seeds": n, "effect": name, "estimate": est, "se": se, "df": df, "alpha": a,
                         "ci_lo": lo, "ci_hi": hi, "tost_lo": tlo, "tost_hi": thi, "look_verdict": v,
                         "verdict": settle(history[name])})
    return Decided(design, metric, order, delta, pd.DataFrame(rows, columns=COLUMNS))


@dataclass
class Simulated:
    verdicts: list[str]   # per replication: the final verdict
    seeds: np.ndarray     # per replication: seeds used when the runner stopped

    def rate(self, verdict: str) -> float:
        return sum(v == verdict for v in self.verdicts) / len(self.verdicts)


def simulate_adaptive(theta: float, sigma: float, delta: float, looks: Looks, reps: int,
                      rng: np.random.Generator) -> Simulated:
    """`reps` replications of one effect measured by a paired t-test (per-seed differences ~ N(theta, sigma²)),
    looked at as the runner looks: stop at the first look whose verdict is decisive."""
    d = rng.normal(theta, sigma, size=(reps, looks.most))
    verdicts, used = [], np.empty(reps, dtype=int)
    for i in range(reps):
        history = []
        for n in looks.seeds:
            x = d[i, :n]
            history.append(look_verdict(float(x.mean()), float(x.std(ddof=1) / math.sqrt(n)), n - 1, delta, looks, n))
            if settle(history) != power.UNDECIDED:
                break
        verdicts.append(settle(history))
        used[i] = n
    return Simulated(verdicts, used)


def simulate_fixed(theta: float, sigma: float, delta: float, n: int, reps: int, rng: np.random.Generator,
                   alpha: float = ALPHA) -> Simulated:
    """The fixed design: n seeds, one look at α."""
    d = rng.normal(theta, sigma, size=(reps, n))
    mean, se = d.mean(axis=1), d.std(axis=1, ddof=1) / math.sqrt(n)
    return Simulated([power.verdict(float(m), float(s), n - 1, delta, alpha) for m, s in zip(mean, se)],
                     np.full(reps, n))


@dataclass
class TuningDraw:
    """What a seed-level test and a repeat-level one conclude when the tuning draw itself moves the effect."""
    seed_level: Simulated    # seeds as the unit (the paired t-test of the report), the repeats ignored
    repeat_level: Simulated  # repeats as the unit: the mean of the repeats' Δs on R − 1 df (R >= 2), else nothing


def simulate_tuning_draw(theta: float, sigma: float, tau: float, delta: float, n: int, repeats: int, reps: int,
                         rng: np.random.Generator, alpha: float = ALPHA) -> TuningDraw:
    """`reps` replications of one comparison in a tuned grid of n seeds and R tuning repeats: repeat r's tuned
    values move the effect by u_r ~ N(0, tau²) (another search, another effect), and seed s's paired difference
    is theta + u_{r(s)} + e_s with e ~ N(0, sigma²), seed i at repeat i mod R (Tune.repeat_of). theta is the
    effect of the tuning procedure in general. Both verdicts go through power.verdict: the seed-level one on the
    n differences (n − 1 df), the repeat-level one on the R repeat means (R − 1 df)."""
    which = np.arange(n) % repeats
    u = rng.normal(0.0, tau, size=(reps, repeats))
    d = theta + u[:, which] + rng.normal(0.0, sigma, size=(reps, n))
    seed_mean, seed_se = d.mean(axis=1), d.std(axis=1, ddof=1) / math.sqrt(n)
    seed = [power.verdict(float(m), float(s), n - 1, delta, alpha) for m, s in zip(seed_mean, seed_se)]
    if repeats < 2:
        rep = [power.UNDECIDED] * reps  # one draw of the tuning: nothing to say about tuning in general
    else:
        means = np.stack([d[:, which == r].mean(axis=1) for r in range(repeats)], axis=1)
        m, s = means.mean(axis=1), means.std(axis=1, ddof=1) / math.sqrt(repeats)
        rep = [power.verdict(float(a), float(b), repeats - 1, delta, alpha) for a, b in zip(m, s)]
    return TuningDraw(Simulated(seed, np.full(reps, n)), Simulated(rep, np.full(reps, n)))
