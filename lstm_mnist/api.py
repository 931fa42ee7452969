"""The Python API, for a notebook: what the commands do, with pandas DataFrames where they print or write files.

    from lstm_mnist import api as lm

    grid = lm.load_grid("experiments/ablation-quick.toml")   # the grid file, checked (a GridSpec)
    lm.plan("experiments/ablation-quick.toml")                # the dry run: one row per cell, its state in the store
    lm.ablate("experiments/ablation-quick.toml", workers=2)   # train what is not done (claims, resume: as the CLI)
    lm.runs("ablation-quick")                                 # the grid's runs, one row each
    tables = lm.report("ablation-quick")                      # {"arms": ..., "comparisons": ..., "worth": ...}

The store is the one the CLI uses (MLFLOW_TRACKING_URI, else ./mlruns), so a notebook and `make` see the same
runs. A mistake raises lstm_mnist.config.UserError carrying the one line the CLI prints.
"""
from __future__ import annotations

import pandas as pd

from .config import ConfigError
from .grids import grid as _grid
from .grids import plan as _plan

__all__ = ["load_grid", "plan", "ablate", "runs", "report"]


def load_grid(path: str) -> _grid.GridSpec:
    """The grid file, checked as `ablate` checks it: its flags, designs, seeds, budget and [tune] table."""
    return _grid.load(path)


def plan(path: str, force: bool = False) -> pd.DataFrame:
    """The dry run of a grid as a DataFrame: one row per cell (arm, design, every design it serves, seed,
    config_hash) and its state in the store (done, todo, stale, elsewhere) with the note the dry run prints."""
    spec = _grid.load(path)
    if spec.tune is not None:
        raise ConfigError(f"{path} has a [tune] table: its cells are known only once its arms are tuned; "
                          f"`python -m lstm_mnist ablate {path} --dry-run` shows its studies")
    rows = [{"arm": j.cell.arm, "design": j.cell.design,
             "designs": ",".join(j.cell.designs) or j.cell.design,
             "seed": j.cell.seed, "config_hash": j.config_hash, "state": j.state, "note": j.note,
             "trained_under_older_protocol": j.older} for j in _plan.plan(spec, force=force)]
    return pd.DataFrame(rows, columns=["arm", "design", "designs", "seed", "config_hash", "state", "note",
                                       "trained_under_older_protocol"])


def ablate(path: str, workers: int = 1, *, force: bool = False, storage: str | None = None,
           until_decided: bool = False, max_seeds: int | None = None, block: int = 1, quiet: bool = False) -> int:
    """Train the grid's cells that are not done, `workers` at once, as `python -m lstm_mnist ablate` does (the
    same claims: several calls, processes or machines share one grid; a rerun trains only what is missing).
    A grid with [tune] tunes each arm first; `until_decided` adds seeds in blocks until each effect is decided.
    Returns 0 when no cell failed, else 1. `quiet` leaves out the progress lines."""
    import sys

    from .engine.progress import say

    if sys._getframe(1).f_globals.get("__name__") == "__mp_main__":
        raise ConfigError("ablate() was called while a worker process imported your script again (multiprocessing "
                          "does that before it starts a worker): put the script's calls under "
                          "`if __name__ == \"__main__\":` (a notebook needs nothing)")
    if workers < 1:
        raise ConfigError(f"workers={workers}: give at least 1")
    from .grids import runner
    from .grids.options import Options

    spec = _grid.load(path)
    judge = None
    if until_decided:
        from .grids import until_decided as sequential
        from .report import looks

        sequential.design(spec, max_seeds, block)
        judge = looks.judge
    opts = Options(workers=workers, force=force, storage_url=storage, until_decided=until_decided,
                   max_seeds=max_seeds, block=block, judge=judge, out=(lambda *a, **k: None) if quiet else say)
    return runner.run(spec, opts, spelled=lambda name: f"{name}=True" if name == "until_decided" else name)


def runs(grid: str, experiment: str | None = None) -> pd.DataFrame:
    """The grid's runs (its latest invocations' cells), one row each: arm, design, flags, seed, config_hash,
    the test and validation metrics, train time and provenance, as the report reads them. `grid` is the grid
    file's stem (or its path); `experiment` defaults to the one the grid was last run in."""
    from .report.gather import latest_grid_experiment, load

    name = _name(grid)
    return load(experiment or latest_grid_experiment(name), name).runs.drop(columns=["roles"], errors="ignore")


def report(grid: str, experiment: str | None = None, metric: str | None = None, *, against: str | None = None,
           against_experiment: str | None = None) -> dict[str, pd.DataFrame]:
    """The report's tables as DataFrames (full precision, as its CSV files), computed from the store without
    writing a file or logging to the grid's run: "arms", "comparisons", "worth", "runs", and those the grid's
    designs give ("main_effects", "interactions", "looks", "tuning_worth", ...); with `against` (another grid of
    the same design and task), "against": each effect in both grids, the difference, its CI and verdict at δ."""
    from .report import make

    return make.tables(make.compute(experiment, _name(grid), metric, against and _name(against), against_experiment))


def _name(grid: str) -> str:
    """A grid's name from its stem or its file's path."""
    from pathlib import Path

    return Path(grid).stem if grid.endswith(".toml") else grid
