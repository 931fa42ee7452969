"""A study file (`studies/*.toml`): the config every trial starts from (`base` file, `[fixed]` keys), the
`[space]` searched (never a key in config.NEVER_SEARCHED), the sampler, the pruner, the trial budget and the
objective (a validation metric, never a test metric). Pure: reading and checking it imports no MLflow."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna

from .. import config
from ..config import ConfigError


OBJECTIVES = {"val_f1": "maximize", "val_loss": "minimize"}


PRUNERS = ("median", "hyperband", "none")


SAMPLERS = ("tpe", "random")


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
    objective = raw.get("objective", "val_f1")
    if objective not in OBJECTIVES:
        why = "the test set is never used for a choice" if str(objective).startswith("test") else "unknown metric"
        raise ConfigError(f"objective={objective!r}: {why}; allowed are {', '.join(OBJECTIVES)}")
    start = _start_values(path, raw)
    space = raw.get("space", {})
    if not isinstance(space, dict) or not space:
        raise ConfigError("[space]: give at least one hyperparameter to search, e.g. adamw_lr = {type=\"float\", ...}")
    for key, dist in space.items():
        _check_dist(key, dist, start)
    name = config.check_name("study_name", _str(raw, "study_name", path.stem),
                             "set study_name = \"...\" in the file, or rename it")
    study = Study(path, name, _str(raw, "experiment", "lstm-mnist-tune"), start,
                  space, _int(raw, "trials", 20, 1), objective, _choice(raw, "sampler", "tpe", SAMPLERS),
                  _int(raw, "sampler_seed", 0, 0), _int(raw, "sampler_startup_trials", 10, 0),
                  _choice(raw, "pruner", "median", PRUNERS), _int(raw, "pruner_startup_trials", 3, 0),
                  _int(raw, "pruner_warmup_epochs", 0, 0))
    trial_config(study, {k: _some_value(d) for k, d in space.items()})  # the combination is a valid config
    return study


def _start_values(path: Path, raw: dict) -> dict:
    """Base experiment file (relative to the working directory or the project root), then [fixed]."""
    values = {}
    if "base" in raw:
        base = Path(_str(raw, "base", ""))
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


def _check_dist(key: str, dist, start: dict) -> None:
    if key not in config.FIELDS:
        raise ConfigError(f"[space] {key}: unknown config key; known keys are {', '.join(config.FIELDS)}")
    if key in config.NEVER_SEARCHED:
        raise ConfigError(f"[space] {key}: never searched ({config.NEVER_SEARCHED[key]}); set it in [fixed] or the "
                          "base file instead")
    if not isinstance(dist, dict):
        raise ConfigError(f"[space] {key}: write it as {{type=\"float\", low=..., high=...}} or "
                          f"{{type=\"categorical\", choices=[...]}}")
    kind, field_type = dist.get("type"), config.FIELDS[key].type
    allowed = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}
    if kind not in allowed:
        raise ConfigError(f"[space] {key}: type={kind!r}; allowed are float, int, categorical")
    extra = sorted(set(dist) - allowed[kind])
    if extra:
        raise ConfigError(f"[space] {key}: unknown option {extra[0]!r} for type {kind}")
    if kind != "categorical" and kind != field_type:
        raise ConfigError(f"[space] {key}: type {kind} does not match the config field, which is {field_type}")
    values = dist.get("choices") if kind == "categorical" else _bounds(key, dist, kind)
    if not isinstance(values, list) or not values:
        raise ConfigError(f"[space] {key}: choices must be a non-empty list")
    for v in values:
        config.build({**start, key: v}, f"[space] {key}")


def _bounds(key: str, dist: dict, kind: str) -> list:
    low, high = dist.get("low"), dist.get("high")
    number = int if kind == "int" else (int, float)
    if not all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"[space] {key}: low and high must both be given, as {'integers' if kind == 'int' else 'numbers'}")
    if low >= high:
        raise ConfigError(f"[space] {key}: low={low} must be below high={high}")
    if dist.get("log") and low <= 0:
        raise ConfigError(f"[space] {key}: log=true needs low > 0, got low={low}")
    if dist.get("log") and "step" in dist:
        raise ConfigError(f"[space] {key}: step and log=true cannot be combined")
    return [low, high]


def _some_value(dist: dict):
    return dist["choices"][0] if dist["type"] == "categorical" else dist["low"]


def _str(raw, key, default) -> str:
    v = raw.get(key, default)
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{key}={v!r}: expected a non-empty string")
    return v


def _int(raw, key, default, lo) -> int:
    v = raw.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ConfigError(f"{key}={v!r}: expected an integer >= {lo}")
    return v


def _choice(raw, key, default, allowed) -> str:
    v = raw.get(key, default)
    if v not in allowed:
        raise ConfigError(f"{key}={v!r}: allowed values are {', '.join(allowed)}")
    return v


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
