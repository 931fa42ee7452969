"""A cell that outlives its process: checkpoints every epoch, an exact resume (the same weights, history and
test metrics as a run never stopped), in the run it belongs to, and the preemption signals."""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
import signal
import time
from pathlib import Path

import lightning as L
import mlflow
import pytest
import torch
from torch import nn

from lstm_mnist import task as task_protocol
from lstm_mnist.builtin import config
from lstm_mnist.task import Flag, RunKeys, Splits, Task, field
from lstm_mnist.training import checkpoint as ckpt
from lstm_mnist.training import outcome, train

from .chaos_tools import Cli, record
from .conftest import TINY_BUDGET

TIMING = ("epoch_time_s", "train_samples_per_s")  # wall-clock: no two runs share them
EPOCHS = 5


# ---------------------------------------------------------------- a task written here: dropout, noise, a scheduler
@dataclass(frozen=True)
class NoisyConfig(RunKeys):
    """A task whose every epoch draws random numbers three ways: the batches' order, its prepare (noise) and
    dropout; its optimizer steps a scheduler on val_loss; early stopping may end it."""
    drop: bool = True
    lr: float = field(0.05, lo=0.0, hi=1.0, lo_open=True)
    max_epochs: int = EPOCHS
    batch_size: int = 16
    num_threads: int = 1
    experiment: str = "noisy"


def _make(cfg, device):
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 3, (180,), generator=g)
    x = torch.rand(180, 6, generator=g) * 0.5
    x[torch.arange(180), y] += 0.6
    x, y = x.to(device), y.to(device)
    return Splits(x[60:], y[60:], x[30:60], y[30:60], x[:30], y[:30], "noisy-data")


def _noise(cfg, x, train, generator):
    return x + 0.3 * torch.randn(x.shape, generator=generator, device=x.device) if train else x


def _optimizer(cfg, params):
    opt = torch.optim.Adam(params, lr=cfg.lr)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=0.5, patience=0), "monitor": "val_loss"}}


NOISY = Task("noisy", 1, NoisyConfig, (Flag("drop", {"drop": False}, {"drop": True}),),
             data=_make, model=lambda cfg: nn.Sequential(nn.Linear(6, 16), nn.ReLU(),
                                                        nn.Dropout(0.5 if cfg.drop else 0.0), nn.Linear(16, 3)),
             prepare=_noise, optimizer=_optimizer, patience=lambda cfg: 3, classes=3)


