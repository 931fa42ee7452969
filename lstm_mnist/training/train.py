"""One training run of any task: its data, model and optimizer, the harness's callbacks, trainer, fit, and the test
on the best-val_loss weights (the protocol: the harness's, whatever the task).

Knows nothing of MLflow: `fit` returns a `Result`, and reports each epoch to an optional `on_epoch`
callable (the tracker logs it; an Optuna pruner may raise from it to stop the run).
"""
from __future__ import annotations

import time
from typing import Callable

import lightning as L
import torch

from . import batches, resume
from . import checkpoint as ckpt
from .. import task as task_protocol
from .devices import device_name, resolve_device
from .outcome import Diverged, EvalMetrics, Result, per_class_report, state_bytes
from .trainers import interruptible, make_trainer, quiet_lightning

OnEpoch = Callable[[int, dict], None]


class LitClassifier(L.LightningModule):
    """Thin: cross-entropy, the task's optimizer (and scheduler); eval metrics over whole splits; best weights."""

    def __init__(self, cfg, net: torch.nn.Module, task: task_protocol.Task | None = None):
        super().__init__()
        self.cfg, self.net = cfg, net
        self.task = task or task_protocol.of(cfg)
        self.loss = self.task.hook("loss")
        self.val_metrics = EvalMetrics(self.task.classes)
        self.test_metrics = EvalMetrics(self.task.classes, confusion=True)
        self.train_loss_sum, self.train_count = 0.0, 0
        self.last_val: dict = {}
        self.best_val_loss, self.best_epoch, self.best_state = float("inf"), -1, None
        self.epoch0 = 0  # the epochs a checkpoint already trained: this fit's epoch 0 is the run's epoch0

    @property
    def epoch(self) -> int:
        """The run's epoch (0-based), counting those trained before a resume."""
        return self.current_epoch + self.epoch0

    def forward(self, x):
        return self.net(x)

    def on_train_epoch_start(self):
        self.train_loss_sum, self.train_count = torch.zeros((), device=self.device), 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss(self.cfg, self.net(x).float(), y)  # float32 logits into the loss at any precision
        self.train_loss_sum += loss.detach() * len(y)
        self.train_count += len(y)
        if batch_idx % 50 == 49 and not torch.isfinite(self.train_loss_sum):  # one sync per 50 steps
            raise Diverged(f"training loss became {float(self.train_loss_sum)} at epoch {self.epoch}")
        return loss

    def validation_step(self, batch, batch_idx):
        self.val_metrics.update(self.net(batch[0]), batch[1])

    def on_validation_epoch_end(self):
        self.last_val = self.val_metrics.compute("val")
        if self.trainer.sanity_checking:
            return
        self.log("val_loss", self.last_val["val_loss"], prog_bar=False, logger=False)
        if self.last_val["val_loss"] < self.best_val_loss:  # NaN never compares smaller
            self.best_val_loss, self.best_epoch = self.last_val["val_loss"], self.epoch
            self.best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def test_step(self, batch, batch_idx):
        self.test_metrics.update(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return self.task.hook("optimizer")(self.cfg, self.parameters())


class _EpochReport(L.Callback):
    """Times each epoch, checks the losses are finite, and hands one record per epoch to `on_epoch`."""

    def __init__(self, on_epoch: OnEpoch | None, history: list | None = None):
        self.on_epoch, self.history = on_epoch, list(history or [])

    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = self.t_val = time.perf_counter()

    def on_validation_start(self, trainer, pl_module):
        self.t_val = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module: LitClassifier):
        now = time.perf_counter()
        train_loss = float(pl_module.train_loss_sum) / max(pl_module.train_count, 1)
        record = {"train_loss": train_loss, **pl_module.last_val, "epoch_time_s": now - self.t0,
                  "train_samples_per_s": pl_module.train_count / max(self.t_val - self.t0, 1e-9),
                  "lr": trainer.optimizers[0].param_groups[0]["lr"]}
        bad = [k for k in ("train_loss", "val_loss") if k in record and not torch.isfinite(torch.tensor(record[k]))]
        if bad:
            raise Diverged(f"{bad[0]} became {record[bad[0]]} at epoch {pl_module.epoch}")
        self.history.append(record)
        if self.on_epoch:
            self.on_epoch(pl_module.epoch, record)


