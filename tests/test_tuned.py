"""Tuned ablations (a grid file with [tune]): the rule of what each arm searches, the checks of the table, and
the real CLI on tiny data: one study per arm with an equal budget, the MLflow nesting, the report's tuning
tables, a SIGKILLed main process then a rerun, and two invocations at once sharing every study."""
from __future__ import annotations

import dataclasses
import json
import re
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lstm_mnist import claims
from lstm_mnist.builtin import config
from lstm_mnist.grids import grid
from lstm_mnist.report.tuning import conclusion
from lstm_mnist.training import train

from .chaos_tools import Cli, left_behind, record, runs, training
from .conftest import TINY_BUDGET, cli


# ---------------------------------------------------------------- which keys an arm reads (Task.reads)
def test_the_read_rule_names_each_flag_dependent_key_with_its_side():
    on = {f: True for f in config.FLAGS}
    off = {f: False for f in config.FLAGS}
    assert config.TASK.reads(off, "sgd_lr") and not config.TASK.reads(on, "sgd_lr")
    for key in ("adamw_lr", "weight_decay", "plateau_factor", "plateau_patience", "dropout_rate", "rotation_deg",
                "affine_deg", "translate", "patience"):
        assert config.TASK.reads(on, key) and not config.TASK.reads(off, key), key
    for key in ("batch_size", "max_epochs", "hidden_on", "seed"):  # read by every config
        assert config.TASK.reads(on, key) and config.TASK.reads(off, key)
    for key in ("hidden_on", "layers_on", "hidden_off", "layers_off", "readout", "adamw", "seed"):
        assert config.TASK.why_never_searched_in_ablation(key), key
    assert config.TASK.why_never_searched_in_ablation("sgd_lr") is None


def _history(tiny_data: Path, **values) -> list:
    base = {"data_dir": str(tiny_data), "max_epochs": 2, "batch_size": 32, "eval_batch_size": 256,
            "hidden_off": 8, "num_threads": 1, "log_model": False, "train_samples": 128}
    history = train.fit(config.TASK.build({**base, **values})).history
    return [{k: e[k] for k in ("train_loss", "val_loss", "val_f1", "val_acc", "lr")} for e in history]  # not timings


def test_a_key_the_rule_calls_unread_does_not_change_what_training_computes(tiny_data):
    """The rule against the code: with its flag on the other side, changing the key leaves training identical
    (same seed, CPU, one thread), while changing a key the config reads does change it."""
    ds_keys = {"adamw_lr": 0.05, "weight_decay": 0.1, "plateau_factor": 0.5, "plateau_patience": 0,
               "dropout_rate": 0.7, "rotation_deg": 90.0, "affine_deg": 90.0, "translate": 0.5, "patience": 1}
    flags = {"dropout": False, "augmentation": False, "early_stopping": False, "adamw": False}
    base = _history(tiny_data, **flags)
    for key, value in ds_keys.items():
        assert not config.TASK.reads(flags, key)
        assert _history(tiny_data, **flags, **{key: value}) == base, key
    adamw = _history(tiny_data, adamw=True)
    assert _history(tiny_data, adamw=True, sgd_lr=0.5) == adamw
    assert _history(tiny_data, **flags, sgd_lr=0.5) != base  # the control: a read key changes the result


# ---------------------------------------------------------------- the [tune] table
TUNED = """experiment = "tuned"
designs = ["leave_one_out"]
flags = ["adamw", "dropout"]
seeds = [0, 1]
tune_seed = 100
[budget]
max_epochs = 2
{budget}
[tune]
trials = 3
sampler_startup_trials = 2
pruner_startup_trials = 2
fixed = true
{tune}
[tune.space]
sgd_lr = {{type = "float", low = 0.01, high = 0.5, log = true}}
adamw_lr = {{type = "float", low = 1e-4, high = 1e-2, log = true}}
dropout_rate = {{type = "float", low = 0.0, high = 0.4}}
patience = {{type = "int", low = 2, high = 4}}
{space}
"""


def tuned_file(folder: Path, name: str = "tuned", tune: str = "", space: str = "", top: str = "",
               budget: str = TINY_BUDGET) -> Path:
    path = folder / "experiments" / f"{name}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(top + TUNED.format(tune=tune, space=space, budget=budget))
    return path


