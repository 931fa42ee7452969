"""A Lightning task trained as its author wrote it, inside the harness's protocol (task/lightning.py declares it).

The user's LightningModule trains with its own `training_step` and `configure_optimizers`, on its own DataLoaders
(workers, transforms, datasets of any size). What stays the harness's:
- validation: after every training epoch the harness scores the module's logits over the whole validation
  loader itself (cross-entropy, macro-F1, accuracy: train.EvalMetrics) and logs `val_loss`, `val_f1` and
  `val_acc`, so a scheduler monitoring `val_loss` finds it; the module's own `validation_step` is not run
  (its numbers would be the module's, per batch);
- the validation loader must give the same first batch twice (not shuffled, not augmented), and the module's
  outputs must be logits over the task's classes: either mistake is one line before any training;
- early stopping on val_loss (`patience`), the best-val_loss weights kept, and the test loader scored once, on them;
- what the module logs itself (`self.log` in training_step, say) is recorded beside the harness's metrics;
- a checkpoint every epoch and an exact resume (the module, its optimizers and schedulers, the early-stopping
  state, the best weights, the history, every random-number generator, the DataLoaders' included: they draw
  their order and their workers' seeds from torch's generator when an epoch's iterator is made).
"""
from __future__ import annotations

import math
import time

import lightning as L
import torch

from .. import task as task_protocol
from ..config import ConfigError
from . import checkpoint as ckpt
from . import resume
from .devices import autocast, device_name, resolve_device
from .outcome import Diverged, EvalMetrics, Result, per_class_report, state_bytes
from .trainers import interruptible, make_trainer, quiet_lightning

HARNESS_METRICS = ("train_loss", "val_loss", "val_f1", "val_acc", "epoch_time_s", "train_samples_per_s", "lr")


def loaders(task: task_protocol.Task, data) -> tuple:
    """The train, validation and test loaders of the task's data: a LightningDataModule's (prepare_data, setup),
    or the three a function returned."""
    where = f"task {task.name!r}: data"
    if isinstance(data, L.LightningDataModule):
        data.prepare_data()
        data.setup("fit")
        train, val = data.train_dataloader(), data.val_dataloader()
        data.setup("test")
        return train, val, data.test_dataloader()
    if not (isinstance(data, (tuple, list)) and len(data) == 3):
        raise ConfigError(f"{where} returned a {type(data).__name__}; give a LightningDataModule class, or a function "
                          "returning (train_loader, val_loader, test_loader)")
    return tuple(data)


def _xy(batch, where: str) -> tuple:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and torch.is_tensor(batch[0]) and torch.is_tensor(batch[1]):
        return batch[0], batch[1]
    raise ConfigError(f"{where}: a batch is a {type(batch).__name__}; the harness scores batches of (inputs, "
                      "integer labels): make the loader yield (x, y)")


def check(task: task_protocol.Task, module: L.LightningModule, val) -> None:
    """The validation loader yields the same first batch twice, and the module's outputs are class logits."""
    where = f"task {task.name!r}"
    first, again = (_xy(next(iter(val)), f"{where}: its validation loader") for _ in range(2))
    if not (torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])):
        raise ConfigError(f"{where}: its validation loader gave another first batch the second time (shuffled or "
                          "augmented); every epoch must be scored on the same, unaugmented split: give it "
                          "shuffle=False and no random transforms")
    x, y = first
    was = module.training
    module.eval()
    with torch.no_grad():
        out = module(x)
    module.train(was)
    if not (torch.is_tensor(out) and out.ndim == 2 and out.shape[0] == len(y) and out.is_floating_point()):
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ConfigError(f"{where}: the module's output for a batch of {len(y)} is {shape}, not class logits "
                          f"({len(y)}, {task.classes}); make forward() return one row of logits per input")
    if out.shape[1] != task.classes or y.dtype not in (torch.int64, torch.int32) or int(y.max()) >= task.classes:
        raise ConfigError(f"{where}: the module gives {out.shape[1]} logits per input, the task says classes = "
                          f"{task.classes}, and its labels reach {int(y.max())}; give classes = N in [task] with N the "
                          "number of classes the labels hold")


