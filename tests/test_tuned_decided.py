"""Tuned grids run until decided, with the tuning replicated (`tune_repeats`): the repeats' seeds and their
balanced assignment, each bad input in one line, the dry run, and the real CLI on tiny data: every arm tuned
once per repeat with the same budget, seeds added in blocks at the tuned values until decided, a rerun that
trains nothing and reaches the same verdicts, the report's tables per repeat, a changed design refused."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lstm_mnist import claims
from lstm_mnist.grids import grid

from .chaos_tools import Cli, runs
from .conftest import TINY_BUDGET, cli

GRID = """experiment = "decided"
designs = ["add_one_in"]
flags = ["adamw"]
seeds = [0, 1]
tune_seed = 100
effect_of_interest = {delta}
[budget]
max_epochs = 1
{budget}
[tune]
trials = 2
sampler_startup_trials = 2
pruner = "none"
tune_repeats = {repeats}
[tune.space]
sgd_lr = {{type = "float", low = 0.05, high = 0.5, log = true}}
adamw_lr = {{type = "float", low = 1e-3, high = 1e-2, log = true}}
"""


def grid_file(folder: Path, repeats: int = 2, delta: float = 0.5, name: str = "decided") -> Path:
    path = folder / "experiments" / f"{name}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(GRID.format(repeats=repeats, delta=delta, budget=TINY_BUDGET))
    return path


# ---------------------------------------------------------------- the repeats, pure
def test_each_repeat_has_its_own_tune_seed_and_the_replicates_are_split_in_a_balanced_order(tmp_path):
    t = grid.load(grid_file(tmp_path, repeats=2)).tune
    assert t.repeats == 2 and t.seeds == (100, 101)
    assert t.repeat_of([0, 1, 2, 3, 4, 5]) == {0: 0, 1: 1, 2: 0, 3: 1, 4: 0, 5: 1}
    assert Counter(t.repeat_of(range(8)).values()) == {0: 4, 1: 4}
    assert grid.load(grid_file(tmp_path, repeats=1)).tune.seeds == (100,)  # the default: one study per arm, as before


@pytest.mark.parametrize("old, new, message", [
    ("tune_repeats = 2", "tune_repeats = 0",
     "[tune] tune_repeats=0: give the independent studies per arm, an integer >= 1"),
    ("tune_repeats = 2", "tune_repeats = 1.5", "[tune] tune_repeats=1.5: give the independent studies per arm"),
    ("tune_repeats = 2", 'tune_repeats = "2"', "[tune] tune_repeats='2': give the independent studies per arm"),
    ("seeds = [0, 1]", "seeds = [0, 1, 101]", "tune_seed=100 with tune_repeats=2 trains trials at seed 101, also a "
                                              "replicate seed"),
])
def test_a_bad_tune_repeats_is_one_line_naming_the_fix(tmp_path, capsys, old, new, message):
    path = grid_file(tmp_path)
    path.write_text(path.read_text().replace(old, new, 1))
    code, out, err = cli(capsys, "ablate", str(path), "--dry-run")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_until_decided_refuses_a_tune_seed_among_the_seeds_it_may_add(tmp_path, capsys):
    path = grid_file(tmp_path)
    path.write_text(path.read_text().replace("tune_seed = 100", "tune_seed = 4"))
    code, out, err = cli(capsys, "ablate", str(path), "--until-decided", "--max-seeds", "6", "--dry-run")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "tune_seed = 4 trains trials at seed 4, one of the seeds --until-decided may add (0, 1, 2, 3, 4, 5)" in err


def test_the_dry_run_of_a_tuned_grid_until_decided_lists_the_looks_and_each_repeats_study(project, capsys):
    path = grid_file(project)
    code, out, err = cli(capsys, "ablate", str(path), "--until-decided", "--max-seeds", "4", "--block", "2",
                         "--dry-run")
    assert code == 0, err
    assert "look 1 at 2 seeds" in out and "look 2 at 4 seeds" in out
    assert "tune_repeats = 2" in out and "repeat 0 (seeds 0); repeat 1 (seeds 1)" in out, out
    assert "the seeds' tuning repeats, in the order: 0: r0, 1: r1, 2: r0, 3: r1" in out, out
    assert re.search(r"baseline r0 .* not started", out) and re.search(r"baseline\+adamw r1 .* not started", out), out


# ---------------------------------------------------------------- the real CLI on tiny data
def _studies(project: Path) -> dict[str, list]:
    storage = claims.open_storage(None, project / "mlruns" / "claims.journal")
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage).get_trials(deepcopy=False)
            for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
            if s.study_name.startswith("tune decided/")}


@pytest.mark.subprocess
@pytest.mark.long
def test_a_tuned_grid_until_decided_with_two_repeats_then_a_rerun_and_its_report(project):
    path = grid_file(project, delta=0.5)  # δ wide on purpose: tiny data decides within the looks
    run = Cli("ablate", str(path), "--until-decided", "--max-seeds", "4", "--block", "2", "--workers", "2",
              cwd=project)
    assert run.finish() == 0, run.stderr[-3000:] + run.stdout[-2000:]
    assert "Traceback" not in run.stderr + run.stdout
    studies = _studies(project)
    counted = {name.split("/")[2] + ("" if name.split("/")[3].startswith("r") is False else " " + name.split("/")[3]):
               sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in ts) for name, ts in studies.items()}
    assert sorted(counted.values()) == [2, 2, 2, 2] and len(studies) == 4, counted  # 2 arms x 2 repeats, equal budgets
    all_runs = runs(f"sqlite:///{project}/mlruns/mlflow.db", "decided")
    cells = [r for r in all_runs if r.data.tags.get("variant") == "tuned"]
    seeds = sorted({int(r.data.tags["seed"]) for r in cells})
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("look ")]
    assert seeds in ([0, 1], [0, 1, 2, 3]) and len(lines) == len(seeds) // 2, run.stdout[-2000:]
    assert max(Counter(r.data.tags["config_hash"] for r in cells if r.info.status == "FINISHED").values()) == 1
    # each seed trained at its repeat's values: seed i of the order at repeat i % 2
    for r in cells:
        assert r.data.tags["tune_repeat"] == str(int(r.data.tags["seed"]) % 2), r.data.tags
    assert not [r for r in all_runs if r.info.status == "RUNNING"]

    again = Cli("ablate", str(path), "--until-decided", "--max-seeds", "4", "--block", "2", cwd=project)
    assert again.finish() == 0, again.stderr[-2000:]
    assert [ln for ln in again.stdout.splitlines() if ln.startswith("look ")] == lines  # replayed, same verdicts
    assert "0 trials to run" in again.stdout and "start " not in again.stdout

    changed = path.read_text().replace("tune_repeats = 2", "tune_repeats = 3")
    path.write_text(changed)
    refused = Cli("ablate", str(path), "--until-decided", "--max-seeds", "4", "--block", "2", cwd=project)
    assert refused.finish() == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "was tuned with trials = 2 and tune_repeats = 2 per arm" in refused.stderr
    path.write_text(changed.replace("tune_repeats = 3", "tune_repeats = 2"))

    rep = Cli("report", "--grid", "decided", "--experiment", "decided", "--out", "rep", cwd=project)
    assert rep.finish() == 0, rep.stderr[-2000:]
    text = (project / "rep" / "report.md").read_text()
    assert "Effect by tuning repeat" in text and "Tuning repeats per arm" in text and "Adaptive replication" in text
    assert "at these tuned values" in text
    assert re.search(r"(effect|no effect ≥ δ) at [24] seeds, 9\d(\.\d)?% CI \[", text), text
    by_repeat = (project / "rep" / "tuning_repeats.csv").read_text().splitlines()
    assert len(by_repeat) == 2 and "r1_diff_mean" in by_repeat[0] and "repeats_ci_lo" in by_repeat[0]


# ---------------------------------------------------------------- when the tuning draw moves the effect
@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_a_seed_level_test_that_ignores_the_tuning_draw_inflates_wrong_verdicts_and_the_repeats_do_not(tau):
    """θ = 0 for the tuning procedure in general, but each search's tuned values move the effect by
    u ~ N(0, τ²): the seed-level test (the report's paired test) answers "at these tuned values" and says
    "effect" far above α; taking the repeats as the unit (R − 1 df) keeps it at α. Through power.verdict."""
    import math

    import numpy as np

    from lstm_mnist.analysis import power, sequential

    reps, rng = 4000, np.random.default_rng(7)
    mc = 4 * math.sqrt(0.05 * 0.95 / reps)
    at = {r: sequential.simulate_tuning_draw(0.0, 1.0, tau, 1.0, 8, r, reps, rng) for r in (1, 2, 4)}
    seed = {r: x.seed_level.rate(power.EFFECT) for r, x in at.items()}
    assert seed[1] > seed[2] > seed[4] > 0.05 + mc, seed  # more repeats dilute the draw, none removes it
    for r in (2, 4):
        assert at[r].repeat_level.rate(power.EFFECT) <= 0.05 + mc
    assert at[1].repeat_level.rate(power.UNDECIDED) == 1.0  # one draw says nothing about tuning in general
    none = sequential.simulate_tuning_draw(0.0, 1.0, 0.0, 1.0, 8, 2, reps, rng)  # τ = 0: both hold α
    assert none.seed_level.rate(power.EFFECT) <= 0.05 + mc and none.repeat_level.rate(power.EFFECT) <= 0.05 + mc
