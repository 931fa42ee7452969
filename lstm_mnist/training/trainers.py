"""The Lightning trainer every run trains under: quiet, no logger nor checkpointing of Lightning's own (the harness
records and checkpoints), and Ctrl-C given back as KeyboardInterrupt."""
from __future__ import annotations

import logging
import signal
import threading
import warnings

import lightning as L
import torch


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


def interruptible(method, trainer: L.Trainer, *args, **kwargs) -> None:
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
