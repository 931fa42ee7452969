"""The engine's unit of work: a job, and the cell it trains."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Cell:
    """What a job trains, by name: an arm of a grid at a seed, a tuning trial of an arm (or of a study), or a
    `run`."""
    arm: str          # "full", "baseline", "full-<flag>", "baseline+<flag>", "baseline+a+b"; a study's name
    design: str       # the first design that asked for the arm ("reference" for full and baseline; "study")
    flag: str         # the flag the arm varies in that design ("" for reference and multi-flag factorial arms)
    seed: int
    on: frozenset     # factors that are on
    designs: tuple = ()   # every design that uses this arm
    variant: str = ""     # in a tuned grid: "fixed" (untuned), "tuned", "both" (an arm that searches nothing)
    trial: int | None = None  # a tuning trial of the arm (trained at tune_seed), not a replicate
    roles: tuple = ()     # (design, flag, the arm's name there) for every design that uses this arm: with two flags,
    #                       full-dropout is also baseline+adamw (it varies dropout, then adamw)
    repeat: int = 0       # a trial's tuning repeat (tune_repeats): repeat r > 0 names its trials <arm>-r<r>-t<n>
    label: str = ""       # a name of its own (a `run`'s), instead of <arm>-s<seed>

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.trial is not None:
            return f"{self.arm}-{f'r{self.repeat}-' * bool(self.repeat)}t{self.trial}"
        return f"{self.arm}-{'tuned-' * (self.variant == 'tuned')}s{self.seed}"


class TrialHooks(Protocol):
    """A tuning trial's hooks (tuning/search.Trial), called by the engine's writer."""
    run_id: str  # its run, once the writer opened it
    chain: str   # the trial and its retries, as a file name: where its checkpoint lives (a retry goes on from it)
    requeued: bool  # it ended FAIL because its process died, and a retry of it is queued (its checkpoint is kept)

    def epoch(self, epoch: int, record: dict) -> str | None:
        """The epoch reported to its pruner: the reason to stop the trial now, or None."""

    def ended(self, run_id: str, state: str, seconds: float, result=None, reason: str = "",
              died: bool = False) -> tuple[str, dict, dict]:
        """Its study told how it ended: (the progress line's words, its run's metrics, its run's tags)."""


@dataclass
class Job:
    """What the engine trains: a grid's cell resolved against the data and the store, or a search's trial."""
    cell: Cell
    cfg: object                  # the config of its task (Task.build)
    config_hash: str
    state: str = "todo"          # todo | done | stale (RUNNING, owner dead) | elsewhere (RUNNING, owner alive)
    note: str = ""
    stale_ids: list = field(default_factory=list)
    pinned: frozenset = frozenset()  # keys the grid's base file or [budget] sets (workers leave them alone)
    fingerprint: str = ""        # the data's fingerprint (part of the identity)
    older: bool = False          # not done, but trained under another protocol version (so trained again)
    parent: str = ""             # the run this job's run goes under ("": the grid's parent run)
    tags: dict = field(default_factory=dict)  # its run's tags: the grid's (grid.tags), a tuned cell's, a trial's
    trial: TrialHooks | None = None  # a trial's: its epochs and its end go to its study
    resume_run: str = ""         # the run of this cell its checkpoint continues (planned: it died or was stopped)
    slot: object = None          # training/checkpoint.Slot: where its checkpoint is written every epoch
    logged: int = -1             # the last epoch its run has logged (a resumed run logs none twice)
