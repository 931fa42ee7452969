"""The report for people: rounded display tables, the header (what the numbers are, what is missing or left
out), the provenance line, the notes, and the Markdown, LaTeX and terminal documents."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from ..analysis import figures, tables
from ..machine import host
from ..tracking import store
from . import against, factorial, looks, numbers, tuning
from .captions import caption
from .compare import Report
from .gather import counts


# ---------------------------------------------------------------- display (rounded strings for people)
def show_arms(arms: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Arm, design, flags, n, the metric's mean ± sd and CI, then the other summaries (mean ± sd)."""
    d = numbers.digits(metric)
    out = pd.DataFrame({
        "arm": arms["arm"] + np.where(arms["missing_seeds"] != "", "†", ""),
        "design": arms["designs"].str.replace(",", ", "),
        "flags on": arms["flags"], "n": arms["n_seeds"].astype(str),
        f"{metrics.LABELS.get(metric, metric)} mean ± sd": [numbers.pm(m, s, d) for m, s in
                                                   zip(arms[f"{metric}_mean"], arms[f"{metric}_std"])],
        "95% CI": [numbers.ci(lo, hi, d) for lo, hi in zip(arms[f"{metric}_ci_lo"], arms[f"{metric}_ci_hi"])]})
    if arms["tuned_values"].astype(bool).any():  # a tuned grid: each arm's values (empty: it searched nothing)
        out.insert(3, "tuned values", [tuning.values_text(v) or "(nothing searched)" for v in arms["tuned_values"]])
    for m in (m for m in metrics.SUMMARY if m != metric):
        out[metrics.LABELS[m]] = [numbers.pm(a, s, numbers.digits(m))
                                  for a, s in zip(arms[f"{m}_mean"], arms[f"{m}_std"])]
    return out


def show_comparisons(comp: pd.DataFrame, metric: str) -> pd.DataFrame:
    d = numbers.digits(metric)
    return pd.DataFrame({
        "design": comp["design"],
        "arm": [a if a == rec else f"{a} (= {rec})" for a, rec in zip(comp["arm"], comp["recorded_arm"])],
        "vs": comp["reference"], "pairs": comp["n_pairs"].astype(str),
        f"Δ {metric}": [numbers.num(x, d, True) for x in comp["diff_mean"]],
        "95% CI": [numbers.ci(lo, hi, d, True) for lo, hi in zip(comp["diff_ci_lo"], comp["diff_ci_hi"])],
        # The reason replaces the number where there is none (too few seeds, identical differences).
        "p": [numbers.p_value(p) + (f" ({note})" if note else "") if pd.notna(p) else note or "–"
              for p, note in zip(comp["p"], comp["note"])],
        "p (Holm)": [numbers.p_value(p) for p in comp["p_holm"]], "d_z": [numbers.num(x, 2) for x in comp["d_z"]],
        **power_columns(comp, d)})


def power_columns(rows: pd.DataFrame, digits: int) -> dict:
    """MDE at 80% power; with an effect of interest, the seeds that would detect it and the verdict."""
    out = {"MDE (80%)": [numbers.num(x, digits) for x in rows["mde80"]]}
    if rows["verdict"].astype(bool).any():
        out |= {"seeds for δ": ["–" if pd.isna(x) else f"{x:.0f}" for x in rows["seeds_for_delta"]],
                "verdict": factorial.said(rows, digits)}
    return out


