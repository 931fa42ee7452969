"""The report's figures: Δ per flag with CI bars, validation F1 per epoch per arm, the best arm's confusion
matrix summed over its seeds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis import figures
from ..tracking import artifacts, query
from .compare import best_arm
from .gather import Grid


# ---------------------------------------------------------------- figures
def val_curves(g: Grid, arms: list[str], key: str = "val_f1") -> dict[str, tuple[list[int], list[float]]]:
    """Each arm's `key` per epoch, averaged over its seeds (an early-stopped seed drops out of later epochs)."""
    rows = [(r.arm, step, v) for r in g.runs.itertuples() for step, v in query.metric_history(r.run_id, key)]
    hist = pd.DataFrame(rows, columns=["arm", "epoch", key])
    mean = hist.groupby(["arm", "epoch"])[key].mean()
    return {a: (mean[a].index.tolist(), mean[a].tolist()) for a in arms if a in mean.index.get_level_values(0)}


def summed_confusion(g: Grid, arm: str) -> tuple[list[list[int]] | None, int]:
    """The arm's test confusion matrices summed over its seeds (rows = true class), and how many there were."""
    run_ids = g.runs.loc[g.runs["arm"] == arm, "run_id"]
    found = [query.read_json_artifact(rid, artifacts.CONFUSION) for rid in run_ids]
    mats = [np.asarray(m, dtype=int) for m in found if m is not None]
    return (sum(mats).tolist(), len(mats)) if mats else (None, 0)


def answer(r, out: Path) -> list[Path]:
    """The answer figure (analysis/figures.answer_png): every effect of every design the grid ran, with its 95% CI and
    its verdict, factorial main effects first."""
    rows = []
    if r.factorial:
        main = r.factorial.frame("main")
        verdicts = main["verdict"] if "verdict" in main else [""] * len(main)
        rows += [(f"factorial: {t.split(' = ')[0]}", e, lo, hi, v) for t, e, lo, hi, v in  # the factor, not its aliases
                 zip(main["term"], main["estimate"], main["ci_lo"], main["ci_hi"], verdicts)]
    c = r.comparisons
    if len(c):
        verdicts = c["verdict"] if "verdict" in c else [""] * len(c)
        rows += [(f"{d}: {f}", e, lo, hi, v or "") for d, f, e, lo, hi, v in
                 zip(c["design"], c["flag"], c["diff_mean"], c["diff_ci_lo"], c["diff_ci_hi"], verdicts)]
    rows = [(label, *map(float, nums), str(v) if v == v else "") for label, *nums, v in rows]
    if not rows:
        return []
    n = len(r.grid.seeds)
    title = f"what each enhancement is worth on {r.metric} ({n} seed{'s' * (n != 1)}, grid {r.grid.name})"
    return [figures.answer_png(rows, r.grid.delta, r.metric, out / f"answer_{r.metric}.png", title)]


def draw(g: Grid, arms: pd.DataFrame, w: pd.DataFrame, metric: str, out: Path) -> list[Path]:
    designs = (("leave-one-out (full − full-flag)", "loo"), ("add-one-in (baseline+flag − baseline)", "aoi"),
               ("factorial main effect (on − off)", "ff"))
    points = {label: list(zip(w[f"{p}_diff_mean"], w[f"{p}_diff_ci_lo"], w[f"{p}_diff_ci_hi"])) for label, p in designs
              if w[f"{p}_diff_mean"].notna().any()}  # the grid's designs only: an empty one would draw nothing
    paths = [figures.delta_png(w["flag"].tolist(), points, metric, out / f"delta_{metric}.png")] if points else []
    curves = val_curves(g, arms["arm"].tolist())
    if curves:
        paths.append(figures.curves_png(curves, "val_f1", out / "val_f1_curves.png"))
    arm = best_arm(arms, metric)
    confusion, n = summed_confusion(g, arm)
    if confusion:
        title = f"best arm by {metric}: {arm} (test, summed over {n} seed{'s' * (n != 1)})"
        paths.append(figures.confusion_png(confusion, out / "confusion_best.png", title=title, vectors=True))
    return paths
