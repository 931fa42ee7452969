"""A task's runtime: the splits its data hook returns, the defaults of its optional hooks, and a hook given as
"module:function" imported when first called (a grid is read without torch)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, one_line

REQUIRED_HOOKS = {"data": "(cfg, device) -> Splits", "model": "cfg -> torch.nn.Module"}
HOOKS = (*REQUIRED_HOOKS, "fingerprint", "prepare", "loss", "optimizer", "patience", "derived", "cost", "datasets",
         "ship", "receive", "loader", "sizes")


@dataclass
class Splits:
    """A task's data on one device: inputs and integer class labels (0 .. classes-1) of each split. The harness
    shuffles and batches them (`prepare` turns an indexed batch into what the model reads) and puts the
    fingerprint (a hash of the data, e.g. of its files' bytes) into every run's identity."""
    train_x: Any
    train_y: Any
    val_x: Any
    val_y: Any
    test_x: Any
    test_y: Any
    fingerprint: str


def default_prepare(cfg, x, train: bool, generator):
    """A batch as the model reads it: the inputs as floats, unchanged."""
    return x.float()


def default_optimizer(cfg, params):
    """Adam at the config's `lr` (1e-3 when it has none)."""
    import torch

    return torch.optim.Adam(params, lr=getattr(cfg, "lr", 1e-3))


def default_loss(cfg, logits, y):
    """Cross-entropy, the loss validation and test are scored by."""
    import torch.nn.functional as F

    return F.cross_entropy(logits, y)


# What an optional hook a task leaves out does; fingerprint, ship and receive have none (Task.hook: None).
DEFAULT_HOOKS = {"prepare": default_prepare, "loss": default_loss, "optimizer": default_optimizer,
                 "patience": lambda cfg: None, "derived": lambda cfg: {}, "cost": lambda cfg: float(cfg.max_epochs),
                 "datasets": lambda cfg: []}


def resolve_hook(spec, where: str):
    """A hook given as "module:function", imported now; a callable as it is."""
    if callable(spec):
        return spec
    module, sep, name = str(spec).partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except Exception as e:  # noqa: BLE001 - a user's module may fail in any way; say how, in one line
        raise ConfigError(f"{where} {spec!r} could not be imported ({one_line(e)}); give a callable or "
                          "an importable \"module:function\"") from None
    if not callable(fn):
        raise ConfigError(f"{where} {spec!r} is a {type(fn).__name__}, not a function")
    return fn
