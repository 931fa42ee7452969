"""Numbers as the report's tables show them to people (rounded strings; "–" for a missing value): every table
of the report formats through these, so one rule rounds them all."""
from __future__ import annotations

import pandas as pd


def digits(metric: str) -> int:
    """Decimals a metric is shown with: scores to 4, epochs to 1, seconds to 0."""
    return {"epochs_trained": 1, "train_time_s": 0}.get(metric, 4)


def num(x: float, d: int = 4, sign: bool = False) -> str:
    return "–" if pd.isna(x) else f"{x:{'+' if sign else ''}.{d}f}"


def pm(mean: float, std: float, d: int = 4) -> str:
    """mean ± sd (the mean alone without an sd)."""
    return num(mean, d) if pd.isna(std) else f"{num(mean, d)} ± {num(std, d)}"


def ci(lo: float, hi: float, d: int = 4, sign: bool = False) -> str:
    return "–" if pd.isna(lo) else f"[{num(lo, d, sign)}, {num(hi, d, sign)}]"


def delta(mean: float, lo: float, hi: float, d: int = 4) -> str:
    """A difference with its interval, signed: "+0.0012 [-0.0003, +0.0027]" (the mean alone without one)."""
    return f"{num(mean, d, True)} {ci(lo, hi, d, True)}" if pd.notna(lo) else num(mean, d, True)


def p_value(p: float) -> str:
    return "–" if pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"
