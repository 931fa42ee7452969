"""The ablation grid: pure expansion, then end to end on tiny data (resume after SIGKILL, workers, failures)."""
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.request
from types import SimpleNamespace
from pathlib import Path

import mlflow
import pytest

from lstm_mnist.builtin import config
from lstm_mnist.engine import writer
from lstm_mnist.grids import grid, plan, runner
from lstm_mnist.engine.progress import QUICK_FILE, Progress
from lstm_mnist.tracking import groups, records, store
from lstm_mnist.config import ConfigError
from lstm_mnist import task

from .chaos_tools import Server, training
from .launcher import proc_stat
from . import launcher
from .conftest import TINY_BUDGET, run_cli

# Two flags over one seed: full, baseline, full-dropout, full-adamw, baseline+dropout, baseline+adamw.
TINY_GRID = f"""
experiment = "grid-test"
flags = ["dropout", "adamw"]
seeds = [0]
[budget]
max_epochs = 1
{TINY_BUDGET}"""
TINY_ARMS = {"full", "baseline", "full-dropout", "full-adamw", "baseline+dropout", "baseline+adamw"}


def _study(tmp_path, text: str) -> grid.GridSpec:
    path = tmp_path / "g.toml"
    path.write_text(text)
    return grid.load(path)


def _runs(folder: Path, experiment: str = "grid-test") -> list:
    c = mlflow.MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    return c.search_runs([c.get_experiment_by_name(experiment).experiment_id], max_results=1000)


def _children(runs: list) -> list:
    return [r for r in runs if r.data.tags.get("lstm_mnist.role") != "grid"]


# ---------------------------------------------------------------- pure expansion
def test_default_study_is_14_arms_over_3_seeds_with_the_naming_contract(tmp_path):
    cells = grid.expand(_study(tmp_path, ""))
    assert len(cells) == 42 and len({(c.arm, c.seed) for c in cells}) == 42
    arms = {c.arm: c for c in cells if c.seed == 0}
    assert set(arms) == ({"full", "baseline"} | {f"full-{f}" for f in config.FLAGS}
                         | {f"baseline+{f}" for f in config.FLAGS})
    assert arms["full"].design == "reference" and arms["full"].on == frozenset(config.FLAGS)
    assert arms["full-dropout"].design == "leave_one_out" and arms["full-dropout"].flag == "dropout"
    assert task.builtin().values(arms["full-dropout"].on, config.FLAGS) == {f: f != "dropout" for f in config.FLAGS}
    assert arms["baseline+width"].design == "add_one_in" and arms["baseline+width"].on == {"width"}
    assert arms["full-dropout"].name == "full-dropout-s0"


def test_factorial_shares_arms_with_add_one_in_and_readout_is_a_factor(tmp_path):
    s = _study(tmp_path, 'designs = ["add_one_in", "factorial"]\nflags = ["width", "readout"]\n'
                         'factorial = ["width", "readout"]\nseeds = [5]')
    cells = grid.expand(s)
    # baseline, baseline+width, baseline+readout, baseline+width+readout: shared arms appear once; `full`
    # (all six flags and readout) is trained only when a design uses it, and none does here
    assert [c.arm for c in cells] == ["baseline", "baseline+width", "baseline+readout", "baseline+width+readout"]
    assert cells[0].designs == ("reference", "factorial") and cells[1].designs == ("add_one_in", "factorial")
    assert grid.values(s, cells[3])["readout"] == "final_states" and grid.values(s, cells[0])["readout"] == "last"
    assert grid.tags(s, cells[2]) == {"arm": "baseline+readout", "design": "add_one_in",
                                      "designs": "add_one_in,factorial", "seed": "5", "grid_name": "g",
                                      "flag": "readout"}


