"""Model, training protocol and the tracked run, end to end on tiny data."""
import mlflow
import pytest
import torch

from lstm_mnist.builtin import config
from lstm_mnist.runs import runner
from lstm_mnist.tracking import records, store
from lstm_mnist.builtin import model
from lstm_mnist.training import outcome, train
from lstm_mnist.builtin.config import Config

from .conftest import QUICK, run_cli


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("readout", ["last", "final_states"])
def test_model_shapes_and_readouts(bidirectional, readout):
    net = model.build(Config(bidirectional=bidirectional, width=True, readout=readout))
    assert net(torch.randn(5, 28, 28)).shape == (5, 10)  # (B, 28 rows, 28 px) -> (B, 10)
    out, (h_n, _) = net.lstm(torch.randn(3, 28, 28))
    if not bidirectional:  # unidirectional: the last output is the final state
        assert torch.allclose(out[:, -1], h_n[-1])
    else:  # bidirectional: the backward half of out[:, -1] is NOT its final state
        assert not torch.allclose(out[:, -1, 128:], h_n[-1])


def _quick(tiny_data, **kw) -> Config:
    return config.load(None, [*QUICK, f"data_dir={tiny_data}"] + [f"{k}={v}" for k, v in kw.items()])


def test_same_config_and_seed_give_the_same_test_f1(tiny_data):
    cfg = _quick(tiny_data, bidirectional=True, dropout=True, width=True, augmentation=True, adamw=True, seed=3)
    a, b = train.fit(cfg), train.fit(cfg)
    assert a.test == b.test and a.history[-1]["val_loss"] == b.history[-1]["val_loss"]
    assert a.test["test_f1"] > 0.3  # learned something on the synthetic digits
    c = train.fit(config.TASK.build({**cfg.to_dict(), "seed": 4}))
    assert c.test != a.test


def test_early_stopping_and_test_on_best_val_loss_weights(tiny_data):
    cfg = _quick(tiny_data, early_stopping=True, patience=1, max_epochs=40, adamw=True, adamw_lr=0.05)
    result = train.fit(cfg)
    losses = [h["val_loss"] for h in result.history]
    assert result.best_epoch == losses.index(min(losses))
    assert len(losses) < 40 and len(losses) - 1 - result.best_epoch == 1  # stopped after `patience` flat epochs
    assert sum(map(sum, result.confusion)) == 200 and set(result.per_class) == {str(c) for c in range(10)}


def test_diverging_loss_stops_the_run(tiny_data):
    cfg = _quick(tiny_data, norm_std=1e-39, max_epochs=5)  # pixels overflow to inf -> NaN loss
    with pytest.raises(outcome.Diverged):
        train.fit(cfg)


@pytest.mark.subprocess
def test_cli_run_is_recorded_in_mlflow_with_everything(project):
    # a cold interpreter: the real `python -m lstm_mnist` start-up, once in the suite
    proc = run_cli("run", "experiments/full.toml", *QUICK, "seed=1", cwd=project, fresh=True)
    assert proc.returncode == 0, proc.stderr
    assert "epoch   1" in proc.stdout and "test_f1" in proc.stdout and "Traceback" not in proc.stderr
    c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    (run,) = c.search_runs([c.get_experiment_by_name("lstm-mnist").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "full-s1"
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert all(params[f] == "True" for f in config.FLAGS) and params["seed"] == "1" and params["max_epochs"] == "2"
    for key in ("train_loss", "val_loss", "val_f1", "val_acc", "test_loss", "test_f1", "test_acc",
                "train_samples_per_s", "epoch_time_s"):
        assert key in metrics, key
    assert len(c.get_metric_history(run.info.run_id, "val_f1")) == 2
    for key in ("config_hash", "git_commit", "git_dirty", "torch_version", "lightning_version", "mlflow_version",
                "device_name", "owner_host", "owner_pid", "owner_start"):
        assert tags.get(key), key
    artifacts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"config.toml", "confusion_matrix.png", "per_class.json"} <= artifacts
    assert (project / "mlruns" / "artifacts").is_dir()

    again = run_cli("run", "experiments/full.toml", *QUICK, "seed=1", cwd=project)
    assert again.returncode == 0 and "already FINISHED" in again.stdout
    assert len(c.search_runs([run.info.experiment_id])) == 1


def test_a_run_that_raises_is_marked_failed_with_the_error(project, monkeypatch):
    def boom(cfg, **kw):
        raise RuntimeError("out of cheese")

    monkeypatch.setattr(train, "fit", boom)
    cfg = config.load(None, QUICK)
    out = runner.execute(cfg, run_name="boom")
    assert out.status == "FAILED" and "RuntimeError: out of cheese" in out.error and out.result is None
    c = store.client()
    runs = c.search_runs([c.get_experiment_by_name("lstm-mnist").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"] and "out of cheese" in runs[0].data.tags["error"]
    assert runs[0].info.run_id == out.run_id and runs[0].info.run_name == "boom"
    assert runs[0].data.tags["error"] == "RuntimeError: out of cheese"


@pytest.mark.subprocess
def test_missing_data_via_cli_is_one_line_exit_2(project, tmp_path):
    proc = run_cli("run", "experiments/baseline.toml", f"data_dir={tmp_path}/nowhere", cwd=project,
                   env={"LSTM_MNIST_OFFLINE": "1"})
    assert proc.returncode == 2 and proc.stderr.startswith("error: MNIST not found in")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.subprocess
def test_owner_alive_tells_a_dead_process_from_a_live_one():
    import subprocess

    from lstm_mnist.machine import host

    child = subprocess.Popen(["sleep", "30"])
    host, pid, start = host.process_stamp(child.pid).split(":")
    tags = {"owner_host": host, "owner_pid": pid, "owner_start": start}
    assert records.owner_alive(tags) is True
    assert records.owner_alive({**tags, "owner_start": str(int(start) + 1)}) is False  # the pid was reused
    assert records.owner_alive({**tags, "owner_host": "elsewhere"}) is None  # not ours to judge
    child.kill()
    child.wait()
    assert records.owner_alive(tags) is False
    assert records.owner_alive(records.owner_tags()) is False  # this process has opened no run of an earlier life
