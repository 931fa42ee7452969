"""A tuned grid's part of the report: what tuning changed and what it cost.

- worth before vs after tuning: per flag and design, Δ at the grid's values (the untuned cells, `fixed = true`)
  beside Δ after each arm was tuned, and whether the conclusion holds (same sign, same side of zero);
- tuning cost per arm: trials (complete, pruned, failed), training seconds, the best value and its values;
- budget curves (Dodge et al. 2019; analysis/budget.py): each arm's expected best validation objective after
  k = 1..N trials with a bootstrap band, and per comparison the k from which the two arms' order stays put.
The trials come from each arm's tuning run (trials.json, written when its study completed).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import budget, figures
from ..engine.jobs import TRIALS_FILE
from ..tracking import query
from .compare import Report, build as build_report
from .gather import Grid



@dataclass
class Tuning:
    objective: str
    direction: str
    fixed: Report | None       # the same tables at the grid's values, when the grid trained them (fixed = true)
    worth: pd.DataFrame        # flag, design: Δ fixed, Δ tuned, their CIs and Holm p, whether the conclusion holds
    cost: pd.DataFrame         # per arm: searched keys, trials by state, training seconds, best value, tuned values
    curves: dict               # arm -> budget.Curve of its COMPLETE and PRUNED trials' values
    order: pd.DataFrame        # per comparison: from which k the two arms' expected best keep their order


def trials(g: Grid) -> dict[str, list[dict]]:
    """Each searched arm's trials, from its tuning run (arms whose study is not complete have none yet)."""
    out = {}
    for arm, info in g.tune.arms.items():
        found = query.read_json_artifact(info.tuning_run, TRIALS_FILE) if info.tuning_run else None
        if found:
            out[arm] = found["trials"]
    return out


def build(g: Grid, r: Report) -> Tuning:
    t = g.tune
    found = trials(g)
    direction = "minimize" if t.objective == "val_loss" else "maximize"
    fixed = build_report(replace(g, runs=g.fixed, fixed=None, tune=None), r.metric) if g.fixed is not None else None
    curves = {arm: budget.curve(_values(rows), maximize=direction == "maximize")
              for arm, rows in found.items() if _values(rows)}
    return Tuning(t.objective, direction, fixed, worth_change(fixed, r), cost(g, found), curves,
                  order(r, found, direction == "maximize"))


def _values(rows: list[dict]) -> list[float]:
    """The trial values a budget curve draws from: COMPLETE (the objective at the best-val_loss epoch) and
    PRUNED (its last reported value: a pruned trial is a trial of the budget too)."""
    return [x["value"] for x in rows if x["state"] in ("COMPLETE", "PRUNED") and x["value"] is not None]


def worth_change(fixed: Report | None, tuned: Report) -> pd.DataFrame:
    """Per flag and design: Δ before tuning (the grid's values) beside Δ after tuning."""
    cols = ["flag", "design", "fixed_diff_mean", "fixed_ci_lo", "fixed_ci_hi", "fixed_p_holm", "tuned_diff_mean",
            "tuned_ci_lo", "tuned_ci_hi", "tuned_p_holm", "conclusion"]
    if fixed is None:
        return pd.DataFrame(columns=cols)
    rows = []
    for _, w in tuned.worth.iterrows():
        before = fixed.worth[fixed.worth["flag"] == w["flag"]]
        for design, p in (("leave_one_out", "loo"), ("add_one_in", "aoi"), ("factorial", "ff")):
            if pd.isna(w.get(f"{p}_diff_mean")) or before.empty:
                continue
            b = before.iloc[0]
            pair = [(b[f"{p}_diff_mean"], b[f"{p}_diff_ci_lo"], b[f"{p}_diff_ci_hi"]),
                    (w[f"{p}_diff_mean"], w[f"{p}_diff_ci_lo"], w[f"{p}_diff_ci_hi"])]
            rows.append({"flag": w["flag"], "design": design,
                         "fixed_diff_mean": pair[0][0], "fixed_ci_lo": pair[0][1], "fixed_ci_hi": pair[0][2],
                         "fixed_p_holm": b.get(f"{p}_p_holm", np.nan),
                         "tuned_diff_mean": pair[1][0], "tuned_ci_lo": pair[1][1], "tuned_ci_hi": pair[1][2],
                         "tuned_p_holm": w.get(f"{p}_p_holm", np.nan), "conclusion": conclusion(*pair)})
    return pd.DataFrame(rows, columns=cols)