def fit(cfg, dataset: task_protocol.Splits | None = None, on_epoch: OnEpoch | None = None,
        device: torch.device | None = None, slot: ckpt.Slot | None = None,
        on_resume: Callable[[int | None, list, str], None] | None = None) -> Result:
    """Train one config of its task; test once, on the weights with the best validation loss. With a `slot`, the
    run writes its checkpoint there after every epoch and, when the slot holds this run's checkpoint, goes on
    from it exactly; `on_resume(epoch, history, why)` hears first which (epoch: the checkpoint's last, None:
    from epoch 0; history: the epochs it holds; why: why a checkpoint there was not used, else "")."""
    task = task_protocol.of(cfg)
    if task.lightning is not None:  # the user's LightningModule on its own loaders, inside the same protocol
        from . import lightning_fit

        return lightning_fit.fit(cfg, on_epoch, device, slot, on_resume)
    quiet_lightning()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = device or resolve_device(cfg)
    dataset = dataset or task.load_data(cfg, device)
    state, why = ckpt.read(slot) if slot is not None else (None, "")
    if on_resume:
        on_resume(state["epoch"] if state else None, state["history"] if state else [], why)
    L.seed_everything(cfg.seed, verbose=False)

    train, val, test = batches.of_task(task, dataset, cfg)  # validation and test: never augmented

    lit = LitClassifier(cfg, task.hook("model")(cfg), task)
    report = _EpochReport(on_epoch, state["history"] if state else None)
    callbacks = [report, resume.Preemption()]
    patience = task.hook("patience")(cfg)
    stopper = None
    if patience is not None:
        stopper = L.pytorch.callbacks.EarlyStopping(monitor="val_loss", patience=patience, mode="min")
        callbacks.append(stopper)
    epochs = cfg.max_epochs
    if state is not None:  # the checkpoint's weights, best so far and early stopping; the rest when fit starts
        lit.net.load_state_dict(state["net"])
        lit.epoch0 = state["epoch"] + 1
        best = state["best"]
        lit.best_val_loss, lit.best_epoch, lit.best_state = best["val_loss"], best["epoch"], best["state"]
        if stopper is not None and state["early_stopping"]:
            stopper.load_state_dict(state["early_stopping"])
        epochs = 0 if state["done"] else cfg.max_epochs - lit.epoch0
    if slot is not None:
        callbacks.append(resume.Checkpoints(slot, report, train, stopper, state))
    trainer = make_trainer(cfg, device, callbacks, max_epochs=epochs)
    if epochs > 0:
        interruptible(trainer.fit, trainer, lit, train_dataloaders=train, val_dataloaders=val)
    if lit.best_state is None:
        raise Diverged("no epoch finished with a finite validation loss")

    lit.net.load_state_dict(lit.best_state)  # the protocol: test the best-val_loss weights, once
    test_metrics, confusion = _test(lit, trainer, test)
    return Result(test=test_metrics, history=report.history, best_epoch=lit.best_epoch,
                  confusion=confusion.tolist(), per_class=per_class_report(confusion),
                  device_name=device_name(device), weights=state_bytes(lit.net),
                  resumed_from=state["epoch"] if state else None)


def _test(lit: LitClassifier, trainer: L.Trainer, test: batches.Batches) -> tuple[dict, torch.Tensor]:
    interruptible(trainer.test, trainer, lit, dataloaders=test, verbose=False)
    return lit.test_metrics.compute("test"), lit.test_metrics.confmat.compute().cpu()


def evaluate(cfg, net: torch.nn.Module, dataset: task_protocol.Splits | None = None) -> dict:
    """The test metrics of given weights, computed exactly as `fit` computes them (same batches, same code)."""
    quiet_lightning()
    task = task_protocol.of(cfg)
    if task.lightning is not None:
        from . import lightning_fit

        return lightning_fit.evaluate(cfg, net)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg)
    dataset = dataset or task.load_data(cfg, device)
    test = batches.of_task(task, dataset, cfg)[2]
    lit = LitClassifier(cfg, net, task)
    return _test(lit, make_trainer(cfg, device, []), test)[0]
