"""A task of one's own (task.py's protocol), defined in a temporary folder as a user would: through `ablate` on
worker processes, a tuned grid and `report`, with nothing of the harness written for it; and its mistakes, each
one line. (The digits example, examples/digits/, runs the same path on real data: docs/your-model.md.)"""
from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from lstm_mnist import config, task as task_protocol

from .conftest import cli, run_cli

# Four classes of 4x4 "images": class c lights row c. Two flags: `wide` (hidden 4 -> 12) and `norm` (layer
# normalisation; its `eps` read only with it on). Data made by the task itself from its own seed: no files.
TASK = textwrap.dedent('''
    import hashlib
    from dataclasses import dataclass

    import torch
    from torch import nn

    from lstm_mnist.task import Flag, RunKeys, Splits, Task, field


    @dataclass(frozen=True)
    class RowsConfig(RunKeys):
        wide: bool = False
        norm: bool = False
        eps: float = field(1e-5, lo=0.0, lo_open=True)
        lr: float = field(0.05, lo=0.0, hi=1.0, lo_open=True)
        n: int = field(240, lo=40)
        max_epochs: int = 3
        batch_size: int = 16
        num_threads: int = 1
        experiment: str = "rows"


    def make(cfg, device):
        g = torch.Generator().manual_seed(7)
        y = torch.randint(0, 4, (cfg.n,), generator=g)
        x = torch.rand(cfg.n, 4, 4, generator=g) * 0.3
        x[torch.arange(cfg.n), y] += 1.0
        k = cfg.n // 5
        fp = hashlib.sha256(x.numpy().tobytes()).hexdigest()[:16]
        x, y = x.to(device), y.to(device)
        return Splits(x[2 * k:], y[2 * k:], x[k:2 * k], y[k:2 * k], x[:k], y[:k], fp)


    class Net(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            h = 12 if cfg.wide else 4
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, h),
                                      nn.LayerNorm(h, eps=cfg.eps) if cfg.norm else nn.Identity(), nn.ReLU())
            self.head = nn.Linear(h, 4)

        def forward(self, x):
            return self.head(self.body(x))


    task = Task("rows", 2, RowsConfig,
                (Flag("wide", {"wide": False}, {"wide": True}), Flag("norm", {"norm": False}, {"norm": True},
                                                                   reads_on=("eps",))),
                never_searched={"n": "the data set is part of the protocol"},
                data=make, model=Net, classes=4, fingerprint=lambda cfg: make(cfg, "cpu").fingerprint)
''')

GRID = '''task = "rows_task:task"
experiment = "rows-ablation"
seeds = [0, 1]
'''

TUNED = GRID.replace("rows-ablation", "rows-tuned") + '''tune_seed = 100

[tune]
trials = 2
sampler = "random"
pruner = "none"

[tune.space]
lr = {type = "float", low = 0.01, high = 0.2, log = true}
'''


@pytest.fixture
def rows(project, monkeypatch) -> Path:
    (project / "rows_task.py").write_text(TASK)
    (project / "rows.toml").write_text(GRID)
    (project / "rows-tuned.toml").write_text(TUNED)
    monkeypatch.syspath_prepend(str(project))
    yield project
    import sys
    sys.modules.pop("rows_task", None)


