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

from ..analysis import budget, figures, power
from .. import metrics
from ..tracking import artifacts, query, store
from . import looks, numbers
from .compare import Report, build as build_report, comparisons
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
    repeats: int = 1           # tune_repeats
    by_repeat: pd.DataFrame | None = None  # tune_repeats > 1: each comparison within each repeat's seeds, and
    #                                         across the repeats (the repeat as the unit)
    spread: pd.DataFrame | None = None     # tune_repeats > 1: per arm, the repeats' best values and their range
    repeat_of: dict | None = None          # replicate seed -> repeat


def trials(g: Grid) -> dict[str, list[dict]]:
    """Each searched arm's trials, from its tuning run (arms whose study is not complete have none yet)."""
    out = {}
    for arm, info in g.tune.arms.items():
        found = query.read_json_artifact(info.tuning_run, artifacts.TRIALS) if info.tuning_run else None
        if found:
            out[arm] = found["trials"]
    return out


def recorded_best(g: Grid) -> dict[str, int]:
    """Each complete search's best trial by number, as the search recorded it on its tuning run (the `best_trial`
    tag: tuning/search.Search.best, the rule of the budget); an arm without one has none."""
    c = store.client()
    tags = {arm: query.get_run(c, info.tuning_run).tags for arm, info in g.tune.arms.items() if info.tuning_run}
    return {arm: int(t["best_trial"]) for arm, t in tags.items() if t.get("best_trial", "").isdigit()}


def build(g: Grid, r: Report) -> Tuning:
    t = g.tune
    found = trials(g)
    direction = metrics.direction(t.objective)
    fixed = build_report(replace(g, runs=g.fixed, fixed=None, tune=None), r.metric) if g.fixed is not None else None
    if fixed is not None and g.sequential:  # the untuned cells followed the same blocks: looks of their own
        looks.apply(fixed)
    curves = {arm: budget.curve(_values(rows), maximize=direction == "maximize")
              for arm, rows in found.items() if _values(rows)}
    out = Tuning(t.objective, direction, fixed, worth_change(fixed, r), cost(g, found, recorded_best(g)), curves,
                 order(r, found, direction == "maximize", t), t.repeats)
    if t.repeats > 1:
        out.by_repeat, out.spread = by_repeat(g, r), spread(out.cost, t)
        out.repeat_of = {int(k): v for k, v in t.repeat_of.items() if int(k) in g.seeds}
    return out


def key(t, arm: str, repeat: int) -> str:
    """The name a search is recorded under in the plan (grids/tuned/search.ArmSearch.key)."""
    return f"{arm} r{repeat}" if t.repeats > 1 else arm


def by_repeat(g: Grid, r: Report) -> pd.DataFrame:
    """Per comparison: Δ pooled over every seed (the tables above), Δ within each repeat's seeds, and the
    repeat-level estimate: the mean of the repeats' Δs with a t interval on R − 1 degrees of freedom (the
    tuning draw as the unit)."""
    t = g.tune
    within = {}
    for rep in range(t.repeats):
        seeds = [s for s in t.seeds_of(rep) if s in g.seeds]
        sub = replace(g, runs=g.runs[g.runs["seed"].isin(seeds)].reset_index(drop=True), seeds=seeds)
        within[rep] = comparisons(sub, r.metric).set_index(["design", "flag"]) if seeds else None
    rows = []
    for _, c in r.comparisons.iterrows():
        row = {"design": c["design"], "flag": c["flag"], "pooled_diff_mean": c["diff_mean"],
               "pooled_ci_lo": c["diff_ci_lo"], "pooled_ci_hi": c["diff_ci_hi"], "pooled_n": c["n_pairs"]}
        means = []
        for rep, w in within.items():
            x = w.loc[(c["design"], c["flag"])] if w is not None and (c["design"], c["flag"]) in w.index else None
            row |= {f"r{rep}_diff_mean": np.nan if x is None else x["diff_mean"],
                    f"r{rep}_ci_lo": np.nan if x is None else x["diff_ci_lo"],
                    f"r{rep}_ci_hi": np.nan if x is None else x["diff_ci_hi"],
                    f"r{rep}_n": 0 if x is None else int(x["n_pairs"])}
            if x is not None and pd.notna(x["diff_mean"]):
                means.append(float(x["diff_mean"]))
        est, se, df = stats_of(means)
        lo, hi = power.interval(est, se, df, 0.95)
        sides = {_side(row[f"r{rep}_diff_mean"], row[f"r{rep}_ci_lo"], row[f"r{rep}_ci_hi"]) for rep in within}
        row |= {"repeats_diff_mean": est, "repeats_se": se, "repeats_df": df, "repeats_ci_lo": lo, "repeats_ci_hi": hi,
                "repeats_verdict": power.verdict(est, se, df, g.delta) if g.delta else "",
                "depends_on_repeat": "no CI" if "no CI" in sides else "no" if len(sides) == 1 else
                "yes: " + " vs ".join(f"r{rep} "
                                      f"{_side(row[f'r{rep}_diff_mean'], row[f'r{rep}_ci_lo'], row[f'r{rep}_ci_hi'])}"
                                      for rep in within)}
        rows.append(row)
    return pd.DataFrame(rows)


