"""The chaos suite: the real CLI on tiny synthetic data, under faults, with the invariants checked after each
scenario (one FINISHED run per cell, none trained twice, none lost, none left RUNNING, no process left
behind). Kill times come from a fixed seed, so a failure reproduces. Each scenario records its figures
(kills delivered, expected, FINISHED, duplicates, lost, left RUNNING, wall time); pytest prints them at the
end, and `make chaos` also writes them to reports/chaos.jsonl."""
from __future__ import annotations

import os
import random
import re
import shutil
import signal
import stat
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from lstm_mnist.grids import grid, plan

from .chaos_tools import Cli, Server, cell_figures, left_behind, record, runs
from .conftest import TINY_BUDGET
from .test_tune import LR, trials_of, write_study

SEED = int(os.environ.get("CHAOS_SEED", "20261129"))
pytestmark = [pytest.mark.chaos, pytest.mark.subprocess]

def chaos_grid(seeds: str) -> str:
    """Two flags: 6 arms per seed, cells of a few seconds each."""
    return (f'experiment = "chaos"\nflags = ["dropout", "adamw"]\nseeds = {seeds}\n[budget]\nmax_epochs = 3\n'
            f'{TINY_BUDGET}')

GRID = "experiments/chaos.toml"


@pytest.fixture
def chaos(project) -> Path:
    (project / GRID).write_text(chaos_grid("[0, 1]"))
    return project


def hashes(path: str = GRID) -> set[str]:
    study = grid.load(path)
    return {plan.resolve_cell(study, cell).config_hash for cell in grid.expand(study)}


def local(folder: Path) -> str:
    return f"sqlite:///{folder}/mlruns/mlflow.db"


def no_traceback(*clis: Cli) -> None:
    for cli in clis:
        assert "Traceback" not in cli.stderr + cli.stdout, cli.stderr[-3000:]


def check(figures: dict) -> None:
    assert figures["finished"] == figures["expected"], figures
    assert figures["duplicates"] == figures["lost"] == figures["left_running"] == 0, figures


@pytest.mark.long
# ---------------------------------------------------------------- kills
def test_sigkills_to_workers_and_the_main_process_then_a_rerun(chaos):
    """A 2-worker grid: three SIGKILLs to workers and two to the main process, at random instants."""
    rng, t0 = random.Random(SEED), time.monotonic()
    plan = ["worker"] * 3 + ["main"] * 2
    rng.shuffle(plan)
    delivered, pids, cli, invocations = Counter(), set(), None, 0
    for kind in plan:
        if cli is None or not cli.running():
            cli, invocations = Cli("ablate", GRID, "--workers", "2", cwd=chaos), invocations + 1
        if not cli.wait_for(r"^start ", cli.count(r"^start ") + 1, timeout=180):
            break  # the grid ended before this kill: it is not counted as delivered
        time.sleep(rng.uniform(0.1, 2.0))  # mid-epoch, mid-report or mid-result: wherever it lands
        if kind == "worker":
            kids = cli.workers()
            if not kids or not cli.running():
                continue
            os.kill(rng.choice(kids), signal.SIGKILL)
        else:
            cli.kill()
        delivered[kind] += 1
        pids |= cli.seen_pids
    if cli.running():
        cli.finish()
    no_traceback(cli)
    final = Cli("ablate", GRID, "--workers", "2", cwd=chaos)
    assert final.finish() == 0, final.stderr
    no_traceback(final)
    assert "12/12 cells FINISHED" in final.stdout
    pids |= final.seen_pids
    figures = record("2-worker grid, SIGKILLs to workers and main, then a rerun", kills=dict(delivered),
                     invocations=invocations + 1, **cell_figures(runs(local(chaos), "chaos"), hashes()),
                     processes_left=len(left_behind(pids)), wall_s=round(time.monotonic() - t0, 1))
    assert delivered["worker"] >= 3 and delivered["main"] >= 2, figures
    check(figures)
    assert figures["parents"] == 1 and figures["processes_left"] == 0, figures


