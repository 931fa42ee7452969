"""A tuned grid's work for the engine (a work source, engine/drive.py): each arm's tuned cells as soon as its
study is complete, then trials (one arm after another, so the searches advance together), then the cells
known from the start (arms that search nothing; the untuned cells with `fixed = true`). The plan recorded on
the grid's parent run grows with each arm's tuned cells, so the report's members are exactly the grid's."""
from __future__ import annotations

import dataclasses
from collections import deque

from .. import grid
from ..plan import Job, Plan, recorded
from ..planned import TunedArm, Tuning
from ...engine.pool import first_open
from ...engine.writer import Writer
from ...tracking import artifacts, records
from .search import ArmSearch


class Schedule:
    def __init__(self, s: grid.GridSpec, searches: list[ArmSearch], todo: list[Job], writer: Writer, parent: str,
                 every: list[Job], share: set[str], grid_claims, force: bool, sequential: dict | None = None):
        self.grid, self.writer, self.parent, self.every, self.share = s, writer, parent, every, share
        self.force, self.searches, self.sequential = force, searches, sequential
        self.pending = deque(todo)     # cells known from the start
        self.ready: deque[Job] = deque()  # tuned cells of complete studies, not trained yet
        self.tuned: list[Job] = []     # every tuned cell known (the plan's)
        self.searching = [x for x in searches]
        self.turn = 0
        for x in searches:
            x.open_run(parent, grid_claims, writer.c)
        self._advance()
        self.record_plan()

    def take(self, where: dict) -> Job | None:
        self._advance()
        job = first_open(self.ready, self.writer, where)
        if job is not None:
            return job
        for k in range(len(self.searching)):
            x = self.searching[(self.turn + k) % len(self.searching)]
            job = x.ask()
            if job is not None and self.writer.open(job, where):
                self.turn = (self.turn + k + 1) % len(self.searching)
                return job
        return first_open(self.pending, self.writer, where)

    def more(self) -> bool:
        return bool(self.ready or self.pending or self.searching)

    def beating(self) -> list[tuple]:
        """This process's live trials, for the engine's heartbeat."""
        return [b for x in self.searching for b in x.beating()]

    def _advance(self) -> None:
        """Studies that became complete (here or in another process): close them, queue their tuned cells."""
        for x in list(self.searching):
            state = x.poll()  # a study that waits on another process's trials: is that process alive?
            if state not in ("complete", "exhausted"):
                continue
            self.searching.remove(x)
            x.close(self.writer.c)
            if x.gave_up:
                seeds = self.grid.tune.seeds_of(self.grid.seeds, x.repeat)
                for seed in seeds:
                    self.writer.tally.failed.append((f"{x.arm.arm}-tuned-s{seed}", x.gave_up))
                self.writer.progress.grow(-len(seeds))
                self.writer.progress.line(f"{x.key}: {x.gave_up}; its tuned cells are not trained")
                continue
            self._queue(x.tuned_jobs(self.force), x)

    def _queue(self, jobs: list[Job], x: ArmSearch) -> None:
        if jobs:
            self.writer.progress.line(f"{x.key}: study complete, tuned values {jobs[0].tags['tuned_values']}; its "
                                      f"{len(jobs)} replicate cells are queued")
        for job in jobs:
            self.tuned.append(job)
            self.share.add(job.config_hash)
            for run_id in job.stale_ids:
                records.mark_failed(self.writer.c, run_id, "stale: process died")
            if job.state == "done":
                self.writer.tally.skipped += 1
                self.writer.progress.grow(-1)
            elif job.state == "elsewhere":
                self.writer.progress.line(f"{job.cell.name}: {job.note}")
                self.writer.progress.grow(-1)
            else:
                self.ready.append(job)
        self.record_plan()

    def record_plan(self) -> None:
        records.log_dict(self.parent, tuned_plan(self.grid, self.every + self.tuned, self.searches,
                                                 self.sequential).to_dict(), artifacts.PLAN, self.writer.c)

    def finish(self) -> None:
        """The grid stops (done or not): this process's unfinished trials FAIL and are queued again; studies
        completed meanwhile are closed; the plan records every tuned cell known."""
        for x in self.searching:
            x.interrupted(self.writer)
        self._advance()
        self.record_plan()


def tuned_plan(s: grid.GridSpec, jobs: list[Job], searches: list[ArmSearch], sequential: dict | None = None) -> Plan:
    """The plan of a tuned grid: its cells (a tuned cell once its arm's study is complete), per arm what it
    searched, its study and its tuning run (the report's budget curves and tuning costs), and the looks of a
    grid run --until-decided."""
    t = s.tune
    arms = {x.key: TunedArm(tuple(x.definition.space), x.definition.name, x.run_id, x.done, x.gave_up, x.arm.arm,
                            x.repeat) for x in searches}
    repeat_of = {str(seed): r for seed, r in t.repeat_of(sequential["seed_order"] if sequential else s.seeds).items()}
    plan = recorded(s, jobs, tuning=Tuning(t.settings.trials, t.settings.objective, t.fixed, t.seed, t.space, arms,
                                           t.repeats, repeat_of, t.settings.model_dump(mode="json")),
                    sequential=sequential)
    cells: dict[str, object] = {}
    for cell in plan.cells:  # a tuned cell whose best values are the grid's own is its untuned cell too
        if cell.config_hash in cells:
            cells[cell.config_hash] = dataclasses.replace(cells[cell.config_hash], variant="both")
        else:
            cells[cell.config_hash] = cell
    return dataclasses.replace(plan, cells=tuple(cells.values()))
