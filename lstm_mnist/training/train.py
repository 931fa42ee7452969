"""One training run of any task: its data, model and optimizer, the harness's callbacks, trainer, fit, and the test
on the best-val_loss weights (the protocol: the harness's, whatever the task).

Knows nothing of MLflow: `fit` returns a `Result`, and reports each epoch to an optional `on_epoch`
callable (the tracker logs it; an Optuna pruner may raise from it to stop the run).
"""
from __future__ import annotations

import logging
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from . import batches, resume
from . import checkpoint as ckpt
from .. import task as task_protocol
from ..machine import host
from ..config import ConfigError

OnEpoch = Callable[[int, dict], None]
class Diverged(RuntimeError):
    """The loss became NaN or infinite: the run stops and is recorded as failed."""


@dataclass
class Result:
    test: dict                      # test_loss, test_f1, test_acc on the best-val_loss weights
    history: list[dict]             # one dict per epoch: train_loss, val_*, epoch_time_s, train_samples_per_s
    best_epoch: int                 # epoch (0-based) whose weights were tested
    confusion: list[list[int]]      # test confusion matrix, rows = true class
    per_class: dict = field(default_factory=dict)  # class -> precision/recall/f1/support on test
    device_name: str = "cpu"
    weights: bytes = b""            # the tested state_dict (torch.save, CPU tensors): plain bytes cross processes
    resumed_from: int | None = None  # the epoch its checkpoint ended (it went on from the next), None: from epoch 0

    @property
    def epochs_trained(self) -> int:
        return len(self.history)


def resolve_device(cfg) -> torch.device:
    """The device a config trains on, checked against its precision."""
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={cfg.device}: no CUDA GPU is visible; use device=auto or device=cpu")
    else:
        device = torch.device(cfg.device)
    check_precision(cfg.precision, device)
    return device


def precisions_of(device: torch.device) -> tuple:
    """The precisions `device` can train at: 32 everywhere; bf16-mixed on a CPU whose oneDNN has bfloat16 (AVX-512
    or newer: native with AVX512-BF16/AMX, emulated on plain AVX-512; an AVX2-only CPU, such as some AMD EPYCs,
    fails to build the LSTM primitive) and on a GPU with bfloat16; 16-mixed on a GPU."""
    if device.type != "cuda":
        return ("32", "bf16-mixed") if cpu_has_bf16() else ("32",)
    with torch.cuda.device(device):  # natively (Ampere on), not in emulation
        bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    return ("32", *(("bf16-mixed",) if bf16 else ()), "16-mixed")


def cpu_has_bf16() -> bool:
    """Whether this CPU's oneDNN computes in bfloat16 (its LSTM, matmul and convolution primitives need AVX-512)."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else True


def autocast(precision: str, device: torch.device, cache: bool = True):
    """The autocast context Lightning's precision plugin opens around a step (none at 32): for plain loops.
    `cache=False` for a step captured in a CUDA graph (the cast weights must be recomputed on every replay)."""
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=cache)


def check_precision(precision: str, device: torch.device) -> None:
    can = precisions_of(device)
    if precision not in can:
        where = (torch.cuda.get_device_name(device) if device.type == "cuda"
                 else "a CPU" if precision == "16-mixed" else "this CPU (without AVX-512, oneDNN has no bfloat16)")
        raise ConfigError(f"precision={precision}: {where} cannot train at it; it can at precision="
                          f"{' or precision='.join(can)}")


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = host.cpu_model()
    return f"cpu ({model}, {torch.get_num_threads()} threads)" if model else f"cpu ({torch.get_num_threads()} threads)"


def threads_of(name: str) -> int | None:
    """The thread count a CPU `device_name` records ("cpu (..., 2 threads)"); None for a GPU or no count."""
    import re

    m = re.search(r"(\d+) threads\)$", name)
    return int(m.group(1)) if name.startswith("cpu") and m else None


class _EvalMetrics(torch.nn.Module):
    """Cross-entropy, macro-F1 and accuracy over a whole split (not averaged per batch)."""

    def __init__(self, classes: int, confusion: bool = False):
        super().__init__()
        self.f1 = MulticlassF1Score(classes, average="macro")
        self.acc = MulticlassAccuracy(classes, average="micro")
        self.confmat = MulticlassConfusionMatrix(classes) if confusion else None
        self.loss_sum, self.count = 0.0, 0

    def update(self, logits, y):
        logits = logits.float()  # under bf16/16 autocast: the sum over a split in float32, not in 8 mantissa bits
        self.loss_sum += F.cross_entropy(logits, y, reduction="sum")
        self.count += len(y)
        preds = logits.argmax(dim=1)
        for m in (self.f1, self.acc, self.confmat):
            if m is not None:
                m.update(preds, y)

    def compute(self, prefix: str) -> dict:
        out = {f"{prefix}_loss": float(self.loss_sum) / max(self.count, 1),
               f"{prefix}_f1": float(self.f1.compute()), f"{prefix}_acc": float(self.acc.compute())}
        self.f1.reset(), self.acc.reset()
        self.loss_sum, self.count = 0.0, 0
        return out


class LitClassifier(L.LightningModule):
    """Thin: cross-entropy, the task's optimizer (and scheduler); eval metrics over whole splits; best weights."""

    def __init__(self, cfg, net: torch.nn.Module, task: task_protocol.Task | None = None):
        super().__init__()
        self.cfg, self.net = cfg, net
        self.task = task or task_protocol.of(cfg)
        self.loss = self.task.hook("loss")
        self.val_metrics = _EvalMetrics(self.task.classes)
        self.test_metrics = _EvalMetrics(self.task.classes, confusion=True)
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