class LitNoisy(L.LightningModule):
    """A LightningModule as a user writes it: dropout, its own loss and log, AdamW with a plateau schedule on
    val_loss (the harness's); trained on loaders whose training set adds noise from torch's generator."""

    def __init__(self, drop: float = 0.5, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(drop), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("my_loss", loss)
        return loss

    def on_train_epoch_end(self):  # what a resumed trainer says of itself: the run's epoch and step, not 0
        self.log("seen_epoch", float(self.current_epoch))
        self.log("seen_step", float(self.global_step))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss"}}


class _Noisy(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + 0.3 * torch.randn(self.x[i].shape), self.y[i]


def noisy_loaders(batch_size: int = 16, workers: int = 0):
    s = _make(None, "cpu")
    return (torch.utils.data.DataLoader(_Noisy(s.train_x, s.train_y), batch_size=batch_size, shuffle=True,
                                        num_workers=workers),
            torch.utils.data.DataLoader(torch.utils.data.TensorDataset(s.val_x, s.val_y), batch_size=64),
            torch.utils.data.DataLoader(torch.utils.data.TensorDataset(s.test_x, s.test_y), batch_size=64))


LIGHTNING = {"module": "tests.test_resume:LitNoisy", "data": "tests.test_resume:noisy_loaders", "classes": 3,
             "flags": {"drop": {"off": {"drop": 0.0}, "on": {"drop": 0.5}}}}


def _configs(tiny_data) -> dict:
    builtin = config.TASK.build({"data_dir": str(tiny_data), "max_epochs": EPOCHS, "train_samples": 128,
                                 "batch_size": 32, "eval_batch_size": 256, "hidden_on": 16, "hidden_off": 16,
                                 "layers_on": 1, "num_threads": 1, "bidirectional": True, "dropout": True,
                                 "augmentation": True, "adamw": True, "early_stopping": True, "patience": 2,
                                 "plateau_patience": 0})
    lightning = task_protocol.load(task_protocol.spec_of(LIGHTNING)).build({"max_epochs": EPOCHS, "patience": 3,
                                                                              "num_threads": 1, "device": "cpu"})
    return {"built-in": builtin, "a task of one's own": NOISY.build({}), "a Lightning task": lightning,
            # its training set's noise drawn in two DataLoader worker processes, seeded from torch's generator
            "a Lightning task, loader workers": config.rebuilt(lightning, workers=2)}


def _same(a: outcome.Result, b: outcome.Result) -> bool:
    strip = [[{k: v for k, v in r.items() if k not in TIMING} for r in x.history] for x in (a, b)]
    return a.test == b.test and strip[0] == strip[1] and a.weights == b.weights and a.best_epoch == b.best_epoch


class Stop(Exception):
    """The process ends here (as a kill would): nothing after this point runs."""


@pytest.mark.parametrize("which", ["built-in", "a task of one's own", "a Lightning task",
                                   pytest.param("a Lightning task, loader workers", marks=pytest.mark.subprocess)])
def test_a_run_stopped_anywhere_goes_on_from_its_checkpoint_to_the_same_result(which, tiny_data, tmp_path,
                                                                                 monkeypatch):
    """Stopped after each epoch's report (its checkpoint not yet written) and in the middle of writing each
    checkpoint: 2 x EPOCHS stop points, every one ends with the uninterrupted run's weights, history and test."""
    cfg = _configs(tiny_data)[which]
    reference = train.fit(cfg)
    if "Lightning" in which:  # the module's own epoch-end logs, in their epoch's record
        assert [r["seen_epoch"] for r in reference.history] == list(range(len(reference.history)))
    atomic = ckpt._atomic
    outcomes = []
    for kind in ("after an epoch's report", "halfway through writing a checkpoint"):
        for at in range(EPOCHS):
            slot = ckpt.Slot(tmp_path / f"{kind[:5]}-{at}.ckpt", "key")
            writes = []

            def torn(path, data, at=at, writes=writes):
                if path.suffix == ".ckpt":
                    writes.append(path)
                    if len(writes) == at + 1:  # the checkpoint of epoch `at`: half its bytes, then the end
                        path.with_name(f".{path.name}.torn.tmp").write_bytes(data[: len(data) // 2])
                        raise Stop
                atomic(path, data)

            def report(epoch, record, at=at):
                if epoch == at:
                    raise Stop
            monkeypatch.setattr(ckpt, "_atomic", torn if kind.startswith("half") else atomic)
            try:
                train.fit(cfg, slot=slot, on_epoch=None if kind.startswith("half") else report)
            except Stop:
                pass
            monkeypatch.setattr(ckpt, "_atomic", atomic)
            heard = []
            again = train.fit(cfg, slot=slot, on_resume=lambda e, h, why: heard.append((e, len(h), why)))
            (epoch, held, why), = heard
            assert why == "" and held == (0 if epoch is None else epoch + 1)
            outcomes.append((kind, at, epoch, _same(again, reference)))
    assert all(same for *_, same in outcomes), outcomes
    # from the start (a stop before the first checkpoint) and from checkpoints
    assert len(outcomes) >= 10 and {e for _, _, e, _ in outcomes} >= {None, 0, 1}


def test_a_damaged_or_foreign_checkpoint_is_one_line_and_the_run_starts_from_epoch_0(tiny_data, tmp_path):
    cfg = _configs(tiny_data)["a task of one's own"]
    reference = train.fit(cfg)
    slot = ckpt.Slot(tmp_path / "c.ckpt", "mine")
    train.fit(cfg, slot=slot)
    assert ckpt.peek(slot)["epoch"] == len(reference.history) - 1  # the last epoch, written when training ended
    cases = {"damaged": lambda: slot.path.write_bytes(slot.path.read_bytes()[:100]),
             "foreign": lambda: ckpt.write(ckpt.Slot(slot.path, "theirs"), {"epoch": 0}),
             "older": lambda: slot.path.write_bytes(__import__("pickle").dumps({"format": 0}))}
    for name, spoil in cases.items():
        spoil()
        heard = []
        again = train.fit(cfg, slot=slot, on_resume=lambda e, h, why: heard.append((e, why)))
        (epoch, why), = heard
        assert epoch is None and "training from epoch 0" in why and "\n" not in why, (name, why)
        assert _same(again, reference), name


# ---------------------------------------------------------------- a grid: kill -9, SIGTERM, SIGUSR1
GRID = f"""experiment = "resume"
designs = ["leave_one_out"]
flags = ["dropout", "augmentation"]
full = ["dropout", "augmentation", "adamw", "early_stopping"]
seeds = [0]
[budget]
max_epochs = 6
patience = 2
train_samples = 256
{TINY_BUDGET}"""


def _cells(project: Path) -> dict:
    """arm -> [(status, reason, resumes, resumed_from, test metrics, every logged epoch's metrics)], from the store."""
    c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    exp = c.get_experiment_by_name("resume")
    out = {}
    for r in c.search_runs([exp.experiment_id], "tags.arm != ''"):
        history = {k: [(m.step, m.value) for m in sorted(c.get_metric_history(r.info.run_id, k),
                                                         key=lambda m: (m.step, m.timestamp))]
                   for k in ("train_loss", "val_loss", "val_f1", "lr")}
        out.setdefault(r.data.tags["arm"], []).append({
            "status": r.info.status, "error": r.data.tags.get("error", ""), "resumes": r.data.tags.get("resumes"),
            "resumed_from": r.data.tags.get("resumed_from"), "history": history,
            "test": {k: r.data.metrics.get(k) for k in ("test_f1", "test_loss", "best_epoch", "epochs_trained")}})
    return out


def _stop_when_checkpointed(cli: Cli, project: Path, epoch: int, how) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and cli.running():
        sides = [json.loads(f.read_text()) for f in (project / "mlruns" / "checkpoints").glob("*.json")]
        if any(s["epoch"] >= epoch for s in sides):
            how()
            return
        time.sleep(0.05)
    pytest.fail(f"no checkpoint reached epoch {epoch}: {cli.stdout[-2000:]}")


@pytest.mark.chaos
@pytest.mark.subprocess
def test_a_grid_killed_or_preempted_mid_cell_resumes_each_cell_in_its_run_with_the_same_result(project,
                                                                                              _store_template):
    """The same grid three times: never stopped; kill -9 of the whole command at an epoch's checkpoint (one
    worker, then rerun); SIGTERM to the command (two workers: exit 143, runs KILLED with the reason, checkpoints
    kept, then rerun); SIGUSR1 likewise (exit 138). Each ends with the same results: one FINISHED run per cell
    (a stopped cell's, continued), every epoch logged once, the same metrics; no checkpoint left."""
    (project / "experiments" / "resume.toml").write_text(GRID)
    ref = Cli("ablate", "experiments/resume.toml", cwd=project)
    assert ref.finish() == 0, ref.stderr
    expected = _cells(project)
    for n, (workers, how, code) in enumerate((("1", "kill", -signal.SIGKILL), ("2", signal.SIGTERM, 143),
                                              ("2", signal.SIGUSR1, 138))):
        work = project.parent / f"stopped-{n}"  # a store of its own (MLflow keeps one engine per database path)
        shutil.copytree(project / "experiments", work / "experiments")
        (work / "mlruns").mkdir()
        shutil.copy(_store_template, work / "mlruns" / "mlflow.db")
        store = work / "mlruns"
        cli = Cli("ablate", "experiments/resume.toml", "--workers", workers, cwd=work)
        _stop_when_checkpointed(cli, work, 2, cli.kill if how == "kill" else lambda: os.kill(cli.pid, how))
        assert cli.finish() == code, cli.stderr
        assert sorted((store / "checkpoints").glob("*.ckpt")), "the stop left no checkpoint"
        if how != "kill":
            assert f"stopped by {signal.Signals(how).name}" in cli.stderr
            stopped = [r for runs in _cells(work).values() for r in runs if r["status"] == "KILLED"]
            assert stopped and all(f"preempted ({signal.Signals(how).name})" in r["error"] for r in stopped)
        again = Cli("ablate", "experiments/resume.toml", "--workers", workers, cwd=work)
        assert again.finish() == 0, again.stderr
        assert "resumed from its checkpoint" in again.stdout
        got = _cells(work)
        resumed = 0
        for arm, runs in expected.items():
            # one FINISHED run per cell: a resumed cell's is the run it was stopped in (a cell stopped before its
            # first checkpoint left a KILLED run and trained in a fresh one)
            (mine,) = [r for r in got[arm] if r["status"] == "FINISHED"]
            assert all(r["status"] == "KILLED" for r in got[arm] if r is not mine), (how, arm, got[arm])
            assert mine["test"] == runs[0]["test"], (how, arm)
            assert mine["history"] == runs[0]["history"], (how, arm)  # every epoch logged once, the same values
            resumed += mine["resumes"] == "1"
        assert resumed >= 1 and not list((store / "checkpoints").glob("*")), how


@pytest.mark.chaos
@pytest.mark.subprocess
def test_the_slurm_recipe_requeues_on_sigusr1_and_the_requeued_task_resumes(project):
    """examples/slurm/ablate.sbatch as SLURM runs it (its environment; `scontrol` a stand-in that records the
    call): SIGUSR1 to the batch script (what `--signal=B:USR1@120` sends) stops the grid with its checkpoints and
    requeues the task; the requeued task (the script again) resumes and ends as the grid never stopped."""
    import subprocess

    from .conftest import REPO

    (project / "experiments" / "resume.toml").write_text(GRID)
    bin_dir = project / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {project / 'scontrol.log'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PY": sys.executable, "SLURM_JOB_ID": "78",
           "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "1",
           "SLURM_CPUS_PER_TASK": "2", "SLURM_SUBMIT_DIR": str(project), "PYTHONPATH": str(REPO)}
    script = [str(REPO / "examples" / "slurm" / "ablate.sbatch"), "experiments/resume.toml"]
    task = subprocess.Popen(script, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not any(json.loads(f.read_text())["epoch"] >= 2 for f in (project / "mlruns" / "checkpoints").glob("*.json")):
        assert task.poll() is None and time.monotonic() < deadline, task.stdout.read() if task.poll() else "slow"
        time.sleep(0.05)
    task.send_signal(signal.SIGUSR1)
    out, _ = task.communicate(timeout=120)
    assert task.returncode == 0, out
    assert (project / "scontrol.log").read_text().split() == ["requeue", "77_1"], out
    assert "stopped by SIGUSR1" in out and sorted((project / "mlruns" / "checkpoints").glob("*.ckpt")), out
    again = subprocess.run(script, cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "resumed from its checkpoint" in again.stdout, again.stdout + again.stderr
    cells = _cells(project)
    shown = {arm: [(r["status"], r["error"], r["resumes"]) for r in runs] for arm, runs in cells.items()}
    finished = [[r for r in runs if r["status"] == "FINISHED"] for runs in cells.values()]
    assert all(len(f) == 1 and not f[0]["error"] for f in finished), shown  # others: KILLED before a checkpoint
    assert sum(f[0]["resumes"] == "1" for f in finished) >= 1, shown
    assert not list((project / "mlruns" / "checkpoints").glob("*"))


# ---------------------------------------------------------------- what a kill costs, before checkpoints and after
QUICK = f"""experiment = "killcost"
designs = ["factorial"]
flags = ["bidirectional", "dropout", "width", "early_stopping", "augmentation", "adamw"]
factorial = ["bidirectional", "dropout", "width", "early_stopping", "augmentation", "adamw"]
runs_per_seed = 8
seeds = [0]
[budget]
max_epochs = 6
patience = 10
train_samples = 256
{TINY_BUDGET}"""


def _logged_epochs(store: Path) -> dict:
    """config_hash -> epochs its unfinished run logged (what a kill stopped), from the store."""
    c = mlflow.MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp = c.get_experiment_by_name("killcost")
    return {r.data.tags["config_hash"]: len(c.get_metric_history(r.info.run_id, "val_loss"))
            for r in c.search_runs([exp.experiment_id], "tags.arm != ''") if r.info.status != "FINISHED"}


@pytest.mark.chaos
@pytest.mark.subprocess
def test_what_a_kill_costs_on_a_grid_of_the_quick_design_before_checkpoints_and_after(project, _store_template):
    """The quick design's fraction (factorial, 8 runs of the six flags) killed -9 once a cell's checkpoint holds
    epoch 3, then run again twice from the same store: with its checkpoints (now) and without them (as before
    issue 37: a stopped cell trained again from epoch 0). Both end with the same results; the epochs trained
    again, and the rerun's wall time, are the cost."""
    (project / "experiments" / "quick.toml").write_text(QUICK)
    store = project / "mlruns"
    first = Cli("ablate", "experiments/quick.toml", "--workers", "2", cwd=project)
    _stop_when_checkpointed(first, project, 3, first.kill)
    assert first.finish() == -signal.SIGKILL, first.stderr
    stopped = _logged_epochs(store)
    assert stopped and max(stopped.values()) >= 4, stopped
    figures = {}
    for name, keep in (("before", False), ("after", True)):
        work = project.parent / f"killcost-{name}"  # a store of its own (MLflow keeps one engine per path)
        shutil.copytree(project / "experiments", work / "experiments")
        shutil.copytree(store, work / "mlruns", ignore=None if keep else shutil.ignore_patterns("checkpoints"))
        t0 = time.perf_counter()
        again = Cli("ablate", "experiments/quick.toml", "--workers", "2", cwd=work)
        assert again.finish() == 0, again.stderr
        seconds = time.perf_counter() - t0
        c = mlflow.MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db")
        runs = c.search_runs([c.get_experiment_by_name("killcost").experiment_id],
                             "tags.arm != '' and attributes.status = 'FINISHED'")
        done = {r.data.tags["config_hash"]: r for r in runs}
        # epochs the stopped cells had finished (logged) before the kill and the rerun trained again: those before
        # the epoch it went on from (resumed_from; 0 without a checkpoint). A kill between an epoch's log and its
        # checkpoint costs that one epoch.
        went_on = {h: int(done[h].data.tags.get("resumed_from", 0)) for h in stopped}
        lost = sum(max(0, n - went_on[h]) for h, n in stopped.items())
        trained = sum(int(done[h].data.metrics["epochs_trained"]) - went_on[h] for h in stopped)
        figures[name] = {"epochs_trained_again": lost, "epochs_the_rerun_trained": trained,
                         "rerun_s": round(seconds, 1),
                         "results": {h: (r.data.metrics["test_f1"], r.data.metrics["test_loss"])
                                     for h, r in done.items()}}
    record("a kill -9 mid-grid on the quick design: before checkpoints and after", cells=8,
           cells_stopped=len(stopped), epochs_logged_by_stopped_cells=sum(stopped.values()),
           **{f"{k}_{f}": v[f] for k, v in figures.items()
              for f in ("epochs_trained_again", "epochs_the_rerun_trained", "rerun_s")})
    assert figures["before"]["results"] == figures["after"]["results"] and len(figures["after"]["results"]) == 8
    assert figures["after"]["epochs_trained_again"] <= len(stopped), figures["after"]  # at most the one in flight
    assert figures["before"]["epochs_trained_again"] == sum(stopped.values()) >= 4, figures["before"]


@pytest.mark.chaos
@pytest.mark.subprocess
def test_a_tuned_grids_replicate_cell_killed_mid_training_goes_on_from_its_checkpoint(project):
    """A tuned grid killed -9 once a replicate cell's checkpoint holds epoch 1: the rerun finishes the searches it
    left, and the stopped replicate goes on in its run (resumes=1); every cell ends with one FINISHED run."""
    from .test_tuned import tuned_file

    text = tuned_file(project, budget=TINY_BUDGET + "train_samples = 256\n").read_text()
    (project / "experiments" / "tuned.toml").write_text(text.replace("max_epochs = 2", "max_epochs = 6"))
    first = Cli("ablate", "experiments/tuned.toml", "--workers", "2", cwd=project)
    _stop_when_checkpointed(first, project, 1, first.kill)
    assert first.finish() == -signal.SIGKILL, first.stderr
    again = Cli("ablate", "experiments/tuned.toml", "--workers", "2", cwd=project)
    assert again.finish() == 0, again.stderr[-3000:]
    assert "resumed from its checkpoint" in again.stdout, again.stdout[-3000:]
    c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    runs = c.search_runs([c.get_experiment_by_name("tuned").experiment_id], "tags.arm != ''")
    cells = [r for r in runs if r.data.tags.get("lstm_mnist.role") not in ("trial", "tuning")]
    finished = {}
    for r in cells:
        if r.info.status == "FINISHED":
            finished.setdefault(r.data.tags["config_hash"], []).append(r)
    assert all(len(v) == 1 for v in finished.values()) and len(finished) == 12, {k: len(v) for k, v in finished.items()}
    assert any(v[0].data.tags.get("resumes") == "1" for v in finished.values())
    assert not list((project / "mlruns" / "checkpoints").glob("*.ckpt"))
