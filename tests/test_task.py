"""The task protocol (lstm_mnist/task.py): the built-in task's description, finding a task by name, and a task
that describes itself wrongly refused in one line."""
from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest

from lstm_mnist import task
from lstm_mnist.builtin import config
from lstm_mnist.errors import ConfigError


def test_the_builtin_task_describes_the_lstm_config_as_the_grids_use_it():
    t = task.load("lstm_mnist")
    assert t is config.TASK and t.name == "lstm_mnist" and t.config is config.Config
    assert t.flag_names == ("bidirectional", "dropout", "width", "early_stopping", "augmentation", "adamw", "readout")
    assert (t.flag("readout").side(True) == {"readout": "final_states"}
            and t.flag("adamw").side(False) == {"adamw": False})
    assert t.read_only_when == {
        "sgd_lr": ("adamw", False), "adamw_lr": ("adamw", True), "weight_decay": ("adamw", True),
        "plateau_factor": ("adamw", True), "plateau_patience": ("adamw", True), "dropout_rate": ("dropout", True),
        "rotation_deg": ("augmentation", True), "affine_deg": ("augmentation", True),
        "translate": ("augmentation", True), "patience": ("early_stopping", True)}
    assert t.reads({"adamw": True}, "weight_decay") and not t.reads({}, "weight_decay") and t.reads({}, "sgd_lr")
    assert t.reads({}, "batch_size") and t.reads({"adamw": True}, "batch_size")
    assert t.why_never_searched("seed") == "seeds are replicates, never tuned"
    assert t.why_never_searched("dropout") == task.FLAG_REASON
    assert t.why_never_searched("readout").startswith("readout is a factor")
    assert t.why_never_searched("num_threads").startswith("it says where or how")
    assert t.why_never_searched("hidden_on") is None  # `tune` may search a width ...
    assert t.why_never_searched_in_ablation("hidden_on") == "it defines what the width flag compares"  # ... no arm
    assert t.why_never_searched_in_ablation("sgd_lr") is None


@dataclass(frozen=True)
class Small(task.RunKeys):
    gru: bool = False
    smoothing: float = task.field(0.1, lo=0.0, hi=1.0, hi_open=True)
    lr: float = 0.01


def _task(**kw):
    args = dict(name="small", version=1, config=Small,
                flags=(task.Flag("gru", {"gru": False}, {"gru": True}),), never_searched={},
                data="my_data:splits", model="my_model:build")
    return task.Task(**{**args, **kw})


