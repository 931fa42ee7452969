"""A report means exactly its grid: members by the recorded plan, never mixed budgets (end to end on tiny data,
in-process: `runner.run_file` and `make.make` as the CLI calls them, without a process start per step)."""
import json

import mlflow
import pandas as pd
import pytest

from lstm_mnist import config as harness_config
from lstm_mnist.builtin import config
from lstm_mnist.grids import runner
from lstm_mnist.grids.plan import read_plan
from lstm_mnist.report import gather, make, members, render

from .conftest import TINY_BUDGET

# One flag over two seeds: full, baseline, full-dropout, baseline+dropout.
GRID = f"""
experiment = "members"
flags = ["dropout"]
seeds = [0, 1]
[budget]
max_epochs = 1
log_model = false  # the weights are not what these tests read: each cell a little faster
{TINY_BUDGET}"""
ARMS = {"full", "baseline", "full-dropout", "baseline+dropout"}


def _finished(folder) -> list:
    c = mlflow.MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    exp = c.get_experiment_by_name("members").experiment_id
    return [r for r in c.search_runs([exp], max_results=1000)
            if r.info.status == "FINISHED" and r.data.tags.get("lstm_mnist.role") != "grid"]


def _parent(folder, name: str):
    c = mlflow.MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    exp = c.get_experiment_by_name("members").experiment_id
    (p,) = c.search_runs([exp], f"tags.grid_name = '{name}' and tags.`lstm_mnist.role` = 'grid'")
    return p


def test_a_copy_with_a_third_seed_reuses_the_shared_seeds_in_training_and_in_its_report(project):
    (project / "experiments" / "g.toml").write_text(GRID)
    (project / "experiments" / "g3.toml").write_text(GRID.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    assert runner.run_file("experiments/g.toml", out=lambda _: None) == 0
    lines = []
    assert runner.run_file("experiments/g3.toml", out=lines.append) == 0
    assert "g3: 12 cells, 8 already FINISHED, 4 to train" in lines[0]
    assert len(_finished(project)) == 12  # the shared seeds were not trained again

    r, _ = make.make("members", "g3", "test_f1", str(project / "out"))
    arms = r.arms.set_index("arm")
    assert set(arms.index) == ARMS and (arms["n_seeds"] == 3).all() and (arms["missing_seeds"] == "").all()
    assert set(r.comparisons["n_pairs"]) == {3}
    head = render.header(r)
    assert "12 FINISHED runs over 4 arms (the cells of its latest plan), seeds 0, 1, 2." in head
    assert "outside the plan" not in head and "missing" not in head
    plan = read_plan(_parent(project, "g3").info.run_id, "g3")
    assert len(plan.cells) == 12 and plan.protocol_version == config.PROTOCOL_VERSION
    assert _parent(project, "g3").data.metrics["cells_done"] == 12
    # the original grid's report is its own plan: 2 seeds, none of g3's third
    assert set(gather.load("members", "g").runs["seed"]) == {0, 1}


def test_a_budget_edit_then_a_partial_rerun_names_runs_outside_the_plan_and_never_mixes_budgets(project):
    path = project / "experiments" / "g.toml"
    path.write_text(GRID)
    assert runner.run_file(str(path), out=lambda _: None) == 0
    path.write_text(GRID.replace("max_epochs = 1", "max_epochs = 2"))
    assert runner.run_file(str(path), shard=(1, 2), out=lambda _: None) == 0
    new = [r for r in _finished(project) if r.data.params["max_epochs"] == "2"]
    assert 0 < len(new) < 8

    r, _ = make.make("members", "g", "test_f1", str(project / "out"))
    assert set(r.grid.runs["run_id"]) == {x.info.run_id for x in new}  # members: the new budget's runs only
    assert len(r.grid.outside) == 8 and len(r.grid.missing) == 8 - len(new)
    head = render.header(r)
    assert "outside the plan (tagged with the grid, not members): 8 (" in head
    assert f"missing (planned, no FINISHED run): {8 - len(new)} (" in head
    for name in r.grid.missing:
        assert name in head
    assert (r.grid.runs["settings"].map(lambda s: json.loads(s)["max_epochs"]) == "2").all()


def test_runs_whose_settings_differ_from_the_grids_are_named_and_left_out():
    rows = [{"arm": a, "seed": s, "settings": json.dumps({"max_epochs": "35", "batch_size": "64"})}
            for a in ("full", "full-dropout") for s in (0, 1)]
    rows[3] = {**rows[3], "settings": json.dumps({"max_epochs": "2", "batch_size": "64"})}
    kept, odd = members.agreeing(rows)
    assert len(kept) == 3 and odd == ["full-dropout-s1: max_epochs=2 (the grid's: 35)"]


def test_the_worth_table_shows_what_each_flag_costs_beside_its_worth(project):
    (project / "experiments" / "g.toml").write_text(GRID.replace('["dropout"]', '["dropout", "early_stopping"]'))
    assert runner.run_file("experiments/g.toml", out=lambda _: None) == 0
    r, paths = make.make("members", "g", "test_f1", str(project / "out"))
    w = r.worth.set_index("flag")
    comp = r.comparisons.set_index(["design", "flag"])
    runs = r.grid.runs.set_index(["arm", "seed"])
    by_hand = pd.Series([runs.loc[("full", s), "train_time_s"] - runs.loc[("full-dropout", s), "train_time_s"]
                         for s in (0, 1)]).mean()
    assert comp.loc[("leave_one_out", "dropout"), "time_diff_mean"] == pytest.approx(by_hand)
    assert w.loc["dropout", "loo_time_diff_mean"] == pytest.approx(by_hand)
    assert w.loc["early_stopping", "aoi_epochs_diff_mean"] == 0  # one epoch: nothing to stop
    shown = render.show_worth(r.worth, "test_f1")
    assert {"Δ epochs LOO/AOI", "Δ train time (s) LOO/AOI"} <= set(shown.columns)
    md = (project / "out" / "report.md").read_text()
    assert render.EARLY_STOPPING_NOTE in md and "and what it costs" in md


def test_the_dry_run_counts_cells_trained_under_another_protocol_version(project, monkeypatch):
    (project / "experiments" / "g.toml").write_text(GRID.replace("seeds = [0, 1]", "seeds = [0]"))
    assert runner.run_file("experiments/g.toml", out=lambda _: None) == 0
    monkeypatch.setattr(harness_config, "PROTOCOL_VERSION", config.PROTOCOL_VERSION + 1)
    lines = []
    assert runner.run_file("experiments/g.toml", dry_run=True, out=lines.append) == 0
    table = "\n".join(lines).splitlines()
    assert table[-2] == "4 cells: 0 done, 4 not done"
    assert table[-1].startswith("4 of the cells not done were trained under another protocol version")
