"""`report` on a small, messy grid written straight into a tmp MLflow store (no training, so it is fast).

The grid ran twice (a resume): the second invocation finishes a FAILED cell, adds seed 3, and records
`full` seed 1 again under the same config hash. `baseline+adamw` has one seed only (marked, too few
for a test). An older grid in the same experiment must not leak in.
"""
import json
from collections import Counter

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from scipy import stats as sps

from lstm_mnist import task as task_protocol
from lstm_mnist.analysis import tables
from lstm_mnist.grids import planned
from lstm_mnist.report import compare, gather, render
from lstm_mnist.tracking import artifacts
from lstm_mnist.builtin.config import FLAGS

from .conftest import run_cli

EXP = "lstm-mnist-ablation"
GRID = "ablation-test"
ARMS = {  # arm: (design, flag, flags on, mean test_f1)
    "full": ("reference", "", set(FLAGS), 0.990),
    "baseline": ("reference", "", set(), 0.970),
    "full-dropout": ("leave_one_out", "dropout", set(FLAGS) - {"dropout"}, 0.987),
    "full-adamw": ("leave_one_out", "adamw", set(FLAGS) - {"adamw"}, 0.980),
    "baseline+dropout": ("add_one_in", "dropout", {"dropout"}, 0.972),
    "baseline+adamw": ("add_one_in", "adamw", {"adamw"}, 0.983),
}
# each as PNG, PDF and SVG, and in figures.tex
FIGURES = ["answer_test_f1", "delta_test_f1", "val_f1_curves", "confusion_best"]
FILES = ["runs.csv", "arms.csv", "comparisons.csv", "worth.csv", "report.md", "report.tex", "figures.tex",
         "methods.md", "methods.tex",
         *(f"{f}.{x}" for f in FIGURES for x in ("png", "pdf", "svg"))]


class FakeGrid:
    """Writes parent and child runs with the grid runner's tags, params, metrics and artifacts."""

    def __init__(self, project):
        self.c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
        self.exp = self.c.create_experiment(EXP, artifact_location=(project / "mlruns" / "artifacts").as_uri())
        self.tmp, self.clock = project, 1_700_000_000_000

    def _tick(self) -> int:
        self.clock += 1000
        return self.clock

    def parent(self, grid: str, seeds=(1, 2, 3)) -> str:
        """A grid's parent run with its plan: every arm at these seeds (config_hash "<arm>-s<seed>")."""
        tags = {"lstm_mnist.role": "grid", "grid_name": grid, "grid_file": f"experiments/{grid}.toml"}
        run = self.c.create_run(self.exp, start_time=self._tick(), tags=tags, run_name=grid)
        self.plan(run.info.run_id, {arm: seeds for arm in ARMS})
        self.c.set_terminated(run.info.run_id, "FINISHED", end_time=self._tick())
        return run.info.run_id

    def plan(self, parent: str, seeds_of: dict) -> None:
        """The plan.json `ablate` records on the parent: arm -> its seeds."""
        cells = tuple(planned.PlannedCell(f"{arm}-s{seed}", arm, seed, f"{arm}-s{seed}",
                                          ((ARMS[arm][0], ARMS[arm][1], arm),))
                      for arm, seeds in seeds_of.items() for seed in seeds)
        self.c.log_dict(parent, planned.Plan(cells, 1).to_dict(), artifacts.PLAN)

    def child(self, parent: str, grid: str, arm: str, seed: int, f1: float, status: str = "FINISHED") -> str:
        design, flag, on, _ = ARMS[arm]
        tags = {"arm": arm, "design": design, "flag": flag, "seed": str(seed), "config_hash": f"{arm}-s{seed}",
                "grid_name": grid, "mlflow.parentRunId": parent}
        rid = self.c.create_run(self.exp, start_time=self._tick(), tags=tags, run_name=f"{arm}-s{seed}").info.run_id
        params = [Param(f, str(f in on)) for f in FLAGS] + [Param("seed", str(seed))]
        epochs = [Metric(k, v, 0, e) for e in range(3) for k, v in (("val_f1", f1 - 0.01 * (2 - e)),
                                                                     ("epoch_time_s", 1.5 + seed))]
        final = {"test_f1": f1, "test_acc": f1 + 0.0005, "test_loss": 1 - f1, "epochs_trained": 3, "best_epoch": 2}
        self.c.log_batch(rid, metrics=epochs + [Metric(k, v, 0, 0) for k, v in final.items()], params=params)
        confusion = (np.eye(10, dtype=int) * 100 + seed).tolist()
        (self.tmp / "confusion_matrix.json").write_text(json.dumps(confusion))
        self.c.log_artifact(rid, str(self.tmp / "confusion_matrix.json"))
        self.c.set_terminated(rid, status, end_time=self._tick())
        return rid


