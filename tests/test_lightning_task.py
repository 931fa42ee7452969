"""A Lightning task declared in TOML or Python: its config keys from the constructors, its spec, its one-line
mistakes, and its config pickled into another process (issue 39)."""
from __future__ import annotations

import multiprocessing
import pickle
import re
import textwrap

import pytest

from lstm_mnist import task as task_protocol
from lstm_mnist.errors import ConfigError
from lstm_mnist.task import lightning

MODULE = '''
import lightning as L
import torch
from torch import nn


class Net(L.LightningModule):
    def __init__(self, input_dim: int = 6, hidden_dim: int = 16, bidirectional: bool = False,
                 dropout_rate: float = 0.0, lr=1e-2, act="relu", init=None):
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout_rate),
                                  nn.Linear(hidden_dim, 3))

    def forward(self, x):
        return self.body(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("my_train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def loaders(batch_size: int = 16, noise: float = 0.0, seed: int = 0):
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 3, (90,), generator=g)
    x = torch.rand(90, 6, generator=g)
    x[torch.arange(90), y] += 0.6
    ds = lambda a, b: torch.utils.data.TensorDataset(x[a:b], y[a:b])  # noqa: E731
    return (torch.utils.data.DataLoader(ds(30, 90), batch_size=batch_size, shuffle=True),
            torch.utils.data.DataLoader(ds(15, 30), batch_size=64),
            torch.utils.data.DataLoader(ds(0, 15), batch_size=64))


class Data(L.LightningDataModule):
    """The same data as a LightningDataModule, with the mistakes a user can make: a shuffled or augmented validation
    loader, batches that are not (x, y)."""

    def __init__(self, batch_size: int = 16, noise: float = 0.0, val_shuffle: bool = False, val_noise: float = 0.0,
                 dict_batches: bool = False):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage):
        self.train, self.val, self.test = (dl.dataset for dl in loaders(self.hparams.batch_size))

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.train, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        h = self.hparams
        collate = (lambda b: {"x": torch.stack([x for x, _ in b]), "y": torch.stack([y for _, y in b])}) \
            if h.dict_batches else None
        if h.val_noise:
            collate = lambda b: (torch.stack([x for x, _ in b]) + h.val_noise * torch.randn(len(b), 6),  # noqa: E731
                                 torch.stack([y for _, y in b]))
        return torch.utils.data.DataLoader(self.val, batch_size=8, shuffle=h.val_shuffle, collate_fn=collate)

    def test_dataloader(self):
        return torch.utils.data.DataLoader(self.test, batch_size=64)


class TwoOutputs(Net):
    def forward(self, x):
        return self.body(x), x


def no_default(width):
    return None


class NotAModule:
    pass
'''

TABLE = {"module": "mymodel:Net", "data": "mymodel:loaders", "version": 2, "classes": 3,
         "flags": {"bidirectional": {"off": {"bidirectional": False}, "on": {"bidirectional": True}},
                   "dropout": {"off": {"dropout_rate": 0.0}, "on": {"dropout_rate": 0.3}, "reads_on": []},
                   "early_stopping": {"off": {"patience": 0}, "on": {"patience": 3}}},
         "ranges": {"dropout_rate": [0.0, 0.9]}}


@pytest.fixture
def mymodel(tmp_path, monkeypatch):
    (tmp_path / "mymodel.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_the_config_keys_are_the_constructors_scalar_arguments_beside_the_harness_keys(mymodel):
    task = task_protocol.load(task_protocol.spec_of(TABLE))
    assert task.name == "Net" and task.version == 2 and task.lightning is not None
    fields = task.fields
    for key, tp, default in (("input_dim", "int", 6), ("hidden_dim", "int", 16), ("bidirectional", "bool", False),
                             ("dropout_rate", "float", 0.0), ("lr", "float", 1e-2), ("act", "str", "relu"),
                             ("noise", "float", 0.0), ("patience", "int", 0)):
        assert task_protocol.type_of(fields[key]) == tp and fields[key].default == default, key
    assert "init" not in fields  # init=None: no key, the constructor's default stands
    assert fields["batch_size"].default == 16  # a harness key the data takes: the constructor's default
    assert task.lightning.module_args[:3] == ("input_dim", "hidden_dim", "bidirectional")
    assert set(task.lightning.data_args) == {"batch_size", "noise", "seed"}
    with pytest.raises(ConfigError, match=r"dropout_rate=0.95: out of range, allowed 0.0 <= dropout_rate <= 0.9"):
        task.build({"dropout_rate": 0.95})
    assert task.spec.startswith("lightning:") and task_protocol.load(task.spec) is task
    other = task_protocol.load(task_protocol.spec_of({**TABLE, "data": "mymodel:Data"}))
    assert other.name == task.name and other.version == task.version  # the same name: the classes tell them apart
    assert other.identity(other.build({}), "fp", 1) != task.identity(task.build({}), "fp", 1)
    assert task.hook("patience")(task.build({"patience": 3})) == 3
    assert task.hook("patience")(task.build({})) is None


def test_the_python_form_is_the_same_task(mymodel):
    import mymodel as m

    task = lightning.lightning_task(m.Net, m.loaders, [task_protocol.Flag("bidirectional", {"bidirectional": False},
                                                                          {"bidirectional": True})], version=1)
    assert task.lightning.module == "mymodel:Net" and task.flag_names == ("bidirectional",)
    assert task is lightning.lightning_task("mymodel:Net", "mymodel:loaders",
                                            {"bidirectional": {"off": {"bidirectional": False},
                                                               "on": {"bidirectional": True}}}, version=1)


def _unpickle_in_a_new_process(blob: bytes, folder: str, q) -> None:
    import sys

    sys.path.insert(0, folder)
    cfg = pickle.loads(blob)
    from lstm_mnist import task as tp

    q.put((type(cfg).__name__, cfg.hidden_dim, tp.of(cfg).name))


@pytest.mark.subprocess
def test_a_config_pickles_into_a_fresh_process_by_its_spec(mymodel):
    task = task_protocol.load(task_protocol.spec_of(TABLE))
    cfg = task.build({"hidden_dim": 24})
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_unpickle_in_a_new_process, args=(pickle.dumps(cfg), str(mymodel), q))
    p.start()
    try:
        got = q.get(timeout=300)  # a fresh interpreter imports torch and Lightning: a minute on a loaded machine
    finally:
        p.join(30)
    assert got == ("NetConfig", 24, "Net")