def test_fractional_factorial_cells_are_the_fraction_and_share_full_with_leave_one_out(tmp_path):
    flags = '["bidirectional", "dropout", "early_stopping", "width", "adamw", "augmentation", "readout"]'
    s = _study(tmp_path, f'designs = ["leave_one_out", "factorial"]\nflags = {flags}\nfactorial = {flags}\n'
                         'resolution = "IV"\nseeds = [0, 1]')
    d = grid.design(s)
    assert (d.title, d.runs, d.resolution) == ("2^(7-3)", 16, 4)
    cells = grid.expand(s)
    arms = {c.arm: c for c in cells if c.seed == 0}
    # 16 fraction runs + 7 leave-one-out arms, `full` shared (and no leave-one-out arm is in this fraction)
    assert len(cells) == 2 * (16 + 7) and arms["full"].designs == ("reference", "factorial")
    assert "baseline" in arms and arms["baseline"].designs == ("reference", "factorial")
    fraction = {c.on for c in cells if "factorial" in c.designs and c.seed == 1}
    assert fraction == set(d.on_sets()) and len(fraction) == 16
    assert "baseline+bidirectional+adamw+readout" in arms  # names list the factors on in the grid's order


def test_a_factor_missing_from_flags_still_sets_its_value_over_the_base(tmp_path):
    (tmp_path / "b.toml").write_text('readout = "final_states"\n')
    s = _study(tmp_path, 'base = "b.toml"\ndesigns = ["factorial"]\nflags = ["width"]\n'
                         'factorial = ["width", "readout"]\nseeds = [0]')
    readouts = {c.arm: grid.values(s, c)["readout"] for c in grid.expand(s)}
    assert readouts["baseline"] == "last" and readouts["baseline+readout"] == "final_states"


def test_fraction_by_runs_and_bad_requests_are_one_line_errors(tmp_path):
    six = '["bidirectional", "dropout", "width", "early_stopping", "augmentation", "adamw"]'
    s = _study(tmp_path, f'designs = ["factorial"]\nflags = {six}\nfactorial = {six}\nruns_per_seed = 8\nseeds = [0]')
    assert grid.design(s).generators == ("AB", "AC", "BC") and len(grid.expand(s)) == 8
    assert "baseline" not in {c.arm for c in grid.expand(s)}  # 2^(6-3) does not contain the all-off run
    for body, msg in [(f"factorial = {six}\nresolution = 7", "resolution=7: no 6-factor fraction has it"),
                      (f"factorial = {six}\nruns_per_seed = 12",
                       "runs_per_seed=12: a 6-factor design has 64, 32, 16, 8"),
                      (f"factorial = {six}\nresolution = 4\nruns_per_seed = 16", "either resolution or runs_per_seed"),
                      ('factorial = ["width"]', "factorial has 1 factor: a two-level design here takes 2 to 7"),
                      (f"factorial = {six}\nresolution = \"X\"", "resolution='X': expected an integer")]:
        with pytest.raises(ConfigError, match=re.escape(msg)):
            _study(tmp_path, f'designs = ["factorial"]\nflags = {six}\n{body}')


def test_budget_and_base_reach_every_cell(tmp_path):
    (tmp_path / "b.toml").write_text("hidden_on = 64\ndropout = true\n")
    s = _study(tmp_path, 'base = "b.toml"\nseeds = [1]\n[budget]\nmax_epochs = 3\n')
    for cell in grid.expand(s):
        cfg = config.TASK.build(grid.values(s, cell))
        assert (cfg.max_epochs, cfg.hidden_on, cfg.seed, cfg.experiment) == (3, 64, 1, "lstm-mnist-ablation")
        assert cfg.dropout == ("dropout" in cell.on)  # the grid decides the flags, not the base file


@pytest.mark.parametrize("text, message", [
    ("seed = [1]", "unknown grid key 'seed'"),
    ('flags = ["dropout", "wings"]', "flags: unknown name 'wings'"),
    ("seeds = []", "seeds=[]: expected a non-empty list"),
    ("[budget]\nseed = 3", "[budget] seed: set per cell by the grid"),
    ("[budget]\nmax_epochs = 0", "max_epochs=0: out of range"),
    ('full = ["dropout"]', "leave_one_out: flag 'bidirectional' must be on in the full arm"),
    ('designs = ["one_at_a_time"]', "designs: unknown name 'one_at_a_time'"),
    ('designs = ["factorial"]', "designs includes factorial: list its flags"),
    ('base = "missing.toml"', "config file not found"),
])
def test_bad_grid_files_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        _study(tmp_path, text)
    assert message in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith(str(tmp_path))


