"""`make report`: read the grid, compute, write every table (CSV, Markdown, LaTeX) and figure to
reports/<grid>/, and log them on the grid's latest parent run (files under report/, tables as MLflow tables)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import against as against_grid
from . import captions, factorial, looks, methods, tuning
from ..analysis import figures
from ..config import check_name
from ..tracking import artifacts, groups
from .compare import Report, build
from .gather import latest_grid_experiment, load
from .plots import answer, draw
from .render import latex_doc, markdown_doc, shown


def tables(r: Report) -> dict[str, pd.DataFrame]:
    """Every table of the report at full precision, by name (its CSV file's stem): what `write` saves and what
    the Python API returns."""
    out = {"runs": r.grid.runs.drop(columns=["roles"], errors="ignore"),  # a run's designs: its `designs` column
           "arms": r.arms, "comparisons": r.comparisons, "worth": r.worth}
    if r.looks:
        out["looks"] = r.looks.frame
    if r.factorial:
        out |= {"main_effects": r.factorial.frame("main"), "interactions": r.factorial.frame("2fi")}
    t = r.tuning
    if t:
        out |= {"tuning_worth": t.worth, "tuning_cost": t.cost, "budget_order": t.order,
                "budget_curves": tuning.curves_frame(t)}
        if t.fixed:
            out |= {"arms_fixed": t.fixed.arms, "comparisons_fixed": t.fixed.comparisons, "worth_fixed": t.fixed.worth}
            if t.fixed.looks is not None:
                out["looks_fixed"] = t.fixed.looks.frame
        if t.by_repeat is not None:
            out |= {"tuning_repeats": t.by_repeat, "tuning_spread": t.spread}
    if r.against:
        out["against"] = r.against.frame
    return out


def write(r: Report, out: Path) -> list[Path]:
    """Every table as CSV (full precision), the Markdown and LaTeX documents, and the figures (PNG, PDF and SVG, and
    figures.tex, which includes each PDF with its caption), and the methods text (methods.md, methods.tex)."""
    out.mkdir(parents=True, exist_ok=True)
    csvs = {f"{name}.csv": df for name, df in tables(r).items()}
    for name, df in csvs.items():
        df.to_csv(out / name, index=False)
    t = r.tuning
    figs = answer(r, out) + draw(r.grid, r.arms, r.worth, r.metric, out)
    if r.factorial:
        figs.append(factorial.half_normal_png(r.factorial, out))
    if t:
        figs += tuning.figure(t, out)
    if r.looks is not None and len(r.looks.frame):
        figs.append(looks.figure(r.looks, out))
    (out / "report.md").write_text(markdown_doc(r, figs))
    (out / "report.tex").write_text(latex_doc(r))
    (out / "figures.tex").write_text(captions.latex(r, figs))
    (out / "methods.md").write_text(methods.markdown(r))
    (out / "methods.tex").write_text(methods.latex(r))
    vectors = [v for f in figs for v in figures.vector_files(f) if v.exists()]
    docs = ["report.md", "report.tex", "figures.tex", "methods.md", "methods.tex"]
    return [out / n for n in csvs] + [out / n for n in docs] + figs + vectors


def compute(experiment: str | None, grid: str | None, metric: str | None = None, against: str | None = None,
            against_experiment: str | None = None) -> Report:
    """The grid read from the store and every comparison its designs give (on `metric`; None: its task's); with
    `against`, each effect beside that grid's (in `against_experiment`, default this grid's); nothing written."""
    if grid is not None:
        check_name("--grid", grid, "give the name of a grid file's stem, e.g. --grid ablation-quick")
    if against is not None:
        check_name("--against", against, "give the name of another grid file's stem, e.g. --against factorial-cpu")
    g = load(experiment or latest_grid_experiment(grid), grid)
    r = build(g, metric or g.task.metric)
    if g.tune:
        r.tuning = tuning.build(g, r)
    if g.sequential:
        looks.apply(r)
    if against is not None:
        r.against = against_grid.build(r, compute(against_experiment or g.experiment, against, r.metric))
    return r


def make(experiment: str | None, grid: str | None, metric: str | None, out: str | None, against: str | None = None,
         against_experiment: str | None = None) -> tuple[Report, list[Path]]:
    """Read the grid, write the report to `out` (default reports/<grid>), log it on the latest parent run."""
    r = compute(experiment, grid, metric, against, against_experiment)
    paths = write(r, Path(out or Path("reports") / r.grid.name))
    groups.log_files(r.grid.parent_id, paths, artifacts.REPORT)
    groups.log_tables(r.grid.parent_id, {f"{label.removeprefix('tab:')}_{r.metric}": table
                                        for _, label, table in shown(r)})
    return r, paths