def quiet_lightning() -> None:
    """Lightning's start-up chatter and loader hints do not apply to in-memory device batches."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric",
                 "lightning.pytorch.utilities.rank_zero", "pytorch_lightning.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|LeafSpec|"
                            "_pytree|isinstance.*treespec|validation_step. but have no .val_dataloader).*")


def make_trainer(cfg, device: torch.device, callbacks: list, **overrides) -> L.Trainer:
    kwargs = dict(accelerator="gpu" if device.type == "cuda" else "cpu",
                  devices=[device.index or 0] if device.type == "cuda" else 1,
                  max_epochs=cfg.max_epochs, precision=cfg.precision, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                  callbacks=callbacks)
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


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
        _interruptible(trainer.fit, trainer, lit, train_dataloaders=train, val_dataloaders=val)
    if lit.best_state is None:
        raise Diverged("no epoch finished with a finite validation loss")

    lit.net.load_state_dict(lit.best_state)  # the protocol: test the best-val_loss weights, once
    test_metrics, confusion = _test(lit, trainer, test)
    return Result(test=test_metrics, history=report.history, best_epoch=lit.best_epoch,
                  confusion=confusion.tolist(), per_class=per_class_report(confusion),
                  device_name=device_name(device), weights=state_bytes(lit.net),
                  resumed_from=state["epoch"] if state else None)


def _test(lit: LitClassifier, trainer: L.Trainer, test: batches.Batches) -> tuple[dict, torch.Tensor]:
    _interruptible(trainer.test, trainer, lit, dataloaders=test, verbose=False)
    return lit.test_metrics.compute("test"), lit.test_metrics.confmat.compute().cpu()


def state_bytes(net: torch.nn.Module) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    return buf.getvalue()


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


def _interruptible(method, trainer: L.Trainer, *args, **kwargs) -> None:
    """Lightning turns Ctrl-C into sys.exit(1) and leaves SIGINT ignored; give the caller a KeyboardInterrupt."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        method(*args, **kwargs)
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        if threading.current_thread() is threading.main_thread():  # a Ray task trains in a thread of its own
            signal.signal(signal.SIGINT, handler)


def per_class_report(confusion: torch.Tensor) -> dict:
    """Precision, recall, F1 and support per class from a confusion matrix (rows = true class)."""
    tp = confusion.diag().double()
    support, predicted = confusion.sum(1).double(), confusion.sum(0).double()
    precision = tp / predicted.clamp(min=1)
    recall = tp / support.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return {str(c): {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                     "support": int(support[c])} for c in range(len(tp))}
