"""A second task, written as a user of lstm-mnist would write their own: scikit-learn's bundled 8x8 handwritten
digits (1,797 images, shipped inside scikit-learn: no download) read as 8 time steps of 8 pixels by a small
recurrent network, with three enhancements of its own as flags:

- gru:             a GRU cell instead of an LSTM cell
- layer_norm:      layer normalisation of the last step's features before the readout
- label_smoothing: label smoothing of the training loss (validation and test are scored by plain cross-entropy)

It imports only the documented API (lstm_mnist.task) besides torch and scikit-learn, and lives outside the
package: a grid file names it with `task = "examples.digits.task:task"` (run from the project root).
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lstm_mnist.task import Flag, RunKeys, Splits, Task, field


@dataclass(frozen=True)
class DigitsConfig(RunKeys):
    # the three flags (off: a plain one-layer LSTM trained on hard labels)
    gru: bool = False
    layer_norm: bool = False
    label_smoothing: bool = False
    # what the model is, and what a flag's on side reads
    hidden: int = field(32, lo=1, hi=1024)
    layers: int = field(1, lo=1, hi=4)
    smoothing: float = field(0.1, lo=0.0, hi=1.0, hi_open=True)  # read only with label_smoothing on
    lr: float = field(0.01, lo=0.0, hi=1.0, lo_open=True)        # Adam's learning rate (the default optimizer)
    # the protocol: a fixed split of the 1,797 images, independent of the run seed
    test_images: int = field(360, lo=1, hi=1000)
    val_images: int = field(288, lo=1, hi=1000)
    split_seed: int = field(20240611, lo=0)
    # the harness's keys, with this task's defaults
    max_epochs: int = field(30, lo=1, hi=10000)
    batch_size: int = field(64, lo=1, hi=65536)
    experiment: str = "digits"


@functools.cache
def _digits() -> tuple[torch.Tensor, torch.Tensor, str]:
    """The images scaled to [0, 1], their labels, and the hash of both (the data's fingerprint)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32) / 16.0  # (1797, 8, 8): 8 rows of 8 pixels, 0..16
    y = torch.tensor(d.target, dtype=torch.int64)
    fingerprint = hashlib.sha256(d.images.tobytes() + d.target.tobytes()).hexdigest()[:16]
    return x, y, fingerprint


def splits(cfg: DigitsConfig, device) -> Splits:
    """Test, validation and training images by a fixed permutation (split_seed)."""
    x, y, fingerprint = _digits()
    if cfg.test_images + cfg.val_images >= len(x):
        raise ValueError(f"test_images + val_images = {cfg.test_images + cfg.val_images} leaves no training images "
                         f"of {len(x)}")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.split_seed))
    test, val, train = (perm[:cfg.test_images], perm[cfg.test_images:cfg.test_images + cfg.val_images],
                        perm[cfg.test_images + cfg.val_images:])
    on = {k: t.to(device) for k, t in (("x", x), ("y", y))}
    return Splits(on["x"][train], on["y"][train], on["x"][val], on["y"][val], on["x"][test], on["y"][test],
                  fingerprint)


class Recurrent(nn.Module):
    def __init__(self, cfg: DigitsConfig):
        super().__init__()
        cell = nn.GRU if cfg.gru else nn.LSTM
        self.rnn = cell(8, cfg.hidden, cfg.layers, batch_first=True)
        self.norm = nn.LayerNorm(cfg.hidden) if cfg.layer_norm else nn.Identity()
        self.head = nn.Linear(cfg.hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)  # x: (B, 8 steps, 8 px)
        return self.head(self.norm(out[:, -1]))


def loss(cfg: DigitsConfig, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, label_smoothing=cfg.smoothing if cfg.label_smoothing else 0.0)


def datasets(cfg: DigitsConfig) -> list[dict]:
    """The three splits as MLflow dataset inputs (the UI's Datasets column)."""
    sizes = {"train": 1797 - cfg.test_images - cfg.val_images, "validation": cfg.val_images, "test": cfg.test_images}
    schema = {"images": "float (8, 8) in [0, 1], one row per time step", "labels": "int64 0-9"}
    return [{"split": s, "rows": n, "name": f"sklearn-digits-{s}-{n}",
             "source": {"uri": "sklearn.datasets.load_digits"}, "schema": schema,
             "profile": {"num_rows": n, "split_seed": cfg.split_seed}} for s, n in sizes.items()]


task = Task(
    name="digits", version=1, config=DigitsConfig,
    flags=(Flag("gru", {"gru": False}, {"gru": True}),
           Flag("layer_norm", {"layer_norm": False}, {"layer_norm": True}),
           Flag("label_smoothing", {"label_smoothing": False}, {"label_smoothing": True}, reads_on=("smoothing",))),
    never_searched={k: "the split is part of the protocol: every run is scored on the same images"
                    for k in ("test_images", "val_images", "split_seed")},
    data=splits, fingerprint=lambda cfg: _digits()[2], model=Recurrent, loss=loss,
    derived=lambda cfg: {"cell": "gru" if cfg.gru else "lstm"}, datasets=datasets,
)