def test_each_arm_searches_only_the_keys_it_reads(tmp_path):
    s = grid.load(tuned_file(tmp_path))
    searched = {arm: sorted(grid.searched(s, on)) for arm, _, _, on in grid.arms(s)}
    assert searched == {"full": ["adamw_lr", "dropout_rate", "patience"],
                        "full-adamw": ["dropout_rate", "patience", "sgd_lr"], "full-dropout": ["adamw_lr", "patience"]}
    cells = grid.expand(s)
    assert {c.variant for c in cells} == {"fixed"} and len(cells) == 6  # fixed = true: every arm untuned too
    assert grid.expand(dataclasses.replace(s, tune=dataclasses.replace(s.tune, fixed=False))) == []


def test_an_arm_with_nothing_to_search_goes_straight_to_its_replicates(tmp_path):
    path = tuned_file(tmp_path)
    path.write_text(path.read_text().replace('flags = ["adamw", "dropout"]', 'flags = ["adamw", "width"]')
                    .replace("dropout_rate = {", "# dropout_rate = {").replace("adamw_lr = {", "# adamw_lr = {")
                    .replace("patience = {", "# patience = {"))
    s = grid.load(path)
    variants = {c.arm: c.variant for c in grid.expand(s)}
    assert variants == {"full": "both", "full-adamw": "fixed", "full-width": "both"}  # only full-adamw reads sgd_lr


@pytest.mark.parametrize("old, new, message", [
    ("[tune.space]\n", '[tune.space]\nadamw = {type = "categorical", choices = [true, false]}\n',
     "flags are what the ablation compares"),
    ("[tune.space]\n", '[tune.space]\nhidden_on = {type = "int", low = 16, high = 64}\n',
     "it defines what the width flag compares"),
    ("[tune.space]\n", '[tune.space]\nreadout = {type = "categorical", choices = ["last"]}\n', "readout is a factor"),
    ("[tune.space]\n", '[tune.space]\nseed = {type = "int", low = 0, high = 9}\n', "seeds are replicates"),
    ("trials = 3", 'trials = 3\nobjective = "test_f1"', "the test set is never used for a choice"),
    ("trials = 3", "trials = 0", "trials=0"),
    ("fixed = true", 'fixed = "yes"', "expected true"),
    ("trials = 3", "trials = 3\ncolour = 1", "unknown key 'colour'"),
    ("tune_seed = 100", "tune_seed = 1", "tune_seed=1 is also a replicate seed"),
    ("tune_seed = 100\n", "", "tune_seed=None"),
])
def test_a_bad_tune_table_is_one_line_naming_the_fix(tmp_path, capsys, old, new, message):
    path = tuned_file(tmp_path)
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    code, out, err = cli(capsys, "ablate", str(path), "--dry-run")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_space_key_no_arm_reads_is_refused(tmp_path, capsys):
    path = tuned_file(tmp_path, top='full = ["adamw", "dropout"]\n')  # its [tune.space] has patience
    code, out, err = cli(capsys, "ablate", str(path), "--dry-run")  # early stopping is off in every arm
    assert code == 2 and "[tune.space] patience: no arm of this grid reads it (it is read only with early_stopping " \
        "on); remove it from [tune.space]" in err and len(err.strip().splitlines()) == 1, err


def test_conclusion_names_the_sides_of_zero_before_and_after():
    assert conclusion((0.01, 0.005, 0.02), (0.02, 0.01, 0.03)) == "holds (> 0)"
    assert conclusion((0.01, 0.005, 0.02), (0.0, -0.01, 0.01)) == "changes: > 0 → n.s."
    assert conclusion((-0.01, -0.02, -0.005), (0.01, 0.005, 0.02)) == "changes: < 0 → > 0"
    assert conclusion((0.01, float("nan"), float("nan")), (-0.01, float("nan"), float("nan"))) == "sign flips (no CI)"


# ---------------------------------------------------------------- the real CLI, end to end
def _studies(project: Path) -> dict[str, list]:
    """The grid's studies in its claims journal: study name -> trials."""
    storage = claims.open_storage(None, project / "mlruns" / "claims.journal")
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials(deepcopy=False)
            for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
            if s.study_name.startswith("tune tuned/")}


