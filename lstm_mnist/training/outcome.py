"""What a run ends with, and how it is scored: the split metrics over a whole split (cross-entropy, macro-F1,
accuracy), its Result (test metrics, history, best epoch, confusion, weights), and a divergence."""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score


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


class EvalMetrics(torch.nn.Module):
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


def state_bytes(net: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    return buf.getvalue()


def per_class_report(confusion: torch.Tensor) -> dict:
    """Precision, recall, F1 and support per class from a confusion matrix (rows = true class)."""
    tp = confusion.diag().double()
    support, predicted = confusion.sum(1).double(), confusion.sum(0).double()
    precision = tp / predicted.clamp(min=1)
    recall = tp / support.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return {str(c): {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                     "support": int(support[c])} for c in range(len(tp))}
