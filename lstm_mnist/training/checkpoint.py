"""A running cell's checkpoint: everything its training needs to go on from the end of an epoch exactly as if it
had never stopped (same device, same precision): the weights, the optimizer, the scheduler and the early-stopping
state, the best val_loss so far with its epoch and weights, the history, and the state of every random-number
generator the run draws from (torch's for dropout, the training batches' order and augmentation, Python's and
NumPy's). One file per running cell, written atomically every epoch (a kill in the middle of a write leaves the
previous epoch's file whole), with a small JSON beside it that says whose it is without reading the weights.
Knows nothing of MLflow (nor imports torch until it writes or reads one); the caller names the file and the identity
it must match."""
from __future__ import annotations

import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

FORMAT = 1  # raised when what a checkpoint holds changes: an older file is not used (the cell starts again)


@dataclass(frozen=True)
class Slot:
    """Where a cell's checkpoint lives and whose it is: `key` (its config_hash) must match to be used."""
    path: Path
    key: str
    run_id: str = ""    # the MLflow run it belongs to (the one a resume continues)

    @property
    def sidecar(self) -> Path:
        return self.path.with_suffix(".json")

    def remove(self) -> None:
        """The checkpoint, its sidecar, and what a write killed halfway left of either."""
        for p in (self.path, self.sidecar):
            p.unlink(missing_ok=True)
            for torn in p.parent.glob(f".{p.name}.*.tmp"):
                torn.unlink(missing_ok=True)


def rng_state() -> dict:
    import numpy as np
    import torch

    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(), "numpy": np.random.get_state()}


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])


def write(slot: Slot, state: dict) -> None:
    """The state as the slot's file, atomically: written beside it, flushed, then renamed over it; the sidecar
    (key, epoch, run) after it, the same way."""
    import torch

    slot.path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "key": slot.key, **state}, buf)
    _atomic(slot.path, buf.getvalue())
    side = {"format": FORMAT, "key": slot.key, "epoch": state["epoch"], "run_id": slot.run_id}
    _atomic(slot.sidecar, json.dumps(side).encode())


def _atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def peek(slot: Slot) -> dict | None:
    """The sidecar of a usable-looking checkpoint of this slot's key (format, key), or None."""
    try:
        side = json.loads(slot.sidecar.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(side, dict) and side.get("format") == FORMAT and side.get("key") == slot.key
    return side if ok and slot.path.is_file() else None


def read(slot: Slot) -> tuple[dict | None, str]:
    """(the checkpoint's state, "") when it exists and is this cell's; else (None, why it is not used: "" when
    there is none)."""
    import torch

    if not slot.path.is_file():
        return None, ""
    try:
        state = torch.load(slot.path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways; any of them means: not used
        return None, f"checkpoint {slot.path} is damaged ({type(e).__name__}); training from epoch 0"
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return None, f"checkpoint {slot.path} was written by another version; training from epoch 0"
    if state.get("key") != slot.key:
        return None, f"checkpoint {slot.path} belongs to config_hash {state.get('key')}, not {slot.key}; training " \
                     "from epoch 0"
    return state, ""
