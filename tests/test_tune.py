"""Optuna tuning end to end on tiny data: study-file checks, pruning, resume after SIGKILL, workers, PostgreSQL."""
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from lstm_mnist import claims
from lstm_mnist.builtin import config
from lstm_mnist.grids import grid
from lstm_mnist.tracking import query
from lstm_mnist.tuning import search as trial_search
from lstm_mnist.tuning import file as study_file
from lstm_mnist.tuning import tune
from lstm_mnist.config import ConfigError

from . import launcher
from .conftest import cli, free_port, run_cli

TINY_FIXED = "max_epochs = {epochs}\nbatch_size = 32\neval_batch_size = 256\nnum_threads = 1\nadamw = true\n"


def write_study(folder: Path, name: str, space: str, epochs: int = 2, pruner: str = "median", extra: str = "") -> Path:
    path = folder / "studies" / f"{name}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'study_name = "{name}"\npruner = "{pruner}"\npruner_startup_trials = 2\n'
                    f'sampler_startup_trials = 2\n{extra}\n[fixed]\n{TINY_FIXED.format(epochs=epochs)}\n'
                    f"[space]\n{space}\n")
    return path


LR = 'adamw_lr = {type = "float", low = 1e-8, high = 3e-2, log = true}'


def trials_of(project: Path, name: str) -> list:
    storage = JournalStorage(JournalFileBackend(str(project / "studies" / f"{name}.journal")))
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def mlflow_runs(project: Path, experiment: str = "lstm-mnist-tune") -> list:
    c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    return c.search_runs([c.get_experiment_by_name(experiment).experiment_id], max_results=1000)


