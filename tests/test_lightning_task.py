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


SPLITS, LAST = [], []  # what Split drew for validation; the weights Worsening ended each epoch with


class Split(L.LightningDataModule):
    """As a user writes one: prepare_data writes its file once, setup splits with random_split and no generator of
    its own (torch's global one draws it)."""

    def __init__(self, data_dir: str = "", batch_size: int = 16):
        super().__init__()
        self.data_dir, self.batch_size = data_dir, batch_size

    def prepare_data(self):
        import os

        if self.data_dir and not os.path.exists(os.path.join(self.data_dir, "prepared.txt")):
            with open(os.path.join(self.data_dir, "prepared.txt"), "w") as f:
                f.write("downloaded")

    def setup(self, stage):
        train, val, self.test = (dl.dataset for dl in loaders())
        if stage == "fit":
            self.train, self.val = torch.utils.data.random_split(torch.utils.data.ConcatDataset([train, val]),
                                                                 [60, 15])
            SPLITS.append(tuple(self.val.indices))

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.val, batch_size=64)

    def test_dataloader(self):
        return torch.utils.data.DataLoader(self.test, batch_size=64)


class Worsening(Net):
    """Good for two epochs, then its output layer's weights flipped: the last epoch's weights are the worst."""

    def on_train_epoch_start(self):
        if self.current_epoch == 2:
            with torch.no_grad():
                self.body[-1].weight.mul_(-3)

    def on_train_epoch_end(self):
        LAST.append({k: v.detach().clone() for k, v in self.state_dict().items()})


class Trimmed(Net):
    """Its inputs arrive with a seventh column that its own on_after_batch_transfer drops."""

    def on_after_batch_transfer(self, batch, dataloader_idx):
        x, y = batch
        return x[:, :6], y


def wide_loaders(batch_size: int = 16):
    return tuple(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.cat([dl.dataset.tensors[0], torch.ones(len(dl.dataset), 1)], 1), dl.dataset.tensors[1]),
        batch_size=batch_size) for dl in loaders())


def float_labels(batch_size: int = 16):
    return tuple(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        dl.dataset.tensors[0], dl.dataset.tensors[1].float()), batch_size=batch_size) for dl in loaders())


def no_validation(batch_size: int = 16):
    train, _, test = loaders(batch_size)
    return train, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 6),
                                                                             torch.zeros(0).long())), test


def persistent(batch_size: int = 16):
    train, val, test = loaders(batch_size)
    return (torch.utils.data.DataLoader(train.dataset, batch_size=batch_size, num_workers=1, persistent_workers=True),
            val, test)


class Moving(Data):
    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch


class ItsOwnPatience(Net):
    def __init__(self, patience: int = 5):
        super().__init__()


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
    with pytest.raises(ConfigError, match=r"batch_size=0: out of range"):  # the harness's limits, kept
        task.build({"batch_size": 0})
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
    ({"module": "mymodel:ItsOwnPatience"}, r"module argument 'patience' has the name of the harness's early stopping"),
    ({"classes": "ten"}, r"classes = 'ten': give an integer of at least 2"),
    ({"version": 1.5}, r"version = 1.5: give an integer of at least 0"),
    ({"ranges": [0, 1]}, r"ranges = \[0, 1\]: give a table"),
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


def test_the_test_split_is_scored_once_on_the_best_val_loss_weights_as_evaluate_scores_them(mymodel):
    import mymodel as m

    from lstm_mnist.training import lightning_fit, train

    task = task_protocol.load(task_protocol.spec_of({**TABLE, "module": "mymodel:Worsening", "data": "mymodel:Split"}))
    cfg = task.build({"max_epochs": 3, "num_threads": 1, "device": "cpu"})
    m.LAST.clear()
    result = train.fit(cfg)
    losses = [r["val_loss"] for r in result.history]
    assert losses[2] > min(losses[:2]) and result.best_epoch == losses.index(min(losses)) < 2, losses

    def scored(weights: dict) -> dict:
        module = task.lightning.module_of(cfg)
        module.load_state_dict(weights)
        return lightning_fit.evaluate(cfg, module)  # the DataModule's test loader, as fit made it

    assert scored(m.LAST[result.best_epoch]) == result.test  # the best epoch's weights, not the last's
    assert scored(m.LAST[-1])["test_loss"] > result.test["test_loss"]


def test_a_split_the_data_draws_is_the_same_in_every_arm_whatever_the_modules_size(mymodel):
    import mymodel as m

    from lstm_mnist.training import train

    task = task_protocol.load(task_protocol.spec_of({**TABLE, "data": "mymodel:Split"}))
    m.SPLITS.clear()
    for hidden in (8, 64):  # other parameter counts: other draws from torch's generator when the module is made
        train.fit(task.build({"max_epochs": 1, "num_threads": 1, "device": "cpu", "hidden_dim": hidden}))
    assert len(m.SPLITS) == 2 and m.SPLITS[0] == m.SPLITS[1]


