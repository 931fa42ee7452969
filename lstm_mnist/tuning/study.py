"""A study file (`studies/*.toml`): the config every trial starts from (`base` file, `[fixed]` keys), the
`[space]` searched (never a key in config.NEVER_SEARCHED), the sampler, the pruner, the trial budget and the
objective (a validation metric, never a test metric). Pure: reading and checking it imports no MLflow."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna

from .. import config
from ..config import ConfigError
from ..space import OBJECTIVES, PRUNERS, SAMPLERS, check_dist, check_objective, choice, integer, some_value, text


STUDY_KEYS = {"study_name", "experiment", "base", "trials", "objective", "sampler", "sampler_seed",
              "sampler_startup_trials", "pruner", "pruner_startup_trials", "pruner_warmup_epochs", "fixed", "space"}


@dataclass(frozen=True)
class Study:
    path: Path
    name: str
    experiment: str       # MLflow experiment of the study's parent run and its trials
    start: dict           # config values every trial starts from: base file, then [fixed]
    space: dict           # key -> {type, low, high, log, step} or {type: categorical, choices}
    trials: int           # default total of COMPLETE + PRUNED trials
    objective: str        # val_f1 (maximize) or val_loss (minimize), at the best-val_loss epoch
    sampler: str
    sampler_seed: int
    sampler_startup_trials: int
    pruner: str
    pruner_startup_trials: int
    pruner_warmup_epochs: int

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]

    @property
    def journal(self) -> Path:
        return self.path.parent / f"{self.name}.journal"


# ---------------------------------------------------------------- the study file
def load_study_file(path: str | Path) -> Study:
    """Read and check a study file; every mistake is a one-line ConfigError naming the file."""
    return config.parse_file(path, _parse, "study", STUDY_KEYS)


def _parse(path: Path, raw: dict) -> Study:
    objective = check_objective(raw.get("objective", "val_f1"))
    start = _start_values(path, raw)
    space = raw.get("space", {})
    if not isinstance(space, dict) or not space:
        raise ConfigError("[space]: give at least one hyperparameter to search, e.g. adamw_lr = {type=\"float\", ...}")
    for key, dist in space.items():
        check_dist(key, dist, start)
    name = config.check_name("study_name", text(raw, "study_name", path.stem),
                             "set study_name = \"...\" in the file, or rename it")
    study = Study(path, name, text(raw, "experiment", "lstm-mnist-tune"), start,
                  space, integer(raw, "trials", 20, 1), objective, choice(raw, "sampler", "tpe", SAMPLERS),
                  integer(raw, "sampler_seed", 0, 0), integer(raw, "sampler_startup_trials", 10, 0),
                  choice(raw, "pruner", "median", PRUNERS), integer(raw, "pruner_startup_trials", 3, 0),
                  integer(raw, "pruner_warmup_epochs", 0, 0))
    trial_config(study, {k: some_value(d) for k, d in space.items()})  # the combination is a valid config
    return study


def _start_values(path: Path, raw: dict) -> dict:
    """Base experiment file (relative to the working directory or the project root), then [fixed]."""
    values = {}
    if "base" in raw:
        base = Path(text(raw, "base", ""))
        if not base.is_absolute() and not base.exists():
            base = path.resolve().parent.parent / base  # studies/x.toml -> the project root
        values = dict(config.read_toml(base))
        config.build(values, str(base))
    fixed = raw.get("fixed", {})
    if not isinstance(fixed, dict):
        raise ConfigError("fixed: write it as a [fixed] table of config keys")
    values.update(fixed)
    config.build(values, "[fixed]")
    return values


# ---------------------------------------------------------------- one trial
def suggest(trial: optuna.Trial, study: Study) -> dict:
    """The search space, read straight from the study file."""
    params = {}
    for key, d in study.space.items():
        if d["type"] == "categorical":
            params[key] = trial.suggest_categorical(key, d["choices"])
        elif d["type"] == "int":
            params[key] = trial.suggest_int(key, d["low"], d["high"], step=d.get("step", 1), log=d.get("log", False))
        else:
            params[key] = trial.suggest_float(key, d["low"], d["high"], step=d.get("step"), log=d.get("log", False))
    return params


def trial_config(study: Study, params: dict, overrides: dict | None = None) -> config.Config:
    """Later wins: worker placement (device, threads) < start values (base file, then [fixed]) < the trial's
    params; the experiment is always the study's. So a [fixed] device or num_threads overrides placement."""
    return config.build({**(overrides or {}), **study.start, **params, "experiment": study.experiment})
