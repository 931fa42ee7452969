"""MLflow the way its users expect: dataset inputs, the tested weights as a LoggedModel, `evaluate` re-verifying
a run from them, experiments tagged for the runs view, `ui`'s link, artifacts beside their store."""
import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch

from lstm_mnist.tracking import ui

from . import launcher
from .conftest import QUICK, cli, free_port, run_cli, write_mnist


def _client(project):
    return mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")


def _one_run(project, *args):
    proc = run_cli("run", "experiments/full.toml", *QUICK, *args, cwd=project)
    assert proc.returncode == 0, proc.stderr
    c = _client(project)
    exp = c.get_experiment_by_name("lstm-mnist")
    return c, exp, c.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])[0]


@pytest.mark.subprocess
def test_a_run_records_its_datasets_and_its_tested_weights(project):
    c, exp, run = _one_run(project, "train_samples=300")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"mnist-train-300", "mnist-validation-120", "mnist-test-200"}
    fp = run.data.tags["data_fingerprint"]
    assert all(d.dataset.digest == fp and d.dataset.source_type == "local" for d in inputs.values())
    assert {d.tags[0].value for d in inputs.values()} == {"training", "validation", "testing"}
    model_id = run.data.tags["model_id"]
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    lm = c.get_logged_model(model_id)
    assert lm.source_run_id == run.info.run_id and str(lm.status) in ("READY", "LoggedModelStatus.READY")
    assert lm.experiment_id == exp.experiment_id and lm.params["bidirectional"] == "True"
    # one call loads it back (MLflow's own loader), and it is the module that was tested
    mlflow.set_tracking_uri(f"sqlite:///{project}/mlruns/mlflow.db")
    try:
        net = mlflow.pytorch.load_model(f"models:/{model_id}")
    finally:
        mlflow.set_tracking_uri(None)
    assert net(torch.zeros(2, 28, 28)).shape == (2, 10)
    assert (project / "mlruns" / "artifacts").is_dir() and not (project / "mlruns" / "0").exists()


@pytest.mark.subprocess
def test_log_model_false_records_no_weights_and_keeps_the_identity(project, capsys):
    c, _, run = _one_run(project, "log_model=false")
    assert "model_id" not in run.data.tags and not run.outputs.model_outputs
    code, out, _ = cli(capsys, "run", "experiments/full.toml", *QUICK)  # the same identity: skipped
    assert code == 0 and "already FINISHED" in out
    code, _, err = cli(capsys, "evaluate", run.info.run_id)
    assert code == 2 and "has no logged weights" in err and err.count("\n") == 1


