"""A Lightning task trained as its author wrote it, inside the harness's protocol (task/lightning.py declares it).

The user's LightningModule trains with its own `training_step` and `configure_optimizers`, on its own DataLoaders
(workers, transforms, datasets of any size). What stays the harness's:
- validation: after every training epoch the harness scores the module's logits over the whole validation
  loader itself (cross-entropy, macro-F1, accuracy: train.EvalMetrics) and logs `val_loss`, `val_f1` and
  `val_acc`, so a scheduler monitoring `val_loss` finds it; the module's own `validation_step` is not run
  (its numbers would be the module's, per batch);
- the validation loader must give the same first batch twice (not shuffled, not augmented), the test loader
  (x, y) batches too, and the module's outputs must be logits over the task's classes: each mistake is one line
  before any training; batches pass through the module's own batch-transfer hooks (on_before_batch_transfer,
  transfer_batch_to_device, on_after_batch_transfer) when the harness scores them, as in training;
- the data is built before the module, each from the run's seed, so a split drawn in `setup` (random_split) is
  the same in every arm, whatever the module's size;
- early stopping on val_loss (`patience`), the best-val_loss weights kept, and the test loader scored once, on them;
- what the module logs itself (`self.log` in training_step, say) is recorded beside the harness's metrics;
- a checkpoint every epoch and an exact resume (the module, its optimizers and schedulers, the early-stopping
  state, the best weights, the history, the trainer's epoch and global step, every random-number generator, the
  DataLoaders' included: they draw their order and their workers' seeds from torch's generator when an epoch's
  iterator is made; a training loader with persistent workers keeps its workers' generators in processes a
  checkpoint cannot hold, and is refused in one line).

The module's and the DataModule's hooks the harness does not run: validation_step and test_step (the harness
scores), the DataModule's batch-transfer hooks (refused in one line: put them on the module), and
`trainer.datamodule` is None (the trainer is handed the training loader).
"""
from __future__ import annotations

import math
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.model_helpers import is_overridden

from .. import task as task_protocol
from ..config import ConfigError
from ..metrics import COSTS, TEST
from . import checkpoint as ckpt
from . import resume
from .devices import autocast, device_name, resolve_device
from .outcome import Diverged, EvalMetrics, Result, per_class_report, state_bytes
from .trainers import interruptible, make_trainer, quiet_lightning

# What the harness records under its own names: a metric the module logs by one of them is recorded as user_NAME.
HARNESS_METRICS = ("train_loss", "val_loss", "val_f1", "val_acc", "epoch_time_s", "train_samples_per_s", "lr",
                   *TEST, *COSTS)
TRANSFER_HOOKS = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")


def loaders(task: task_protocol.Task, data) -> tuple:
    """The train, validation and test loaders of the task's data: a LightningDataModule's (prepare_data, setup),
    or the three a function returned."""
    where = f"task {task.name!r}: data"
    if isinstance(data, L.LightningDataModule):
        hooks = [h for h in TRANSFER_HOOKS if is_overridden(h, data, parent=L.LightningDataModule)]
        if hooks:
            raise ConfigError(f"{where}: {type(data).__name__} defines {', '.join(hooks)}, which the harness does not "
                              "run on a DataModule: define it on the LightningModule instead (the harness runs the "
                              "module's, in training and when it scores)")
        data.setup("fit")  # its prepare_data ran when it was made (task/lightning.Parts.data_of)
        train, val = data.train_dataloader(), data.val_dataloader()
        data.setup("test")
        return train, val, data.test_dataloader()
    if not (isinstance(data, (tuple, list)) and len(data) == 3):
        raise ConfigError(f"{where} returned a {type(data).__name__}; give a LightningDataModule class, or a function "
                          "returning (train_loader, val_loader, test_loader)")
    train = data[0]
    if getattr(train, "persistent_workers", False) and getattr(train, "num_workers", 0) > 0:
        raise ConfigError(f"{where}: its training loader keeps persistent_workers, whose random state lives in "
                          "processes a checkpoint cannot hold, so a resumed run would not be exact: give it "
                          "persistent_workers=False")
    return tuple(data)


def transfer(module: L.LightningModule, batch, device):
    """A batch as training hands it to the module: through the module's own batch-transfer hooks, on `device`."""
    batch = module.on_before_batch_transfer(batch, 0)
    batch = module.transfer_batch_to_device(batch, device, 0)
    return module.on_after_batch_transfer(batch, 0)


def _xy(batch, where: str) -> tuple:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and torch.is_tensor(batch[0]) and torch.is_tensor(batch[1]):
        return batch[0], batch[1]
    raise ConfigError(f"{where}: a batch is a {type(batch).__name__}; the harness scores batches of (inputs, "
                      "integer labels): make the loader yield (x, y)")


def _first(loader, what: str, where: str, module, device) -> tuple:
    batch = next(iter(loader), None)
    if batch is None:
        raise ConfigError(f"{where}: its {what} loader yields no batch; give it the split's data")
    return _xy(transfer(module, batch, device), f"{where}: its {what} loader")


