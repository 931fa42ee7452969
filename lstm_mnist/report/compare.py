"""The report's numbers (full precision; pure pandas over the gathered rows, no MLflow): each arm's summary,
each design's paired comparisons with Holm, and what each flag is worth and costs.

Every comparison is "with the flag − without it", paired by seed, so a positive Δ means the flag raised
the metric in both designs:
  leave-one-out  full − full-<flag>          (what removing the flag from the full model costs)
  add-one-in     baseline+<flag> − baseline  (what adding the flag to the baseline gains)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..analysis import power, stats
from .. import metrics
from .. import task as task_protocol
from . import factorial, gather
from .gather import Grid, ReportError


DESIGNS = ("reference", "leave_one_out", "add_one_in")  # table order; other designs (factorial, ...) follow


REFERENCE = {"leave_one_out": "full", "add_one_in": "baseline"}  # the arm each design is paired against


# ---------------------------------------------------------------- the three tables (full precision)
def arm_table(g: Grid, metric: str) -> pd.DataFrame:
    rows = []
    for arm, runs in g.runs.groupby("arm", sort=False):
        first = runs.iloc[0]
        row = {"arm": arm, "design": first["design"], "designs": first["designs"], "flag": first["flag"],
               "flags": _flags_text(g.task, first), "n_seeds": len(runs),
               "seeds": " ".join(map(str, sorted(runs["seed"]))),
               "missing_seeds": " ".join(str(s) for s in g.seeds if s not in set(runs["seed"])),
               # with tuning repeats an arm's seeds train at several values: each once, in seed order
               "tuned_values": " | ".join(dict.fromkeys(runs.sort_values("seed")["tuned_values"]))
               if "tuned_values" in runs else ""}
        for m in dict.fromkeys((metric, *metrics.SUMMARY)):
            row.update(_summary(m, runs[m].dropna().tolist()))
        rows.append(row)
    return _design_order(pd.DataFrame(rows), g.task)


def _summary(metric: str, values: list[float]) -> dict:
    lo, hi = stats.ci95(values)
    return {f"{metric}_mean": stats.mean(values), f"{metric}_std": stats.std(values),
            f"{metric}_ci_lo": lo, f"{metric}_ci_hi": hi}


def _flags_text(task: task_protocol.Task, row) -> str:
    """The arm's flags in words: the default flags that are on ("all six", "all but width", "dropout, adamw"),
    then any other flag that is on (the built-in task's readout: "+ final_states readout")."""
    return task.on_text(lambda f: gather.is_on(row, task, f))


def _flag_rank(flag: str, task: task_protocol.Task) -> int:
    """The task's flags in its order (the built-in: design.md's six, then `readout`), then anything else."""
    names = task.flag_names
    return names.index(flag) if flag in names else len(names)


def _design_order(df: pd.DataFrame, task: task_protocol.Task) -> pd.DataFrame:
    rank = {d: i for i, d in enumerate(DESIGNS)}
    key = df.assign(_d=df["design"].map(lambda d: rank.get(d, len(DESIGNS))),
                    _f=df["flag"].map(lambda f: _flag_rank(f, task)))
    return key.sort_values(["_d", "_f", "arm"]).drop(columns=["_d", "_f"]).reset_index(drop=True)


COSTS = {"epochs_trained": "epochs", "train_time_s": "time"}  # what a flag costs, beside what it is worth


def comparisons(g: Grid, metric: str) -> pd.DataFrame:
    """Each leave-one-out / add-one-in arm against its reference, paired by seed; Holm within each design.
    Beside the metric's Δ: the paired Δ of epochs trained and training time (what the flag costs)."""
    by_arm = {m: values_by_arm(g, m) for m in (metric, *COSTS)}
    rows = [_compare(arm, design, flag, name, by_arm, metric, g.delta) for design in REFERENCE
            for arm, flag, name in design_members(g, design)]
    df = pd.DataFrame(rows, columns=["design", "flag", "arm", "recorded_arm", "reference", "metric", "n_pairs",
                                     "diff_mean", "diff_ci_lo", "diff_ci_hi", "p", "p_holm", "d_z", "note",
                                     "epochs_diff_mean", "time_diff_mean", *power.COLUMNS])
    for design, idx in df.groupby("design").groups.items():
        df.loc[idx, "p_holm"] = stats.holm(df.loc[idx, "p"].tolist())
    return _design_order(df, g.task)


def values_by_arm(g: Grid, metric: str) -> dict[str, dict[int, float]]:
    """Arm -> {seed: the metric} of the runs that have it (a run without the metric cannot be paired)."""
    if metric not in g.runs:
        return {}
    scored = g.runs.dropna(subset=[metric])
    return {arm: dict(zip(r["seed"], r[metric])) for arm, r in scored.groupby("arm")}


def with_and_without(design: str, by_arm: dict, recorded: str) -> tuple[dict, dict]:
    """({seed: value} with the flag, without it) of one comparison: `full` has the flag in leave-one-out,
    `baseline+<flag>` in add-one-in."""
    ref, mine = by_arm.get(REFERENCE[design], {}), by_arm.get(recorded, {})
    return (ref, mine) if design == "leave_one_out" else (mine, ref)


def design_members(g: Grid, design: str) -> list[tuple[str, str, str]]:
    """(recorded arm, flag, the arm's name in the design) of each arm in a design, as the plan says: an arm two
    designs share is recorded once, under the first design's name, with its role in each design."""
    out = []
    for arm, runs in g.runs.groupby("arm"):
        out += [(arm, flag, name) for d, flag, name in runs.iloc[0]["roles"] if d == design]
    return out


def _compare(recorded: str, design: str, flag: str, arm: str, by_arm: dict, metric: str,
             delta: float | None = None) -> dict:
    ref = REFERENCE[design]

    def paired(m: str) -> stats.Paired:
        return stats.paired(*with_and_without(design, by_arm[m], recorded))

    r = paired(metric)
    note = r.reason if ref in by_arm[metric] else f"no FINISHED {ref!r} runs"
    return {"design": design, "flag": flag, "arm": arm, "recorded_arm": recorded, "reference": ref,
            "metric": metric, "n_pairs": r.n,
            "diff_mean": r.mean_diff, "diff_ci_lo": r.ci_lo, "diff_ci_hi": r.ci_hi, "p": r.p, "p_holm": np.nan,
            "d_z": r.d_z, "note": note, **{f"{short}_diff_mean": paired(m).mean_diff for m, short in COSTS.items()},
            **power.columns(r.mean_diff, r.se, r.df, r.n, delta)}


def worth(comp: pd.DataFrame, metric: str, ff: factorial.Factorial | None = None,
          costs: dict | None = None, *, task: task_protocol.Task) -> pd.DataFrame:
    """One row per flag: leave-one-out cost, add-one-in gain and (when the grid has one) the factorial main
    effect side by side, ranked by their mean; then what the flag costs: Δ epochs trained and Δ training
    time per design (`costs`: the factorial fits of epochs_trained and train_time_s, when there is one)."""
    rows = []
    flags = set(comp["flag"]) | set(ff.design.factors if ff else ())
    for flag in sorted(flags - {""}, key=lambda f: (_flag_rank(f, task), f)):
        row = {"flag": flag}
        for design, short in (("leave_one_out", "loo"), ("add_one_in", "aoi")):
            hit = comp[(comp["flag"] == flag) & (comp["design"] == design)]
            c = hit.iloc[0] if len(hit) else pd.Series(dtype=object)
            for k in (*WORTH_KEYS, *(f"{x}_diff_mean" for x in COSTS.values())):
                row[f"{short}_{k}"] = c.get(k, np.nan)
        row.update({k: v[0] for k, v in factorial.worth_columns(ff, [flag]).items()})
        for m, x in COSTS.items():
            e = (costs or {}).get(m)
            row[f"ff_{x}_diff_mean"] = e.main_effect(flag).estimate if e and e.main_effect(flag) else np.nan
        views = [v for v in (row["loo_diff_mean"], row["aoi_diff_mean"], row["ff_diff_mean"]) if pd.notna(v)]
        row["mean_diff"] = float(np.mean(views)) if views else np.nan  # the designs present
        rows.append(row)
    cost_cols = [f"{d}_{x}_diff_mean" for d in ("loo", "aoi", "ff") for x in COSTS.values()]
    df = pd.DataFrame(rows, columns=["flag"] + [f"{s}_{k}" for s in ("loo", "aoi") for k in WORTH_KEYS]
                      + ["ff_diff_mean", "ff_diff_ci_lo", "ff_diff_ci_hi", "ff_p_holm", "mean_diff"] + cost_cols)
    df = df.sort_values("mean_diff", ascending=metrics.lower_is_better(metric), na_position="last")
    return df.assign(rank=range(1, len(df) + 1))[["rank", *df.columns]].reset_index(drop=True)


WORTH_KEYS = ("diff_mean", "diff_ci_lo", "diff_ci_hi", "p_holm", "n_pairs", "note")


def best_arm(arms: pd.DataFrame, metric: str) -> str:
    col = arms[f"{metric}_mean"]
    return arms.loc[col.idxmin() if metrics.lower_is_better(metric) else col.idxmax(), "arm"]


# ---------------------------------------------------------------- the report
@dataclass
class Report:
    """A grid's numbers for one metric: what render.py shows and make.py writes."""
    grid: Grid
    metric: str
    arms: pd.DataFrame
    comparisons: pd.DataFrame
    worth: pd.DataFrame
    factorial: factorial.Factorial | None = None
    tuning: object = None   # a tuned grid's report/tuning.Tuning (before vs after, costs, budget curves)
    # a grid run --until-decided: analysis/sequential.Decided (each look's intervals and verdicts)
    looks: object = None
    against: object = None  # report --against: report/against.Against (each effect here and in the other grid)


def build(g: Grid, metric: str) -> Report:
    if metric not in g.runs.columns or g.runs[metric].isna().all():
        known = sorted(c for c in g.runs.columns if c.startswith("test_") or c in metrics.SUMMARY)
        raise ReportError(f"metric {metric!r} is not recorded on grid {g.name!r}'s runs; try one of {', '.join(known)}")
    arms = arm_table(g, metric)
    comp = comparisons(g, metric)
    ff = factorial.build(g.runs, g.seeds, g.fraction, metric, g.delta, task=g.task)
    costs = {m: factorial.build(g.runs, g.seeds, g.fraction, m, task=g.task) for m in COSTS} if ff else {}
    return Report(g, metric, arms, comp, worth(comp, metric, ff, costs, task=g.task), ff)
