"""The results report of an ablation grid: tables with CIs and paired tests, and figures, from MLflow.

Everything is derived from the tracking store (never edited by hand): the grid's members are the cells of
its latest plan, each the FINISHED run with its config_hash in the experiment (membership.py), so the
report means exactly its grid; runs outside the plan and missing cells are named in the header. Every
comparison is "with the flag − without it", paired by seed, so a positive Δ means the flag raised
the metric in both designs:
  leave-one-out  full − full-<flag>          (what removing the flag from the full model costs)
  add-one-in     baseline+<flag> − baseline  (what adding the flag to the baseline gains)
Files go to reports/<grid>/ and are logged on the grid's latest parent run under `report/`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import effects_report, figures, membership, stats, tables, track, workers
from .config import FLAGS, UserError

GRID_ROLE = "tags.`lstm_mnist.role` = 'grid'"
FACTORS = (*FLAGS, "readout")  # what a grid can switch per arm (readout on = final_states)
DESIGNS = ("reference", "leave_one_out", "add_one_in")  # table order; other designs (factorial, ...) follow
REFERENCE = {"leave_one_out": "full", "add_one_in": "baseline"}  # the arm each design is paired against
SUMMARY = ("test_f1", "test_acc", "test_loss", "epochs_trained", "train_time_s")
LABELS = {"test_f1": "test F1", "test_acc": "test acc", "test_loss": "test loss",
          "epochs_trained": "epochs", "train_time_s": "train time (s)"}


class ReportError(UserError):
    """No data to report on (no experiment, no grid, no FINISHED runs); one line says which."""


@dataclass
class Grid:
    experiment: str
    name: str
    parent_id: str          # the latest parent run: the report's artifacts go there
    parents: int            # parent runs of this grid (a grid runner may open one per invocation)
    runs: pd.DataFrame      # one row per kept FINISHED child run
    seeds: list[int]        # every seed the grid attempted (any status): the requested replicates
    dropped: Counter        # why runs were left out: status, duplicate
    parent_tags: dict = field(default_factory=dict)  # the latest parent's tags: grid file, command, design, provenance
    wall_time_s: float = 0.0  # summed over the grid's parent runs (each invocation records its own)
    outside: list = field(default_factory=list)     # FINISHED runs tagged with the grid but not in its plan
    missing: list = field(default_factory=list)     # planned cells without a FINISHED run
    mismatched: list = field(default_factory=list)  # runs left out: settings other than the grid's common ones
    planned: bool = True    # False: no plan recorded (a grid from before plans), members by tag


# ---------------------------------------------------------------- reading the store
def find_grid(experiment: str, grid: str | None) -> tuple[str, object, list]:
    """(grid name, its latest parent run, all its parent runs); the latest grid when none is named."""
    parents = track.search(experiment, GRID_ROLE)
    if not parents:
        raise ReportError(f"no ablation grid runs in MLflow experiment {experiment!r} at {track.tracking_uri()}; "
                          "run `make ablation` first (or pass --experiment)")
    names = {p.data.tags.get("grid_name", "") for p in parents}
    name = grid or max(parents, key=track.last_invoked).data.tags.get("grid_name")
    mine = [p for p in parents if p.data.tags.get("grid_name") == name]
    if not mine:
        raise ReportError(f"no grid named {grid!r} in experiment {experiment!r}; grids there: "
                          f"{', '.join(sorted(n for n in names if n))}")
    return name, max(mine, key=track.last_invoked), mine


def load(experiment: str, grid: str | None = None) -> Grid:
    """The grid's members (membership.py: by the latest invocation's plan), as report rows."""
    name, latest, parents = find_grid(experiment, grid)
    plan = membership.read_plan(latest.info.run_id)
    m = membership.by_plan(experiment, name, plan) if plan else membership.by_tag(experiment, name)
    if not m.runs:
        left = _counts(m.dropped) or "none"
        raise ReportError(f"grid {name!r} in experiment {experiment!r} has no FINISHED runs yet ({left} otherwise); "
                          "run `make ablation` to finish it")
    rows = [{**_row(r), **_planned(m.cells.get(r.info.run_id))} for r in m.runs]
    rows, mismatched = membership.agreeing(rows)
    runs = pd.DataFrame(rows)
    if not m.planned:
        runs, dupes = _latest_only(runs)
        m.dropped["duplicate"] += dupes
    # A rerun reopens the grid's parent and logs its own wall_time_s: the grid's time is the sum of them all.
    wall = sum(v for p in parents for _, v in track.metric_history(p.info.run_id, "wall_time_s"))
    return Grid(experiment, name, latest.info.run_id, len(parents), runs, m.seeds, m.dropped, dict(latest.data.tags),
                wall, m.outside, m.missing, mismatched, m.planned)


def _planned(cell: dict | None) -> dict:
    """The plan's word on a member's arm, seed and designs (a run may have been trained under another grid)."""
    if not cell:
        return {}
    return {"arm": cell["arm"], "seed": int(cell["seed"]), "design": cell["design"],
            "designs": cell["designs"] or cell["design"], "flag": cell["flag"] or _flag_from_arm(cell["arm"])}


def _seed(run) -> int:
    return int(run.data.tags.get("seed", run.data.params.get("seed", -1)))


def _row(run) -> dict:
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    arm = tags.get("arm", run.info.run_name)
    design = tags.get("design", "other")
    row = {"run_id": run.info.run_id, "arm": arm, "design": design, "designs": tags.get("designs") or design,
           "flag": tags.get("flag") or _flag_from_arm(arm), "seed": _seed(run),
           "config_hash": tags.get("config_hash", run.info.run_id), "start_time": run.info.start_time,
           "parent_run_id": tags.get("mlflow.parentRunId", ""), "git_commit": tags.get("git_commit", ""),
           "git_dirty": tags.get("git_dirty", ""), "machine": tags.get("machine", "")}
    row.update({f: params.get(f) == "True" for f in FLAGS})
    row["readout"] = params.get("readout", "last")  # a grid may vary it like a flag ("readout" on = final_states)
    row.update({k: metrics.get(k, np.nan) for k in SUMMARY if k != "train_time_s"})
    row.update({k: v for k, v in metrics.items() if k not in row})
    row["train_time_s"] = _train_time(run)
    row["settings"] = membership.settings(run)
    return row


def _flag_from_arm(arm: str) -> str:
    """`full-<flag>` / `baseline+<flag>`: the flag, for runs recorded without a `flag` tag."""
    for sep in ("-", "+"):
        head, _, tail = arm.partition(sep)
        if head in ("full", "baseline") and tail in FACTORS:
            return tail
    return ""


def _train_time(run) -> float:
    """The sum of the run's per-epoch `epoch_time_s`; its wall time when no epoch was logged."""
    epochs = track.metric_history(run.info.run_id, "epoch_time_s")
    if epochs:
        return float(sum(v for _, v in epochs))
    end = run.info.end_time or run.info.start_time
    return (end - run.info.start_time) / 1000


