"""The engine's unit of work: a job, and the cell it trains."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cell:
    """What a job trains, by name: an arm of a grid at a seed, or a tuning trial of an arm (or of a study)."""
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

    @property
    def name(self) -> str:
        if self.trial is not None:
            return f"{self.arm}-{f'r{self.repeat}-' * bool(self.repeat)}t{self.trial}"
        return f"{self.arm}-{'tuned-' * (self.variant == 'tuned')}s{self.seed}"


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
    trial: object = None         # a trial's hooks (tuning/search.Trial): its epochs and its end go to its study