def stats_of(means: list[float]) -> tuple[float, float, float]:
    """(mean, its standard error, df) of the repeats' Δs; no spread from fewer than two."""
    if not means:
        return np.nan, np.nan, np.nan
    if len(means) < 2:
        return means[0], np.nan, np.nan
    return float(np.mean(means)), float(np.std(means, ddof=1) / np.sqrt(len(means))), len(means) - 1.0


def spread(c: pd.DataFrame, t) -> pd.DataFrame:
    """Per arm: each repeat's best validation value and tuned values, and the range between repeats."""
    rows = []
    for arm in dict.fromkeys(info.arm for info in t.arms.values()):
        got = {rep: c[c["arm"] == key(t, arm, rep)] for rep in range(t.repeats)}
        best = [float(x["best_value"].iloc[0]) if len(x) and pd.notna(x["best_value"].iloc[0]) else np.nan
                for x in got.values()]
        rows.append({"arm": arm, **{f"r{rep}_best": b for rep, b in zip(got, best)},
                     **{f"r{rep}_values": x["tuned_values"].iloc[0] if len(x) else "" for rep, x in got.items()},
                     "best_range": float(np.nanmax(best) - np.nanmin(best)) if not np.isnan(best).all() else np.nan})
    return pd.DataFrame(rows)


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


def cost(g: Grid, found: dict[str, list[dict]], best_of: dict[str, int]) -> pd.DataFrame:
    """Per arm: what it searched, its trials by state, their training seconds, the best value and its values (the
    best trial its search recorded: `best_of`)."""
    rows = []
    for arm, info in g.tune.arms.items():
        got = found.get(arm, [])
        complete = [x for x in got if x["state"] == "COMPLETE"]
        best = next((x for x in complete if x["number"] == best_of.get(arm)), None)
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


def order(r: Report, found: dict[str, list[dict]], maximize: bool, t=None) -> pd.DataFrame:
    """Per comparison (arm vs its reference; with tuning repeats, within each repeat), the k from which the two
    budget curves keep their order."""
    rows = []
    for _, c in r.comparisons.iterrows():
        for rep in range(t.repeats if t is not None else 1):
            arm, ref = ((key(t, c["recorded_arm"], rep), key(t, c["reference"], rep)) if t is not None
                        else (c["recorded_arm"], c["reference"]))
            va, vb = _values(found.get(arm, [])), _values(found.get(ref, []))
            if not va or not vb:
                continue
            k = min(len(va), len(vb))
            ea, eb = budget.expected_best(va, k, maximize)[0], budget.expected_best(vb, k, maximize)[0]
            rows.append({"design": c["design"], "arm": arm, "reference": ref, "trials": k,
                         "settles_at": budget.order_settles(va, vb, maximize), "arm_best_at_k": ea,
                         "reference_best_at_k": eb})
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
def values_text(tuned_values: str) -> str:
    """'adamw_lr=0.0076, dropout_rate=0.18' from the JSON a tuned cell carries ('' for an arm that searches nothing)."""
    if not tuned_values:
        return ""
    if " | " in tuned_values:  # an arm tuned by several repeats (report/compare.arm_table)
        return " | ".join(values_text(v) for v in tuned_values.split(" | "))
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in json.loads(tuned_values).items())


