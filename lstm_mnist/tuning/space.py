"""A search space, checked (pure: no Optuna import): each searched key of a study file's [space] or a tuned grid's
[tune.space], its distribution and every value it may take."""
from __future__ import annotations

from .. import task as task_protocol
from ..config import ConfigError


def check_dist(key: str, dist, start: dict, task: task_protocol.Task, where: str = "[space]", never=None,
               instead: str = "set it in [fixed] or the base file instead") -> None:
    """One searched key of the task's config: a key that may be searched (`never(key)`: why not; default: the
    task's why_never_searched), a distribution whose every value makes a valid config from `start`."""
    never = never or task.why_never_searched
    if key not in task.fields:
        raise ConfigError(f"{where} {key}: unknown config key; known keys are {', '.join(task.fields)}")
    if never(key):
        raise ConfigError(f"{where} {key}: never searched ({never(key)}); {instead}")
    if not isinstance(dist, dict):
        raise ConfigError(f"{where} {key}: write it as {{type=\"float\", low=..., high=...}} or "
                          f"{{type=\"categorical\", choices=[...]}}")
    kind, field_type = dist.get("type"), task_protocol.type_of(task.fields[key])
    allowed = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}
    if kind not in allowed:
        raise ConfigError(f"{where} {key}: type={kind!r}; allowed are float, int, categorical")
    extra = sorted(set(dist) - allowed[kind])
    if extra:
        raise ConfigError(f"{where} {key}: unknown option {extra[0]!r} for type {kind}")
    if kind != "categorical" and kind != field_type:
        raise ConfigError(f"{where} {key}: type {kind} does not match the config field, which is {field_type}")
    values = dist.get("choices") if kind == "categorical" else bounds(key, dist, kind, where)
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{where} {key}: choices must be a non-empty list")
    for v in values:
        task.build({**start, key: v}, f"{where} {key}")


def bounds(key: str, dist: dict, kind: str, where: str = "[space]") -> list:
    low, high = dist.get("low"), dist.get("high")
    number = int if kind == "int" else (int, float)
    if not all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"{where} {key}: low and high must both be given, "
                          f"as {'integers' if kind == 'int' else 'numbers'}")
    if low >= high:
        raise ConfigError(f"{where} {key}: low={low} must be below high={high}")
    if dist.get("log") and low <= 0:
        raise ConfigError(f"{where} {key}: log=true needs low > 0, got low={low}")
    if dist.get("log") and "step" in dist:
        raise ConfigError(f"{where} {key}: step and log=true cannot be combined")
    return [low, high]


def some_value(dist: dict):
    return dist["choices"][0] if dist["type"] == "categorical" else dist["low"]