def test_shards_split_the_cells_exactly_once_and_deterministically():
    hashes = [f"{i:016x}" for i in range(0, 4200, 100)]
    shares = [grid.shard(hashes, k, 3) for k in (1, 2, 3)]
    assert set().union(*shares) == set(hashes) and sum(map(len, shares)) == len(hashes)
    assert grid.shard(list(reversed(hashes)), 2, 3) == shares[1]
    assert grid.parse_shard("2/3") == (2, 3)
    with pytest.raises(ConfigError, match="write it as K/N"):
        grid.parse_shard("4/3")


def test_progress_estimates_the_grid_and_points_a_cpu_user_to_the_quick_file():
    lines = []
    progress = Progress(total=42, n_workers=2, out=lines.append)
    job = plan.Job(grid.Cell("full", "reference", "", 0, frozenset()), config.Config(), "0" * 16)
    as_trained = SimpleNamespace(test={"test_f1": 0.9912}, device_name="cpu (AMD EPYC 7B13, 1 thread)")  # as train
    progress.finished(job, as_trained, 300.0)                                                              # reports it
    progress.finished(job, SimpleNamespace(test={"test_f1": 0.9913}, device_name="cpu"), 300.0)  # the estimate: once
    assert lines[0].startswith("[1/42] full") and "test_f1 0.9912  300s" in lines[0]
    assert lines[1].startswith("estimate: about 1.8 h for the 42 cells") and QUICK_FILE in lines[1]
    assert len(lines) == 3


# ---------------------------------------------------------------- end to end on tiny data
@pytest.fixture
def tiny_grid(project) -> Path:
    (project / "experiments" / "tiny-grid.toml").write_text(TINY_GRID)
    return project


def _kill_after_first_cell(folder: Path) -> str:
    """Start the grid; SIGKILL it once one cell is FINISHED and the next one has been opened (RUNNING)."""
    proc = launcher.popen(["ablate", "experiments/tiny-grid.toml"], folder, stderr=subprocess.DEVNULL)
    seen, deadline = [], time.time() + 120
    try:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("start") and any(s.startswith("[1/6]") for s in seen) or time.time() > deadline:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return "".join(seen)


@pytest.mark.chaos
@pytest.mark.subprocess
def test_sigkill_mid_grid_then_rerun_gives_one_finished_run_per_cell(tiny_grid, capsys):
    out = _kill_after_first_cell(tiny_grid)
    assert "[1/6]" in out
    before = _children(_runs(tiny_grid))
    assert [r.info.status for r in before].count("FINISHED") == 1 and "RUNNING" in [r.info.status for r in before]

    dry = plan.table(plan.plan(grid.load("experiments/tiny-grid.toml")))  # in-process: no startup cost
    assert "6 cells: 1 done, 5 not done" in dry and "todo (left RUNNING by a dead process)" in dry

    again = run_cli("ablate", "experiments/tiny-grid.toml", cwd=tiny_grid)
    assert again.returncode == 0, again.stderr
    assert "6 cells, 1 already FINISHED, 5 to train" in again.stdout and "6/6 cells FINISHED" in again.stdout
    runs = _runs(tiny_grid)
    finished = [r for r in _children(runs) if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["arm"] for r in finished) == sorted(TINY_ARMS)
    assert len({r.data.tags["config_hash"] for r in finished}) == 6
    (stale,) = [r for r in _children(runs) if r.info.status == "FAILED"]
    assert stale.data.tags["error"] == "stale: process died"
    assert not [r for r in runs if r.info.status == "RUNNING"]

    (parent,) = [r for r in runs if r.data.tags.get("lstm_mnist.role") == "grid"]  # one parent, reopened
    assert parent.info.run_name == "tiny-grid" and parent.info.status == "FINISHED"
    assert parent.data.metrics["cells_done"] == 6 and parent.data.metrics["cells_skipped"] == 1
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in finished)
    child = next(r for r in finished if r.data.tags["arm"] == "full-dropout")
    assert child.info.run_name == "full-dropout-s0" and child.data.params["dropout"] == "False"
    assert ({"design": "leave_one_out", "flag": "dropout", "seed": "0", "grid_name": "tiny-grid"}.items()
            <= child.data.tags.items())
    assert "test_f1" in child.data.metrics

    lines = []
    assert runner.run_file("experiments/tiny-grid.toml", out=lines.append) == 0
    assert lines == ["all 6 cells of tiny-grid already FINISHED in experiment grid-test: nothing to train"]
    assert len(_runs(tiny_grid)) == len(runs)