class Protocol(L.Callback):
    """The harness's side of a user's module: the training loss (from training_step's outputs), validation over
    the whole split after every epoch, early stopping, the best weights, one record per epoch."""

    def __init__(self, task, cfg, val, device, on_epoch, history: list | None, patience: int | None):
        self.task, self.cfg, self.val, self.device, self.on_epoch = task, cfg, val, device, on_epoch
        self.history = list(history or [])
        self.patience = patience
        self.epoch0 = len(self.history)   # the run's epochs a checkpoint already holds
        self.best_val_loss, self.best_epoch, self.best_state, self.wait = float("inf"), -1, None, 0
        self.metrics = EvalMetrics(task.classes).to(device)

    def epoch(self, trainer) -> int:
        return trainer.current_epoch + self.epoch0

    def on_train_epoch_start(self, trainer, module):
        self.t0 = time.perf_counter()
        self.loss_sum, self.count = torch.zeros((), device=module.device), 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if torch.is_tensor(loss):
            n = len(_xy(batch, "")[1]) if isinstance(batch, (tuple, list)) else 1
            self.loss_sum += loss.detach().float() * n
            self.count += n
        if batch_idx % 50 == 49 and not torch.isfinite(self.loss_sum):  # one sync per 50 steps
            raise Diverged(f"training loss became {float(self.loss_sum)} at epoch {self.epoch(trainer)}")

    def on_train_epoch_end(self, trainer, module):
        t_val = time.perf_counter()
        val = score(module, self.val, self.metrics, self.cfg, self.device, "val")
        for k, v in val.items():  # a scheduler monitoring val_loss (stepped after this hook) finds it
            module.log(k, v, logger=False)
        train_loss = float(self.loss_sum) / max(self.count, 1)
        for bad, value in (("train_loss", train_loss), ("val_loss", val["val_loss"])):
            if not math.isfinite(value):
                raise Diverged(f"{bad} became {value} at epoch {self.epoch(trainer)}")
        epoch = self.epoch(trainer)
        if val["val_loss"] < self.best_val_loss:
            self.best_val_loss, self.best_epoch, self.wait = val["val_loss"], epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            self.wait += 1
        if self.patience is not None and self.wait >= self.patience:
            trainer.should_stop = True
        own = {k: float(v) for k, v in trainer.callback_metrics.items()
               if k not in val and torch.is_tensor(v) and v.numel() == 1}
        record = {"train_loss": train_loss, **val, "epoch_time_s": time.perf_counter() - self.t0,
                  "train_samples_per_s": self.count / max(t_val - self.t0, 1e-9),
                  "lr": trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else 0.0,
                  **{(f"user_{k}" if k in HARNESS_METRICS else k): v for k, v in own.items()}}
        self.history.append(record)
        if self.on_epoch:
            self.on_epoch(epoch, record)

    # ---- what a checkpoint holds of it
    def state_dict(self) -> dict:
        return {"best_val_loss": self.best_val_loss, "best_epoch": self.best_epoch, "wait": self.wait,
                "best_state": {k: v.cpu() for k, v in self.best_state.items()} if self.best_state else None}

    def load_state_dict(self, state: dict) -> None:
        self.best_val_loss, self.best_epoch, self.wait = state["best_val_loss"], state["best_epoch"], state["wait"]
        self.best_state = state["best_state"]


def score(module, loader, metrics: EvalMetrics, cfg, device, prefix: str) -> dict:
    """The module's logits over a whole loader, scored (eval mode, no gradients, the run's precision)."""
    was = module.training
    module.eval()
    with torch.no_grad(), autocast(cfg.precision, device):
        for batch in loader:
            x, y = _xy(batch, f"the {prefix} loader")
            metrics.update(module(x.to(module.device)), y.to(module.device))
    module.train(was)
    return metrics.compute(prefix)


class Checkpoints(resume.EpochCheckpoints):
    """resume.EpochCheckpoints for a user's module: its state, and the harness's protocol state."""

    def __init__(self, slot, protocol: Protocol, state: dict | None):
        super().__init__(slot, state, rng_here=False)
        self.protocol = protocol

    def epochs_done(self, trainer, module) -> int:
        return len(self.protocol.history)

    def extra(self, trainer, module, epoch: int) -> dict:
        return {"module": resume.cpu(module.state_dict()), "protocol": self.protocol.state_dict(),
                "history": self.protocol.history[:epoch + 1]}


def fit(cfg, on_epoch=None, device: torch.device | None = None, slot: ckpt.Slot | None = None,
        on_resume=None) -> Result:
    """train.fit for a Lightning task (train.fit hands it over)."""

    quiet_lightning()
    task = task_protocol.of(cfg)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = device or resolve_device(cfg)
    state, why = ckpt.read(slot) if slot is not None else (None, "")
    if on_resume:
        on_resume(state["epoch"] if state else None, state["history"] if state else [], why)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module, data = task.lightning.build(cfg)
    train, val, test = loaders(task, data)
    check(task, module, val)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # the checks drew nothing the run depends on
    protocol = Protocol(task, cfg, val, device, on_epoch, state["history"] if state else None,
                        task.hook("patience")(cfg))
    callbacks = [protocol, resume.Preemption()]
    epochs = cfg.max_epochs
    if state is not None:
        module.load_state_dict(state["module"])
        protocol.load_state_dict(state["protocol"])
        epochs = 0 if state["done"] else cfg.max_epochs - protocol.epoch0
    if slot is not None:
        callbacks.append(Checkpoints(slot, protocol, state))
    trainer = make_trainer(cfg, device, callbacks, max_epochs=epochs, limit_val_batches=0)
    if epochs > 0:
        if state is not None:  # before fit: Lightning makes the first epoch's DataLoader iterator (which draws its
            ckpt.set_rng_state(state["rng"])  # workers' base seed) before the first epoch starts
        interruptible(trainer.fit, trainer, module, train_dataloaders=train)
    if protocol.best_state is None:
        raise Diverged("no epoch finished with a finite validation loss")
    module.load_state_dict(protocol.best_state)  # the protocol: test the best-val_loss weights, once
    module.to(device)
    metrics = EvalMetrics(task.classes, confusion=True).to(device)
    test_metrics = score(module, test, metrics, cfg, device, "test")
    confusion = metrics.confmat.compute().cpu()
    return Result(test=test_metrics, history=protocol.history, best_epoch=protocol.best_epoch,
                  confusion=confusion.tolist(), per_class=per_class_report(confusion),
                  device_name=device_name(device), weights=state_bytes(module),
                  resumed_from=state["epoch"] if state else None)


def evaluate(cfg, module) -> dict:
    """train.evaluate for a Lightning task: given weights scored on its test loader as `fit` scores them."""
    task = task_protocol.of(cfg)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    test = loaders(task, task.lightning.data_of(cfg))[2]  # the data alone: no second module built
    module.to(device)
    return score(module, test, EvalMetrics(task.classes, confusion=True).to(device), cfg, device, "test")
