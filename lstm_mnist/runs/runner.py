"""One tracked run: resolve the identity, skip it if already FINISHED, else train and record it.

This is the `run` command's path; grids and studies record their runs through the engine's writer
(engine/writer.py), with the same records.open_run and RunRecord.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ..tracking import records, store
from .. import config, metrics
from .. import task as task_protocol
from ..training import train


@dataclass
class Outcome:
    config_hash: str
    run_id: str
    status: str                 # FINISHED (trained now), SKIPPED (already FINISHED)
    test: dict                  # test metrics
    seconds: float = 0.0
    result: train.Result | None = None


def epoch_line(epoch: int, r: dict) -> str:
    """One dense line per epoch."""
    return (f"epoch {epoch:3d}  train_loss {r['train_loss']:.4f}  val_loss {r['val_loss']:.4f}  "
            f"val_f1 {r['val_f1']:.4f}  val_acc {r['val_acc']:.4f}  lr {r['lr']:.2g}  "
            f"{r['train_samples_per_s']:.0f} samples/s  {r['epoch_time_s']:.1f}s")


def execute(cfg, run_name: str | None = None, force: bool = False,
            on_epoch: Callable[[int, dict], None] | None = None) -> Outcome:
    """Train and record `cfg` unless its identity already has a FINISHED run (then return that one). An error in
    training ends the run FAILED with it, and propagates."""
    fp = task_protocol.of(cfg).data_fingerprint(cfg)
    config_hash = config.identity(cfg, fp)
    c = store.client()
    exp_id = store.experiment_id(c, cfg.experiment)
    done = [] if force else records.find_runs(c, exp_id, config_hash)
    if done:
        r = done[0]
        test = {k: r.metrics[k] for k in metrics.TEST if k in r.metrics}
        return Outcome(config_hash, r.run_id, "SKIPPED", test)
    t0 = time.perf_counter()
    with records.run(cfg, config_hash, fp, run_name=run_name, c=c) as rec:
        def log_epoch(epoch, record):
            rec.log_epoch(epoch, record)
            if on_epoch:
                on_epoch(epoch, record)
        result = train.fit(cfg, on_epoch=log_epoch)
        rec.log_result(result)
    return Outcome(config_hash, rec.run_id, records.FINISHED, result.test, time.perf_counter() - t0, result=result)