@pytest.mark.subprocess
def test_ctrl_c_ends_the_open_cells_and_the_parent_killed(tiny_grid):
    (tiny_grid / "experiments" / "tiny-grid.toml").write_text(TINY_GRID.replace("max_epochs = 1", "max_epochs = 200"))
    # SIGINT as a shell leaves it
    proc = launcher.popen(["ablate", "experiments/tiny-grid.toml", "--workers", "2"], tiny_grid)
    assert training(tiny_grid, "grid-test", 2, alive=lambda: proc.poll() is None)  # both workers mid-cell
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode == 130 and "interrupted; rerun the same command to continue" in err
            and "Traceback" not in err)
    runs = _runs(tiny_grid)
    assert {r.info.status for r in _children(runs)} == {"KILLED"} and len(_children(runs)) == 2
    assert next(r for r in runs if r.data.tags.get("lstm_mnist.role") == "grid").info.status == "KILLED"


def test_a_diverging_cell_fails_alone_and_the_exit_code_says_so(tiny_grid, monkeypatch, capsys):
    values = grid.values

    def one_cell_diverges(study, cell):  # pixels / 1e-39 overflow to inf -> NaN loss: a genuine divergence
        return {**values(study, cell), **({"norm_std": 1e-39} if cell.arm == "full-adamw" else {})}

    monkeypatch.setattr(grid, "values", one_cell_diverges)
    assert runner.run_file("experiments/tiny-grid.toml") == 1
    out = capsys.readouterr().out
    assert "FAILED full-adamw-s0: Diverged" in out and "5/6 cells FINISHED" in out
    status = {r.data.tags["arm"]: r.info.status for r in _children(_runs(tiny_grid))}
    assert status == {**{a: "FINISHED" for a in TINY_ARMS}, "full-adamw": "FAILED"}
    parent = next(r for r in _runs(tiny_grid) if r.data.tags.get("lstm_mnist.role") == "grid")
    assert parent.info.status == "FAILED" and parent.data.metrics["cells_failed"] == 1


def test_a_result_that_cannot_be_recorded_fails_its_cell_alone(tiny_grid, monkeypatch):
    def disk_full(self, result):
        raise OSError("No space left on device")

    monkeypatch.setattr(records.RunRecord, "log_result", disk_full)
    study = grid.load("experiments/tiny-grid.toml")
    job = plan.plan(study)[0]
    c, lines, tally = store.client(), [], writer.Tally(total=1)
    parent = groups.parent_run(study.experiment, "grid", study.name, {}, c)
    w = writer.Writer(parent, c, tally, Progress(1, 1, out=lines.append))
    w.open(job)
    w.finished(job, None, 1.0)  # no training needed: recording is what fails
    assert not w.open_runs and tally.finished == 0 and tally.failed[0][0] == job.cell.name
    (run,) = _children(_runs(tiny_grid))
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "could not record result: OSError: No space left on device"


class _PrunedAtEpoch1:
    """A trial's hooks (engine.jobs.TrialHooks) whose pruner stops it at epoch 1."""
    run_id, chain, requeued = "", "stub-t0", False

    def __init__(self):
        self.heard, self.state = [], ""

    def epoch(self, epoch, record):
        self.heard.append((epoch, record["val_loss"]))
        return f"epoch {epoch}: val_loss {record['val_loss']}" if epoch == 1 else None

    def ended(self, run_id, state, seconds, result=None, reason="", died=False):
        self.state = state
        return f"{state} {reason}", {}, {}