@pytest.mark.parametrize("space, extra, message", [
    ('colour = {type = "float", low = 0.0, high = 1.0}', "", "unknown config key"),
    ('dropout_rate = {type = "float", low = 0.5, high = 0.1}', "", "must be below high"),
    ('adamw_lr = {type = "float", low = 0.0, high = 0.1, log = true}', "", "log=true needs low > 0"),
    ('hidden_on = {type = "float", low = 16.0, high = 64.0}', "", "does not match the config field, which is int"),
    ('dropout_rate = {type = "float", low = 0.0, high = 1.5}', "", "out of range"),
    ('seed = {type = "int", low = 0, high = 9}', "", "seeds are replicates"),
    ('dropout = {type = "categorical", choices = [true, false]}', "", "flags are what the ablation compares"),
    ('val_fraction = {type = "float", low = 0.1, high = 0.3}', "", "every trial must be scored on the same split"),
    ('norm_std = {type = "float", low = 0.2, high = 0.4}', "", "normalization is part of the protocol"),
    ('readout = {type = "categorical", choices = ["last", "final_states"]}', "", "readout is a factor of the ablation"),
    ('batch_size = {type = "categorical", choices = []}', "", "non-empty list"),
    ('batch_size = {type = "uniform", low = 1, high = 2}', "", "allowed are float, int, categorical"),
    (LR, 'objective = "test_f1"', "the test set is never used"),
    (LR, 'pruner = "percentile"', "allowed values are median"),
    (LR, 'budget = 3', "unknown study key 'budget'"),
])
def test_a_bad_study_file_is_a_one_line_error(tmp_path, space, extra, message):
    path = tmp_path / "bad.toml"
    path.write_text(f"{extra}\n[space]\n{space}\n")
    with pytest.raises(ConfigError, match=message) as err:
        study_file.load_study_file(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(str(path))


@pytest.mark.subprocess
@pytest.mark.parametrize("space", ['adamw_lr = {type = "float", low = 0.1, high = 0.01}',
                                   'val_fraction = {type = "float", low = 0.1, high = 0.3}'])
def test_bad_study_via_cli_is_one_line_exit_2(project, space):
    path = write_study(project, "bad", space)
    proc = run_cli("tune", str(path), cwd=project)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_a_changed_objective_under_the_same_study_name_is_a_one_line_error(tmp_path):
    path = write_study(tmp_path, "flip", LR, extra='objective = "val_f1"')
    trial_search.open_study(study_file.load_study_file(path))
    path.write_text(path.read_text().replace('objective = "val_f1"', 'objective = "val_loss"'))
    with pytest.raises(ConfigError, match="stored .* with direction maximize, but objective=val_loss needs minimize; "
                                          "give this study a new study_name") as err:
        trial_search.open_study(study_file.load_study_file(path))
    assert "\n" not in str(err.value) and "'flip'" in str(err.value)


@pytest.mark.subprocess
def test_missing_data_with_workers_is_one_line_from_the_main_process(project):
    path = write_study(project, "nodata", LR)
    proc = run_cli("tune", str(path), "--workers", "2", cwd=project, env={"LSTM_MNIST_DATA": str(project / "none")})
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "[worker" not in proc.stdout


def test_the_study_run_ends_failed_on_an_error_and_killed_on_ctrl_c(project, monkeypatch):
    path = write_study(project, "ends", LR)
    for raised, status in ((config.UserError("worker 1 exited with code 2"), "FAILED"),
                           (KeyboardInterrupt(), "KILLED")):
        def boom(*args, raised=raised, **kwargs):
            raise raised
        monkeypatch.setattr(tune.engine, "drive", boom)
        with pytest.raises(type(raised)):
            tune.main(str(path), trials=1)
        latest = max(mlflow_runs(project), key=lambda r: r.info.start_time)
        assert latest.data.tags["lstm_mnist.role"] == "study" and latest.info.status == status


@pytest.mark.subprocess
def test_a_clearly_bad_trial_is_pruned_and_the_best_is_exported_and_runs(project):
    path = write_study(project, "prune", LR)
    study = trial_search.open_study(study_file.load_study_file(path))
    for lr in (1e-2, 1e-2, 1e-7):  # two good trials set the median; a learning rate of 1e-7 learns nothing
        study.enqueue_trial({"adamw_lr": lr})
    summary = tune.main(str(path), trials=3)
    states = [t.state for t in trials_of(project, "prune")]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert summary["pruned"] == 1 and summary["best_trial"] in (0, 1)

    runs = {r.data.tags.get("trial_number", "study"): r for r in mlflow_runs(project)}
    parent = runs["study"]
    assert parent.info.run_name == "prune" and parent.data.tags["lstm_mnist.role"] == "study"
    assert parent.data.metrics["best_value"] == summary["best_value"] and parent.data.metrics["n_pruned"] == 1
    assert parent.data.tags["best.adamw_lr"] == "0.01" and parent.info.status == "FINISHED"
    assert runs["2"].info.status == "KILLED" and runs["2"].data.tags["trial_state"] == "PRUNED"
    assert "test_f1" not in runs["2"].data.metrics and "stopped" in runs["2"].data.tags
    for n in ("0", "1"):
        r = runs[n]
        assert r.info.status == "FINISHED" and r.data.tags["trial_state"] == "COMPLETE"
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id and r.data.params["adamw_lr"] == "0.01"
        assert {"val_f1", "val_loss", "test_f1", "objective"} <= set(r.data.metrics)

    exported = project / "experiments" / "best-prune.toml"
    text = exported.read_text()
    assert text.startswith("# Tuned by Optuna: study 'prune'") and "adamw_lr = 0.01\n" in text
    assert "data_dir" not in text and "experiment" not in text.split("\n", 3)[-1]
    proc = run_cli("run", str(exported), "max_epochs=1", cwd=project)
    assert proc.returncode == 0 and "test_f1" in proc.stdout, proc.stderr

    # ... and as the reference a grid starts from: every cell carries the tuned values.
    grid_file = project / "experiments" / "best-grid.toml"
    grid_file.write_text('base = "best-prune.toml"\nflags = ["dropout"]\nseeds = [0]\n[budget]\nmax_epochs = 1\n')
    tuned_grid = grid.load(grid_file)
    assert all(grid.values(tuned_grid, cell)["adamw_lr"] == 0.01 for cell in grid.expand(tuned_grid))
    dry = run_cli("ablate", str(grid_file), "--dry-run", cwd=project)
    assert dry.returncode == 0 and "4 cells: 0 done" in dry.stdout, dry.stderr


@pytest.mark.chaos
@pytest.mark.subprocess
def test_resume_after_sigkill_fails_the_stale_trial_and_its_retry_goes_on_from_its_checkpoint(project):
    """SIGKILL mid-trial once its checkpoint holds epoch 1: the next start fails it (lost), queues its point again,
    and the retry goes on from that checkpoint: its study hears epochs 0-1 again (the values the killed trial
    reported) and then epochs 2-4, and it ends with the value the same trial has in a study never stopped."""
    ref = run_cli("tune", str(write_study(project, "reference", LR, epochs=5, pruner="none")), "--trials", "3",
                  cwd=project)
    assert ref.returncode == 0, ref.stderr
    path = write_study(project, "resume", LR, epochs=5, pruner="none")
    proc = launcher.popen(["tune", str(path), "--trials", "3"], project, stderr=subprocess.STDOUT)
    killed = _kill_at_checkpoint(proc, project, "resume", epoch=1)
    again = run_cli("tune", str(path), "--trials", "3", cwd=project)
    assert again.returncode == 0, again.stderr
    assert "failed 1 left RUNNING by a dead process" in again.stdout

    trials = {t.number: t for t in trials_of(project, "resume")}
    assert trials[killed].state == TrialState.FAIL
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials.values()) == 3
    (retry,) = [t for t in trials.values() if t.user_attrs.get("retry_of") == killed]
    assert retry.state == TrialState.COMPLETE and retry.params == trials[killed].params
    reference = {t.number: t for t in trials_of(project, "reference")}[killed]
    assert reference.params == retry.params and retry.value == reference.value, (retry.value, reference.value)
    assert retry.intermediate_values == reference.intermediate_values
    assert all(retry.intermediate_values[e] == v for e, v in trials[killed].intermediate_values.items())
    runs = {r.data.tags["trial_number"]: r for r in mlflow_runs(project)
            if r.data.tags.get("study_name") == "resume" and "trial_number" in r.data.tags}
    assert (runs[str(killed)].info.status, runs[str(killed)].data.tags["trial_state"]) == ("KILLED", "FAIL")
    assert int(runs[str(retry.number)].data.tags["resumed_from"]) >= 2, runs[str(retry.number)].data.tags
    assert not list((project / "mlruns" / "checkpoints").rglob("*.ckpt"))
    third = run_cli("tune", str(path), "--trials", "3", cwd=project)  # already complete: runs nothing
    assert third.returncode == 0 and len(trials_of(project, "resume")) == len(trials)