def test_two_ablate_processes_at_once_on_a_fresh_store(chaos):
    """Two terminals, the same grid, a store that does not exist yet: each cell is trained by one of them."""
    (chaos / "mlruns" / "mlflow.db").unlink()
    t0 = time.monotonic()
    a, b = Cli("ablate", GRID, cwd=chaos), Cli("ablate", GRID, cwd=chaos)
    codes = a.finish(), b.finish()
    no_traceback(a, b)
    assert codes == (0, 0), (a.stderr, b.stderr)
    all_runs = runs(local(chaos), "chaos")
    opened = Counter(r.data.tags["config_hash"] for r in all_runs if r.data.tags.get("config_hash"))
    trained = [int(re.search(r"\((\d+) trained now", c.stdout).group(1)) for c in (a, b)]
    figures = record("two ablate processes at once, fresh store", kills=0, trained_by_each=trained,
                     skipped_as_claimed=a.count("^skip ") + b.count("^skip "),
                     trained_twice=sum(n > 1 for n in opened.values()),
                     **cell_figures(all_runs, hashes()), wall_s=round(time.monotonic() - t0, 1))
    check(figures)
    assert figures["trained_twice"] == 0 and sum(trained) == 12 and figures["parents"] == 1, figures
    (parent,) = [r for r in all_runs if r.data.tags.get("lstm_mnist.role") == "grid"]
    assert parent.info.status == "FINISHED" and parent.data.metrics["cells_done"] == 12  # the later one counted all


@pytest.mark.long
# ---------------------------------------------------------------- the tracking server goes away
def test_tracking_server_killed_and_restarted_mid_grid(chaos, tmp_path, _store_template):
    """Against `mlflow server`: away past --store-wait, the grid stops with one line; the rerun resumes, and an
    outage shorter than the limit in the middle of it is waited out (epochs wait in the workers' pipes)."""
    rng, t0 = random.Random(SEED + 1), time.monotonic()
    path = "experiments/chaos-one-seed.toml"
    (chaos / path).write_text(chaos_grid("[0]"))
    server = Server(tmp_path)
    shutil.copy(_store_template, tmp_path / "server.db")  # migrated already: the server starts sooner
    server.start()
    env = {"MLFLOW_TRACKING_URI": server.uri}
    try:
        # 1. away past the limit: one line, and the grid stops.
        short = Cli("ablate", path, "--workers", "2", "--store-wait", "5", cwd=chaos, env=env)
        assert short.wait_for(r"^\[1/6\]", timeout=180), short.stdout + short.stderr
        server.kill()
        code = short.finish(timeout=120)
        phases = {"stopped_s": round(time.monotonic() - t0, 1)}
        no_traceback(short)
        errors = [line for line in short.err if line.startswith("error:")]
        assert code == 2 and len(errors) == 1 and "unreachable for" in errors[0], short.stderr
        # 2. back: the rerun resumes; killed and restarted within the limit in the middle of it, it goes on.
        server.start()
        rerun = Cli("ablate", path, "--workers", "2", "--store-wait", "90", cwd=chaos, env=env)
        assert rerun.wait_for(r"^\[2/", timeout=180), rerun.stdout + rerun.stderr
        time.sleep(rng.uniform(0.0, 1.0))
        server.kill()
        time.sleep(3)
        server.start()
        assert rerun.finish() == 0, rerun.stdout[-2000:] + rerun.stderr
        phases["rerun_s"] = round(time.monotonic() - t0, 1)
        no_traceback(rerun)
        assert "unreachable" in rerun.stdout and "back after" in rerun.stdout
        import mlflow

        c = mlflow.MlflowClient(server.uri)
        all_runs = runs(server.uri, "chaos")
        finished = [r for r in all_runs if r.info.status == "FINISHED" and r.data.tags.get("config_hash")]
        # Nothing lost: every epoch of every FINISHED cell reached the store, the outage's ones included.
        short_epochs = [r.info.run_name for r in finished
                        if len(c.get_metric_history(r.info.run_id, "val_loss")) != r.data.metrics["epochs_trained"]]
        figures = record("tracking server away past --store-wait, then killed and restarted mid-rerun", kills=2,
                         stopped_with_one_line=len(errors), outages_waited_out=rerun.count("back after"),
                         epochs_missing_runs=len(short_epochs), phases_end_at=phases,
                         **cell_figures(all_runs, hashes(path)), wall_s=round(time.monotonic() - t0, 1))
    finally:
        server.kill()
    check(figures)
    assert figures["parents"] == 1 and not short_epochs, figures