def _side(mean: float, lo: float, hi: float) -> str:
    """Where a 95% CI lies: above zero, below zero, across it (or no interval: the sign of the mean only)."""
    if pd.isna(lo) or pd.isna(hi):
        return "no CI"
    return "> 0" if lo > 0 else "< 0" if hi < 0 else "n.s."


def conclusion(before: tuple, after: tuple) -> str:
    """Whether tuning changed what the comparison says: its CI's side of zero, and the sign of its mean."""
    a, b = _side(*before), _side(*after)
    if a == b and a != "no CI":
        return f"holds ({a})"
    if "no CI" in (a, b):
        same = np.sign(before[0]) == np.sign(after[0])
        return "same sign (no CI)" if same else "sign flips (no CI)"
    return f"changes: {a} → {b}"


def cost(g: Grid, found: dict[str, list[dict]]) -> pd.DataFrame:
    """Per arm: what it searched, its trials by state, their training seconds, the best value and its values."""
    rows = []
    for arm, info in g.tune.arms.items():
        got = found.get(arm, [])
        complete = [x for x in got if x["state"] == "COMPLETE"]
        best = (max if g.tune.objective != "val_loss" else min)(complete, key=lambda x: x["value"]) if complete else None
        counted = sum(x["state"] in ("COMPLETE", "PRUNED") for x in got)
        rows.append({"arm": arm, "searched": ", ".join(info.searched), "trials": counted,
                     "complete": len(complete), "pruned": sum(x["state"] == "PRUNED" for x in got),
                     "failed": sum(x["state"] == "FAIL" and not x.get("lost") for x in got),
                     "train_seconds": float(sum(x.get("seconds") or 0.0 for x in got)),
                     "best_value": best["value"] if best else np.nan, "best_trial": best["number"] if best else -1,
                     "tuned_values": json.dumps(best["params"], sort_keys=True) if best else "",
                     "state": ("complete" if counted >= g.tune.trials else f"short: {counted} of {g.tune.trials}")
                     if got else info.gave_up or "not complete"})
    for arm in sorted(set(g.runs.loc[g.runs["variant"] == "both", "arm"])) if "variant" in g.runs else []:
        rows.append({"arm": arm, "searched": "", "trials": 0, "complete": 0, "pruned": 0, "failed": 0,
                     "train_seconds": 0.0, "best_value": np.nan, "best_trial": -1, "tuned_values": "",
                     "state": "searches nothing: its cells are at the grid's values"})
    return pd.DataFrame(rows, columns=["arm", "searched", "trials", "complete", "pruned", "failed", "train_seconds",
                                       "best_value", "best_trial", "tuned_values", "state"])


def order(r: Report, found: dict[str, list[dict]], maximize: bool) -> pd.DataFrame:
    """Per comparison (arm vs its reference), the k from which the two budget curves keep their order."""
    rows = []
    for _, c in r.comparisons.iterrows():
        va, vb = _values(found.get(c["recorded_arm"], [])), _values(found.get(c["reference"], []))
        if not va or not vb:
            continue
        k = min(len(va), len(vb))
        ea, eb = budget.expected_best(va, k, maximize)[0], budget.expected_best(vb, k, maximize)[0]
        rows.append({"design": c["design"], "arm": c["recorded_arm"], "reference": c["reference"], "trials": k,
                     "settles_at": budget.order_settles(va, vb, maximize), "arm_best_at_k": ea, "reference_best_at_k": eb})
    return pd.DataFrame(rows, columns=["design", "arm", "reference", "trials", "settles_at", "arm_best_at_k",
                                       "reference_best_at_k"])


def curves_frame(t: Tuning) -> pd.DataFrame:
    """The budget curves as rows: arm, k, expected best, band."""
    rows = [{"arm": arm, "k": int(k), "expected_best": m, "band_lo": lo, "band_hi": hi, "n_trials": c.n}
            for arm, c in t.curves.items() for k, m, lo, hi in zip(c.ks, c.mean, c.lo, c.hi)]
    return pd.DataFrame(rows, columns=["arm", "k", "expected_best", "band_lo", "band_hi", "n_trials"])


