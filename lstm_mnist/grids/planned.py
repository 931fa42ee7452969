"""The plan a grid records on its parent run (`plan.json`), typed: what the grid planned, written by every
invocation of the grid and read back by the report, which derives nothing the grid decided; read back through
pydantic, against these dataclasses' annotations. Pure: no torch, no MLflow.

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
    # ((design, flag, name), ...): every design the cell serves, the flag it varies there ("": none) and the arm's
    # name there (full-dropout is baseline+adamw in add_one_in)
    roles: tuple[tuple[str, str, str], ...]
    variant: str = ""    # a tuned grid's: fixed (untuned), tuned, both

    @property
    def designs(self) -> tuple:
        return tuple(r[0] for r in self.roles)


@dataclass(frozen=True)
class Fraction:
    """The factorial design: its factors in letter order and the generator words of its fraction."""
    factors: tuple[str, ...]
    generators: tuple[str, ...] = ()

    @property
    def design(self) -> fractional.Design:
        return fractional.Design(self.factors, self.generators)


@dataclass(frozen=True)
class TunedArm:
    searched: tuple[str, ...]  # the [tune.space] keys the arm searches
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
    arms: dict[str, TunedArm] = field(default_factory=dict)  # arm (with tune_repeats "<arm> r<repeat>") -> TunedArm
    repeats: int = 1                          # tune_repeats
    repeat_of: dict[str, int] = field(default_factory=dict)  # replicate seed (str) -> the repeat whose values it
    #                                                           trains at
    search: dict = field(default_factory=dict)  # the search's settings (sampler, its seed, pruner, ...): the methods
    #                                             text names them ({} in a plan recorded before they were)

    def seeds_of(self, repeat: int) -> list[int]:
        return sorted(int(seed) for seed, r in self.repeat_of.items() if r == repeat)


@dataclass(frozen=True)
class Plan:
    cells: tuple[PlannedCell, ...]       # one per planned cell, in the grid's order
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
        """The plan as plan.json holds it; one of another version, or one that does not match these types, is a
        one-line PlanError."""
        import pydantic

        fix = ("run its `python -m lstm_mnist ablate FILE` again (it trains nothing already FINISHED) to record the "
               "plan anew, then report")
        if not isinstance(d, dict) or d.get("plan_version") != PLAN_VERSION:
            raise PlanError(f"{where}'s plan was recorded by an older version of lstm-mnist: {fix}")
        try:
            plan = pydantic.TypeAdapter(cls).validate_python({k: v for k, v in d.items() if k != "plan_version"})
        except pydantic.ValidationError as e:
            first = e.errors(include_url=False)[0]
            raise PlanError(f"{where}'s plan.json does not read as a plan ({'.'.join(map(str, first['loc']))}: "
                            f"{first['msg']}): {fix}") from None
        if plan.tuning:  # a search recorded under its arm's name carries no arm of its own
            arms = {k: dataclasses.replace(x, arm=x.arm or k) for k, x in plan.tuning.arms.items()}
            plan = dataclasses.replace(plan, tuning=dataclasses.replace(plan.tuning, arms=arms))
        return plan