@pytest.mark.parametrize("change, message", [
    ({"module": "mymodel"}, r"module = 'mymodel': give a LightningModule class"),
    ({"module": "mymodel:Nope"}, r"could not be imported \(AttributeError"),
    ({"module": "mymodel:NotAModule"}, r"is a type, not a LightningModule class"),
    ({"data": "mymodel:no_default"}, r"data argument 'width' has no default"),
    ({"flags": {}}, r"declare its flags as \[task.flags.NAME\] tables"),
    ({"flags": {"x": {"on": {"act": "tanh"}}}}, r"flag 'x': give off = "),
    ({"flags": {"x": {"off": {"act": "relu"}, "on": {"act": "tanh"}, "sides": 2}}}, r"flag 'x': unknown key 'sides'"),
    ({"flags": {"x": {"off": {"colour": 1}, "on": {"colour": 2}}}}, r"flag 'x' off names 'colour', which its config"),
    ({"ranges": {"colour": [0, 1]}}, r"ranges names 'colour', which neither constructor takes"),
    ({"epochs": 3}, r"unknown key 'epochs'; a Lightning task's keys are: module"),
])
def test_a_bad_task_table_is_one_line(mymodel, change, message):
    with pytest.raises(ConfigError, match=message) as err:
        task_protocol.load(task_protocol.spec_of({**TABLE, **change}))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- training: the protocol around the user's code
def test_a_lightning_task_trains_as_written_inside_the_protocol(mymodel):
    from lstm_mnist.training import train

    task = task_protocol.load(task_protocol.spec_of(TABLE))
    cfg = task.build({"max_epochs": 4, "num_threads": 1, "device": "cpu"})
    heard = []
    result = train.fit(cfg, on_epoch=lambda e, r: heard.append((e, r)))
    assert [e for e, _ in heard] == [0, 1, 2, 3] and len(result.history) == 4
    record = heard[0][1]
    assert {"train_loss", "val_loss", "val_f1", "val_acc", "lr", "my_train_loss"} <= set(record), record
    assert set(result.test) == {"test_loss", "test_f1", "test_acc"} and 0 <= result.best_epoch < 4
    assert sum(map(sum, result.confusion)) == 15  # the whole test split, once
    again = train.fit(cfg)
    assert again.test == result.test and again.weights == result.weights  # a run is reproducible by its seed


# ---------------------------------------------------------------- through the harness: grid, report, evaluate, tune
GRID = '''experiment = "lit"
designs = ["leave_one_out"]
seeds = [0, 1]
effect_of_interest = 0.05

[task]
module = "mymodel:Net"
data = "mymodel:loaders"
classes = 3
version = 1
[task.flags.dropout]
off = { dropout_rate = 0.0 }
on = { dropout_rate = 0.3 }
[task.flags.width]
off = { hidden_dim = 8 }
on = { hidden_dim = 16 }
[task.flags.early_stopping]
off = { patience = 0 }
on = { patience = 2 }

[budget]
max_epochs = 3
num_threads = 1
'''