def test_a_resumed_trial_is_judged_by_its_pruner_on_the_epochs_its_checkpoint_holds(tiny_grid):
    """A trial's retry that goes on from a checkpoint: its run logs the checkpoint's epochs (its run is new), and
    its pruner hears them in order, as from a trial that trained them; a pruner that stops it at one ends it there
    (PRUNED, its run KILLED, its checkpoint removed) and the caller stops training it."""
    study = grid.load("experiments/tiny-grid.toml")
    job = plan.plan(study)[0]
    job.trial = hooks = _PrunedAtEpoch1()
    c, lines, tally = store.client(), [], writer.Tally(total=1)
    parent = groups.parent_run(study.experiment, "grid", study.name, {}, c)
    w = writer.Writer(parent, c, tally, Progress(1, 1, out=lines.append))
    assert w.open(job)
    assert job.slot.path == store.checkpoints_dir() / "trials" / "stub-t0.ckpt"
    job.slot.path.parent.mkdir(parents=True)
    job.slot.path.write_bytes(b"its checkpoint")
    history = [{"train_loss": 1.0, "val_loss": 0.9 - e / 10} for e in range(3)]
    assert w.resumed(job, 2, history, "") is False  # stopped: the caller trains it no further
    assert hooks.heard == [(0, 0.9), (1, 0.8)] and hooks.state == "PRUNED"
    assert not job.slot.path.exists() and not w.open_runs
    run = c.get_run(hooks.run_id)
    assert run.info.status == "KILLED" and run.data.tags["resumed_from"] == "3"
    assert run.data.tags["stopped"] == "TrialPruned: epoch 1: val_loss 0.8 (from its checkpoint)"
    assert [m.step for m in c.get_metric_history(hooks.run_id, "val_loss")] == [0, 1, 2]


@pytest.mark.subprocess
def test_bad_grid_file_via_cli_is_one_line_exit_2(tiny_grid):
    (tiny_grid / "experiments" / "bad.toml").write_text('flags = ["wings"]\n')
    proc = run_cli("ablate", "experiments/bad.toml", cwd=tiny_grid)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "unknown name 'wings'" in proc.stderr
    shard = run_cli("ablate", "experiments/tiny-grid.toml", "--shard", "0/2", cwd=tiny_grid)
    assert shard.returncode == 2 and "--shard 0/2" in shard.stderr


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, tiny_data, _store_template):
    """A tiny grid run with --workers 2 in a project folder of its own (shared by the tests below)."""
    folder = tmp_path_factory.mktemp("workers")
    (folder / "mlruns").mkdir()
    shutil.copy(_store_template, folder / "mlruns" / "mlflow.db")
    (folder / "experiments").mkdir()
    (folder / "experiments" / "tiny-grid.toml").write_text(TINY_GRID)
    env = {"LSTM_MNIST_DATA": str(tiny_data), "MLFLOW_TRACKING_URI": ""}
    proc = run_cli("ablate", "experiments/tiny-grid.toml", "--workers", "2", "--shard", "1/1", cwd=folder, env=env)
    return folder, proc


@pytest.mark.subprocess  # its module fixture runs the CLI
def test_two_workers_record_every_cell_once(two_workers):
    folder, proc = two_workers
    assert proc.returncode == 0, proc.stderr
    assert "locked" not in proc.stdout + proc.stderr and "6/6 cells FINISHED (6 trained now" in proc.stdout
    children = _children(_runs(folder))
    assert len(children) == 6 and {r.info.status for r in children} == {"FINISHED"}
    assert sorted(r.data.tags["arm"] for r in children) == sorted(TINY_ARMS)
    c = mlflow.MlflowClient(f"sqlite:///{folder}/mlruns/mlflow.db")
    assert all(len(c.get_metric_history(r.info.run_id, "val_loss")) == 1 for r in children)  # epochs came through


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


@pytest.mark.subprocess
def test_mlflow_server_shows_the_parent_with_its_children(two_workers, tmp_path):
    folder, _ = two_workers
    # SQLite's own copy: the grid's store is in WAL mode, and what its last writer left in mlflow.db-wal (not
    # yet merged into mlflow.db) belongs to the database too; a file copy of mlflow.db alone would miss it.
    with sqlite3.connect(folder / "mlruns" / "mlflow.db") as src, sqlite3.connect(tmp_path / "server.db") as dst:
        src.backup(dst)
    server = Server(tmp_path)
    server.start()
    try:
        base = f"{server.uri}/api/2.0/mlflow"
        exp_id = _get_experiment(base)
        parents = _post(f"{base}/runs/search", {"experiment_ids": [exp_id],
                                                "filter": "tags.`lstm_mnist.role` = 'grid'"})["runs"]
        (parent,) = parents
        flt = f"tags.mlflow.parentRunId = '{parent['info']['run_id']}'"
        children = _post(f"{base}/runs/search", {"experiment_ids": [exp_id], "filter": flt})["runs"]
        arms = {t["value"] for r in children for t in r["data"]["tags"] if t["key"] == "arm"}
        assert parent["info"]["run_name"] == "tiny-grid" and arms == TINY_ARMS
    finally:
        server.kill()