def show_worth(w: pd.DataFrame, metric: str) -> pd.DataFrame:
    d = numbers.digits(metric)

    def cell(prefix: str) -> list[str]:
        return [f"{numbers.num(x, d, True)} {numbers.ci(lo, hi, d, True)}".replace(" –", "") for x, lo, hi in
                zip(w[f"{prefix}_diff_mean"], w[f"{prefix}_diff_ci_lo"], w[f"{prefix}_diff_ci_hi"])]

    out = pd.DataFrame({
        "rank": w["rank"].astype(str), "flag": w["flag"],
        "leave-one-out Δ [95% CI]": cell("loo"), "LOO p (Holm)": [numbers.p_value(p) for p in w["loo_p_holm"]],
        "add-one-in Δ [95% CI]": cell("aoi"), "AOI p (Holm)": [numbers.p_value(p) for p in w["aoi_p_holm"]]})
    if w["ff_diff_mean"].notna().any():
        out["factorial main effect [95% CI]"] = cell("ff")
        out["FF p (Holm)"] = [numbers.p_value(p) for p in w["ff_p_holm"]]
    out["mean Δ"] = [numbers.num(x, d, True) for x in w["mean_diff"]]
    present = [p for p in ("loo", "aoi", "ff") if w[f"{p}_diff_mean"].notna().any()]
    names = "/".join({"loo": "LOO", "aoi": "AOI", "ff": "FF"}[p] for p in present)
    for x, label, digits in (("epochs", "Δ epochs", 1), ("time", "Δ train time (s)", 0)):
        out[f"{label} {names}"] = [" / ".join(numbers.num(row[f"{p}_{x}_diff_mean"], digits, True) for p in present)
                                   for _, row in w.iterrows()]
    return out


def shown(r: Report) -> list[tuple[str, str, pd.DataFrame]]:
    """(section title, LaTeX label, display table) for each table the grid's designs give."""
    m = r.metric
    t = r.tuning
    out = [("Arms, each at its tuned values" if t else "Arms", "tab:arms", show_arms(r.arms, m))]
    if len(r.comparisons):
        out.append((f"Paired comparisons ({m}, with − without the flag, by seed)", "tab:paired",
                    show_comparisons(r.comparisons, m)))
    if len(r.worth):
        out.append((f"What each enhancement is worth ({m}), and what it costs", "tab:worth",
                    show_worth(r.worth, m)))
    if r.factorial:
        f = r.factorial
        out += [(f"Factorial main effects ({m}, {f.design.title} {f.design.resolution_text})", "tab:main-effects",
                 factorial.show(f, "main")),
                (f"Factorial two-factor interactions ({m}, by alias chain)", "tab:interactions",
                 factorial.show(f, "2fi"))]
    if r.looks is not None and len(r.looks.frame):
        out.append((f"Adaptive replication: each effect at each look ({r.looks.metric}, estimate [1 − α_k interval])",
                    "tab:looks", looks.show(r.looks)))
    if t:
        out += tuning.shown(t, m)
        if t.fixed:
            out.append(("Arms at the grid's values (before tuning)", "tab:arms-fixed", show_arms(t.fixed.arms, m)))
    if r.against:
        out.append((against.title(r.against), "tab:against", against.show(r.against)))
    return out


def header(r: Report) -> str:
    g = r.grid
    left_out = counts(g.dropped)
    parents = f" ({g.parents} parent runs)" if g.parents > 1 else ""
    whose = "the cells of its latest plan"
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
    commits = (sorted({c[:10] for c in runs.get("git_commit", pd.Series(dtype=str)) if c})
               or [t.get("git_commit", "")[:10]])
    dirty = " (uncommitted changes)" if (runs.get("git_dirty", pd.Series(dtype=str)) == "true").any() else ""
    machines = sorted({m for m in runs.get("machine", pd.Series(dtype=str)) if m}) or [t.get("machine", "")]
    grid = (f"Trained by `{t.get('command') or 'python -m lstm_mnist ablate ' + t.get('grid_file', '')}` (the last "
            f"invocation) at commit{'s' * (len(commits) > 1)} {', '.join(f'`{c}`' for c in commits if c) or 'unknown'}"
            f"{dirty} on {'; '.join(m for m in machines if m) or 'an unrecorded machine'}, "
            f"grid wall time {r.grid.wall_time_s / 60:.1f} min.")
    mine = store.provenance()
    again = " (uncommitted changes)" if mine.get("git_dirty") == "true" else ""
    report = f"Report: `{host.invocation()}` at commit `{mine['git_commit'][:10]}`{again}"
    return f"{grid} {report}, {datetime.now(timezone.utc):%Y-%m-%d}. {checkable(r)}"