@pytest.mark.subprocess
def test_evaluate_agrees_to_the_last_digit_and_catches_damage(project, tmp_path, capsys, monkeypatch):
    c, exp, run = _one_run(project)
    rid = run.info.run_id
    proc = run_cli("evaluate", rid, cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert f"run {rid}: agree, exact (same device)" in proc.stdout
    recorded = run.data.metrics["test_f1"]
    assert re.search(rf"test_f1\s+{recorded:.17g}\s+{recorded:.17g}\s+\+0", proc.stdout), proc.stdout

    weights = next((project / "mlruns" / "artifacts").rglob("model.pth"))
    net = torch.load(weights, weights_only=False)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save(net, weights)  # other weights: recomputed metrics differ
    # The same command again, in this process: the CLI's exit codes and one-line errors, without a process start.
    code, out, _ = cli(capsys, "evaluate", rid)
    assert code == 1 and "DIFFER:" in out

    weights.write_bytes(b"not a torch file")  # damaged: cannot load
    code, _, err = cli(capsys, "evaluate", rid)
    assert code == 2 and re.search(r"its logged weights \(model m-\w+\) do not load", err) and err.count("\n") == 1

    other = write_mnist(tmp_path / "other", n_train=500)  # other data: a different fingerprint
    monkeypatch.setenv("LSTM_MNIST_DATA", str(other))
    code, _, err = cli(capsys, "evaluate", rid)
    assert code == 2 and f"run {rid} was trained on data" in err

    code, _, err = cli(capsys, "evaluate", "0123456789abcdef")
    assert code == 2 and err.startswith("error: no run '0123456789abcdef'")


@pytest.mark.subprocess
def test_a_sqlite_store_elsewhere_keeps_its_artifacts_beside_it(project, tmp_path):
    store = tmp_path / "elsewhere" / "store.db"
    store.parent.mkdir()
    proc = run_cli("run", *QUICK, "max_epochs=1", cwd=project, env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"})
    assert proc.returncode == 0, proc.stderr
    assert (list((store.parent / "artifacts").rglob("config.toml"))
            and list((store.parent / "artifacts").rglob("MLmodel")))
    assert not (project / "mlruns" / "0").exists() and not list((project / "mlruns").rglob("config.toml"))


@pytest.mark.scenario
@pytest.mark.long
@pytest.mark.subprocess
def test_ui_prints_the_runs_table_link_and_serves_the_store(project):
    c, exp, _ = _one_run(project, "max_epochs=1")
    old = c.create_experiment("made-by-hand")  # an experiment without the tag gets it from `ui`
    port = free_port()
    proc = launcher.popen(["ui", "--port", str(port)], project, stderr=subprocess.DEVNULL)
    try:
        head = [proc.stdout.readline() for _ in range(2)]
        assert head[1].strip() == (f"open http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs"
                                   "?workflowType=machine_learning")
        deadline = time.monotonic() + 240  # the server's start under the suite's load (a minute or two)
        while True:
            try:
                assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
                break
            except OSError:
                assert proc.poll() is None, f"`ui` exited {proc.returncode} before its server answered"
                if time.monotonic() > deadline:
                    pytest.fail("the UI did not answer within 4 minutes")
                time.sleep(0.5)
        assert c.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    finally:
        server = [p for p in Path("/proc").iterdir() if p.name.isdigit() and f"--port\0{port}".encode()
                  in (p / "cmdline").read_bytes()] if Path("/proc").is_dir() else []
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0  # stopped as on Ctrl-C (it used to wait 10 s on the server, then a traceback)
    deadline = time.monotonic() + 20  # `kill` of `ui` stops its MLflow server too: nothing left on the port
    while any(map(_running, server)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(map(_running, server))


def _running(proc_dir: Path) -> bool:
    try:
        return bool((proc_dir / "cmdline").read_bytes())  # a zombie's is empty
    except OSError:
        return False


def test_runs_link_shape():
    assert ui.runs_link("http://h:1/", "7") == "http://h:1/#/experiments/7/runs?workflowType=machine_learning"


@pytest.mark.subprocess
def test_report_tables_are_logged_as_mlflow_tables(project):
    """`make report` logs each shown table with log_table (JSON under report/tables/ on the grid's parent)."""
    from .test_factorial import EXP, GRID, _fake_factorial

    _fake_factorial(project)
    proc = run_cli("report", "--experiment", EXP, cwd=project)
    assert proc.returncode == 0, proc.stderr
    c = _client(project)
    parent = c.search_runs([c.get_experiment_by_name(EXP).experiment_id], f"tags.grid_name = '{GRID}' and "
                           "tags.`lstm_mnist.role` = 'grid'")[0]
    names = {a.path for a in c.list_artifacts(parent.info.run_id, "report/tables")}
    assert names == {f"report/tables/{n}_test_f1.json" for n in ("arms", "worth", "main-effects", "interactions")}
    tags = json.loads(parent.data.tags["mlflow.loggedArtifacts"])
    assert {t["path"] for t in tags} == names and {t["type"] for t in tags} == {"table"}


@pytest.mark.parametrize("old", ["lstm_mnist.model", "lstm_mnist.training.model"])
def test_weights_pickled_under_the_models_old_module_paths_still_load(old, monkeypatch):
    """A LoggedModel is a pickle that names the model's module; the built-in task's model has moved twice
    (lstm_mnist/model.py, lstm_mnist/training/model.py, now lstm_mnist/builtin/model.py)."""
    import pickle
    import sys

    from lstm_mnist.builtin import model
    from lstm_mnist.tracking import models

    left = {p: sys.modules.pop(p) for p in models.OLD_MODEL_PATHS if p in sys.modules}  # by an earlier load here
    net = model.LSTMClassifier(4, 1, False, 0.0, "last")
    monkeypatch.setitem(sys.modules, old, model)  # as it was named when the weights were logged
    monkeypatch.setattr(model.LSTMClassifier, "__module__", old)
    blob = pickle.dumps(net)
    monkeypatch.undo()
    assert old not in sys.modules and model.LSTMClassifier.__module__ == "lstm_mnist.builtin.model"
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(blob)
    try:
        models.old_model_paths()
        back = pickle.loads(blob)
        assert type(back) is model.LSTMClassifier
        assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), net.state_dict().values()))
    finally:
        for p in models.OLD_MODEL_PATHS:
            sys.modules.pop(p, None)
        sys.modules.update(left)