def check(task: task_protocol.Task, module: L.LightningModule, val, test, device) -> None:
    """The validation loader yields the same first batch twice, the test loader (x, y) batches, and the module's
    outputs are class logits over integer labels."""
    where = f"task {task.name!r}"
    module.to(device)
    first, again = (_first(val, "validation", where, module, device) for _ in range(2))
    _first(test, "test", where, module, device)
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
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ConfigError(f"{where}: its labels are {y.dtype}; the harness scores integer class labels: give them "
                          "as integers (torch.long)")
    if out.shape[1] != task.classes or int(y.max()) >= task.classes:
        raise ConfigError(f"{where}: the module gives {out.shape[1]} logits per input, the task says classes = "
                          f"{task.classes}, and its labels reach {int(y.max())}; give classes = N in [task] with N the "
                          "number of classes the labels hold")


class Protocol(Checkpoint):
    """The harness's side of a user's module: the training loss (from training_step's outputs), validation over
    the whole split after every epoch, early stopping, the best weights, one record per epoch. A Checkpoint (it
    keeps the best weights), so Lightning runs its epoch end after the module's own on_train_epoch_end, as for
    EarlyStopping: what the module logs there is in this epoch's record."""

    def __init__(self, task, cfg, val, device, on_epoch, history: list | None, patience: int | None):
        self.task, self.cfg, self.val, self.device, self.on_epoch = task, cfg, val, device, on_epoch
        self.history = list(history or [])
        self.patience = patience
        self.epoch0 = len(self.history)   # the run's epochs a checkpoint already holds
        self.best_val_loss, self.best_epoch, self.best_state, self.wait = float("inf"), -1, None, 0
        self.metrics = EvalMetrics(task.classes).to(device)

    def epoch(self, trainer) -> int:
        return trainer.current_epoch  # a resumed trainer starts at the checkpoint's next epoch (fit)

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
            x, y = _xy(transfer(module, batch, module.device), f"the {prefix} loader")
            metrics.update(module(x), y.long())
    module.train(was)
    return metrics.compute(prefix)


def _resume_at(trainer: L.Trainer, epoch: int, global_step: int) -> None:
    """A fresh trainer's loops set as after `epoch` epochs and `global_step` optimizer steps (its current_epoch and
    global_step what the module reads, max_epochs the run's), without Lightning's restart (which replays a
    checkpoint of its own)."""
    loop = trainer.fit_loop
    loop.epoch_progress.increment_by(epoch)
    loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step.increment_by(global_step)
    loop.epoch_loop.manual_optimization.optim_step_progress.increment_by(global_step)
    loop.epoch_loop._batches_that_stepped = global_step
    # As Lightning's own resume marks it: the epoch's iterator, made once when fit sets up its data (after the
    # generators were put back), is not made a second time as it is at the start of a later epoch of one fit.
    loop._resuming_from_checkpoint = True


class Checkpoints(resume.EpochCheckpoints):
    """resume.EpochCheckpoints for a user's module: its state, and the harness's protocol state."""

    def __init__(self, slot, protocol: Protocol, state: dict | None):
        super().__init__(slot, state, rng_here=False)
        self.protocol = protocol

    def epochs_done(self, trainer, module) -> int:
        return len(self.protocol.history)

    def extra(self, trainer, module, epoch: int) -> dict:
        return {"module": resume.cpu(module.state_dict()), "protocol": self.protocol.state_dict(),
                "history": self.protocol.history[:epoch + 1], "global_step": trainer.global_step}


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
    # The data first, then the module, each from the seed: a split the data draws is the same in every arm.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    train, val, test = loaders(task, task.lightning.data_of(cfg))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = task.lightning.module_of(cfg)
    check(task, module, val, test, device)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # the checks drew nothing the run depends on
    protocol = Protocol(task, cfg, val, device, on_epoch, state["history"] if state else None,
                        task.hook("patience")(cfg))
    callbacks = [protocol, resume.Preemption()]
    if state is not None:
        module.load_state_dict(state["module"])
        protocol.load_state_dict(state["protocol"])
    if slot is not None:
        callbacks.append(Checkpoints(slot, protocol, state))
    # enable_checkpointing: Protocol is the run's one Checkpoint callback (Lightning adds none of its own)
    trainer = make_trainer(cfg, device, callbacks, limit_val_batches=0, enable_checkpointing=True)
    if state is None or not state["done"]:
        if state is not None:
            _resume_at(trainer, protocol.epoch0, state.get("global_step", 0))
            # before fit: Lightning makes the first epoch's DataLoader iterator (which draws its workers' base seed)
            ckpt.set_rng_state(state["rng"])  # before the first epoch starts
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
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # as fit builds the data: the same split
    test = loaders(task, task.lightning.data_of(cfg))[2]
    module.to(device)
    return score(module, test, EvalMetrics(task.classes, confusion=True).to(device), cfg, device, "test")
