"""Precision as a run key: the default keeps every identity, bf16-mixed is another run (recorded, reproduced by
`evaluate`), float32 logits into the loss and the split metrics, and each bad value one line before anything runs."""
import re

import mlflow
import pytest
import torch

from lstm_mnist import task as task_protocol
from lstm_mnist.builtin import config
from lstm_mnist.training import devices, outcome, train

from .conftest import QUICK, cli, cpu_precisions, cpu_refusal, needs_bf16_cpu, run_cli


def test_precision_32_keeps_the_identity_and_another_precision_is_another_run():
    cfg = config.Config()
    assert cfg.precision == "32" and task_protocol.RunKeys().precision == "32"
    bf16 = config.rebuilt(cfg, precision="bf16-mixed")
    assert cfg.identity("fp") != bf16.identity("fp")
    # the key is out of the identity at its default: the hash of a config without the key at all
    import dataclasses
    import hashlib
    import json

    keys = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in config.NOT_IDENTITY and k != "precision"}
    blob = json.dumps({**keys, "data_fingerprint": "fp", "protocol_version": config.PROTOCOL_VERSION},
                      sort_keys=True, separators=(",", ":"))
    assert cfg.identity("fp") == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert "precision" in task_protocol.builtin().why_never_searched("precision")


@pytest.mark.parametrize("value,message", [
    ("64", "precision='64': allowed values are 32, bf16-mixed, 16-mixed"),
    ("bf16", "precision='bf16': allowed values are 32, bf16-mixed, 16-mixed"),
])
def test_an_unknown_precision_is_one_line(value, message):
    with pytest.raises(config.ConfigError, match=re.escape(message)):
        config.load(None, [f"precision={value}"])


def test_a_precision_the_device_cannot_train_at_names_those_it_can():
    cpu = torch.device("cpu")
    assert devices.precisions_of(cpu) == (("32", "bf16-mixed") if devices.cpu_has_bf16() else ("32",))
    with pytest.raises(config.ConfigError, match=re.escape(cpu_refusal("16-mixed"))):
        devices.resolve_device(config.Config(device="cpu", precision="16-mixed"))
    if "bf16-mixed" in cpu_precisions():
        assert devices.resolve_device(config.Config(device="cpu", precision="bf16-mixed")) == cpu
    else:  # an AVX2-only CPU: one line before anything trains, not oneDNN's error from the first LSTM call
        with pytest.raises(config.ConfigError, match=re.escape(cpu_refusal("bf16-mixed"))):
            devices.resolve_device(config.Config(device="cpu", precision="bf16-mixed"))


@needs_bf16_cpu
def test_bf16_trains_under_autocast_with_float32_loss_and_metrics(tiny_data, monkeypatch):
    outputs, losses = [], []
    original_update, original_ce = outcome.EvalMetrics.update, torch.nn.functional.cross_entropy

    def update(self, logits, y):
        outputs.append(logits.dtype)  # what the model gave, before the harness's cast
        return original_update(self, logits, y)

    def cross_entropy(logits, *a, **kw):
        losses.append(logits.dtype)  # what every loss (training, validation, test) is computed from
        return original_ce(logits, *a, **kw)

    monkeypatch.setattr(outcome.EvalMetrics, "update", update)
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", cross_entropy)
    cfg = config.load(None, [*QUICK, f"data_dir={tiny_data}", "precision=bf16-mixed", "adamw=true", "max_epochs=4"])
    result = train.fit(cfg)
    assert set(outputs) == {torch.bfloat16}            # the model ran under bf16 autocast ...
    assert losses and set(losses) == {torch.float32}    # ... and every loss was summed from float32 logits
    assert result.test["test_f1"] > 0.2                 # it learned
    fp32 = train.fit(config.rebuilt(cfg, precision="32"))
    assert fp32.test != result.test  # another arithmetic, another result
    assert train.fit(cfg).test == result.test  # yet deterministic at its precision


@needs_bf16_cpu
@pytest.mark.subprocess
def test_a_bf16_run_is_recorded_and_evaluate_reproduces_it_at_its_precision(project, capsys, monkeypatch):
    proc = run_cli("run", "experiments/full.toml", *QUICK, "precision=bf16-mixed", cwd=project)
    assert proc.returncode == 0, proc.stderr
    c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    exp = c.get_experiment_by_name("lstm-mnist")
    run = c.search_runs([exp.experiment_id])[0]
    assert run.data.params["precision"] == "bf16-mixed" and run.info.status == "FINISHED"
    code, out, err = cli(capsys, "evaluate", run.info.run_id)
    assert code == 0 and "agree, exact (same device)" in out, out + err
    monkeypatch.setattr(train, "precisions_of", lambda device: ("32",))  # a device without bf16
    code, out, err = cli(capsys, "evaluate", run.info.run_id)
    assert code == 2 and err.count("\n") == 1, err
    assert f"run {run.info.run_id} trained at precision bf16-mixed, which this device cannot run (it can 32)" in err


@pytest.mark.subprocess
def test_a_grid_at_a_precision_the_cpu_cannot_train_at_stops_before_any_cell(project, capsys):
    grid = (project / "experiments" / "factorial-quick.toml").read_text()
    (project / "experiments" / "p16.toml").write_text(grid.replace("[budget]", "[budget]\nprecision = \"16-mixed\""))
    code, out, err = cli(capsys, "ablate", "experiments/p16.toml", "--workers", "1")
    assert code == 2 and err.count("\n") == 1, err
    assert cpu_refusal("16-mixed") in err
    c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    exp = c.get_experiment_by_name("lstm-mnist-factorial")
    assert exp is None or not c.search_runs([exp.experiment_id])  # nothing recorded, nothing failed
    code, out, err = cli(capsys, "run", "experiments/full.toml", "precision=16-mixed")
    assert code == 2 and "a CPU cannot train at it" in err and err.count("\n") == 1, err
    exp = c.get_experiment_by_name("lstm-mnist")
    assert exp is None or not c.search_runs([exp.experiment_id])  # refused before a run was recorded
