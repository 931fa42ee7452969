"""The plan a grid records on its parent run (`plan.json`), typed: what the grid planned, written by every invocation
of the grid and read
back by the report, which derives nothing the grid decided. Pure: no torch, no MLflow.

A plan holds each cell with every design it serves and the flag it varies in each (`roles`), the factorial
fraction and its generators, a tuned grid's searches, and an `--until-decided` grid's looks. A plan.json
written before this format (no `plan_version`) is refused in one line: rerunning the grid's `ablate`
command (which trains nothing that is done) records it again.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..analysis import fractional
from ..config import UserError

PLAN_VERSION = 2


class PlanError(UserError):
    """A plan that cannot be read (written by an older version): one line naming the fix."""


@dataclass(frozen=True)
class PlannedCell:
    cell: str            # the run name: <arm>-s<seed>, <arm>-tuned-s<seed>
    arm: str
    seed: int
    config_hash: str
    roles: tuple         # ((design, flag, name), ...): every design the cell serves, the flag it varies there ("":
    #                      none) and the arm's name there (full-dropout is baseline+adamw in add_one_in)
    variant: str = ""    # a tuned grid's: fixed (untuned), tuned, both

    @property
    def designs(self) -> tuple:
        return tuple(r[0] for r in self.roles)


@dataclass(frozen=True)
class Fraction:
    """The factorial design: its factors in letter order and the generator words of its fraction."""
    factors: tuple
    generators: tuple = ()

    @property
    def design(self) -> fractional.Design:
        return fractional.Design(self.factors, self.generators)


@dataclass(frozen=True)
class TunedArm:
    searched: tuple      # the [tune.space] keys the arm searches
    study_name: str
    tuning_run: str      # the MLflow run holding the arm's search (trials.json, best_*)
    complete: bool = False
    gave_up: str = ""
    arm: str = ""        # the arm searched ("": the key it is recorded under, a grid without tuning repeats)
    repeat: int = 0      # its tuning repeat (tune_repeats)


@dataclass(frozen=True)
class Tuning:
    """A tuned grid's [tune], as its report needs it, and each tuned arm's search."""
    trials: int
    objective: str
    fixed: bool
    tune_seed: int
    space: dict
    arms: dict = field(default_factory=dict)  # arm -> TunedArm; with tune_repeats, "<arm> r<repeat>" -> TunedArm
    repeats: int = 1                          # tune_repeats
    repeat_of: dict = field(default_factory=dict)  # replicate seed (str) -> the repeat whose values it trains at

    def seeds_of(self, repeat: int) -> list[int]:
        return sorted(int(seed) for seed, r in self.repeat_of.items() if r == repeat)


@dataclass(frozen=True)
class Plan:
    cells: tuple                         # PlannedCell, one per planned cell, in the grid's order
    protocol_version: int
    effect_of_interest: float | None = None
    factorial: Fraction | None = None
    tuning: Tuning | None = None
    sequential: dict | None = None       # --until-decided: analysis.sequential.Looks.record() + metric, seed order, δ
    task: str | None = None              # the grid's task as its file names it (None: the built-in lstm_mnist)

    def to_dict(self) -> dict:
        d = {"plan_version": PLAN_VERSION, **dataclasses.asdict(self)}
        if d["task"] is None:  # the built-in task's plans stay as they were
            del d["task"]
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "the grid") -> Plan:
        if not isinstance(d, dict) or d.get("plan_version") != PLAN_VERSION:
            raise PlanError(f"{where}'s plan was recorded by an older version of lstm-mnist: run its "
                            "`python -m lstm_mnist ablate FILE` again (it trains nothing already FINISHED) to "
                            "record the plan anew, then report")
        cells = tuple(PlannedCell(c["cell"], c["arm"], int(c["seed"]), c["config_hash"],
                                  tuple(tuple(r) for r in c["roles"]), c.get("variant", "")) for c in d["cells"])
        f, t = d.get("factorial"), d.get("tuning")
        tuning = None
        if t:
            arms = {a: TunedArm(tuple(x["searched"]), x["study_name"], x["tuning_run"], x["complete"], x["gave_up"],
                                x.get("arm") or a, x.get("repeat", 0)) for a, x in t["arms"].items()}
            tuning = Tuning(t["trials"], t["objective"], t["fixed"], t["tune_seed"], t["space"], arms,
                            t.get("repeats", 1), t.get("repeat_of", {}))
        return cls(cells, d["protocol_version"], d.get("effect_of_interest"),
                   Fraction(tuple(f["factors"]), tuple(f["generators"])) if f else None, tuning, d.get("sequential"),
                   d.get("task"))
