"""The engine's unit of work."""
from __future__ import annotations

from dataclasses import dataclass, field


TRIALS_FILE = "trials.json"  # on a search's run: each trial's state, value, params, seconds (the report reads it)

@dataclass
class Job:
    """What the engine trains: a grid's cell resolved against the data and the store, or a search's trial."""
    cell: object                 # grids.grid.Cell: name, arm, seed, design, variant, trial
    cfg: object                  # the config of its task (Task.build)
    config_hash: str
    state: str = "todo"          # todo | done | stale (RUNNING, owner dead) | elsewhere (RUNNING, owner alive)
    note: str = ""
    stale_ids: list = field(default_factory=list)
    pinned: frozenset = frozenset()  # keys the study's base file or [budget] sets (workers leave them alone)
    fingerprint: str = ""        # the data's fingerprint (part of the identity)
    older: bool = False          # not done, but trained under another protocol version (so trained again)
    parent: str = ""             # the run this job's run goes under ("": the grid's parent run)
    tags: dict = field(default_factory=dict)  # its run's tags: the grid's (grid.tags), a tuned cell's, a trial's
    trial: object = None         # a trial's hooks (engine/search.Trial): its epochs and its end go to its study
