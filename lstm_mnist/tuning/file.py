"""A study file (`studies/*.toml`) read into a StudySpec (search.py): the config every trial starts from (`base`
file, `[fixed]` keys), the `[space]` searched (never a key its task never searches), and the search's settings
(settings.py: the trial budget, the objective, a validation metric, never a test one, the sampler, the pruner).
The file's keys are a pydantic model (StudyFile: the settings' and its own); reading it imports no MLflow."""
from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, field_validator

from .. import config
from .. import task as task_protocol
from ..config import ConfigError
from . import settings
from .search import StudySpec, trial_config
from .space import check_dist, some_value


class StudyFile(settings.Settings):
    """A study file's keys: a search's settings, and the study's own."""
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    task: str | dict = task_protocol.BUILTIN         # the model under study (package.module:name, or a [task] table)
    study_name: str | None = None                    # default: the file's stem
    experiment: str = "lstm-mnist-tune"              # MLflow experiment of the study's run and its trials
    base: str | None = None                          # an experiment file every trial starts from
    fixed: dict = Field(default_factory=dict)        # config keys every trial trains at
    space: dict = Field(default_factory=dict)        # key -> distribution: what the search tries

    @field_validator("study_name", "experiment", "base", mode="before")
    @classmethod
    def _text(cls, v, info):
        if v is not None and (not isinstance(v, str) or not v.strip()):
            raise ConfigError(f"{info.field_name}={v!r}: expected a non-empty string")
        return v

    @field_validator("fixed", mode="before")
    @classmethod
    def _fixed(cls, v):
        if not isinstance(v, dict):
            raise ConfigError("fixed: write it as a [fixed] table of config keys")
        return v

    @field_validator("space", mode="before")
    @classmethod
    def _space(cls, v):
        if not isinstance(v, dict) or not v:
            raise ConfigError("[space]: give at least one hyperparameter to search, e.g. adamw_lr = {type=\"float\", "
                              "...}")
        return v


STUDY_KEYS = tuple(StudyFile.model_fields)


# ---------------------------------------------------------------- the study file
def load_study_file(path: str | Path) -> StudySpec:
    """Read and check a study file; every mistake is a one-line ConfigError naming the file."""
    return config.parse_file(path, _parse, "study", STUDY_KEYS)


def _parse(path: Path, raw: dict) -> StudySpec:
    f = config.validated(StudyFile, {"space": {}, **raw})  # an empty or missing [space] is one line
    chosen = settings.Settings.model_validate(f.model_dump(include=set(settings.KEYS)))
    spec = task_protocol.spec_of(f.task)
    task = task_protocol.load(spec)
    start = _start_values(path, f, task, spec)
    for key, dist in f.space.items():
        check_dist(key, dist, start, task)
    name = config.check_name("study_name", f.study_name or path.stem,
                             "set study_name = \"...\" in the file, or rename it")
    study = StudySpec(path, name, f.experiment, start, f.space, chosen, task, spec)
    trial_config(study, {k: some_value(d) for k, d in f.space.items()})  # the combination is a valid config
    return study


def _start_values(path: Path, f: StudyFile, task: task_protocol.Task, spec: str) -> dict:
    """Base experiment file (relative to the working directory or the project root), then [fixed]."""
    values = {}
    if f.base is not None:
        base = Path(f.base)
        if not base.is_absolute() and not base.exists():
            base = path.resolve().parent.parent / base  # studies/x.toml -> the project root
        values = dict(config.read_toml(base))
        config.task_of_file(values, str(base), spec)
        task.build(values, str(base))
    values.update(f.fixed)
    task.build(values, "[fixed]")
    return values
