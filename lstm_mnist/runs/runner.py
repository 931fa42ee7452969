"""One tracked run (`run`): resolve the identity, skip it if already FINISHED, else train it as a one-job source
of the engine every grid and study trains through (engine/: the same writer opens, fills and closes its run, the
same core lease and pinning; a run is no grid's cell, so nobody claims it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .. import config, metrics
from .. import task as task_protocol
from ..engine.drive import drive
from ..engine.jobs import Cell, Job
from ..engine.pool import Queue
from ..engine.progress import Progress, say
from ..engine.writer import Tally, Writer
from ..machine import lease
from ..tracking import records, store
from ..training import outcome


@dataclass
class Outcome:
    config_hash: str
    run_id: str
    status: str                 # FINISHED (trained now), SKIPPED (already FINISHED), FAILED
    test: dict                  # test metrics (empty when it failed)
    seconds: float = 0.0
    result: outcome.Result | None = None
    error: str = ""             # why it FAILED


def epoch_line(epoch: int, r: dict) -> str:
    """One dense line per epoch."""
    return (f"epoch {epoch:3d}  train_loss {r['train_loss']:.4f}  val_loss {r['val_loss']:.4f}  "
            f"val_f1 {r['val_f1']:.4f}  val_acc {r['val_acc']:.4f}  lr {r['lr']:.2g}  "
            f"{r['train_samples_per_s']:.0f} samples/s  {r['epoch_time_s']:.1f}s")


class Lines(Progress):
    """`run`'s progress: each epoch as it ends (`on_epoch`), and what its outcome says (its run, result, error)."""

    def __init__(self, writer_runs: dict, on_epoch: Callable[[int, dict], None] | None):
        super().__init__(1, 1, out=lambda text: say(text))  # plain lines, no bar: one job
        self.runs, self.on_epoch = writer_runs, on_epoch
        self.run_id, self.result, self.seconds, self.error = "", None, 0.0, ""

    def started(self, job: Job) -> None:
        self.run_id = self.runs[job.cell.name].run_id

    def epoch(self, job: Job, epoch: int, record: dict) -> None:
        if self.on_epoch:
            self.on_epoch(epoch, record)

    def finished(self, job: Job, result, seconds: float) -> None:
        self.result, self.seconds = result, seconds

    def failed(self, job: Job, reason: str, seconds: float) -> None:
        self.error, self.seconds = reason, seconds


def execute(cfg, run_name: str, force: bool = False,
            on_epoch: Callable[[int, dict], None] | None = None) -> Outcome:
    """Train and record `cfg` unless its identity already has a FINISHED run (then return that one). Beside a
    grid or study on this host it takes its share of the cores (the host's lease), pinned to them unless the
    config sizes torch's threads itself."""
    fp = task_protocol.of(cfg).data_fingerprint(cfg)
    config_hash = config.identity(cfg, fp)
    c = store.client()
    done = [] if force else records.find_runs(c, store.experiment_id(c, cfg.experiment), config_hash)
    if done:
        r = done[0]
        return Outcome(config_hash, r.run_id, "SKIPPED", {k: r.metrics[k] for k in metrics.TEST if k in r.metrics})
    pinned = frozenset(k for k, given in (("num_threads", cfg.num_threads), ("device", cfg.device != "auto")) if given)
    job = Job(Cell(run_name, "run", "", cfg.seed, frozenset(), label=run_name), cfg, config_hash, pinned=pinned,
              fingerprint=fp)
    writer = Writer("", c, Tally(total=1), None)
    writer.progress = lines = Lines(writer.open_runs, on_epoch)
    with lease.Lease(1) as held:
        drive(Queue([job], writer), writer, 1, held, pin=not cfg.num_threads)
    if lines.result is None:
        return Outcome(config_hash, lines.run_id, records.FAILED, {}, lines.seconds, error=lines.error)
    return Outcome(config_hash, lines.run_id, records.FINISHED, lines.result.test, lines.seconds, lines.result)