# ---------------------------------------------------------------- a study
def test_study_with_two_workers_and_sigkills(project):
    """`tune --workers 2`: two workers and the main process SIGKILLed, then a rerun: exactly N trials, and
    every trial's MLflow run agrees with Optuna (trial_state tag and run status)."""
    rng, t0, total = random.Random(SEED + 2), time.monotonic(), 6
    path = write_study(project, "chaos", LR, epochs=6, pruner="none")
    args = ("tune", str(path), "--trials", str(total), "--workers", "2")
    delivered, pids = Counter(), set()
    cli = Cli(*args, cwd=project)
    for _ in (1, 2):  # a worker each time, while a trial has reported an epoch (mid-trial)
        assert _mid_trial(cli, project, "chaos"), cli.stdout + cli.stderr
        time.sleep(rng.uniform(0.0, 0.3))
        kids = cli.workers()
        if kids and cli.running():
            os.kill(rng.choice(kids), signal.SIGKILL)
            delivered["worker"] += 1
    if _mid_trial(cli, project, "chaos") and cli.running():
        cli.kill()
        delivered["main"] += 1
    else:
        cli.finish()
    pids |= cli.seen_pids
    no_traceback(cli)
    rerun = Cli(*args, cwd=project)
    assert rerun.finish() == 0, rerun.stderr
    no_traceback(rerun)
    pids |= rerun.seen_pids

    storage = JournalStorage(JournalFileBackend(str(project / "studies" / "chaos.journal")))
    trials = [t for t in optuna.load_study(study_name="chaos", storage=storage).get_trials(deepcopy=False)
              if not t.user_attrs.get("surplus")]
    states = {t.number: t.state.name for t in trials}
    counted = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    trial_runs = [r for r in runs(local(project), "lstm-mnist-tune") if r.data.tags.get("lstm_mnist.role") == "trial"]
    allowed = {"COMPLETE": {"FINISHED"}, "PRUNED": {"KILLED"}, "FAIL": {"FAILED", "KILLED"}}
    disagree = [r.info.run_name for r in trial_runs
                if r.data.tags.get("trial_state") != states.get(int(r.data.tags["trial_number"]))
                or r.info.status not in allowed.get(r.data.tags.get("trial_state"), ())]
    killed = [r for r in trial_runs if r.info.status == "KILLED" and r.data.tags.get("trial_state") == "FAIL"]
    per_trial = Counter(int(r.data.tags["trial_number"]) for r in trial_runs)
    figures = record("study, 2 workers, SIGKILLs to workers and main, then a rerun", kills=dict(delivered),
                     expected=total, complete_or_pruned=counted, failed=sum(v == "FAIL" for v in states.values()),
                     duplicates=sum(n - 1 for n in per_trial.values()), mlflow_optuna_disagree=len(disagree),
                     killed_trials_ended_killed=len(killed),
                     left_running=sum(r.info.status == "RUNNING" for r in runs(local(project), "lstm-mnist-tune")),
                     processes_left=len(left_behind(pids)), wall_s=round(time.monotonic() - t0, 1))
    assert counted == total and not disagree and figures["left_running"] == 0, (figures, disagree)
    assert delivered["worker"] >= 2 and figures["duplicates"] == 0 and figures["processes_left"] == 0, figures
    assert len(killed) >= 1, figures  # a killed trial: KILLED in MLflow, trial_state FAIL as in Optuna