def _invariants(project: Path) -> dict:
    """What must hold after any history of runs on the grid: equal budgets, each cell trained once, MLflow's
    trial runs agreeing with Optuna, nothing left RUNNING."""
    studies = _studies(project)
    all_runs = runs(f"sqlite:///{project}/mlruns/mlflow.db", "tuned")
    cells = [r for r in all_runs if r.data.tags.get("lstm_mnist.role") not in ("grid", "tuning", "trial")]
    trial_runs = [r for r in all_runs if r.data.tags.get("lstm_mnist.role") == "trial"]
    finished = Counter(r.data.tags["config_hash"] for r in cells if r.info.status == "FINISHED")
    per_trial = Counter((r.data.tags["study_name"], int(r.data.tags["trial_number"])) for r in trial_runs)
    states = {(name, t.number): t.state.name for name, ts in studies.items() for t in ts}
    allowed = {"COMPLETE": {"FINISHED"}, "PRUNED": {"KILLED"}, "FAIL": {"FAILED", "KILLED"}}
    disagree = [r.info.run_name for r in trial_runs if r.info.status not in
                allowed.get(states.get((r.data.tags["study_name"], int(r.data.tags["trial_number"]))), ())]
    return {"trials_per_arm": {name.split("/")[2]: sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ts)
                               for name, ts in studies.items()},
            "trials_killed_and_retried": sum(t.user_attrs.get("lost", False) for ts in studies.values() for t in ts),
            "cells_finished": len(finished), "cells_trained_twice": sum(n > 1 for n in finished.values()),
            "trial_runs_twice": sum(n > 1 for n in per_trial.values()), "disagree": disagree,
            "left_running": sum(r.info.status == "RUNNING" for r in all_runs),
            "tuned_cells": sum(r.data.tags.get("variant") == "tuned" and r.info.status == "FINISHED" for r in cells)}


@pytest.mark.subprocess
def test_a_tuned_grid_end_to_end_then_its_report(project):
    path = tuned_file(project)
    t0 = time.monotonic()
    run = Cli("ablate", str(path), "--workers", "2", cwd=project)
    assert run.finish() == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr + run.stdout
    wall = time.monotonic() - t0
    figures = _invariants(project)
    assert figures["trials_per_arm"] == {"full": 3, "full-adamw": 3, "full-dropout": 3}, figures
    assert figures["cells_finished"] == 12 and figures["tuned_cells"] == 6, figures  # 6 untuned + 6 tuned
    assert figures["cells_trained_twice"] == figures["trial_runs_twice"] == figures["left_running"] == 0, figures
    assert not figures["disagree"], figures
    assert "12/12 cells FINISHED" in run.stdout, run.stdout[-2000:]

    all_runs = runs(f"sqlite:///{project}/mlruns/mlflow.db", "tuned")
    by_id = {r.info.run_id: r for r in all_runs}
    (parent,) = [r for r in all_runs if r.data.tags.get("lstm_mnist.role") == "grid"]
    tuning = {r.data.tags["arm"]: r for r in all_runs if r.data.tags.get("lstm_mnist.role") == "tuning"}
    assert set(tuning) == {"full", "full-adamw", "full-dropout"}
    for arm, t in tuning.items():
        assert t.data.tags["mlflow.parentRunId"] == parent.info.run_id and t.info.status == "FINISHED"
        assert "best_value" in t.data.metrics and t.data.tags["study_name"].startswith(f"tune tuned/tuned/{arm}/")
    searched = {"full": {"adamw_lr", "dropout_rate", "patience"}, "full-adamw": {"sgd_lr", "dropout_rate", "patience"},
                "full-dropout": {"adamw_lr", "patience"}}  # patience: an int key
    for r in (r for r in all_runs if r.data.tags.get("lstm_mnist.role") == "trial"):
        arm = r.data.tags["arm"]
        assert r.data.tags["mlflow.parentRunId"] == tuning[arm].info.run_id
        assert set(json.loads(r.data.tags["trial_params"])) == searched[arm]  # only what the arm reads
        assert r.data.params["seed"] == "100"  # trials train at tune_seed
    for r in (r for r in all_runs if r.data.tags.get("variant") == "tuned"):
        best = by_id[r.data.tags["tuned_from"]]  # the best trial's run
        assert best.data.tags["arm"] == r.data.tags["arm"] and r.data.params["seed"] in ("0", "1")
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert tuning[r.data.tags["arm"]].data.tags["best_run_id"] == best.info.run_id
        for key, value in json.loads(best.data.tags["trial_params"]).items():
            assert float(r.data.params[key]) == pytest.approx(value)

    again = Cli("ablate", str(path), "--workers", "2", cwd=project)
    assert again.finish() == 0 and "tuning trials ended" not in again.stdout  # nothing left to try
    assert "12/12 cells FINISHED (0 trained now, 12 already)" in again.stdout, again.stdout[-2000:]

    report = Cli("report", "--grid", "tuned", "--experiment", "tuned", cwd=project)
    assert report.finish() == 0, report.stderr[-3000:]
    out = project / "reports" / "tuned"
    for name in ("tuning_worth.csv", "tuning_cost.csv", "budget_order.csv", "budget_curves.csv", "budget_curves.png",
                 "arms_fixed.csv"):
        assert (out / name).is_file(), name
    md = (out / "report.md").read_text()
    assert "Worth before vs after tuning" in md and "tuned values" in md and "Tuning per arm" in md
    methods = (out / "methods.md").read_text()  # the search as the plan recorded it
    assert re.search(r"\*\*Tuning\.\*\* Every arm searched the keys of .+ with the same budget of \d+ trials "
                     r"\(complete or pruned\), sampler (tpe|random) \(seed \d+", methods), methods
    record("tuned grid end to end, 2 workers", wall_s=round(wall, 1), **{k: v for k, v in figures.items()
                                                                          if k != "disagree"})