def test_the_default_fingerprint_is_taken_after_prepare_data(mymodel, tmp_path):
    table = {**TABLE, "data": "mymodel:Split", "version": 7}
    task = task_protocol.load(task_protocol.spec_of(table))
    folder = tmp_path / "data"
    folder.mkdir()
    cfg = task.build({"data_dir": str(folder)})
    first = task.data_fingerprint(cfg)
    assert (folder / "prepared.txt").read_text() == "downloaded"  # prepared before the files were listed
    lightning._harness_fingerprint.cache_clear()
    assert task.data_fingerprint(cfg) == first


def test_batches_pass_through_the_modules_transfer_hooks_when_the_harness_scores_them(mymodel):
    from lstm_mnist.training import train

    table = {**TABLE, "module": "mymodel:Trimmed", "data": "mymodel:wide_loaders"}
    task = task_protocol.load(task_protocol.spec_of(table))
    result = train.fit(task.build({"max_epochs": 2, "num_threads": 1, "device": "cpu"}))
    assert sum(map(sum, result.confusion)) == 15 and len(result.history) == 2


@pytest.mark.parametrize("change, message", [
    ({"data": "mymodel:float_labels"}, "its labels are torch.float32; the harness scores integer class labels"),
    ({"data": "mymodel:no_validation"}, "its validation loader yields no batch; give it the split's data"),
    ({"data": "mymodel:persistent"}, "its training loader keeps persistent_workers, whose random state lives in"),
    ({"data": "mymodel:Moving"}, "Moving defines transfer_batch_to_device, which the harness does not run on a "
                                 "DataModule: define it on the LightningModule instead"),
])
def test_loaders_the_protocol_cannot_keep_are_one_line_before_training(mymodel, change, message):
    from lstm_mnist.training import train

    task = task_protocol.load(task_protocol.spec_of({**TABLE, **change}))
    with pytest.raises(ConfigError) as err:
        train.fit(task.build({"max_epochs": 1, "num_threads": 1, "device": "cpu"}))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_module_defined_in_main_is_one_line_naming_a_module_file(mymodel):
    import mymodel as m

    class Local(m.Net):
        pass

    Local.__module__, Local.__qualname__ = "__main__", "Local"
    with pytest.raises(ConfigError, match=r"Local is defined in __main__ \(a script or a notebook\): move it into a "
                                          "module file"):
        lightning.lightning_task(Local, m.loaders, {"d": {"off": {"dropout_rate": 0.0}, "on": {"dropout_rate": .1}}})
    task = lightning.lightning_task(m.Net, m.loaders, {"d": {"off": {"dropout_rate": 0.0}, "on": {"dropout_rate": .1}}},
                                    not_identity=["noise"])
    plain = lightning.lightning_task(m.Net, m.loaders, {"d": {"off": {"dropout_rate": 0.0}, "on": {"dropout_rate": 1}}})
    assert "noise" in task.not_identity and "noise" not in plain.not_identity


def test_bench_and_gpu_check_say_in_one_line_that_they_time_in_memory_batches(mymodel):
    task = task_protocol.load(task_protocol.spec_of(TABLE))
    with pytest.raises(ConfigError, match="bench times a task's model on in-memory batches; task 'Net' is a "
                                          "LightningModule on its own loaders"):
        task.require_tensors("bench")
    task_protocol.builtin().require_tensors("bench")  # the others: nothing to say


@pytest.mark.subprocess
def test_the_assignment_examples_grid_and_report_run_as_shipped_on_small_digits(project):
    """examples/assignment/ablation.toml as shipped, one seed and one epoch, on the tests' 600 small digits
    (LSTM_MNIST_DATA: its DataModule's mirror): every cell trains through the user's own classes, and the report
    names every flag."""
    from .conftest import REPO, run_cli

    text = (REPO / "examples" / "assignment" / "ablation.toml").read_text()
    text = text.replace("seeds = [0, 1]", "seeds = [0]").replace("max_epochs = 2", "max_epochs = 1")
    assert "seeds = [0]" in text and "max_epochs = 1" in text
    (project / "experiments" / "assignment.toml").write_text(text)
    proc = run_cli("ablate", "experiments/assignment.toml", "--workers", "2", cwd=project)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "7/7 cells FINISHED" in proc.stdout, proc.stdout[-2000:]
    assert (project / "data" / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()  # prepared from the mirror
    report = run_cli("report", "--grid", "assignment", "--experiment", "assignment-lightning", cwd=project)
    assert report.returncode == 0, report.stderr[-3000:]
    for flag in ("bidirectional", "dropout", "width", "early_stopping", "augmentation", "adamw"):
        assert flag in report.stdout, (flag, report.stdout[-2000:])


def test_prepare_data_runs_one_process_or_thread_at_a_time_for_the_same_data(tmp_path, monkeypatch):
    import threading
    import time

    import lightning as L

    spans = []

    class Slow(L.LightningDataModule):
        def prepare_data(self):
            t0 = time.monotonic()
            time.sleep(0.3)
            spans.append((t0, time.monotonic()))

    monkeypatch.setenv(lightning.PREPARE_LOCKS, str(tmp_path / "locks"))
    threads = [threading.Thread(target=lightning.prepare, args=(Slow(), "mymodel:Slow", {"data_dir": "d"}))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (a0, a1), (b0, b1) = sorted(spans)
    assert len(spans) == 2 and b0 >= a1  # the second began once the first had ended