def test_a_task_of_ones_own_is_found_by_its_module_path(tmp_path, monkeypatch):
    (tmp_path / "my_task.py").write_text(
        "from dataclasses import dataclass\nfrom lstm_mnist.task import Flag, RunKeys, Task, field\n"
        "@dataclass(frozen=True)\nclass C(RunKeys):\n    ln: bool = False\n"
        "    eps: float = field(1e-5, lo=0.0, lo_open=True)\n"
        "task = Task('mine', 3, C, (Flag('ln', {'ln': False}, {'ln': True}, reads_on=('eps',)),), "
        "data=lambda cfg, device: None, model=lambda cfg: None)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    t = task.load("my_task:task")
    assert (t.name, t.version, t.flag_names) == ("mine", 3, ("ln",))
    assert t.fields["eps"].metadata["lo_open"] and not t.reads({}, "eps") and t.reads({"ln": True}, "eps")
    sys.modules.pop("my_task", None)


@pytest.mark.parametrize("spec, files, message", [
    ("my_task", {}, "write it as package.module:name"),
    ("no_such_module_here:task", {}, "module 'no_such_module_here' does not import (ModuleNotFoundError"),
    ("broken_task:task", {"broken_task.py": "def f(:\n"}, "module 'broken_task' does not import (SyntaxError"),
    ("raising_task:task", {"raising_task.py": "raise RuntimeError('needs a GPU')\n"},
     "does not import (RuntimeError: needs a GPU); run from the folder that holds it"),
    ("plain_task:tsk", {"plain_task.py": "task = 1\n"}, "module 'plain_task' has no 'tsk'; name the Task object"),
    ("plain_task2:task", {"plain_task2.py": "task = {'flags': []}\n"}, "plain_task2.task is a dict, not a task"),
])
def test_a_task_name_that_does_not_lead_to_a_task_is_one_line(tmp_path, monkeypatch, spec, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as e:
        task.load(spec)
    assert message in str(e.value) and len(str(e.value).splitlines()) == 1, e.value
    for name in files:
        sys.modules.pop(name[:-3], None)


@pytest.mark.parametrize("kw, message", [
    (dict(flags=(task.Flag("gru", {"cell": False}, {"cell": True}),)),
     "flag 'gru' off names 'cell', which its config does not define"),
    (dict(flags=(task.Flag("gru", {"gru": False}, {"gru": True}, reads_on=("dropout",)),)),
     "flag 'gru' reads_on names 'dropout', which its config does not define"),
    (dict(flags=(task.Flag("gru", {"gru": False}, {"gru": False}),)), "needs the same keys on both sides"),
    (dict(flags=(task.Flag("gru", {"gru": False}, {"gru": True}),) * 2), "flag 'gru' is given twice"),
    (dict(flags=(task.Flag("gru", {"gru": False}, {"gru": True}, reads_on=("lr",)),
                 task.Flag("ls", {"smoothing": 0.0}, {"smoothing": 0.1}, reads_off=("lr",)))),
     "'lr' is read by one side of both 'gru' and 'ls'"),
    (dict(config=dict), "config must be a frozen dataclass"),
    (dict(version="1"), "version='1': give an integer >= 0"),
    (dict(never_searched={"split": "the protocol"}), "'split' is not a key of its config"),
])
def test_a_task_that_describes_itself_wrongly_is_one_line(kw, message):
    with pytest.raises(ConfigError) as e:
        _task(**kw)
    assert message in str(e.value) and len(str(e.value).splitlines()) == 1, e.value


def test_a_flag_of_more_than_one_key_and_a_non_boolean_flag():
    t = _task(flags=(task.Flag("gru", {"gru": False}, {"gru": True}),
                     task.Flag("ls", {"smoothing": 0.0}, {"smoothing": 0.1})))
    assert t.flag("ls").keys == ("smoothing",) and t.why_never_searched("smoothing") == task.FLAG_REASON
    assert t.why_never_searched("lr") is None
    with pytest.raises(ConfigError, match="'dropout' is not a flag of task 'small': its flags are gru, ls"):
        t.flag("dropout")


def test_a_tasks_config_is_built_and_checked_as_the_builtin_one_is():
    t = _task(flags=(task.Flag("gru", {"gru": False}, {"gru": True}),
                     task.Flag("ls", {"smoothing": 0.0}, {"smoothing": 0.1})))
    cfg = t.build({"lr": 1, **t.parse_overrides(["gru=on", "seed=3"])})
    assert (cfg.lr, cfg.gru, cfg.seed) == (1.0, True, 3) and isinstance(cfg.lr, float)
    assert t.values({"ls"}, ()) == {"gru": False, "smoothing": 0.1} and t.on_flags({"gru": "True"}) == {"gru"}
    for values, message in [({"smoothing": 1.0}, "smoothing=1.0: out of range, allowed 0.0 <= smoothing < 1.0"),
                            ({"gru": "yes"}, "gru='yes': expected true or false"),
                            ({"depth": 2}, "unknown config key 'depth': known keys are seed, max_epochs, batch_size, "
                                           "eval_batch_size, experiment, device, num_threads, log_model, precision, "
                                           "gru, smoothing, lr")]:
        with pytest.raises(ConfigError) as e:
            t.build(values, "grid.toml")
        assert str(e.value) == f"grid.toml: {message}", e.value
    with pytest.raises(ConfigError, match="lr=fast: expected a number"):
        t.parse_value("lr", "fast")


def test_a_config_key_of_another_type_is_refused_when_the_task_is_made():
    @dataclass(frozen=True)
    class Listy:
        gru: bool = False
        sizes: tuple = (1, 2)

    with pytest.raises(ConfigError, match="config key 'sizes' is a tuple; a key is a bool, int, float or str"):
        _task(config=Listy)
    with pytest.raises(ConfigError, match="default_flags names 'ln', which is not one of its flags"):
        _task(default_flags=("ln",))
    with pytest.raises(ConfigError, match="shape_flags names 'depth', which is not one of its flags"):
        _task(shape_flags=("depth",))


def test_another_tasks_name_and_version_are_part_of_its_runs_identity():
    t = _task()
    cfg = t.build({})
    assert t.identity(cfg, "fp", 1) != _task(version=2).identity(cfg, "fp", 1)
    assert t.identity(cfg, "fp", 1) != _task(name="other").identity(cfg, "fp", 1)
    assert t.identity(cfg, "fp", 1) != t.identity(cfg, "fp2", 1) != t.identity(cfg, "fp", 0)
    builtin = config.Config()  # the built-in task's are not: its identities are those pinned before tasks existed
    assert config.TASK.identity(builtin, "0123456789abcdef", 1) == builtin.identity("0123456789abcdef")