def _f1(arm: str, seed: int) -> float:
    return ARMS[arm][3] + 0.001 * ((seed * len(arm) + seed ** 2) % 5 - 2)  # per-seed wiggle, the same in every test run


@pytest.fixture
def messy_grid(project):
    g = FakeGrid(project)
    old = g.parent("ablation-old", seeds=(9,))
    g.child(old, "ablation-old", "full", 9, 0.5)  # another grid's cell: not this grid's (another config_hash)
    first = g.parent(GRID)
    for arm in ARMS:
        for seed in (1, 2):
            if (arm, seed) != ("baseline+adamw", 2):
                g.child(first, GRID, arm, seed, _f1(arm, seed))
    g.child(first, GRID, "full-dropout", 3, 0.1, status="FAILED")
    latest = g.parent(GRID)
    for arm in ARMS:
        if arm != "baseline+adamw":
            g.child(latest, GRID, arm, 3, _f1(arm, 3))
    g.child(latest, GRID, "full", 1, _f1("full", 1) + 0.0003)  # same config hash again: this one wins
    return g, first, latest


def _from_store(g: FakeGrid, arm: str) -> dict[int, float]:
    """test_f1 per seed of one arm, straight from MLflow: FINISHED, the grid's, the latest per seed."""
    runs = g.c.search_runs([g.exp], f"tags.arm = '{arm}' and tags.grid_name = '{GRID}' and attributes.status = "
                                    "'FINISHED'", order_by=["attributes.start_time ASC"])
    return {int(r.data.tags["seed"]): r.data.metrics["test_f1"] for r in runs}