@pytest.mark.subprocess
def test_a_task_of_ones_own_runs_through_ablate_on_workers_a_tuned_grid_and_the_report(rows, capsys):
    env = {"PYTHONPATH": f"{rows}:{config.Path(__file__).resolve().parents[1]}"}
    proc = run_cli("ablate", "rows.toml", "--workers", "2", cwd=rows, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # two flags: full-norm is baseline+wide, so 4 arms (full, baseline, full-wide, full-norm) x 2 seeds
    assert "rows: 8 cells" in proc.stdout and "8/8 cells FINISHED" in proc.stdout, proc.stdout[-1500:]

    code, out, err = cli(capsys, "report", "--experiment", "rows-ablation")
    assert code == 0, err
    worth = (rows / "reports").glob("**/worth.csv")
    table = next(iter(worth)).read_text()
    assert {line.split(",")[1] for line in table.splitlines()[1:]} == {"wide", "norm"}, table
    runs_csv = next(iter((rows / "reports").glob("**/runs.csv"))).read_text()
    assert "readout" not in runs_csv.splitlines()[0] and "wide" in runs_csv.splitlines()[0]

    assert "Metric: `test_f1`" in (rows / "reports" / "rows" / "report.md").read_text()
    t = task_protocol.load("rows_task:task")  # a task that ranks by its test loss: the report's default follows
    object.__setattr__(t, "metric", "test_loss")
    code, out, err = cli(capsys, "report", "--experiment", "rows-ablation", "--out", "by-loss")
    object.__setattr__(t, "metric", "test_f1")
    assert code == 0 and "Metric: `test_loss`" in (rows / "by-loss" / "report.md").read_text(), err

    from lstm_mnist.tracking import query
    cells = [r for r in query.search("rows-ablation") if r.tags.get("lstm_mnist.role") != "grid"]
    assert len(cells) == 8 and all(r.status == "FINISHED" for r in cells)
    assert ({(r.tags["task"], r.tags["task_version"], r.tags["task_spec"]) for r in cells}
            == {("rows", "2", "rows_task:task")})
    assert all(float(r.metrics["test_f1"]) > 0.5 for r in cells)  # learnable: row c lights class c

    # the tuned grid: each arm's search of lr (read by every arm), then its replicates at its best value
    code, out, err = cli(capsys, "ablate", "rows-tuned.toml")
    assert code == 0, err[-2000:]
    code, out, err = cli(capsys, "report", "--experiment", "rows-tuned")
    assert code == 0, err
    tuned = [r for r in query.search("rows-tuned") if r.tags.get("variant") in ("tuned", "both")]
    assert len(tuned) == 8 and all(json.loads(r.tags["tuned_values"]).keys() == {"lr"} for r in tuned)

    # and a run of it re-verified from its logged weights, to the last digit
    code, out, err = cli(capsys, "evaluate", cells[0].run_id)
    assert code == 0 and "agree, exact" in out, out + err


STUDY = '''task = "rows_task:task"
study_name = "rows-study"
experiment = "rows-tune"
trials = 3
sampler = "random"
pruner = "none"

[fixed]
wide = true

[space]
lr = {type = "float", low = 0.01, high = 0.2, log = true}
'''


def test_a_study_of_ones_own_task_tunes_and_exports_a_runnable_experiment_file(rows, capsys):
    (rows / "studies" / "rows.toml").write_text(STUDY)
    code, out, err = cli(capsys, "tune", "studies/rows.toml")
    assert code == 0, err[-2000:]
    exported = rows / "experiments" / "best-rows-study.toml"
    text = exported.read_text()
    assert 'task = "rows_task:task"' in text and "wide = true" in text and "lr = " in text, text
    code, out, err = cli(capsys, "run", str(exported), "max_epochs=2")
    assert code == 0 and "run best-rows-study-s0 (task rows): wide" in out, out + err
    (rows / "studies" / "bad.toml").write_text(STUDY.replace("lr = {", "dropout_rate = {"))
    code, out, err = cli(capsys, "tune", "studies/bad.toml")
    assert code == 2 and "[space] dropout_rate: unknown config key" in err and err.count("\n") == 1, err


@pytest.mark.subprocess
def test_bench_and_gpu_check_measure_a_task_of_ones_own(rows):
    env = {"PYTHONPATH": f"{rows}:{config.Path(__file__).resolve().parents[1]}"}
    proc = run_cli("bench", "--task", "rows_task:task", "--batches", "3", "--warmup", "1", "--rounds", "1",
                   "--out", "bench.json", cwd=rows, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads((rows / "bench.json").read_text())
    assert figures["task"] == "rows" and set(figures["samples_per_s"]) == {"harness", "bare"}  # no MNIST dataloader
    assert all(v > 0 for v in figures["samples_per_s"].values())
    proc = run_cli("gpu-check", "--grid", "rows.toml", "--workers", "1,2", "--seconds", "0.5", "--out", "gc.json",
                   cwd=rows, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    gc = json.loads((rows / "gc.json").read_text())
    assert gc["task"] == "rows" and gc["grid"]["cells_from"] == "rows.toml" and gc["cpu_smoke"]
    assert [p["workers"] for p in gc["grid"]["curves"]["plain"]] == [1, 2]
    assert all(p["steps_per_s"] > 0 for p in gc["grid"]["curves"]["plain"]), gc["grid"]
    # 240 images: 144 train, 48 validation; batch 16 -> 9 steps an epoch
    assert (gc["full_model"]["epoch_steps"], gc["full_model"]["val_images"]) == (9, 48)
    assert list(gc["projections"]["plain"]) == ["rows.toml"] and gc["projections"]["plain"]["rows.toml"]["cells"] == 8


def test_a_grid_whose_flags_are_not_its_tasks_is_one_line(rows, capsys):
    (rows / "bad.toml").write_text(GRID + 'flags = ["wide", "dropout"]\n')
    code, out, err = cli(capsys, "ablate", "bad.toml", "--dry-run")
    assert code == 2 and err.count("\n") == 1, err
    assert "flags: unknown name 'dropout' (not a flag of task 'rows'); allowed are wide, norm" in err
    (rows / "bad2.toml").write_text(GRID + "[budget]\nhidden_on = 64\n")
    code, out, err = cli(capsys, "ablate", "bad2.toml", "--dry-run")
    assert code == 2 and "unknown config key 'hidden_on'" in err and err.count("\n") == 1, err
    (rows / "bad3.toml").write_text(GRID.replace("rows_task:task", "rows_task:nothing"))
    code, out, err = cli(capsys, "ablate", "bad3.toml", "--dry-run")
    assert code == 2 and "module 'rows_task' has no 'nothing'" in err and err.count("\n") == 1, err


def test_a_task_is_found_from_its_config_and_its_runtime_hooks_are_checked(rows):
    t = task_protocol.load("rows_task:task")
    cfg = t.build({"wide": True})
    assert task_protocol.of(cfg) is t and t.spec == "rows_task:task"
    assert config.identity(cfg, "fp") != config.identity(t.build({}), "fp")
    assert t.params(cfg)["wide"] is True and "task = \"rows_task:task\"" in config.to_toml(cfg).splitlines()[0]
    splits = t.load_data(cfg)
    assert splits.train_x.shape[1:] == (4, 4) and t.data_fingerprint(cfg) == splits.fingerprint
    with pytest.raises(config.ConfigError, match="data\\(\\) returned a tuple; return lstm_mnist.task.Splits"):
        task_protocol.Task("odd", 1, Other, (), data=lambda cfg, device: (1, 2), model=t.model).load_data(Other())
    for kw, message in [(dict(data=None), "give its data="), (dict(model=None), "give its model="),
                        (dict(optimizer=3), "optimizer=3: give a callable or \"module:function\""),
                        (dict(classes=1), "classes=1: give the number of classes"),
                        (dict(metric="val_f1"), "metric='val_f1': give one of test_f1, test_acc, test_loss")]:
        with pytest.raises(config.ConfigError) as e:
            task_protocol.Task("odd", 1, Other, (), **{"data": t.data, "model": t.model, **kw})
        assert message in str(e.value) and len(str(e.value).splitlines()) == 1, e.value
    with pytest.raises(config.ConfigError, match="lacks the harness's key 'seed'"):
        task_protocol.Task("bare", 1, Bare, (), data=t.data, model=t.model)
    assert task_protocol.of(cfg) is t


@dataclass(frozen=True)
class Other(task_protocol.RunKeys):
    pass


@dataclass(frozen=True)
class Bare:
    x: int = 0