def _get_experiment(base: str) -> str:
    with urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=grid-test", timeout=5) as r:
        return json.loads(r.read())["experiment"]["experiment_id"]



def _stops_mid_report(index, inbox, outbox):
    """A worker that begins a report, then is stopped (SIGSTOP) halfway through writing it."""
    import os
    import signal
    import struct

    inbox.recv()
    os.write(outbox.fileno(), struct.pack("!i", 1 << 20) + b"x" * 100)  # a 1 MB message's header and first bytes
    os.kill(os.getpid(), signal.SIGSTOP)


@pytest.mark.chaos
@pytest.mark.subprocess
def test_a_worker_stopped_halfway_through_a_report_is_given_up_within_the_bound(monkeypatch):
    from lstm_mnist.engine import pool

    monkeypatch.setattr(pool, "MESSAGE_S", 2.0)
    workers = pool.Pool(1, pin=False, target=_stops_mid_report)
    try:
        workers.send(0, ("cell", {}, []))
        pid, deadline = workers.procs[0].proc.pid, time.monotonic() + 120
        while proc_stat(pid)[0] != "T":  # the bound counts from the stop, not from
            assert time.monotonic() < deadline, "the worker never stopped"  # the worker's start-up imports
            time.sleep(0.05)
        t0 = time.monotonic()
        got = []
        while not got and time.monotonic() - t0 < 60:
            got = workers.receive(timeout=1.0)
        assert got == [(0, None)] and time.monotonic() - t0 < 30  # bounded: MESSAGE_S, then the kill's EOF
        assert "stopped halfway through a report" in workers.lost[0]
        workers.procs[0].proc.join(timeout=10)
        assert workers.dead() == [(0, -9)]  # its cell fails alone (pool._reap), a new worker takes the next
    finally:
        workers.kill()


@pytest.mark.parametrize("stem", ["it's", 'say"hi', "back\\slash"])
def test_a_grid_name_that_mlflow_filters_would_misread_is_refused_at_load(tmp_path, stem):
    path = tmp_path / f"{stem}.toml"
    path.write_text("seeds = [0]\n")
    with pytest.raises(ConfigError, match="use only letters, digits") as e:
        grid.load(path)
    assert "rename the grid file" in str(e.value) and "\n" not in str(e.value)


def test_the_recorded_plan_reads_back_as_it_was_written_and_an_older_one_is_one_line(tmp_path):
    import json

    from lstm_mnist.grids import planned

    path = tmp_path / "two.toml"
    path.write_text('flags = ["dropout", "adamw"]\nfull = ["dropout", "adamw"]\nseeds = [0, 1]\n'
                    'designs = ["leave_one_out", "add_one_in", "factorial"]\nfactorial = ["dropout", "adamw"]\n'
                    'effect_of_interest = 0.01\n')
    study = grid.load(path)
    jobs = [plan.Job(c, None, f"h{i}") for i, c in enumerate(grid.expand(study))]
    written = plan.recorded(study, jobs, sequential={"looks": [2, 3]})
    back = planned.Plan.from_dict(json.loads(json.dumps(written.to_dict())))
    assert back == written and back.factorial.design.factors == ("dropout", "adamw")
    full_dropout = next(c for c in back.cells if c.arm == "full-dropout")
    assert full_dropout.roles == (("leave_one_out", "dropout", "full-dropout"),
                                  ("add_one_in", "adamw", "baseline+adamw"),
                                  ("factorial", "adamw", "baseline+adamw"))
    with pytest.raises(planned.PlanError, match="recorded by an older version of lstm-mnist: run its `python -m "
                                                "lstm_mnist ablate FILE` again") as err:
        planned.Plan.from_dict({"protocol_version": 3, "cells": []}, "grid 'old'")
    assert "\n" not in str(err.value) and str(err.value).startswith("grid 'old'")