@pytest.mark.subprocess
@pytest.mark.chaos
def test_the_main_process_killed_during_tuning_then_a_rerun(project):
    path = tuned_file(project)  # tuned cells only (fixed = false); trials long enough to kill
    path.write_text(path.read_text().replace("max_epochs = 2", "max_epochs = 8")
                    .replace("fixed = true", "fixed = false"))
    first = Cli("ablate", str(path), "--workers", "2", cwd=project)
    assert first.wait_for(r"trial \d+\s+(COMPLETE|PRUNED)", 2, timeout=240), first.stdout + first.stderr
    assert training(project, "tuned", 1, alive=first.running, role="trial"), first.stdout  # a trial mid-epochs
    delivered = first.running()
    first.kill()
    rerun = Cli("ablate", str(path), "--workers", "2", cwd=project)
    assert rerun.finish() == 0, rerun.stderr[-3000:]
    assert "Traceback" not in first.stderr + rerun.stderr + rerun.stdout
    figures = _invariants(project)
    figures["processes_left"] = len(left_behind(first.seen_pids | rerun.seen_pids))
    record("tuned grid, main SIGKILLed during tuning, then a rerun", kills=int(delivered), **figures)
    assert delivered
    assert figures["trials_per_arm"] == {"full": 3, "full-adamw": 3, "full-dropout": 3}, figures
    assert figures["cells_finished"] == 6 and figures["cells_trained_twice"] == figures["trial_runs_twice"] == 0
    assert not figures["disagree"] and figures["left_running"] == 0 and figures["processes_left"] == 0, figures


@pytest.mark.subprocess
@pytest.mark.chaos
def test_two_invocations_at_once_share_every_study(project):
    path = tuned_file(project)
    path.write_text(path.read_text().replace("fixed = true", "fixed = false"))  # the tuned cells only
    a, b = Cli("ablate", str(path), cwd=project), Cli("ablate", str(path), cwd=project)
    assert (a.finish(), b.finish()) == (0, 0), a.stderr[-2000:] + b.stderr[-2000:]
    figures = _invariants(project)
    trained = [int(re.search(r"(\d+) tuning trials ended", c.stdout).group(1)) if "tuning trials" in c.stdout else 0
               for c in (a, b)]
    record("two tuned-grid invocations at once", trials_by_each=trained, **figures)
    assert figures["trials_per_arm"] == {"full": 3, "full-adamw": 3, "full-dropout": 3}, figures
    assert figures["cells_finished"] == 6 and figures["cells_trained_twice"] == figures["trial_runs_twice"] == 0
    assert not figures["disagree"] and figures["left_running"] == 0, figures