def checkable(r: Report) -> str:
    """What a reader checks their own copy against: the runs' data fingerprint and protocol version, and the
    library versions the runs were trained with (the report's own Optuna: runs do not record it)."""
    runs = r.grid.runs

    def seen(col: str) -> str:
        values = sorted({str(v) for v in runs.get(col, pd.Series(dtype=str)) if str(v) not in ("", "nan")})
        return ", ".join(values) or "unrecorded"

    from importlib import metadata

    return (f"Data fingerprint `{seen('data_fingerprint')}`, protocol version {seen('protocol_version')}; trained with "
            f"torch {seen('torch_version')}, Lightning {seen('lightning_version')}, MLflow {seen('mlflow_version')}; "
            f"report with Optuna {metadata.version('optuna')}.")


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
    if len(r.comparisons) or r.factorial:
        delta = r.grid.delta
        out.append("MDE (80%): the smallest true effect the row's two-sided t-test detects with 80% power at α = 0.05 "
                   "per test, on the row's degrees of freedom and standard error (a Holm-adjusted family needs more)."
                   + (f" Verdicts for δ = {delta:g} (the grid's effect_of_interest): the looks' (below), since the "
                      f"grid was run --until-decided; each names the look that reached it (its seeds and the "
                      f"interval it read there: 1 − α_k for \"effect\", 1 − 2α_k for \"no effect ≥ δ\"), which may "
                      f"be earlier than the estimate and CI of the row's "
                      f"final seeds." if delta and r.looks is not None else
                      f" Verdicts for δ = {delta:g} (the grid's effect_of_interest): \"effect\" when the 95% CI "
                      f"excludes 0; \"no effect ≥ δ\" when the 90% CI lies inside (−δ, δ) (two one-sided tests at "
                      f"α = 0.05); else \"undecided\"; each names the seeds it was reached at and the interval it "
                      f"read." if delta else " Give the grid an effect_of_interest (δ) for verdicts.")
                   + (" Seeds for δ: the seeds at which δ would be detected with 80% power at this spread (a fixed "
                      "design)." if delta else ""))
    if "early_stopping" in set(r.worth.get("flag", ())):
        out.append(EARLY_STOPPING_NOTE)
    return (out + (factorial.notes(r.factorial) if r.factorial else []) + (tuning.notes(r.tuning) if r.tuning else [])
            + (looks.notes(r.looks, r.metric) if r.looks is not None else [])
            + (against.notes(r.against) if r.against else []))


EARLY_STOPPING_NOTE = (
    "Early stopping: every run is tested on its best-val_loss weights, so a run without early stopping already "
    "gets checkpoint selection; early stopping changes the tested weights only when val_loss would have improved "
    "again more than `patience` epochs after its best, so its effect on the metric is near zero by construction "
    "and its real effect is the compute it saves (its Δ epochs and Δ train time).")


def markdown_doc(r: Report, figure_files: list[Path]) -> str:
    parts = [f"# Ablation report: {r.grid.name}\n", provenance(r) + "\n",
             header(r) + f" Metric: `{r.metric}`. Derived from MLflow "
             f"(logged on parent run `{r.grid.parent_id}`); regenerate with `make report`.\n"]
    for title, _, table in shown(r):
        parts += [f"## {title}\n", tables.markdown(table)]
    parts += [n + "\n" for n in notes(r)]
    for p in figure_files:  # the image, then its caption (captions.py), and its vector files
        files = ", ".join(f"[{v.suffix[1:].upper()}]({v.name})" for v in figures.vector_files(p))
        parts += [f"![{p.stem}]({p.name})\n", f"*{caption(r, p)}* ({files})\n"]
    return "\n".join(parts)


def latex_doc(r: Report) -> str:
    head = [f"% {provenance(r)}", f"% {header(r)}",
            "% Generated by `make report` from MLflow; needs \\usepackage{booktabs}.", ""]
    body = [tables.latex(table, f"{title}, grid {r.grid.name}", label) for title, label, table in shown(r)]
    return "\n".join(head + body + ["% " + n for n in notes(r)]) + "\n"


def terminal(r: Report) -> str:
    return "\n".join([header(r), ""] + [tables.text(t, title) for title, _, t in shown(r)] + notes(r)) + "\n"