def _kill_at_checkpoint(proc: subprocess.Popen, project: Path, name: str, epoch: int) -> int:
    """SIGKILL the tune process once a trial's checkpoint holds `epoch`; the number of the trial it was running."""
    deadline = time.monotonic() + 240
    folder = project / "mlruns" / "checkpoints" / "trials"
    while time.monotonic() < deadline and proc.poll() is None:
        for side in folder.glob(f"{name}-t*.json"):
            try:
                if json.loads(side.read_text())["epoch"] >= epoch:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    (running,) = [t for t in trials_of(project, name) if t.state == TrialState.RUNNING]
                    return running.number
            except (FileNotFoundError, ValueError):  # removed (its trial ended) or replaced meanwhile
                continue
        time.sleep(0.02)
    proc.kill()
    pytest.fail("no trial's checkpoint reached that epoch in time")


def _kill_mid_trial(proc: subprocess.Popen, project: Path, name: str) -> int:
    """SIGKILL the tune process once a trial is complete and the next one has logged an epoch."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            trials = trials_of(project, name)
        except (KeyError, FileNotFoundError, ValueError):  # the study is not created yet
            trials = []
        running = [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values]
        if any(t.state == TrialState.COMPLETE for t in trials) and running:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return running[0].number
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no trial was caught mid-run: {proc.communicate()[0][-2000:]}")


@pytest.mark.chaos
@pytest.mark.subprocess
def test_a_dead_hosts_trials_are_recovered_by_another_host_on_the_shared_storage(project):
    """Two hosts (distinct host identities) on one study storage: host-a is SIGKILLed mid-trial; host-b fails
    that trial once host-a has sent no heartbeat for two periods, queues it again, trains it and reaches the
    total; nothing is left RUNNING in Optuna or MLflow."""
    from .chaos_tools import record

    path = write_study(project, "hosts", LR, epochs=3, pruner="none")
    beat = {"LSTM_MNIST_HEARTBEAT_S": "1"}
    a = launcher.popen(["tune", str(path), "--trials", "3"], project, env={**beat, "LSTM_MNIST_HOST": "host-a"},
                       stderr=subprocess.STDOUT)
    killed = _kill_mid_trial(a, project, "hosts")
    b = run_cli("tune", str(path), "--trials", "3", cwd=project, env={**beat, "LSTM_MNIST_HOST": "host-b"})
    assert b.returncode == 0, b.stdout[-2000:] + b.stderr[-2000:]
    trials = {t.number: t for t in trials_of(project, "hosts")}
    (retry,) = [t for t in trials.values() if t.user_attrs.get("retry_of") == killed]
    counted = [t for t in trials.values() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    runs = [r for r in mlflow_runs(project) if r.data.tags.get("study_name") == "hosts"]
    figures = record("a dead host's trial recovered by another host", trials_counted=len(counted),
                     killed_trial=f"{trials[killed].state.name} lost={trials[killed].user_attrs.get('lost')}",
                     recovered_by=retry.user_attrs["process"].split(":")[0], retry_state=retry.state.name,
                     running_in_optuna=sum(t.state == TrialState.RUNNING for t in trials.values()),
                     running_in_mlflow=sum(r.info.status == "RUNNING" for r in runs))
    assert trials[killed].state == TrialState.FAIL and trials[killed].user_attrs["lost"], figures
    assert retry.state == TrialState.COMPLETE and retry.params == trials[killed].params, figures
    assert figures["recovered_by"] == "host-b" and len(counted) == 3, figures
    assert figures["running_in_optuna"] == figures["running_in_mlflow"] == 0, figures


def test_another_hosts_trial_is_stale_only_after_two_silent_heartbeats(monkeypatch):
    from datetime import datetime

    from lstm_mnist.claims import owners

    monkeypatch.setenv("LSTM_MNIST_HEARTBEAT_S", "10")
    monkeypatch.setenv("LSTM_MNIST_HOST", "here")

    def trial(process, heartbeat):
        attrs = {"process": process} | ({"heartbeat": heartbeat} if heartbeat is not None else {})
        return optuna.trial.FrozenTrial(0, TrialState.RUNNING, None, datetime.now(), None, {}, {}, attrs, {}, {}, 0)

    now = time.time()
    assert not owners.is_stale(trial("there:1:1", now - 19)) and owners.is_stale(trial("there:1:1", now - 21))
    assert not owners.is_stale(trial("there:1:1", None))  # no heartbeat: an older version's, its host's to judge
    assert owners.is_stale(trial("here:999999999:1", now))  # this host's: its pid decides, at once
    mine = owners.host.process_stamp(os.getpid())
    assert mine.startswith("here:") and not owners.is_stale(trial(mine, now - 100))


def _assert_shared_study(project: Path, proc, name: str, total: int, trials: list, local: bool = True) -> None:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "locked" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == total
    runs = [r for r in mlflow_runs(project) if r.data.tags.get("study_name") == name]
    (parent,) = [r for r in runs if r.data.tags["lstm_mnist.role"] == "study"]
    children = [r for r in runs if r.data.tags["lstm_mnist.role"] == "trial"]
    ran = [t for t in trials if not t.user_attrs.get("surplus")]  # a surplus trial stopped before it ran: no run
    assert len(children) == len(ran), (len(children), trials)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)
    if local:  # both worker processes trained trials (on Ray the tag names the task's node instead)
        assert {r.data.tags.get("worker") for r in children} == {"0", "1"}, [r.data.tags for r in children]


@pytest.mark.subprocess
def test_two_workers_share_one_study(project):
    path = write_study(project, "pair", LR + '\nbatch_size = {type = "categorical", choices = [32, 64]}')
    proc = run_cli("tune", str(path), "--trials", "4", "--workers", "2", cwd=project)
    _assert_shared_study(project, proc, "pair", 4, trials_of(project, "pair"))


# ---------------------------------------------------------------- beyond one machine: PostgreSQL
def _pg_bin() -> Path | None:
    found = (sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
             or ([shutil.which("initdb")] if shutil.which("initdb") else []))
    return Path(found[-1]).parent if found else None


def _as_postgres(cmd: list) -> list:
    """initdb refuses to run as root: run the server as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on loopback, in a temp folder; stopped at the end."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; .ci/run does it)")
    folder = Path(tempfile.mkdtemp(prefix="lstm-mnist-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    run = lambda *cmd: subprocess.run(_as_postgres([str(bin_dir / cmd[0]), *cmd[1:]]), check=True,  # noqa: E731
                                      capture_output=True, timeout=120)
    run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust")
    run("pg_ctl", "-D", str(data), "-l", str(folder / "log"), "-w", "start",
        "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}")
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna")
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.subprocess
def test_two_workers_share_a_study_on_postgresql(project, postgres):
    path = write_study(project, "pg", LR)
    proc = run_cli("tune", str(path), "--trials", "3", "--workers", "2", "--storage", postgres, cwd=project)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    trials = optuna.load_study(study_name="pg", storage=claims.rdb_url(postgres)).get_trials(deepcopy=False)
    _assert_shared_study(project, proc, "pg", 3, trials)
    assert not (project / "studies" / "pg.journal").exists()
    assert "postgresql://postgres@127.0.0.1" in proc.stdout


def test_a_trial_beyond_the_total_is_ended_before_it_trains(project):
    """Two drivers each saw total-1 trials and each asked one: the higher-numbered one is surplus."""
    study_def = study_file.load_study_file(write_study(project, "over", LR))
    storage = claims.open_storage(None, study_def.journal)
    search = trial_search.Search(study_def, storage, 2, "fp", lambda n: grid.Cell("over", "study", "", 0, frozenset(),
                                                                                  trial=n))
    search.open_study()
    search.study.ask(), search.study.ask()  # two trials RUNNING ahead of ours (another driver's)
    assert search.state() == "waiting" and search.ask() is None
    search.state = lambda: "open"  # what this driver read just before the other one asked its second trial
    assert search.ask() is None
    (surplus,) = [t for t in search.study.get_trials(deepcopy=False) if t.user_attrs.get("surplus")]
    assert surplus.state == TrialState.FAIL and not surplus.params and trial_search.failed(search.study) == 0
    assert query.search(study_def.experiment) == []  # it opened no MLflow run


def test_a_study_whose_runs_this_store_lacks_is_one_line_and_the_right_store_continues(project, monkeypatch, capsys):
    """A user deletes mlruns/ (or points MLFLOW_TRACKING_URI elsewhere) and keeps the study's journal: continuing
    would count trials whose runs nobody can see, so tune says which two ways go on."""
    path = write_study(project, "lost", LR, epochs=1)
    assert cli(capsys, "tune", str(path), "--trials", "2")[0] == 0
    other = f"sqlite:///{project}/elsewhere/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    code, out, err = cli(capsys, "tune", str(path), "--trials", "3")
    own = [line for line in err.splitlines() if "mlflow.store.db.utils" not in line]  # MLflow making the new store
    assert code == 2 and len(own) == 1 and "Traceback" not in err, err
    assert "holds 2 ended trials, but the MLflow store" in err and "holds none of their runs" in err, err
    assert "point MLFLOW_TRACKING_URI at the store that has them" in err and "studies/lost.journal)" in err
    assert len(trials_of(project, "lost")) == 2  # nothing asked, nothing trained
    assert mlflow.MlflowClient(other).search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(other).search_experiments()]) == []  # no parent run either
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    code, out, err = cli(capsys, "tune", str(path), "--trials", "3")
    assert code == 0, out + err
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials_of(project, "lost")) == 3
    assert len([r for r in mlflow_runs(project) if r.data.tags.get("lstm_mnist.role") == "trial"]) == 3


