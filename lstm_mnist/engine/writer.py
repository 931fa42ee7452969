"""The one writer: claims, opens, fills and closes the run of every job the engine trains (a grid's cells, a
search's trials), and tallies what happened."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .. import claims
from ..errors import one_line
from ..tracking import outages, records, store
from ..training import checkpoint as ckpt
from .jobs import Job
from .progress import Progress


@dataclass
class Tally:
    """What this invocation did; logged on the parent run at the end."""
    total: int = 0
    skipped: int = 0
    finished: int = 0
    trials: int = 0                               # tuning trials that ended (any state), in a tuned grid
    failed: list = field(default_factory=list)   # (cell name, reason)
    elsewhere: list = field(default_factory=list)  # cells another invocation claimed (it trains them)
    done_in_store: int | None = None  # FINISHED cells in the store at the end, other invocations' included
    t0: float = field(default_factory=time.perf_counter)

    def metrics(self) -> dict:
        done = self.skipped + self.finished if self.done_in_store is None else self.done_in_store
        return {"cells_total": self.total, "cells_done": done, "cells_skipped": self.skipped,
                "cells_failed": len(self.failed), "wall_time_s": time.perf_counter() - self.t0}


# ---------------------------------------------------------------- the one writer
class Writer:
    """Claims, opens, fills and closes the jobs' runs: every write of a job's run goes through here (the runs
    that hold them, a grid's parent and an arm's tuning run, are their owners' to write). The client is
    `store.client()`'s: a store outage blocks the call (bounded by --store-wait), so epochs
    reported meanwhile wait in the workers' pipes and are written once the store is back."""

    def __init__(self, parent: str, c, tally: Tally, progress: "Progress", grid_claims: claims.Claims | None = None):
        self.parent, self.c, self.tally, self.progress = parent, c, tally, progress
        self.claims = grid_claims
        self.open_runs: dict[str, records.RunRecord] = {}   # cell name -> its open run (owner-tagged by open_run)

    def claim(self, job: Job) -> bool:
        """Whether this process trains the cell: no other invocation holds it or finished it meanwhile. A
        trial is its study's to hand out (one asker gets each): no claim."""
        if self.claims is None or job.trial is not None:
            return True
        got = self.claims.take(job.config_hash)
        if isinstance(got, str):
            self.tally.elsewhere.append(job.cell.name)
            self.progress.line(f"skip {job.cell.name}: {got}")
            return False
        return True

    def open(self, job: Job, where: dict | None = None) -> bool:
        """Open the cell's run; False (the cell failed, with its one-line reason) when it cannot be written."""
        tags = {**job.tags, **(where or {})}
        try:
            if job.resume_run:  # its checkpoint goes on in the run it belongs to
                self.open_runs[job.cell.name], job.logged = records.reopen_run(job.cfg, job.config_hash,
                                                                              job.resume_run, tags, self.c)
            else:
                self.open_runs[job.cell.name] = records.open_run(job.cfg, job.config_hash,
                                                               job.fingerprint, job.cell.name,
                                                               job.parent or self.parent, tags, self.c)
                job.logged = -1
            run_id = self.open_runs[job.cell.name].run_id
            # A checkpoint every epoch, so a kill costs at most the epoch it was in: a cell's is named by its
            # identity; a trial's by its chain of retries (a retry is a new trial, in a new run, at the same point).
            if job.trial is not None:
                job.trial.run_id = run_id
                job.slot = slot(job.config_hash, run_id, job.trial.chain)
            else:
                job.slot = slot(job.config_hash, run_id)
        except outages.StoreDown:
            raise
        except Exception as e:  # e.g. an artifact folder that cannot be written: this cell, not the grid
            if job.trial is not None:  # a trial that cannot be recorded ends FAIL; the search goes on
                self._trial_ended(job, "", "FAIL", 0.0, reason=f"could not open its run: {_one_line(e)}")
                return False
            self._settle(job, done=False)
            self.tally.failed.append((job.cell.name, f"could not open its run: {_one_line(e)}"))
            self.progress.failed(job, self.tally.failed[-1][1], 0.0)
            return False
        self.progress.started(job)
        return True

    def tag(self, job: Job, tags: dict) -> None:
        """Tags learned once the cell runs (a Ray task's node)."""
        records.set_tags(self.open_runs[job.cell.name].run_id, tags, self.c)

    def retry(self, job: Job, reason: str, seconds: float) -> None:
        """The cell's process died (a Ray task's worker or node) and it is trained again in the same run, which
        stays RUNNING: it goes on from its checkpoint (Writer.resumed) and logs no epoch twice."""
        rec = self.open_runs[job.cell.name]
        records.set_tags(rec.run_id, {"retried": f"{reason} after {seconds:.0f}s"}, self.c)
        self.progress.line(f"retry {job.cell.name}: {reason} after {seconds:.0f}s; goes on from its checkpoint")

    def restart(self, job: Job, reason: str) -> bool:
        """The run the cell was reopened in cannot go on (its checkpoint was not usable): that run FAILED with the
        reason, and a new run opened for it under the same claim; False when that run cannot be opened (the cell
        then failed)."""
        records.mark_failed(self.c, self.open_runs.pop(job.cell.name).run_id, f"{reason}; trained again")
        self.progress.line(f"retry {job.cell.name}: {reason}; trained again from epoch 0")
        return self.open(job)

    def resumed(self, job: Job, epoch: int | None, history: list, why: str) -> bool:
        """What the cell's training found in its checkpoint, before its first epoch: it goes on after `epoch`
        (its run then logs the epochs of `history` it lacks, and none twice), or starts from epoch 0 (`why`: a
        checkpoint it could not use). A run reopened for a checkpoint that was not used ends FAILED with the
        reason and the cell gets a fresh run; False when that run cannot be opened."""
        if epoch is None:
            if not job.resume_run:
                if why:
                    self.progress.line(f"{job.cell.name}: {why}")
                return True
            job.resume_run, job.logged = "", -1
            return self.restart(job, why or "its checkpoint is gone")
        rec = self.open_runs[job.cell.name]
        for e, record in enumerate(history):
            if e > job.logged:  # the checkpoint got further than the run's log (the writer died first; a trial's
                rec.log_epoch(e, record)  # retry, whose run is new, logs every epoch)
        job.logged = max(job.logged, epoch)
        records.set_tags(rec.run_id, {"resumed_from": str(epoch + 1)}, self.c)
        self.progress.line(f"{job.cell.name}: resumed from its checkpoint, at epoch {epoch + 1}")
        if job.trial is not None:  # its study hears the epochs it goes on after, as from a trial that trained them
            for e, record in enumerate(history):
                why = job.trial.epoch(e, record)
                if why:
                    self.pruned(job, f"{why} (from its checkpoint)", 0.0)
                    return False
        return True

    def epoch(self, job: Job, epoch: int, record: dict) -> str | None:
        """Log the epoch (unless its run has it: a resumed cell trains again, exactly, the epochs after its
        checkpoint); for a trial, also report it to its pruner: the reason to stop it now, or None."""
        if epoch > job.logged:
            self.open_runs[job.cell.name].log_epoch(epoch, record)
            job.logged = epoch
        self.progress.epoch(job, epoch, record)
        return job.trial.epoch(epoch, record) if job.trial is not None else None

    def finished(self, job: Job, result, seconds: float) -> None:
        rec = self.open_runs[job.cell.name]  # popped once ended: until then kill_open can still close it
        try:
            rec.log_result(result)
            if job.trial is None:
                records.end_run(rec.run_id, records.FINISHED, c=self.c)
        except outages.StoreDown:
            raise
        except Exception as e:  # a figure, disk or store error fails this cell alone, never the grid
            self.failed(job, f"could not record result: {_one_line(e)}", seconds)
            return
        del self.open_runs[job.cell.name]
        if job.slot is not None:  # FINISHED (a trial: COMPLETE): its checkpoint has served
            job.slot.remove()
        if job.trial is not None:  # its study is told first; its run then ends FINISHED with the objective
            self._trial_ended(job, rec.run_id, "COMPLETE", seconds, result)
            return
        self._settle(job, done=True, run_id=rec.run_id)
        self.tally.finished += 1
        self.progress.finished(job, result, seconds)

    def failed(self, job: Job, reason: str, seconds: float, died: bool = False) -> None:
        """The run FAILED with its reason; a trial's also in Optuna (queued again when its worker `died`). A cell
        whose process `died` keeps its checkpoint (the next start goes on from it); one whose training failed
        (it diverged) does not: it would fail again, the same way."""
        run_id = self.open_runs[job.cell.name].run_id
        records.mark_failed(self.c, run_id, reason)
        if job.slot is not None and not died:
            job.slot.remove()
        del self.open_runs[job.cell.name]  # only once ended: if that raised, kill_open still closes it
        if job.trial is not None:  # a diverged trial is the search's outcome, not the grid's failure
            self.progress.grow(1)  # it does not count toward the arm's budget: another trial takes its place
            self._trial_ended(job, run_id, "FAIL", seconds, reason=reason, died=died)
            if job.slot is not None and died and not job.trial.requeued:  # no retry will go on from it
                job.slot.remove()
            return
        self._settle(job, done=False)
        self.tally.failed.append((job.cell.name, reason))
        self.progress.failed(job, reason, seconds)

    def pruned(self, job: Job, reason: str, seconds: float) -> None:
        """A trial its pruner stopped: its run KILLED (as `tune` records a pruned trial), PRUNED in Optuna."""
        run_id = self.open_runs[job.cell.name].run_id
        if job.slot is not None:
            job.slot.remove()
        records.set_tags(run_id, {"stopped": f"TrialPruned: {reason}"}, self.c)
        records.end_run(run_id, records.KILLED, c=self.c)
        del self.open_runs[job.cell.name]
        self._trial_ended(job, run_id, "PRUNED", seconds, reason=reason)

    def _trial_ended(self, job: Job, run_id: str, state: str, seconds: float, result=None, **why) -> None:
        """Tell the trial's search how it ended, record that on its run, count it and show its line."""
        self.tally.trials += 1
        self.progress.trial(job, self.trial_ended(job.trial, run_id, state, seconds, result, **why), seconds)

    def trial_ended(self, trial, run_id: str, state: str, seconds: float, result=None, **why) -> str:
        """A trial's end: its study told (tuning/search.Trial.ended), its run's record written here (COMPLETE:
        the objective, FINISHED; else its state as a tag). Returns the progress line's words."""
        words, metrics, tags = trial.ended(run_id, state, seconds, result, **why)
        run_id = run_id or trial.run_id
        if state == "COMPLETE":
            records.end_run(run_id, records.FINISHED, metrics=metrics, tags=tags, c=self.c)
        elif run_id:
            records.set_tags(run_id, tags, self.c)
        return words

    def _settle(self, job: Job, done: bool, **attrs) -> None:
        if self.claims is not None:
            self.claims.settle(job.config_hash, done, **attrs)

    def kill_open(self, reason: str = "interrupted") -> None:
        """Runs still open when the grid stops (Ctrl-C, a preemption signal, a crash here) end KILLED with the
        reason, never left RUNNING (their checkpoints stay: the next start resumes them); when the store itself
        is away they stay RUNNING, and the next start's stale-run rule takes them."""
        for rec in self.open_runs.values():
            try:
                records.mark_failed(self.c, rec.run_id, reason, records.KILLED)
            except Exception:
                break
        self.open_runs.clear()


def _one_line(e: BaseException) -> str:
    return one_line(e)[:300]


def slot(config_hash: str, run_id: str = "", chain: str = "") -> ckpt.Slot:
    """Where a job's checkpoint lives (store.checkpoints_dir(): beside the store, or $LSTM_MNIST_CHECKPOINTS): a
    cell's by its config_hash, a trial's by its chain (tuning/search.Trial.chain) under trials/; either is used only
    by a job of the same config_hash."""
    where = store.checkpoints_dir()
    return ckpt.Slot(where / "trials" / f"{chain}.ckpt" if chain else where / f"{config_hash}.ckpt", config_hash,
                     run_id)
