"""What a search is told, written once (pure: no Optuna import): its trial budget, its objective and the
direction that objective is better in, its sampler and pruner by name, and their settings, with their defaults.
A study file's top level and a tuned grid's [tune] table are both read through `Settings`; each sampler and
pruner is one row of its table below (the Optuna class and the arguments it takes from the settings), so adding
one is one row."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import config, metrics

# name -> (the optuna.samplers class, its arguments from (settings, seed))
SAMPLERS = {
    "tpe": ("TPESampler", lambda s, seed: {"seed": seed, "n_startup_trials": s.sampler_startup_trials}),
    "random": ("RandomSampler", lambda s, seed: {"seed": seed}),
}
# name -> (the optuna.pruners class, its arguments from (settings, the trials' max_epochs))
PRUNERS = {
    "median": ("MedianPruner", lambda s, max_epochs: {"n_startup_trials": s.pruner_startup_trials,
                                                      "n_warmup_steps": s.pruner_warmup_epochs}),
    "hyperband": ("HyperbandPruner", lambda s, max_epochs: {"min_resource": 1, "max_resource": max_epochs}),
    "none": ("NopPruner", lambda s, max_epochs: {}),
}


class Settings(BaseModel):
    """A search's settings: every key a study file and a [tune] table share, each with its default."""
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    trials: int = Field(20, ge=1)                  # COMPLETE + PRUNED trials (per arm, in a tuned grid)
    objective: str = "val_f1"                      # a validation metric, at the best-val_loss epoch
    sampler: Literal[tuple(SAMPLERS)] = "tpe"
    sampler_seed: int = Field(0, ge=0)
    sampler_startup_trials: int = Field(10, ge=0)
    pruner: Literal[tuple(PRUNERS)] = "median"
    pruner_startup_trials: int = Field(3, ge=0)
    pruner_warmup_epochs: int = Field(0, ge=0)

    @field_validator("objective", mode="before")
    @classmethod
    def _objective(cls, v):
        if not isinstance(v, str) or v not in metrics.OBJECTIVES:
            why = "the test set is never used for a choice" if str(v).startswith("test") else "unknown metric"
            raise ValueError(f"objective={v!r}: {why}; allowed are {', '.join(metrics.OBJECTIVES)}")
        return v

    @property
    def direction(self) -> str:
        """maximize or minimize: the one place a search's direction comes from (its objective's)."""
        return metrics.direction(self.objective)

    def better(self, trials: list, value=lambda t: t.value, number=lambda t: t.number):
        """The best of `trials` by the objective, ties to the lower trial number; None when there are none."""
        if not trials:
            return None
        sign = 1 if self.direction == "maximize" else -1
        return max(trials, key=lambda t: (sign * value(t), -number(t)))


KEYS = tuple(Settings.model_fields)


def read(raw: dict) -> Settings:
    """The settings keys of a study file or [tune] table (its other keys are its own), checked."""
    return config.validated(Settings, {k: v for k, v in raw.items() if k in KEYS})