def test_a_study_name_with_a_quote_is_refused_at_load(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(f'study_name = "it\'s"\n[space]\n{LR}\n')
    with pytest.raises(ConfigError, match="study_name \"it's\": use only letters, digits"):
        study_file.load_study_file(path)


@pytest.mark.subprocess
def test_optuna_dashboard_serves_a_study_from_its_journal(project, capsys):
    import json
    import urllib.request

    pytest.importorskip("optuna_dashboard",
                        reason="optuna-dashboard is not installed (the dashboard extra: make install)")
    path = write_study(project, "dash", LR)
    code, _, err = cli(capsys, "dashboard", str(path))
    assert code == 2 and "its study has no storage yet" in err and "make tune STUDY=" in err, err
    study = optuna.create_study(study_name="dash",
                                storage=claims.open_storage(None, project / "studies" / "dash.journal"))
    trial = study.ask({"adamw_lr": optuna.distributions.FloatDistribution(1e-8, 3e-2, log=True)})
    study.tell(trial, 0.5)
    port = free_port()
    proc = launcher.popen(["dashboard", str(path), "--port", str(port)], project)
    try:
        deadline, names = time.monotonic() + 60, None
        while names is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    names = [s["study_name"] for s in json.loads(r.read())["study_summaries"]]
            except OSError:
                time.sleep(0.3)
        assert names == ["dash"], (names, proc.poll())
    finally:
        proc.send_signal(signal.SIGTERM)  # gunicorn's master stops its worker on the way out
        proc.wait(timeout=30)
