"""One arm's search in a tuned grid: its Optuna study (tuning/search.py: the one trial path), its tuning run,
and its tuned cells.

The study lives in the grid's claims storage (a journal beside the tracking store, or the RDB at --storage),
so every invocation on the grid shares it; its name carries a hash of everything a trial's result depends on
(the arm's config at `tune_seed`, its search space, the sampler and pruner settings), so a changed grid
starts a new study rather than continue an old one. The tuning run is a child of the grid's parent run; the
trials' runs are its children. Once the study holds its budget of COMPLETE + PRUNED trials, the best trial's
values (Search.best) make the arm's tuned cells, one per seed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from ... import claims, config
from ...engine import drive as engine
from .. import grid
from ..plan import Job, classify, resumable
from ...tracking import groups, query, records
from ...tuning.search import Search, StudySpec



def definition(s: grid.GridSpec, a: grid.Arm, fingerprint: str, repeat: int = 0) -> StudySpec:
    """The arm's study (of tuning repeat `repeat`), as a study file would declare it: its config at the repeat's
    tune seed, the keys it searches, the repeat's sampler seed. Repeat 0 is the study of a grid without repeats."""
    t = s.tune
    start = grid.values(s, a.cell(t.seeds[repeat]))
    space = grid.searched(s, a.on)
    settings = t.settings.model_copy(update={"sampler_seed": t.settings.sampler_seed + repeat})
    # what a trial's result depends on (the budget is not: a study keeps its trials whatever the total)
    key = json.dumps({"config": config.identity(s.task.build(start), fingerprint), "space": space,
                      **settings.model_dump(exclude={"trials"})}, sort_keys=True)
    name = (f"tune {s.experiment}/{s.name}/{a.arm}/{f'r{repeat}/' if repeat else ''}"
            f"{hashlib.sha256(key.encode()).hexdigest()[:10]}")
    return StudySpec(path=Path(s.path), name=name, experiment=s.experiment, start=start, space=space,
                     settings=settings, task=s.task)


class ArmSearch(Search):
    """One arm's study (tuning/search.Search) in the grid's storage, its tuning run, and its tuned cells."""

    def __init__(self, s: grid.GridSpec, a: grid.Arm, fingerprint: str, storage, repeat: int = 0):
        self.grid, self.arm, self.repeat = s, a, repeat

        def cell(number: int | None) -> grid.Cell:
            return dataclasses.replace(a.cell(s.tune.seeds[repeat], trial=number), repeat=repeat)

        tags = {**grid.tags(s, cell(None)), **({"tune_repeat": str(repeat)} if s.tune.repeats > 1 else {})}
        super().__init__(definition(s, a, fingerprint, repeat), storage, s.tune.settings.trials, fingerprint, cell,
                         pinned=frozenset({*s.base, *s.budget}), tags=tags)
        self.done = False         # complete, closed, its tuned cells handed to the schedule
        self.gave_up = ""         # why the arm has no tuned values (every trial failed), else ""

    def open_run(self, parent: str, grid_claims: claims.Claims, c) -> None:
        """The arm's tuning run (made once under a claim, reopened by later invocations while the study is not
        complete); trial runs made to agree with Optuna."""
        self.settle_runs(c)
        tags = {"lstm_mnist.role": "tuning", "grid_name": self.grid.name,
                "arm": self.arm.arm, "study_name": self.definition.name, "searched": ",".join(self.definition.space),
                "objective": self.definition.settings.objective, "trials_requested": str(self.total)}
        if self.grid.tune.repeats > 1:
            tags["tune_repeat"] = str(self.repeat)
        self.run_id = engine.held_run(
            grid_claims, f"tuning {self.definition.name}",
            lambda: groups.start_parent(self.grid.experiment, f"{self.key}-tuning", tags, c=c, parent=parent), tags, c,
            reopen=self.state() != "complete")

    @property
    def key(self) -> str:
        """The search's name in the plan and the report: the arm, and its repeat when the grid has several."""
        return f"{self.arm.arm} r{self.repeat}" if self.grid.tune.repeats > 1 else self.arm.arm

    def interrupted(self, writer) -> None:
        """This invocation's unfinished trials FAIL and are queued again; the tuning run KILLED unless another
        process still runs trials of the study (a later start reopens it)."""
        super().interrupted(writer)
        if self.study is not None and self.run_id and not self.done and not self.counts()["RUNNING"]:
            records.end_run(self.run_id, records.KILLED, c=writer.c)

    def tuned_jobs(self, force: bool = False) -> list[Job]:
        """The arm's replicate cells at its best trial's values, one per seed of this repeat (Tune.repeat_of),
        resolved against the store."""
        best = self.best()
        a, s = self.arm, self.grid
        jobs = []
        for seed in s.tune.seeds_of(s.seeds, self.repeat):
            cell = a.cell(seed, variant="tuned")
            cfg = s.task.build({**grid.values(s, cell), **best.params}, f"{s.path} cell {cell.name}")
            tags = {**grid.tags(s, cell), "tuned_from": best.user_attrs.get("mlflow_run_id", ""),
                    "tuning_run": self.run_id, "tuned_values": json.dumps(best.params, sort_keys=True),
                    **({"tune_repeat": str(self.repeat)} if s.tune.repeats > 1 else {})}
            job = Job(cell, cfg, config.identity(cfg, self.fingerprint), pinned=self.pinned,
                      fingerprint=self.fingerprint, tags=tags)
            runs = query.search(s.experiment, config_hash=job.config_hash)
            classify(job, runs, force)
            resumable(job, runs)  # a replicate stopped mid-training goes on from its checkpoint, in its run
            jobs.append(job)
        return jobs

    def close(self, c) -> dict:
        """The tuning run's record of the finished search (Search.record), then FINISHED; FAILED with the reason
        when no trial completed (the arm gives up: no tuned cells)."""
        metrics, tags = self.record(c)
        if "best_trial" not in tags:
            n = self.counts()
            self.gave_up = f"no trial of arm {self.key} completed ({n['PRUNED']} pruned, {n['FAIL']} failed)"
            tags["gave_up"] = self.gave_up
        records.end_run(self.run_id, records.FAILED if self.gave_up else records.FINISHED, metrics, tags, c=c)
        self.done = True
        return metrics
