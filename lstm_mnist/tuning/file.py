"""A study file (`studies/*.toml`) read into a StudySpec (search.py): the config every trial starts from (`base`
file, `[fixed]` keys), the `[space]` searched (never a key its task never searches), and the search's settings
(settings.py: the trial budget, the objective, a validation metric, never a test one, the sampler, the pruner).
Reading and checking it imports no MLflow."""
from __future__ import annotations

from pathlib import Path

from .. import config
from .. import task as task_protocol
from ..config import ConfigError
from . import settings
from .search import StudySpec, trial_config
from .space import check_dist, some_value

STUDY_KEYS = {"task", "study_name", "experiment", "base", "fixed", "space", *settings.KEYS}


# ---------------------------------------------------------------- the study file
def load_study_file(path: str | Path) -> StudySpec:
    """Read and check a study file; every mistake is a one-line ConfigError naming the file."""
    return config.parse_file(path, _parse, "study", STUDY_KEYS)


def _parse(path: Path, raw: dict) -> StudySpec:
    chosen = settings.read(raw)
    spec = task_protocol.spec_of(raw.get("task", task_protocol.BUILTIN))
    task = task_protocol.load(spec)
    start = _start_values(path, raw, task, spec)
    space = raw.get("space", {})
    if not isinstance(space, dict) or not space:
        raise ConfigError("[space]: give at least one hyperparameter to search, e.g. adamw_lr = {type=\"float\", ...}")
    for key, dist in space.items():
        check_dist(key, dist, start, task)
    name = config.check_name("study_name", _text(raw, "study_name", path.stem),
                             "set study_name = \"...\" in the file, or rename it")
    study = StudySpec(path, name, _text(raw, "experiment", "lstm-mnist-tune"), start, space, chosen, task, spec)
    trial_config(study, {k: some_value(d) for k, d in space.items()})  # the combination is a valid config
    return study


def _start_values(path: Path, raw: dict, task: task_protocol.Task, spec: str) -> dict:
    """Base experiment file (relative to the working directory or the project root), then [fixed]."""
    values = {}
    if "base" in raw:
        base = Path(_text(raw, "base", ""))
        if not base.is_absolute() and not base.exists():
            base = path.resolve().parent.parent / base  # studies/x.toml -> the project root
        values = dict(config.read_toml(base))
        config.task_of_file(values, str(base), spec)
        task.build(values, str(base))
    fixed = raw.get("fixed", {})
    if not isinstance(fixed, dict):
        raise ConfigError("fixed: write it as a [fixed] table of config keys")
    values.update(fixed)
    task.build(values, "[fixed]")
    return values


def _text(raw, key, default) -> str:
    v = raw.get(key, default)
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{key}={v!r}: expected a non-empty string")
    return v