def shown(t: Tuning, metric: str) -> list[tuple[str, str, pd.DataFrame]]:
    out = []
    if len(t.worth):
        w = t.worth
        out.append((f"Worth before vs after tuning ({metric}: Δ at the grid's values, Δ with every arm tuned)",
                    "tab:tuning-worth", pd.DataFrame({
                        "flag": w["flag"], "design": w["design"],
                        "Δ fixed [95% CI]": [numbers.delta(*x) for x in zip(w["fixed_diff_mean"], w["fixed_ci_lo"],
                                                                            w["fixed_ci_hi"])],
                        "Δ tuned [95% CI]": [numbers.delta(*x) for x in zip(w["tuned_diff_mean"], w["tuned_ci_lo"],
                                                                            w["tuned_ci_hi"])],
                        "conclusion": w["conclusion"]})))
    c = t.cost
    out.append((f"Tuning per arm (objective {t.objective}, {t.direction}d on the validation split)", "tab:tuning-cost",
                pd.DataFrame({"arm": c["arm"], "searched": c["searched"].replace("", "–"),
                              "trials (complete/pruned)": [f"{a} ({b}/{p})" for a, b, p in
                                                           zip(c["trials"], c["complete"], c["pruned"])],
                              "failed": c["failed"].astype(str),
                              "train time (s)": [numbers.num(x, 0) for x in c["train_seconds"]],
                              f"best {t.objective}": [numbers.num(x) for x in c["best_value"]],
                              "tuned values": [values_text(v) or s for v, s in zip(c["tuned_values"], c["state"])]})))
    if t.by_repeat is not None and len(t.by_repeat):
        b, reps = t.by_repeat, range(t.repeats)
        out.append((f"Effect by tuning repeat ({metric}: Δ on every seed, within each repeat's seeds, and across the "
                    f"{t.repeats} repeats as units)", "tab:tuning-repeats", pd.DataFrame({
                        "flag": b["flag"], "design": b["design"],
                        "Δ pooled [95% CI]": [numbers.delta(*x) for x in zip(b["pooled_diff_mean"], b["pooled_ci_lo"],
                                                                       b["pooled_ci_hi"])],
                        **{f"Δ repeat {rep} [95% CI] (seeds)": [f"{numbers.delta(m, lo, hi)} ({n})" for m, lo, hi, n in
                                                               zip(b[f"r{rep}_diff_mean"], b[f"r{rep}_ci_lo"],
                                                                   b[f"r{rep}_ci_hi"], b[f"r{rep}_n"])]
                           for rep in reps},
                        f"Δ across repeats [95% CI, {t.repeats - 1} df]": [
                            numbers.delta(*x) for x in zip(b["repeats_diff_mean"], b["repeats_ci_lo"],
                                                           b["repeats_ci_hi"])],
                        **({"verdict across repeats": b["repeats_verdict"]} if b["repeats_verdict"].astype(bool).any()
                           else {}),
                        "depends on the repeat": b["depends_on_repeat"]})))
        sp = t.spread
        out.append((f"Tuning repeats per arm (best {t.objective} and tuned values of each repeat)", "tab:tuning-spread",
                    pd.DataFrame({"arm": sp["arm"],
                                  **{f"repeat {rep}": [f"{numbers.num(v)}: {values_text(x)}" if x else numbers.num(v)
                                                       for v, x in zip(sp[f"r{rep}_best"], sp[f"r{rep}_values"])]
                                     for rep in reps},
                                  f"range of best {t.objective}": [numbers.num(x) for x in sp["best_range"]]})))
    if t.fixed is not None and t.fixed.looks is not None and len(t.fixed.looks.frame):
        out.append((f"Adaptive replication of the untuned cells ({t.fixed.looks.metric}, estimate [1 − α_k interval])",
                    "tab:looks-fixed", looks.show(t.fixed.looks)))
    if len(t.order):
        o = t.order
        out.append(("Budget: from how many trials each comparison's order holds", "tab:budget-order", pd.DataFrame({
            "design": o["design"], "arm": o["arm"], "vs": o["reference"], "trials": o["trials"].astype(str),
            "order holds from k": o["settles_at"].astype(str),
            f"expected best {t.objective} at k = trials (arm / vs)": [f"{numbers.num(a)} / {numbers.num(b)}" for a, b in
                                                                      zip(o["arm_best_at_k"],
                                                                          o["reference_best_at_k"])]})))
    return out


def notes(t: Tuning) -> list[str]:
    out = ["Trials: COMPLETE + PRUNED trials of the arm's budget; failed: trials whose point failed (e.g. the loss "
           "diverged), not counted in the budget (a trial whose process was killed is retried and not listed).",
           "Tuning: each arm searched only the [tune.space] keys its config reads, with the same sampler, sampler "
           "seed, pruner and number of COMPLETE + PRUNED trials, trained at tune_seed (never a replicate seed) and "
           f"scored on the validation split ({t.objective}); each arm's replicate cells were then trained at its best "
           "trial's values and tested as every cell is. The test set chose nothing."]
    if t.curves:
        out.append("Budget curves: the expected best validation objective of k trials drawn from the arm's N trials "
                   "(Dodge et al., 2019; a pruned trial counts with its last reported value), with a percentile "
                   "bootstrap band over the N trials. \"Order holds from k\": the smallest k from which the expected "
                   "best of the two arms keep the order they have at k = N; N itself means the order changed at the "
                   "last trial, so a larger budget could change it again. The curve treats an arm's trials as draws "
                   "from one distribution, as Dodge et al. do for random search; TPE's later proposals depend on "
                   "earlier ones, so read it as a summary of the search that ran, not of a fresh one.")
    if t.repeats > 1:
        seeds = ", ".join(f"{s}: r{r}" for s, r in sorted((t.repeat_of or {}).items()))
        out.append(f"Tuning repeats (tune_repeats = {t.repeats}): each arm was tuned by {t.repeats} independent "
                   "studies (repeat r: its trials at tune_seed + r, its sampler seeded sampler_seed + r, the same "
                   "budget each), and each replicate seed trained at the values of one repeat, assigned in the seeds' "
                   f"order ({seeds}). The paired tests and verdicts above take the seed as the unit: they answer 'at "
                   "these tuned values', the repeats' draws of the tuning held fixed. A claim about the tuning itself "
                   "(another search would agree) takes the repeat as the unit: 'Δ across repeats', on R − 1 degrees of "
                   "freedom, which with few repeats is wide by construction; 'depends on the repeat' says whether the "
                   "repeats' own intervals lie on different sides of zero.")
    if len(t.worth):
        out.append("Conclusion: \"holds\" when the 95% CI lies on the same side of zero (or includes it, n.s.) before "
                   "and after tuning; \"changes\" names the two sides.")
    return out