@pytest.mark.subprocess
def test_report_writes_every_file_with_numbers_from_the_store(messy_grid):
    g, first, latest = messy_grid
    proc = run_cli("report", cwd=g.tmp)
    assert proc.returncode == 0, proc.stderr
    out = g.tmp / "reports" / GRID
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    assert "What each enhancement is worth" in proc.stdout and "baseline+adamw†" in proc.stdout

    arms = pd.read_csv(out / "arms.csv").set_index("arm")
    full = _from_store(g, "full")
    values = [full[s] for s in (1, 2, 3)]
    lo, hi = sps.t.interval(0.95, 2, loc=np.mean(values), scale=sps.sem(values))
    row = arms.loc["full"]
    assert row["n_seeds"] == 3 and row["test_f1_mean"] == pytest.approx(np.mean(values), abs=1e-12)
    assert (row["test_f1_ci_lo"], row["test_f1_ci_hi"]) == pytest.approx((lo, hi), abs=1e-12)
    assert row["test_f1_std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    assert row["train_time_s_mean"] == pytest.approx(np.mean([3 * (1.5 + s) for s in (1, 2, 3)]))  # summed epochs
    assert arms.loc["full-dropout", "n_seeds"] == 3 and arms.loc["baseline+adamw", "missing_seeds"] == "2 3"
    assert len(pd.read_csv(out / "runs.csv")) == 16  # 6 arms x 3 seeds - 2 missing; no FAILED, duplicate, old grid

    comp = pd.read_csv(out / "comparisons.csv").set_index("arm")
    without = _from_store(g, "full-dropout")
    diffs = [full[s] - without[s] for s in (1, 2, 3)]
    assert comp.loc["full-dropout", "diff_mean"] == pytest.approx(np.mean(diffs), abs=1e-12)
    assert comp.loc["full-dropout", "p"] == pytest.approx(sps.ttest_rel(values, [without[s] for s in (1, 2, 3)]).pvalue)
    assert comp.loc["baseline+adamw", "note"] == "too few seeds" and comp.loc["baseline+adamw", "n_pairs"] == 1

    worth = pd.read_csv(out / "worth.csv")
    assert worth["flag"].tolist() == ["adamw", "dropout"] and worth["rank"].tolist() == [1, 2]

    md = (out / "report.md").read_text()
    assert md.startswith(f"# Ablation report: {GRID}\n")
    assert ("(2 parent runs): 16 FINISHED runs over 6 arms (the cells of its latest plan), seeds 1, 2, 3; "
            "missing (planned, no FINISHED run): 2 (baseline+adamw-s2, baseline+adamw-s3); not counted: 1 FAILED, "
            "1 duplicate." in md)
    assert "| arm | design | flags on | n | test F1 mean ± sd | 95% CI |" in md
    assert f"| full | reference | all six | 3 | {np.mean(values):.4f} ± {np.std(values, ddof=1):.4f} |" in md
    assert "| baseline+adamw† | add_one_in | adamw | 1 |" in md and "too few seeds" in md
    assert "![delta_test_f1](delta_test_f1.png)" in md
    assert "*What each enhancement is worth on test_f1: the mean paired difference (with − without the flag) over " \
           "3 seeds, with its 95% confidence interval" in md  # a caption from the store: its metric and seeds
    assert r"\toprule" in (out / "report.tex").read_text()

    logged = {a.path for a in g.c.list_artifacts(latest, "report") if not a.is_dir}
    assert logged == {f"report/{n}" for n in FILES}
    tables = {a.path for a in g.c.list_artifacts(latest, "report/tables")}  # also as MLflow tables
    assert tables == {f"report/tables/{n}_test_f1.json" for n in ("arms", "paired", "worth")}
    assert not g.c.list_artifacts(first, "report")


@pytest.mark.subprocess
def test_report_without_runs_is_one_line_exit_2(project):
    proc = run_cli("report", "--experiment", "nothing-here", cwd=project)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no ablation grid runs in MLflow experiment")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_unknown_grid_or_metric_names_what_is_there(messy_grid):
    with pytest.raises(gather.ReportError, match="no grid named 'nope'.*grids there: ablation-old, ablation-test"):
        gather.load(EXP, "nope")
    with pytest.raises(gather.ReportError, match="metric 'val_f2' is not recorded.*test_f1"):
        compare.build(gather.load(EXP, GRID), "val_f2")


def test_markdown_and_latex_rendering():
    df = pd.DataFrame({"arm": ["full_x"], "Δ test_f1": ["+0.0012"], "p": ["<0.001"]})
    assert tables.markdown(df) == "| arm | Δ test_f1 | p |\n| --- | ---: | ---: |\n| full_x | +0.0012 | <0.001 |\n"
    tex = tables.latex(df, "50% ± 1", "tab:x")
    assert r"\begin{tabular}{lrr}" in tex and r"full\_x & +0.0012 & $<$0.001 \tabularnewline" in tex
    assert r"\caption{50\% $\pm$ 1}" in tex and r"$\Delta$ test\_f1" in tex


def test_an_arm_two_designs_share_is_compared_in_both():
    """With two flags, baseline+adamw is full-dropout: the grid plans it once, with its role in both designs."""
    from lstm_mnist.grids import grid as grids

    study = grids.GridSpec("t", "t.toml", "e", {}, ("leave_one_out", "add_one_in"), ("dropout", "adamw"), (0,),
                           frozenset({"dropout", "adamw"}), task=task_protocol.builtin(),
                           task_spec=task_protocol.BUILTIN)
    arms = {a.arm: a for a in grids.unique_arms(study)}
    assert arms["full-dropout"].roles == (("leave_one_out", "dropout", "full-dropout"),
                                          ("add_one_in", "adamw", "baseline+adamw"))

    def run(arm, seed, f1):
        a = arms[arm]
        return {"arm": arm, "design": a.roles[0][0], "designs": ",".join(a.designs), "flag": a.roles[0][1],
                "roles": a.roles, "seed": seed, "readout": "last", "test_f1": f1, **{f: f in a.on for f in FLAGS}}

    rows = [run(arm, seed, base + 0.001 * seed * (i + 1)) for seed in (0, 1, 2)
            for i, (arm, base) in enumerate([("full", 0.99), ("baseline", 0.90), ("full-dropout", 0.98),
                                             ("full-adamw", 0.91)])]
    grid = gather.Grid(EXP, GRID, "parent", 1, pd.DataFrame(rows), [0, 1, 2], Counter(), task=task_protocol.builtin())
    comp = compare.comparisons(grid, "test_f1").set_index("arm")
    assert comp.loc["baseline+adamw", "recorded_arm"] == "full-dropout"
    assert comp.loc["baseline+adamw", "diff_mean"] == pytest.approx(0.98 - 0.90 + 0.001 * (3 - 2))
    assert comp.loc["full-adamw", "diff_mean"] == pytest.approx(0.99 - 0.91 + 0.001 * (1 - 4))
    assert set(comp.index) == {"full-dropout", "full-adamw", "baseline+dropout", "baseline+adamw"}


def test_the_latest_grid_is_the_one_run_last_even_when_it_was_created_first(messy_grid):
    """A resumed grid reopens its old parent run: `make report` must pick it, not a grid created since."""
    g, first, latest = messy_grid
    newer = g.parent("another-grid")
    g.child(newer, "another-grid", "full", 1, 0.99)
    assert gather.find_grid(EXP, None)[0] == "another-grid"
    import time

    g.c.set_tag(first, "last_invoked_ms", str(int(time.time() * 1000) + 10_000))  # GRID resumed just now
    name, parent, _ = gather.find_grid(EXP, None)
    assert name == GRID and parent.run_id == first


def test_a_run_whose_settings_differ_from_the_grids_is_named_and_never_paired(messy_grid):
    """A planned cell whose run trained on another budget: left out of every table, named."""
    g, first, latest = messy_grid
    g.plan(latest, {arm: (1, 2, 3, 4) if arm in ("full", "full-dropout") else (1, 2, 3) for arm in ARMS})
    g.child(latest, GRID, "full", 4, 0.99)
    odd = g.child(latest, GRID, "full-dropout", 4, 0.5)
    g.c.log_param(odd, "max_epochs", "2")
    r = compare.build(gather.load(EXP, GRID), "test_f1")
    assert odd not in set(r.grid.runs["run_id"])
    assert r.grid.mismatched == ["full-dropout-s4: max_epochs=2 (the grid's: None)"]
    assert "left out for settings other than the grid's: 1 (full-dropout-s4: max_epochs=2" in render.header(r)
    assert r.comparisons.set_index("arm").loc["full-dropout", "n_pairs"] == 3  # seeds 1-3; seed 4 not paired


def test_a_grid_name_with_a_quote_is_a_one_line_error_not_a_broken_filter(project):
    from lstm_mnist.config import ConfigError
    from lstm_mnist.report import make

    with pytest.raises(ConfigError, match="--grid \"it's\": use only letters, digits") as e:
        make.make(None, "it's", "test_f1", None)
    assert "\n" not in str(e.value)