@pytest.mark.subprocess
def test_a_lightning_task_through_a_grid_its_report_evaluate_and_tune(project, mymodel, capsys):
    from .conftest import cli

    assert mymodel == project  # the module sits in the project folder: its workers import it from there
    (project / "experiments" / "lit.toml").write_text(GRID)
    code, out, err = cli(capsys, "ablate", "experiments/lit.toml", "--workers", "2")
    assert code == 0, out[-2000:] + err
    assert "8/8 cells FINISHED" in out or "8 cells" in out, out[-1500:]
    code, out, err = cli(capsys, "ablate", "experiments/lit.toml", "--dry-run")
    assert code == 0 and "8 cells: 8 done" in out, out + err
    code, out, err = cli(capsys, "report", "--grid", "lit", "--experiment", "lit")
    assert code == 0, err
    assert "dropout" in out and "width" in out, out[-2000:]
    import mlflow

    c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    runs = c.search_runs([c.get_experiment_by_name("lit").experiment_id], "tags.arm = 'full'")
    run = runs[0]
    assert run.data.tags["task"] == "Net" and run.data.tags["task_spec"].startswith("lightning:")
    assert "my_train_loss" in run.data.metrics  # what the module logs itself, recorded beside the harness's
    code, out, err = cli(capsys, "evaluate", run.info.run_id)
    assert code == 0 and "agree, exact" in out, out + err
    (project / "studies").mkdir(exist_ok=True)
    table = GRID.split("[task]", 1)[1].split("[budget]", 1)[0]
    (project / "studies" / "lit.toml").write_text(
        'study_name = "lit"\nexperiment = "lit-tune"\n[fixed]\nmax_epochs = 2\nnum_threads = 1\n'
        f'[space]\nlr = {{type = "float", low = 1e-3, high = 1e-1, log = true}}\n[task]{table}')
    code, out, err = cli(capsys, "tune", "studies/lit.toml", "--trials", "2")
    assert code == 0, out[-2000:] + err
    from lstm_mnist import api

    tables = api.report("lit", "lit")  # the Python API reads the same runs
    assert {"arms", "comparisons"} <= set(tables) and len(tables["runs"]) == 8, {k: len(v) for k, v in tables.items()}
    code, out, err = cli(capsys, "ablate", "experiments/lit.toml", "--until-decided", "--max-seeds", "3")
    assert code == 0 and re.search(r"look \d+/\d+ at \d+ seeds", out), out[-2000:] + err
    tuned = GRID.replace('seeds = [0, 1]', 'flags = ["dropout"]\nseeds = [0]\ntune_seed = 100')
    (project / "experiments" / "littuned.toml").write_text(
        tuned + '[tune]\ntrials = 2\nsampler_startup_trials = 1\npruner = "none"\n[tune.space]\n'
        'lr = {type = "float", low = 1e-3, high = 1e-1, log = true}\n')
    code, out, err = cli(capsys, "ablate", "experiments/littuned.toml", "--workers", "2")
    assert code == 0, out[-2000:] + err
    code, out, err = cli(capsys, "report", "--grid", "littuned", "--experiment", "lit")
    assert code == 0 and "tuned" in out.lower(), out[-2000:] + err


@pytest.mark.parametrize("change, message", [
    ({"val_shuffle": True}, "its validation loader gave another first batch the second time (shuffled or augmented)"),
    ({"val_noise": 0.5}, "its validation loader gave another first batch the second time (shuffled or augmented)"),
    ({"dict_batches": True}, "its validation loader: a batch is a dict; the harness scores batches of (inputs, "),
    ({"module": "mymodel:TwoOutputs"}, "the module's output for a batch of 8 is tuple, not class logits (8, 3)"),
    ({"classes": 4}, "the module gives 3 logits per input, the task says classes = 4"),
])
def test_a_data_module_and_the_protocols_one_line_mistakes(mymodel, change, message):
    from lstm_mnist.training import train

    table = {**TABLE, "data": "mymodel:Data", **{k: v for k, v in change.items() if k in ("module", "classes")}}
    task = task_protocol.load(task_protocol.spec_of(table))
    cfg = task.build({"max_epochs": 2, "num_threads": 1, "device": "cpu",
                      **{k: v for k, v in change.items() if k not in ("module", "classes")}})
    with pytest.raises(ConfigError) as err:
        train.fit(cfg)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_data_module_trains_and_its_result_is_the_loaders_functions(mymodel):
    from lstm_mnist.training import train

    base = {"max_epochs": 2, "num_threads": 1, "device": "cpu"}
    by_module = train.fit(task_protocol.load(task_protocol.spec_of({**TABLE, "data": "mymodel:Data"})).build(base))
    by_function = train.fit(task_protocol.load(task_protocol.spec_of(TABLE)).build(base))
    assert by_module.test == by_function.test and by_module.weights == by_function.weights


def test_bench_and_gpu_check_say_in_one_line_that_they_time_in_memory_batches(mymodel):
    task = task_protocol.load(task_protocol.spec_of(TABLE))
    with pytest.raises(ConfigError, match="bench times a task's model on in-memory batches; task 'Net' is a "
                                          "LightningModule on its own loaders"):
        task.require_tensors("bench")
    task_protocol.builtin().require_tensors("bench")  # the others: nothing to say
