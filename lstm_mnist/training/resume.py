"""A run that outlives its process: the preemption signal a process received (recorded by the engine's handler,
raised where stopping is safe) and the callbacks that stop training at a step's end and write, or put back, the
run's checkpoint every epoch (checkpoint.py holds the file). train.fit adds them."""
from __future__ import annotations

import lightning as L

from ..errors import Preempted
from . import checkpoint as ckpt

_STOP: list[int] = []  # the preemption signal this process received (engine/drive.preemptible records it)


def request_stop(signum: int) -> None:
    """A preemption signal arrived: the training in this process stops at its next step's end (Preempted),
    outside any write, so nothing is left half done; the engine's loop checks it between its own steps too."""
    _STOP.append(signum)


def clear_stop() -> None:
    _STOP.clear()


def check_stop() -> None:
    """Preempted, when a preemption signal arrived: called where stopping is safe."""
    if _STOP:
        raise Preempted(_STOP[0])


class Preemption(L.Callback):
    """Stops training at the end of a step once a preemption signal arrived (the last epoch's checkpoint is what
    the next start goes on from)."""

    def on_train_batch_end(self, *args):
        check_stop()


class EpochCheckpoints(L.Callback):
    """Writes the run's checkpoint after every epoch (checkpoint.py) and, on a resume, puts the checkpoint's state
    back before the first epoch trains. An epoch's state is complete only after Lightning has stepped the
    epoch's schedulers, which comes after every on_train_epoch_end: so epoch e is written when epoch e + 1
    starts (nothing draws a random number in between: a DataLoader draws its order and its workers' seeds when
    the epoch's iterator is made, after this), and the last when training ends. What every run holds is written
    here (optimizers, schedulers, the gradient scaler, every random-number generator); a subclass adds its
    model's (`extra`, with "history": the epochs so far) and puts it back (`restore_extra`)."""

    def __init__(self, slot: ckpt.Slot, state: dict | None, rng_here: bool = True):
        self.slot = slot
        self.state = state  # to put back before the first epoch (a resume), then None
        self.epoch0 = state["epoch"] + 1 if state else 0  # the run's epochs trained before this fit
        self.rng_here = rng_here  # False: the caller put the generators back before fit (a DataLoader's first
        #                           iterator is made, and draws, before the first epoch starts)

    def epochs_done(self, trainer, module) -> int:
        """The run's epochs trained so far (those before a resume included)."""
        raise NotImplementedError

    def extra(self, trainer, module, epoch: int) -> dict:
        """The model's side of the checkpoint of `epoch`, with "history": its records up to it."""
        raise NotImplementedError

    def restore_extra(self, trainer, module, state: dict) -> None:
        """What `extra` wrote and the trainer does not hold, put back as the first epoch starts."""

    def on_train_epoch_start(self, trainer, module):
        if self.state is not None:
            self._restore(trainer, module, self.state)
            self.state = None
        elif trainer.current_epoch > 0:
            self._write(trainer, module, self.epochs_done(trainer, module) - 1, done=False)

    def on_train_end(self, trainer, module):
        if self.epochs_done(trainer, module) > self.epoch0:  # this fit trained an epoch: its last one, complete
            self._write(trainer, module, self.epochs_done(trainer, module) - 1, done=True)

    def _write(self, trainer, module, epoch: int, done: bool) -> None:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        ckpt.write(self.slot, {
            "epoch": epoch, "done": done, **self.extra(trainer, module, epoch),
            "optimizers": [o.state_dict() for o in trainer.optimizers],
            "schedulers": [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs],
            "rng": ckpt.rng_state(), "scaler": scaler.state_dict() if scaler is not None else None})

    def _restore(self, trainer, module, state: dict) -> None:
        for opt, saved in zip(trainer.optimizers, state["optimizers"]):
            opt.load_state_dict(saved)
        for config, saved in zip(trainer.lr_scheduler_configs, state["schedulers"]):
            config.scheduler.load_state_dict(saved)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        if self.rng_here:
            ckpt.set_rng_state(state["rng"])
        self.restore_extra(trainer, module, state)


def cpu(state_dict: dict) -> dict:
    """A state dict's tensors copied to the CPU (what a checkpoint holds)."""
    return {k: v.detach().cpu().clone() for k, v in state_dict.items()}


class Checkpoints(EpochCheckpoints):
    """The built-in path's checkpoints (train.LitClassifier over in-memory batches): the net, the best weights, the
    early-stopping callback's state and the batches' two generators."""

    def __init__(self, slot: ckpt.Slot, report, train,
                 stopper: L.pytorch.callbacks.EarlyStopping | None, state: dict | None):
        super().__init__(slot, state)
        self.report, self.train, self.stopper = report, train, stopper

    def epochs_done(self, trainer, lit) -> int:
        return len(self.report.history)

    def extra(self, trainer, lit, epoch: int) -> dict:
        return {"net": cpu(lit.net.state_dict()),
                "early_stopping": self.stopper.state_dict() if self.stopper else None,
                "best": {"val_loss": lit.best_val_loss, "epoch": lit.best_epoch,
                         "state": cpu(lit.best_state) if lit.best_state is not None else None},
                "history": self.report.history[:epoch + 1],
                "batches": {"order": self.train._cpu_generator.get_state(),
                            "prepare": self.train.generator.get_state()}}

    def restore_extra(self, trainer, lit, state: dict) -> None:
        self.train._cpu_generator.set_state(state["batches"]["order"])
        self.train.generator.set_state(state["batches"]["prepare"])