def _latest_only(runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One run per config hash, then per (arm, seed) (the grid file may have changed between invocations)."""
    runs = runs.sort_values("start_time", ascending=False)
    kept = runs.drop_duplicates("config_hash").drop_duplicates(["arm", "seed"])
    return kept.sort_values(["arm", "seed"]).reset_index(drop=True), len(runs) - len(kept)


def _counts(counter: Counter) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counter.items()) if n)


# ---------------------------------------------------------------- the three tables (full precision)
def arm_table(g: Grid, metric: str) -> pd.DataFrame:
    rows = []
    for arm, runs in g.runs.groupby("arm", sort=False):
        first = runs.iloc[0]
        row = {"arm": arm, "design": first["design"], "designs": first["designs"], "flag": first["flag"],
               "flags": _flags_text([f for f in FLAGS if first[f]], first["readout"]), "n_seeds": len(runs),
               "seeds": " ".join(map(str, sorted(runs["seed"]))),
               "missing_seeds": " ".join(str(s) for s in g.seeds if s not in set(runs["seed"]))}
        for m in dict.fromkeys((metric, *SUMMARY)):
            row.update(_summary(m, runs[m].dropna().tolist()))
        rows.append(row)
    return _design_order(pd.DataFrame(rows))


def _summary(metric: str, values: list[float]) -> dict:
    lo, hi = stats.ci95(values)
    return {f"{metric}_mean": stats.mean(values), f"{metric}_std": stats.std(values),
            f"{metric}_ci_lo": lo, f"{metric}_ci_hi": hi}


def _flags_text(on: list[str], readout: str) -> str:
    extra = f" + {readout} readout" if readout != "last" else ""
    if len(on) == len(FLAGS):
        return "all six" + extra
    if len(on) > len(FLAGS) // 2:
        return "all but " + ", ".join(f for f in FLAGS if f not in on) + extra
    return (", ".join(on) or "none") + extra


def _flag_rank(flag: str) -> int:
    """The six flags in design.md's order, then `readout`, then anything else."""
    return FACTORS.index(flag) if flag in FACTORS else len(FACTORS)


def _design_order(df: pd.DataFrame) -> pd.DataFrame:
    rank = {d: i for i, d in enumerate(DESIGNS)}
    key = df.assign(_d=df["design"].map(lambda d: rank.get(d, len(DESIGNS))), _f=df["flag"].map(_flag_rank))
    return key.sort_values(["_d", "_f", "arm"]).drop(columns=["_d", "_f"]).reset_index(drop=True)


COSTS = {"epochs_trained": "epochs", "train_time_s": "time"}  # what a flag costs, beside what it is worth


def comparisons(g: Grid, metric: str) -> pd.DataFrame:
    """Each leave-one-out / add-one-in arm against its reference, paired by seed; Holm within each design.
    Beside the metric's Δ: the paired Δ of epochs trained and training time (what the flag costs)."""
    scored = g.runs.dropna(subset=[metric])  # a run without the metric cannot be paired
    by_arm = {m: {arm: dict(zip(r["seed"], r[m])) for arm, r in scored.groupby("arm")} if m in scored else {}
              for m in (metric, *COSTS)}
    rows = [_compare(arm, design, flag, by_arm, metric) for design in REFERENCE for arm, flag in members(g, design)]
    df = pd.DataFrame(rows, columns=["design", "flag", "arm", "recorded_arm", "reference", "metric", "n_pairs",
                                     "diff_mean", "diff_ci_lo", "diff_ci_hi", "p", "p_holm", "d_z", "note",
                                     "epochs_diff_mean", "time_diff_mean"])
    for design, idx in df.groupby("design").groups.items():
        df.loc[idx, "p_holm"] = stats.holm(df.loc[idx, "p"].tolist())
    return _design_order(df)


def members(g: Grid, design: str) -> list[tuple[str, str]]:
    """(recorded arm, flag) of each arm in a design.

    The grid runner records an arm two designs share once, under the first design's name (with two
    flags, baseline+adamw is full-dropout); its `designs` tag lists both. The flag is then the one
    factor in which the arm differs from the design's reference arm.
    """
    ref = g.runs[g.runs["arm"] == REFERENCE[design]]
    ref_on = _on(ref.iloc[0]) if len(ref) else None
    out = []
    for arm, runs in g.runs.groupby("arm"):
        first = runs.iloc[0]
        if design in str(first["designs"]).split(","):
            diff = _on(first) ^ ref_on if ref_on is not None else set()
            out.append((arm, next(iter(diff)) if len(diff) == 1 else first["flag"]))
    return out


def _on(run: pd.Series) -> set[str]:
    return {f for f in FLAGS if run[f]} | ({"readout"} if run["readout"] == "final_states" else set())


def _compare(recorded: str, design: str, flag: str, by_arm: dict, metric: str) -> dict:
    ref = REFERENCE[design]

    def paired(m: str) -> stats.Paired:
        pair = (by_arm[m].get(ref, {}), by_arm[m].get(recorded, {}))
        # "with the flag" first: `full` has it in leave-one-out, `baseline+<flag>` has it in add-one-in.
        return stats.paired(*pair) if design == "leave_one_out" else stats.paired(*reversed(pair))

    r = paired(metric)
    note = r.reason if ref in by_arm[metric] else f"no FINISHED {ref!r} runs"
    arm = f"full-{flag}" if design == "leave_one_out" else f"baseline+{flag}"
    return {"design": design, "flag": flag, "arm": arm, "recorded_arm": recorded, "reference": ref,
            "metric": metric, "n_pairs": r.n,
            "diff_mean": r.mean_diff, "diff_ci_lo": r.ci_lo, "diff_ci_hi": r.ci_hi, "p": r.p, "p_holm": np.nan,
            "d_z": r.d_z, "note": note, **{f"{short}_diff_mean": paired(m).mean_diff for m, short in COSTS.items()}}


def worth(comp: pd.DataFrame, metric: str, factorial: effects_report.Factorial | None = None,
          costs: dict | None = None) -> pd.DataFrame:
    """One row per flag: leave-one-out cost, add-one-in gain and (when the grid has one) the factorial main
    effect side by side, ranked by their mean; then what the flag costs: Δ epochs trained and Δ training
    time per design (`costs`: the factorial fits of epochs_trained and train_time_s, when there is one)."""
    rows = []
    flags = set(comp["flag"]) | set(factorial.design.factors if factorial else ())
    for flag in sorted(flags - {""}, key=_flag_rank):
        row = {"flag": flag}
        for design, short in (("leave_one_out", "loo"), ("add_one_in", "aoi")):
            hit = comp[(comp["flag"] == flag) & (comp["design"] == design)]
            c = hit.iloc[0] if len(hit) else pd.Series(dtype=object)
            for k in (*WORTH_KEYS, *(f"{x}_diff_mean" for x in COSTS.values())):
                row[f"{short}_{k}"] = c.get(k, np.nan)
        row.update({k: v[0] for k, v in effects_report.worth_columns(factorial, [flag]).items()})
        for m, x in COSTS.items():
            e = (costs or {}).get(m)
            row[f"ff_{x}_diff_mean"] = e.main_effect(flag).estimate if e and e.main_effect(flag) else np.nan
        views = [v for v in (row["loo_diff_mean"], row["aoi_diff_mean"], row["ff_diff_mean"]) if pd.notna(v)]
        row["mean_diff"] = float(np.mean(views)) if views else np.nan  # the designs present
        rows.append(row)
    cost_cols = [f"{d}_{x}_diff_mean" for d in ("loo", "aoi", "ff") for x in COSTS.values()]
    df = pd.DataFrame(rows, columns=["flag"] + [f"{s}_{k}" for s in ("loo", "aoi") for k in WORTH_KEYS]
                      + ["ff_diff_mean", "ff_diff_ci_lo", "ff_diff_ci_hi", "ff_p_holm", "mean_diff"] + cost_cols)
    df = df.sort_values("mean_diff", ascending=lower_is_better(metric), na_position="last")
    return df.assign(rank=range(1, len(df) + 1))[["rank", *df.columns]].reset_index(drop=True)


WORTH_KEYS = ("diff_mean", "diff_ci_lo", "diff_ci_hi", "p_holm", "n_pairs", "note")


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or "time" in metric


# ---------------------------------------------------------------- display (rounded strings for people)
def _digits(metric: str) -> int:
    return {"epochs_trained": 1, "train_time_s": 0}.get(metric, 4)


def _num(x: float, digits: int, sign: bool = False) -> str:
    return "–" if pd.isna(x) else f"{x:{'+' if sign else ''}.{digits}f}"


def _pm(mean: float, std: float, digits: int) -> str:
    return _num(mean, digits) if pd.isna(std) else f"{_num(mean, digits)} ± {_num(std, digits)}"


def _ci(lo: float, hi: float, digits: int, sign: bool = False) -> str:
    return "–" if pd.isna(lo) else f"[{_num(lo, digits, sign)}, {_num(hi, digits, sign)}]"


def _p(p: float) -> str:
    return "–" if pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def show_arms(arms: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Arm, design, flags, n, the metric's mean ± sd and CI, then the other summaries (mean ± sd)."""
    d = _digits(metric)
    out = pd.DataFrame({
        "arm": arms["arm"] + np.where(arms["missing_seeds"] != "", "†", ""),
        "design": arms["designs"].str.replace(",", ", "),
        "flags on": arms["flags"], "n": arms["n_seeds"].astype(str),
        f"{LABELS.get(metric, metric)} mean ± sd": [_pm(m, s, d) for m, s in
                                                   zip(arms[f"{metric}_mean"], arms[f"{metric}_std"])],
        "95% CI": [_ci(lo, hi, d) for lo, hi in zip(arms[f"{metric}_ci_lo"], arms[f"{metric}_ci_hi"])]})
    for m in (m for m in SUMMARY if m != metric):
        out[LABELS[m]] = [_pm(a, s, _digits(m)) for a, s in zip(arms[f"{m}_mean"], arms[f"{m}_std"])]
    return out


def show_comparisons(comp: pd.DataFrame, metric: str) -> pd.DataFrame:
    d = _digits(metric)
    return pd.DataFrame({
        "design": comp["design"],
        "arm": [a if a == rec else f"{a} (= {rec})" for a, rec in zip(comp["arm"], comp["recorded_arm"])],
        "vs": comp["reference"], "pairs": comp["n_pairs"].astype(str),
        f"Δ {metric}": [_num(x, d, True) for x in comp["diff_mean"]],
        "95% CI": [_ci(lo, hi, d, True) for lo, hi in zip(comp["diff_ci_lo"], comp["diff_ci_hi"])],
        # The reason replaces the number where there is none (too few seeds, identical differences).
        "p": [_p(p) + (f" ({note})" if note else "") if pd.notna(p) else note or "–"
              for p, note in zip(comp["p"], comp["note"])],
        "p (Holm)": [_p(p) for p in comp["p_holm"]], "d_z": [_num(x, 2) for x in comp["d_z"]]})


def show_worth(w: pd.DataFrame, metric: str) -> pd.DataFrame:
    d = _digits(metric)

    def cell(prefix: str) -> list[str]:
        return [f"{_num(x, d, True)} {_ci(lo, hi, d, True)}".replace(" –", "") for x, lo, hi in
                zip(w[f"{prefix}_diff_mean"], w[f"{prefix}_diff_ci_lo"], w[f"{prefix}_diff_ci_hi"])]

    out = pd.DataFrame({
        "rank": w["rank"].astype(str), "flag": w["flag"],
        "leave-one-out Δ [95% CI]": cell("loo"), "LOO p (Holm)": [_p(p) for p in w["loo_p_holm"]],
        "add-one-in Δ [95% CI]": cell("aoi"), "AOI p (Holm)": [_p(p) for p in w["aoi_p_holm"]]})
    if w["ff_diff_mean"].notna().any():
        out["factorial main effect [95% CI]"] = cell("ff")
        out["FF p (Holm)"] = [_p(p) for p in w["ff_p_holm"]]
    out["mean Δ"] = [_num(x, d, True) for x in w["mean_diff"]]
    present = [p for p in ("loo", "aoi", "ff") if w[f"{p}_diff_mean"].notna().any()]
    names = "/".join({"loo": "LOO", "aoi": "AOI", "ff": "FF"}[p] for p in present)
    for x, label, digits in (("epochs", "Δ epochs", 1), ("time", "Δ train time (s)", 0)):
        out[f"{label} {names}"] = [" / ".join(_num(row[f"{p}_{x}_diff_mean"], digits, True) for p in present)
                                   for _, row in w.iterrows()]
    return out


# ---------------------------------------------------------------- figures
def val_curves(g: Grid, arms: list[str], key: str = "val_f1") -> dict[str, tuple[list[int], list[float]]]:
    """Each arm's `key` per epoch, averaged over its seeds (an early-stopped seed drops out of later epochs)."""
    rows = [(r.arm, step, v) for r in g.runs.itertuples() for step, v in track.metric_history(r.run_id, key)]
    hist = pd.DataFrame(rows, columns=["arm", "epoch", key])
    mean = hist.groupby(["arm", "epoch"])[key].mean()
    return {a: (mean[a].index.tolist(), mean[a].tolist()) for a in arms if a in mean.index.get_level_values(0)}


def best_arm(arms: pd.DataFrame, metric: str) -> str:
    col = arms[f"{metric}_mean"]
    return arms.loc[col.idxmin() if lower_is_better(metric) else col.idxmax(), "arm"]


def summed_confusion(g: Grid, arm: str) -> tuple[list[list[int]] | None, int]:
    """The arm's test confusion matrices summed over its seeds (rows = true class), and how many there were."""
    run_ids = g.runs.loc[g.runs["arm"] == arm, "run_id"]
    found = [track.read_json_artifact(rid, "confusion_matrix.json") for rid in run_ids]
    mats = [np.asarray(m, dtype=int) for m in found if m is not None]
    return (sum(mats).tolist(), len(mats)) if mats else (None, 0)


def draw(g: Grid, arms: pd.DataFrame, w: pd.DataFrame, metric: str, out: Path) -> list[Path]:
    designs = (("leave-one-out (full − full-flag)", "loo"), ("add-one-in (baseline+flag − baseline)", "aoi"))
    points = {label: list(zip(w[f"{p}_diff_mean"], w[f"{p}_diff_ci_lo"], w[f"{p}_diff_ci_hi"])) for label, p in designs}
    paths = [figures.delta_png(w["flag"].tolist(), points, metric, out / f"delta_{metric}.png")] if len(w) else []
    curves = val_curves(g, arms["arm"].tolist())
    if curves:
        paths.append(figures.curves_png(curves, "val_f1", out / "val_f1_curves.png"))
    arm = best_arm(arms, metric)
    confusion, n = summed_confusion(g, arm)
    if confusion:
        title = f"best arm by {metric}: {arm} (test, summed over {n} seed{'s' * (n != 1)})"
        paths.append(figures.confusion_png(confusion, out / "confusion_best.png", title=title))
    return paths


# ---------------------------------------------------------------- the report
@dataclass
class Report:
    grid: Grid
    metric: str
    arms: pd.DataFrame
    comparisons: pd.DataFrame
    worth: pd.DataFrame
    factorial: effects_report.Factorial | None = None

    def shown(self) -> list[tuple[str, str, pd.DataFrame]]:
        """(section title, LaTeX label, display table) for each table the grid's designs give."""
        m = self.metric
        out = [("Arms", "tab:arms", show_arms(self.arms, m))]
        if len(self.comparisons):
            out.append((f"Paired comparisons ({m}, with − without the flag, by seed)", "tab:paired",
                        show_comparisons(self.comparisons, m)))
        if len(self.worth):
            out.append((f"What each enhancement is worth ({m}), and what it costs", "tab:worth",
                        show_worth(self.worth, m)))
        if self.factorial:
            f = self.factorial
            out += [(f"Factorial main effects ({m}, {f.design.title} {f.design.resolution_text})", "tab:main-effects",
                     effects_report.show(f, "main")),
                    (f"Factorial two-factor interactions ({m}, by alias chain)", "tab:interactions",
                     effects_report.show(f, "2fi"))]
        return out


def build(g: Grid, metric: str) -> Report:
    if metric not in g.runs.columns or g.runs[metric].isna().all():
        known = sorted(c for c in g.runs.columns if c.startswith("test_") or c in SUMMARY)
        raise ReportError(f"metric {metric!r} is not recorded on grid {g.name!r}'s runs; try one of {', '.join(known)}")
    arms = arm_table(g, metric)
    comp = comparisons(g, metric)
    factorial = effects_report.build(g.runs, g.seeds, g.parent_tags, metric)
    costs = {m: effects_report.build(g.runs, g.seeds, g.parent_tags, m) for m in COSTS} if factorial else {}
    return Report(g, metric, arms, comp, worth(comp, metric, factorial, costs), factorial)


def header(r: Report) -> str:
    g = r.grid
    left_out = _counts(g.dropped)
    parents = f" ({g.parents} parent runs)" if g.parents > 1 else ""
    whose = "the cells of its latest plan" if g.planned else "gathered by the tag grid_name: no plan recorded"
    parts = [f"Grid `{g.name}` in MLflow experiment `{g.experiment}`{parents}: {len(g.runs)} FINISHED runs over "
             f"{len(r.arms)} arms ({whose}), seeds {', '.join(map(str, g.seeds))}"]
    for what, names in (("missing (planned, no FINISHED run)", g.missing),
                        ("outside the plan (tagged with the grid, not members)", g.outside),
                        ("left out for settings other than the grid's", g.mismatched)):
        if names:
            parts.append(f"{what}: {len(names)} ({', '.join(names)})")
    if left_out:
        parts.append(f"not counted: {left_out}")
    return "; ".join(parts) + "."


def provenance(r: Report) -> str:
    """Where the numbers come from: the grid's command, commit, machine and wall time, and this report's."""
    t, runs = r.grid.parent_tags, r.grid.runs
    commits = sorted({c[:10] for c in runs.get("git_commit", pd.Series(dtype=str)) if c}) or [t.get("git_commit", "")[:10]]
    dirty = " (uncommitted changes)" if (runs.get("git_dirty", pd.Series(dtype=str)) == "true").any() else ""
    machines = sorted({m for m in runs.get("machine", pd.Series(dtype=str)) if m}) or [t.get("machine", "")]
    grid = (f"Trained by `{t.get('command') or 'python -m lstm_mnist ablate ' + t.get('grid_file', '')}` (the last "
            f"invocation) at commit{'s' * (len(commits) > 1)} {', '.join(f'`{c}`' for c in commits if c) or 'unknown'}"
            f"{dirty} on {'; '.join(m for m in machines if m) or 'an unrecorded machine'}, "
            f"grid wall time {r.grid.wall_time_s / 60:.1f} min.")
    mine = track.provenance()
    again = " (uncommitted changes)" if mine.get("git_dirty") == "true" else ""
    return f"{grid} Report: `{workers.invocation()}` at commit `{mine['git_commit'][:10]}`{again}."


def notes(r: Report) -> list[str]:
    short = r.arms[r.arms["missing_seeds"] != ""]
    missing = [f"{arm}: seed{'s' * (' ' in seeds)} {seeds.replace(' ', ', ')}"
               for arm, seeds in zip(short["arm"], short["missing_seeds"])]
    out = [f"† fewer seeds than the grid's {len(r.grid.seeds)} (missing: {'; '.join(missing)})"] if missing else []
    if len(r.comparisons):
        out.append("Δ = with − without the flag on the same seed (leave-one-out: full − full-<flag>; add-one-in: "
                   "baseline+<flag> − baseline). 95% CIs are t-intervals over seeds; p is the two-sided paired "
                   "t-test, Holm-adjusted within each design (a comparison whose per-seed differences are all "
                   "equal has p = 0 when they are non-zero, 1 when zero); d_z = mean / sd of the paired differences.")
    if len(r.worth):
        out.append("Δ epochs and Δ train time: the same with − without difference for the epochs trained and the "
                   "summed epoch time (per design: leave-one-out / add-one-in / factorial main effect).")
    if "early_stopping" in set(r.worth.get("flag", ())):
        out.append(EARLY_STOPPING_NOTE)
    return out + (effects_report.notes(r.factorial) if r.factorial else [])


EARLY_STOPPING_NOTE = (
    "Early stopping: every run is tested on its best-val_loss weights, so a run without early stopping already "
    "gets checkpoint selection; early stopping changes the tested weights only when val_loss would have improved "
    "again more than `patience` epochs after its best, so its effect on the metric is near zero by construction "
    "and its real effect is the compute it saves (its Δ epochs and Δ train time).")


def markdown_doc(r: Report, figure_files: list[Path]) -> str:
    parts = [f"# Ablation report: {r.grid.name}\n", provenance(r) + "\n", header(r) + f" Metric: `{r.metric}`. Derived from MLflow "
             f"(logged on parent run `{r.grid.parent_id}`); regenerate with `make report`.\n"]
    for title, _, table in r.shown():
        parts += [f"## {title}\n", tables.markdown(table)]
    parts += [n + "\n" for n in notes(r)]
    parts += [f"![{p.stem}]({p.name})\n" for p in figure_files]
    return "\n".join(parts)


def latex_doc(r: Report) -> str:
    head = [f"% {provenance(r)}", f"% {header(r)}", "% Generated by `make report` from MLflow; needs \\usepackage{booktabs}.", ""]
    body = [tables.latex(table, f"{title}, grid {r.grid.name}", label) for title, label, table in r.shown()]
    return "\n".join(head + body + ["% " + n for n in notes(r)]) + "\n"


def write(r: Report, out: Path) -> list[Path]:
    """Every table as CSV (full precision), the Markdown and LaTeX documents, and the figures."""
    out.mkdir(parents=True, exist_ok=True)
    csvs = {"runs.csv": r.grid.runs, "arms.csv": r.arms, "comparisons.csv": r.comparisons, "worth.csv": r.worth}
    if r.factorial:
        csvs |= {"main_effects.csv": r.factorial.frame("main"), "interactions.csv": r.factorial.frame("2fi")}
    for name, df in csvs.items():
        df.to_csv(out / name, index=False)
    figs = draw(r.grid, r.arms, r.worth, r.metric, out)
    if r.factorial:
        figs.append(effects_report.half_normal_png(r.factorial, out))
    (out / "report.md").write_text(markdown_doc(r, figs))
    (out / "report.tex").write_text(latex_doc(r))
    return [out / n for n in csvs] + [out / "report.md", out / "report.tex"] + figs


def terminal(r: Report) -> str:
    return "\n".join([header(r), ""] + [tables.text(t, title) for title, _, t in r.shown()] + notes(r)) + "\n"


def latest_grid_experiment(grid: str | None = None) -> str:
    """The experiment of the newest grid (of that name) in the store: `make report` without --experiment."""
    latest = track.latest_parent(("grid",), grid)
    if latest is None:
        named = f"named {grid!r} " if grid else ""
        raise ReportError(f"no ablation grid runs {named}in the tracking store {track.tracking_uri()}; run "
                          "`make ablation` first (or pass --experiment)")
    return track.client().get_experiment(latest.info.experiment_id).name


def make(experiment: str | None, grid: str | None, metric: str, out: str | None) -> tuple[Report, list[Path]]:
    """Read the grid, write the report to `out` (default reports/<grid>), log it on the latest parent run."""
    r = build(load(experiment or latest_grid_experiment(grid), grid), metric)
    paths = write(r, Path(out or Path("reports") / r.grid.name))
    track.log_files(r.grid.parent_id, paths, "report")
    track.log_tables(r.grid.parent_id, {f"{label.removeprefix('tab:')}_{r.metric}": table
                                        for _, label, table in r.shown()})
    return r, paths
