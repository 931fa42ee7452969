"""The built-in task: an LSTM over the 28 rows of an MNIST image, and the six enhancements of the course
assignment as flags, with the values on each side of them and the budget (described for the harness by
lstm_mnist.task, as any task is: docs/your-model.md).

Defaults are the course baseline (every flag off); `experiments/full.toml` turns all six on. Experiment
files and `key=value` overrides say only what differs. Loading fails loudly: an unknown key, a wrong
type or an out-of-range value is a one-line `ConfigError` naming the key, the value and what is allowed.
The harness reaches this module only by name (task.load("lstm_mnist")), never by an import.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from .. import config as harness
from .. import task as task_protocol
# Re-exported, so one import serves a user of the built-in task (a notebook, the tests): the harness's errors and
# its functions on any config. PROTOCOL_VERSION is a copy to read: the harness reads lstm_mnist.config's.
from ..config import (PROTOCOL_VERSION, ConfigError, UserError, check_name, identity, load,  # noqa: F401
                      parse_file, read_toml, rebuilt, settings_key, to_toml)
from ..task import limits

READOUTS = ("last", "final_states")
DEVICES = ("auto", "cpu", "cuda")
# Fields that say where things go or how they execute, not what is computed: outside the run identity.
# Thread count and device change the last digits of a result (float summation order), not the protocol.
NOT_IDENTITY = frozenset({"data_dir", "experiment", "device", "num_threads", "log_model"})


def _default_data_dir() -> str:
    return os.environ.get("LSTM_MNIST_DATA", "data")


@dataclass(frozen=True)
class Config:
    # --- the six enhancement flags (names are the contract; off = the course baseline) ---
    bidirectional: bool = False   # bidirectional LSTM instead of a unidirectional one
    dropout: bool = False         # dropout between LSTM layers and before the readout
    width: bool = False           # wider/deeper LSTM (hidden_on x layers_on instead of hidden_off x layers_off)
    early_stopping: bool = False  # stop when val_loss has not improved for `patience` epochs
    augmentation: bool = False    # per-sample random rotation then affine warp of training images
    adamw: bool = False           # AdamW + ReduceLROnPlateau(val_loss) instead of constant-lr SGD

    # --- what each side of a flag means (design.md's table; an experiment file may change them) ---
    readout: str = "last"                 # "last" = out[:, -1] (the seed's); "final_states" = h_n of both directions
    hidden_off: int = field(default=100, metadata=limits(1, 4096))  # LSTM hidden size with width off
    layers_off: int = field(default=1, metadata=limits(1, 8))       # LSTM layers with width off
    hidden_on: int = field(default=128, metadata=limits(1, 4096))   # LSTM hidden size with width on
    layers_on: int = field(default=2, metadata=limits(1, 8))        # LSTM layers with width on
    dropout_rate: float = field(default=0.2, metadata=limits(0.0, 1.0, hi_open=True))  # used when dropout on
    patience: int = field(default=10, metadata=limits(1))           # early-stopping patience, epochs
    rotation_deg: float = field(default=5.0, metadata=limits(0.0, 180.0))   # RandomRotation(±deg)
    affine_deg: float = field(default=5.0, metadata=limits(0.0, 180.0))     # RandomAffine rotation (±deg)
    translate: float = field(default=0.1, metadata=limits(0.0, 1.0))       # RandomAffine max shift, fraction of side
    sgd_lr: float = field(default=0.1, metadata=limits(0.0, 10.0, lo_open=True))     # SGD learning rate (adamw off)
    adamw_lr: float = field(default=1e-3, metadata=limits(0.0, 10.0, lo_open=True))  # AdamW learning rate
    weight_decay: float = field(default=1e-5, metadata=limits(0.0, 1.0))             # AdamW weight decay
    plateau_factor: float = field(default=0.1, metadata=limits(0.0, 1.0, True, True))  # LR multiplier on plateau
    plateau_patience: int = field(default=5, metadata=limits(0))    # epochs without val_loss gain before LR drops

    # --- budget and protocol (fixed for every arm unless an experiment file says otherwise) ---
    seed: int = field(default=0, metadata=limits(0))                # run seed: init, shuffling, augmentation
    max_epochs: int = field(default=35, metadata=limits(1, 10000))  # epoch budget
    batch_size: int = field(default=64, metadata=limits(1, 65536))  # training batch size
    # validation/test batch (no effect on results)
    eval_batch_size: int = field(default=1000, metadata=limits(1, 65536))
    train_samples: int = field(default=0, metadata=limits(0))       # cap on training images (0 = all 48,000)
    val_fraction: float = field(default=0.2, metadata=limits(0.0, 1.0, True, True))  # of the official train set
    split_seed: int = field(default=20240611, metadata=limits(0))   # fixed train/val split, independent of `seed`
    norm_mean: float = 0.1307                                       # normalization, official train pixels on [0, 1]
    norm_std: float = field(default=0.3081, metadata=limits(0.0, lo_open=True))
    precision: str = "32"            # 32 | bf16-mixed (autocast; 2-3x per step on AMX CPUs) | 16-mixed (CUDA only)

    # --- where things go / how they run (not part of the run identity) ---
    data_dir: str = field(default_factory=_default_data_dir)  # MNIST IDX files; env LSTM_MNIST_DATA, else data/
    experiment: str = "lstm-mnist"   # MLflow experiment name
    device: str = "auto"             # auto (cuda when visible) | cpu | cuda | cuda:N
    num_threads: int = field(default=0, metadata=limits(0, 1024))  # torch CPU threads (0 = torch's default)
    log_model: bool = True           # log the tested (best-val_loss) weights as an MLflow model (~0.2-2.3 MB a run)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            task_protocol.check_value(f, getattr(self, f.name))
        if self.readout not in READOUTS:
            raise ConfigError(f"readout={self.readout!r}: allowed values are {', '.join(READOUTS)}")
        if not (self.device in DEVICES or self.device.startswith("cuda:") and self.device[5:].isdigit()):
            raise ConfigError(f"device={self.device!r}: allowed values are auto, cpu, cuda, cuda:N")
        task_protocol.check_precision(self.precision)
        if not self.experiment.strip():
            raise ConfigError("experiment='': give the MLflow experiment a name")

    # Derived values: what the flags resolve to.
    @property
    def hidden_size(self) -> int:
        return self.hidden_on if self.width else self.hidden_off

    @property
    def num_layers(self) -> int:
        return self.layers_on if self.width else self.layers_off

    @property
    def effective_dropout(self) -> float:
        return self.dropout_rate if self.dropout else 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self, data_fingerprint: str, protocol: int | None = None) -> str:
        return harness.identity(self, data_fingerprint, protocol)

    def settings_key(self, data_fingerprint: str) -> str:
        return harness.settings_key(self, data_fingerprint)

    def to_toml(self) -> str:
        return harness.to_toml(self)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}

# The built-in task: this config and its flags, described by the task protocol (task/). Each flag gives its two
# sides and the keys only one side reads (train.py builds the optimizer, the scheduler, dropout, the augmentation
# and early stopping from exactly these; every key not listed is read by every config). A tuned ablation searches
# a key for an arm only when the arm reads it.
TASK = task_protocol.Task(
    name=task_protocol.BUILTIN, version=PROTOCOL_VERSION, config=Config,
    flags=(
        task_protocol.Flag("bidirectional", {"bidirectional": False}, {"bidirectional": True}),
        task_protocol.Flag("dropout", {"dropout": False}, {"dropout": True}, reads_on=("dropout_rate",)),
        task_protocol.Flag("width", {"width": False}, {"width": True},
                           defines=("hidden_on", "layers_on", "hidden_off", "layers_off")),
        task_protocol.Flag("early_stopping", {"early_stopping": False}, {"early_stopping": True},
                           reads_on=("patience",)),
        task_protocol.Flag("augmentation", {"augmentation": False}, {"augmentation": True},
                           reads_on=("rotation_deg", "affine_deg", "translate")),
        task_protocol.Flag("adamw", {"adamw": False}, {"adamw": True}, reads_off=("sgd_lr",),
                           reads_on=("adamw_lr", "weight_decay", "plateau_factor", "plateau_patience")),
        task_protocol.Flag("readout", {"readout": "last"}, {"readout": "final_states"}, label="final_states readout"),
    ),
    # Besides the replicates (the harness's own rule), the keys no search may touch: the split, the normalization
    # and the training set every arm shares.
    never_searched={
        "readout": "readout is a factor of the ablation, never tuned",
        "val_fraction": "the validation split is part of the protocol: every trial must be scored on the same split",
        "split_seed": "the validation split is part of the protocol: every trial must be scored on the same split",
        "norm_mean": "normalization is part of the protocol, fixed for every run",
        "norm_std": "normalization is part of the protocol, fixed for every run",
        "train_samples": "the training set is part of the protocol, fixed for every run",
    },
    not_identity=NOT_IDENTITY,
    # The runtime: data.py reads and splits MNIST, batches it (augmentation, the fused normalize) and ships it to Ray
    # nodes; model.py builds the LSTM and its optimizer; imported when first used (a grid is read without torch).
    data="lstm_mnist.builtin.data:load", fingerprint="lstm_mnist.builtin.data:fingerprint_of",
    prepare="lstm_mnist.builtin.data:prepare", ship="lstm_mnist.builtin.data:ship",
    receive="lstm_mnist.builtin.data:receive", model="lstm_mnist.builtin.model:build",
    loader="lstm_mnist.builtin.data:assignment_loader", sizes="lstm_mnist.builtin.config:sizes",
    optimizer="lstm_mnist.builtin.model:optimizer",
    patience=lambda cfg: cfg.patience if cfg.early_stopping else None,
    derived=lambda cfg: {"hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers},
    datasets="lstm_mnist.builtin.data:datasets", cost="lstm_mnist.builtin.config:cost",
    # The six enhancements of the course: a grid's flags and its full arm unless its file says otherwise. readout
    # takes part only where a grid names it.
    default_flags=("bidirectional", "dropout", "width", "early_stopping", "augmentation", "adamw"),
    shape_flags=("bidirectional", "width"),  # 1 x 100 or 2 x 128, one way or both: the four costs of a step
)
MNIST_TRAIN = 60000  # the official training set's images, split into train and validation (val_fraction)


def sizes(cfg: Config) -> dict:
    """The sizes hook: the splits of the full MNIST training set for this config (train after its cap)."""
    n_val = round(MNIST_TRAIN * cfg.val_fraction)
    n_train = MNIST_TRAIN - n_val
    return {"train": min(n_train, cfg.train_samples) if cfg.train_samples else n_train, "validation": n_val}


def cost(cfg: Config) -> float:
    """The task's cost hook: the LSTM's multiply-adds per time step (4 gates, every layer and direction), times
    the epoch budget and the training images. Only its order matters (it sorts the work)."""
    dirs, h, width = 1 + cfg.bidirectional, cfg.hidden_size, 28
    per_step = 0
    for _ in range(cfg.num_layers):
        per_step += dirs * 4 * h * (width + h)
        width = dirs * h
    return per_step * cfg.max_epochs * (cfg.train_samples or 48000)


FLAGS = TASK.default_flags