def figure(t: Tuning, out: Path) -> list[Path]:
    if not t.curves:
        return []
    return [figures.budget_png(t.curves, t.objective, out / "budget_curves.png",
                               title=f"expected best {t.objective} after k trials, per arm (bootstrap 95% band)")]


# ---------------------------------------------------------------- display
def _f(x, d=4, sign=False) -> str:
    return "–" if pd.isna(x) else f"{x:{'+' if sign else ''}.{d}f}"


def _delta(m, lo, hi) -> str:
    return f"{_f(m, sign=True)} [{_f(lo, sign=True)}, {_f(hi, sign=True)}]" if pd.notna(lo) else _f(m, sign=True)


def values_text(tuned_values: str) -> str:
    """'adamw_lr=0.0076, dropout_rate=0.18' from the JSON a tuned cell carries ('' for an arm that searches nothing)."""
    if not tuned_values:
        return ""
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in json.loads(tuned_values).items())


def shown(t: Tuning, metric: str) -> list[tuple[str, str, pd.DataFrame]]:
    out = []
    if len(t.worth):
        w = t.worth
        out.append((f"Worth before vs after tuning ({metric}: Δ at the grid's values, Δ with every arm tuned)",
                    "tab:tuning-worth", pd.DataFrame({
                        "flag": w["flag"], "design": w["design"],
                        "Δ fixed [95% CI]": [_delta(*x) for x in zip(w["fixed_diff_mean"], w["fixed_ci_lo"], w["fixed_ci_hi"])],
                        "Δ tuned [95% CI]": [_delta(*x) for x in zip(w["tuned_diff_mean"], w["tuned_ci_lo"], w["tuned_ci_hi"])],
                        "conclusion": w["conclusion"]})))
    c = t.cost
    out.append((f"Tuning per arm (objective {t.objective}, {t.direction}d on the validation split)", "tab:tuning-cost",
                pd.DataFrame({"arm": c["arm"], "searched": c["searched"].replace("", "–"),
                              "trials (complete/pruned)": [f"{a} ({b}/{p})" for a, b, p in
                                                           zip(c["trials"], c["complete"], c["pruned"])],
                              "failed": c["failed"].astype(str),
                              "train time (s)": [_f(x, 0) for x in c["train_seconds"]],
                              f"best {t.objective}": [_f(x) for x in c["best_value"]],
                              "tuned values": [values_text(v) or s for v, s in zip(c["tuned_values"], c["state"])]})))
    if len(t.order):
        o = t.order
        out.append(("Budget: from how many trials each comparison's order holds", "tab:budget-order", pd.DataFrame({
            "design": o["design"], "arm": o["arm"], "vs": o["reference"], "trials": o["trials"].astype(str),
            "order holds from k": o["settles_at"].astype(str),
            f"expected best {t.objective} at k = trials (arm / vs)": [f"{_f(a)} / {_f(b)}" for a, b in
                                                                      zip(o["arm_best_at_k"], o["reference_best_at_k"])]})))
    return out


def notes(t: Tuning) -> list[str]:
    out = ["Trials: COMPLETE + PRUNED trials of the arm's budget; failed: trials whose point failed (e.g. the loss "
           "diverged), not counted in the budget (a trial whose process was killed is retried and not listed).",
           "Tuning: each arm searched only the [tune.space] keys its config reads, with the same sampler, sampler seed, "
           "pruner and number of COMPLETE + PRUNED trials, trained at tune_seed (never a replicate seed) and scored on "
           f"the validation split ({t.objective}); each arm's replicate cells were then trained at its best trial's "
           "values and tested as every cell is. The test set chose nothing."]
    if t.curves:
        out.append("Budget curves: the expected best validation objective of k trials drawn from the arm's N trials "
                   "(Dodge et al., 2019; a pruned trial counts with its last reported value), with a percentile "
                   "bootstrap band over the N trials. \"Order holds from k\": the smallest k from which the expected "
                   "best of the two arms keep the order they have at k = N; N itself means the order changed at the "
                   "last trial, so a larger budget could change it again. The curve treats an arm's trials as draws from "
                   "one distribution, as Dodge et al. do for random search; TPE's later proposals depend on earlier "
                   "ones, so read it as a summary of the search that ran, not of a fresh one.")
    if len(t.worth):
        out.append("Conclusion: \"holds\" when the 95% CI lies on the same side of zero (or includes it, n.s.) before "
                   "and after tuning; \"changes\" names the two sides.")
    return out
