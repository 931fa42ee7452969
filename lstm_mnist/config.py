"""What the harness asks of every task's config: the protocol version, a run's identity, a config as TOML,
experiment files (`task = ...` names the task; none: the built-in one) and the other TOML files (grids,
studies) read with one-line errors. The built-in task's own config is lstm_mnist/builtin/config.py.
"""
from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

from . import task as task_protocol
from .errors import ConfigError, UserError  # noqa: F401 - every module's errors, imported from here

# The protocol version: part of every run's identity. Bump it with any change that alters what a run
# computes (training, data, model, metrics), so runs from before the change are trained again rather than
# reused as done. tests/test_config.py pins the identity of a known config: a change there is deliberate.
# 1: the version itself entered the identity (runs from before it count as version 0).
PROTOCOL_VERSION = 1



# What the harness asks of any task's config (the built-in Config's methods are these).
def identity(cfg, data_fingerprint: str, protocol: int | None = None) -> str:
    """A run's identity (Task.identity of the config's task): a hash of everything that decides its result, the
    data it saw and the protocol version of the code. `protocol=0` gives the identity runs had before the version
    was in it."""
    return task_protocol.of(cfg).identity(cfg, data_fingerprint, PROTOCOL_VERSION if protocol is None else protocol)


def settings_key(cfg, data_fingerprint: str) -> str:
    """The identity without the protocol version: equal for the same config trained under any version (a run's
    tag `settings_key`; for runs from before it, their config_hash)."""
    return identity(cfg, data_fingerprint, protocol=0)


def to_toml(cfg) -> str:
    """A config as the TOML lines an experiment file would hold (every key; another task's name first)."""
    task = task_protocol.of(cfg)
    named = "" if task.named is None else f"task = {_toml_value(task.named)}\n"
    return named + "".join(f"{k} = {_toml_value(v)}\n" for k, v in dataclasses.asdict(cfg).items())


def rebuilt(cfg, **values):
    """The config with some values changed (checked, by its own task)."""
    return task_protocol.of(cfg).build({**dataclasses.asdict(cfg), **values})


def read_toml(path: str | Path) -> dict:
    """Read a TOML file; a missing file or a syntax error is a one-line ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (experiment files live in experiments/)")
    try:
        return tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: TOML syntax error: {e}") from None


def parse_file(path: str | Path, parse, what: str, known) -> object:
    """Read a TOML file of another kind (a grid, a study), refuse unknown keys and name the file in any
    ConfigError that `parse(path, raw)` raises."""
    p = Path(path)
    raw = read_toml(p)
    try:
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"unknown {what} key {unknown[0]!r}: known keys are {', '.join(sorted(known))}")
        return parse(p, raw)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def validated(model, raw: dict):
    """`raw` (a table of a TOML file) as the pydantic `model`, or a one-line ConfigError naming the first key that is
    wrong and what it takes (`key=value: expected an integer >= 0`, `allowed values are ...`, a validator's own
    words): the file formats' checks are declared on their models, their errors read as the harness's."""
    import pydantic

    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as e:
        raise ConfigError(_one_line(model, e.errors(include_url=False)[0])) from None


def _one_line(model, err: dict) -> str:
    key = ".".join(map(str, err["loc"])) or "value"
    if err["type"] == "extra_forbidden":
        return f"unknown key {key!r}: known keys are {', '.join(model.model_fields)}"
    shown = f"{key}={err['input']!r}" if "input" in err else key
    field = model.model_fields.get(str(err["loc"][0])) if err["loc"] else None
    allowed = getattr(field.annotation, "__args__", None) if field is not None else None
    if err["type"] == "literal_error" and allowed:
        return f"{shown}: allowed values are {', '.join(map(str, allowed))}"
    if err["type"] == "value_error":
        return str(err["ctx"]["error"])
    bound = next((m.ge for m in (field.metadata if field is not None else ()) if hasattr(m, "ge")), None)
    if err["type"] in ("int_type", "int_parsing", "greater_than_equal") and bound is not None:
        return f"{shown}: expected an integer >= {bound}"
    if err["type"] in ("bool_type", "bool_parsing"):
        return f"{shown}: expected true or false"
    if err["type"] in ("string_type", "string_too_short"):
        return f"{shown}: expected a non-empty string"
    return f"{shown}: {err['msg']}"


NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def check_name(what: str, name: str, fix: str) -> str:
    """A grid or study name goes into MLflow filter strings (`tags.grid_name = '...'`), where a quote or a
    backslash would change the query: letters, digits, '.', '_' and '-' only, refused at load time."""
    odd = sorted(set(name) - NAME_CHARS)
    if not name or odd:
        raise ConfigError(f"{what} {name!r}: use only letters, digits, '.', '_' and '-' (MLflow filter strings treat "
                          f"{''.join(odd) or 'an empty name'!r} specially); {fix}")
    return name


def task_of_file(values: dict, source: str, expected: str | None = None) -> task_protocol.Task:
    """The task an experiment file names (`task = "package.module:name"`, taken out of its values; none: the
    built-in one). `expected`: what the grid or study that uses the file names; another is one line."""
    try:
        spec = task_protocol.spec_of(values.pop("task", None))
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    if expected is not None and spec is not None and spec != expected.strip():
        raise ConfigError(f"{source}: task = {spec!r}, but the file that uses it names task {expected!r}; name the "
                          "same task in both, or leave it out of the experiment file")
    return task_protocol.load(spec or expected or task_protocol.BUILTIN)


def load(path: str | Path | None = None, overrides: list[str] | dict | None = None):
    """Defaults <- experiment file <- overrides (later keys win), as the config of the task the file names."""
    values = dict(read_toml(path)) if path else {}
    task = task_of_file(values, str(path)) if path else task_protocol.builtin()
    if path:
        task.build(values, str(path))  # report file errors against the file
    if isinstance(overrides, dict):
        values.update(overrides)
    else:
        values.update(task.parse_overrides(overrides or []))
    return task.build(values)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)