def _mid_trial(cli: Cli, project: Path, name: str, timeout: float = 180) -> bool:
    """Until a trial of the study is RUNNING and has reported an epoch (True), or the command ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and cli.running():
        try:
            running = [t for t in trials_of(project, name) if t.state == TrialState.RUNNING and t.intermediate_values]
        except (KeyError, FileNotFoundError, ValueError):  # the study is not created yet
            running = []
        if running:
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------- a read-only artifact folder
def _no_permission_override() -> tuple[str, ...]:
    """root writes through a read-only folder (CAP_DAC_OVERRIDE): run the CLI without that capability."""
    if os.geteuid() != 0:
        return ()
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a read-only folder cannot be made read-only")
    return ("setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--")


def _set_writable(folder: Path, writable: bool) -> None:
    for p in [folder, *folder.rglob("*")]:
        mode = p.stat().st_mode
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        p.chmod(mode | stat.S_IWUSR if writable else mode & ~bits)


@pytest.mark.long
def test_artifact_folder_made_read_only_mid_grid(chaos):
    t0, prefix = time.monotonic(), _no_permission_override()
    cli = Cli("ablate", GRID, "--workers", "2", cwd=chaos, prefix=prefix)
    assert cli.wait_for(r"^\[2/12\]", timeout=180), cli.stdout + cli.stderr
    artifacts = chaos / "mlruns" / "artifacts"
    _set_writable(artifacts, False)
    before = {r.info.run_id: r for r in runs(local(chaos), "chaos") if r.info.status == "FINISHED"}
    try:
        code = cli.finish()
    finally:
        _set_writable(artifacts, True)
    no_traceback(cli)
    failed = [line for line in cli.lines if " FAILED after " in line]
    assert code == 1 and failed and all("PermissionError" in line for line in failed), cli.stdout
    after = {r.info.run_id: r for r in runs(local(chaos), "chaos")}
    kept = [i for i, r in before.items() if after[i].info.status == "FINISHED"
            and (artifacts / "chaos" / i / "artifacts" / "per_class.json").is_file()]
    reasons = [r.data.tags.get("error", "") for r in after.values() if r.info.status == "FAILED"]
    rerun = Cli("ablate", GRID, "--workers", "2", cwd=chaos)
    assert rerun.finish() == 0, rerun.stderr
    no_traceback(rerun)
    figures = record("artifact folder read-only mid-grid, then a rerun", kills=0, cells_failed_read_only=len(failed),
                     one_line_reasons=sum("\n" not in r and "Permission" in r for r in reasons),
                     finished_before=len(before), finished_before_kept=len(kept),
                     **cell_figures(runs(local(chaos), "chaos"), hashes()), wall_s=round(time.monotonic() - t0, 1))
    assert len(kept) == len(before) >= 2, figures
    check(figures)


def test_two_tune_processes_at_once_share_one_parent_and_stop_at_the_total(project):
    """Two terminals start the same study at one instant: one MLflow parent run, exactly N trials between them
    (no overshoot: a trial beyond the total is ended before it trains)."""
    t0, total = time.monotonic(), 3
    path = write_study(project, "twice", LR, epochs=1, pruner="none")
    a, b = (Cli("tune", str(path), "--trials", str(total), cwd=project) for _ in range(2))
    codes = a.finish(), b.finish()
    no_traceback(a, b)
    assert codes == (0, 0), (a.stderr, b.stderr)
    storage = JournalStorage(JournalFileBackend(str(project / "studies" / "twice.journal")))
    trials = optuna.load_study(study_name="twice", storage=storage).get_trials(deepcopy=False)
    counted = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    all_runs = runs(local(project), "lstm-mnist-tune")
    figures = record("two tune processes at once", kills=0, expected=total, complete_or_pruned=counted,
                     surplus=sum(bool(t.user_attrs.get("surplus")) for t in trials),
                     trial_runs=sum(r.data.tags.get("lstm_mnist.role") == "trial" for r in all_runs),
                     parents=sum(r.data.tags.get("lstm_mnist.role") == "study" for r in all_runs),
                     left_running=sum(r.info.status == "RUNNING" for r in all_runs),
                     wall_s=round(time.monotonic() - t0, 1))
    assert counted == total == figures["trial_runs"] and figures["parents"] == 1, figures
    assert figures["left_running"] == 0, figures
