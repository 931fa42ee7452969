"""A Lightning task: a LightningModule and its data (a LightningDataModule, or a function returning the train,
validation and test DataLoaders) studied as they are written, their enhancements declared as flags over their
constructors' arguments.

A file declares one as a `[task]` table instead of a `task = "module:name"` string:

    [task]
    module = "assignment.model:LSTMClassifier"     # a LightningModule class
    data = "assignment.data:MNISTDataModule"       # a LightningDataModule class, or a function -> 3 loaders
    version = 1                                    # raised with any change to what a run computes
    [task.flags.dropout]
    off = { dropout_rate = 0.0 }
    on = { dropout_rate = 0.2 }

and Python says the same with `lightning_task(module=..., data=..., flags=...)` (classes or import paths, Flag
objects or the tables above). The config keys are the two constructors' arguments that have a bool, int, float
or str default (types from their annotations, else from the default; `ranges` bounds them), beside the harness's
own keys (RunKeys) and `patience` (early stopping on val_loss, 0: none). An argument named like a harness key
(`batch_size`, `seed`) is handed the harness's value, with the constructor's default as the key's. A run's
identity: the task's name and version, the classes' import paths, every key, and the data fingerprint (the
`fingerprint` function's, else one the harness computes cheaply: the names and sizes of the files under the
data's `data_dir` argument, once a DataModule's `prepare_data` has run, and the two classes' source).

A DataModule's `prepare_data` (a download, an extraction) runs under a host-wide lock, so cells starting together
on one machine do it one at a time, as Lightning runs it once per node: the first does the work, the others find
it done (prepare_data is written to check, as Lightning asks).

The task travels as its spec, "lightning:" and the declaration as canonical JSON: what a plan records, what a
worker process rebuilds it from (its config pickles by that spec), what `load` reads. Knows nothing of training:
training/lightning_fit.py runs it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import os
from pathlib import Path

from ..errors import ConfigError, one_line
from .keys import HARNESS_KEYS, TYPES, RunKeys, field

PREFIX = "lightning:"
TABLE_KEYS = {"module": "a LightningModule class (package.module:Class)",
              "data": "a LightningDataModule class, or a function returning the train, validation and test loaders",
              "version": "an integer raised with any change that alters what a run computes",
              "name": "the task's name in runs and reports (default: the module class's name)",
              "flags": "[task.flags.NAME] tables: off = {...}, on = {...} (reads_off, reads_on, defines, label)",
              "ranges": "[task.ranges]: key = [low, high] (either may be omitted with a wide bound)",
              "fingerprint": "package.module:function (cfg -> str): the data's fingerprint (default: the harness's)",
              "classes": "how many classes the labels hold (default 10)",
              "metric": "what reports rank arms by: test_f1 (default), test_acc or test_loss",
              "default_flags": "the flags a grid varies when it names none (default: all)",
              "not_identity": "keys that say where or how a run executes, not what it computes (e.g. data_dir)"}
FLAG_KEYS = ("off", "on", "reads_off", "reads_on", "defines", "label")
PATIENCE = "patience"  # the key a Lightning task's early stopping reads: epochs without a better val_loss, 0: none
_SCALARS = {bool: "bool", int: "int", float: "float", str: "str"}


# ---------------------------------------------------------------- the declaration, as data
def spec_of_table(table: dict, where: str = "[task]") -> str:
    """A `[task]` table (or lightning_task's arguments) as the task's spec: checked for its shape, canonical."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: give a table (module = ..., data = ..., [task.flags.NAME] ...)")
    unknown = sorted(set(table) - set(TABLE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; a Lightning task's keys are: "
                          + "; ".join(f"{k} ({v})" for k, v in TABLE_KEYS.items()))
    for key in ("module", "data"):
        if not isinstance(table.get(key), str) or ":" not in table[key]:
            raise ConfigError(f"{where}: {key} = {table.get(key)!r}: give {TABLE_KEYS[key]} as \"package.module:Name\"")
    flags = table.get("flags", {})
    if not isinstance(flags, dict) or not flags:
        raise ConfigError(f"{where}: declare its flags as [task.flags.NAME] tables with off = {{...}} and on = {{...}} "
                          "(each a constructor argument's two values)")
    for name, f in flags.items():
        if not isinstance(f, dict) or not isinstance(f.get("off"), dict) or not isinstance(f.get("on"), dict):
            raise ConfigError(f"{where}: flag {name!r}: give off = {{key = value}} and on = {{key = value}}")
        odd = sorted(set(f) - set(FLAG_KEYS))
        if odd:
            raise ConfigError(f"{where}: flag {name!r}: unknown key {odd[0]!r}; allowed: {', '.join(FLAG_KEYS)}")
    for key, low in (("version", 0), ("classes", 2)):
        value = table.get(key, low)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
            raise ConfigError(f"{where}: {key} = {value!r}: give an integer of at least {low}")
    ranges = table.get("ranges", {})
    if not isinstance(ranges, dict):
        raise ConfigError(f"{where}: ranges = {ranges!r}: give a table, [task.ranges] with key = [low, high]")
    for key, bounds in ranges.items():
        if not (isinstance(bounds, list) and len(bounds) == 2):
            raise ConfigError(f"{where}: ranges.{key} = {bounds!r}: give [low, high]")
    return PREFIX + json.dumps(table, sort_keys=True, separators=(",", ":"))


def lightning_task(module, data, flags, *, version: int = 0, name: str = "", ranges: dict | None = None,
                   fingerprint=None, classes: int = 10, metric: str = "test_f1", default_flags=(), not_identity=()):
    """The Python form of a `[task]` table: classes and functions may be given as objects (defined at a module's
    top level, so that worker processes import them by name) and flags as Flag objects."""
    from . import Flag

    def path(obj) -> str:
        if isinstance(obj, str):
            return obj
        where = f"{obj.__module__}:{obj.__qualname__}"
        if obj.__module__ == "__main__":
            raise ConfigError(f"{obj.__qualname__} is defined in __main__ (a script or a notebook): move it into a "
                              "module file beside it and import it from there, so that worker processes import it "
                              "by name")
        if "<" in obj.__qualname__ or "." in obj.__qualname__:
            raise ConfigError(f"{where}: define it at the top level of a module, so that worker processes can "
                              "import it by name")
        return where

    def table(f) -> dict:
        if isinstance(f, Flag):
            t = {"off": dict(f.off), "on": dict(f.on), "reads_off": list(f.reads_off), "reads_on": list(f.reads_on),
                 "defines": list(f.defines), "label": f.label}
            return {k: v for k, v in t.items() if v}
        return dict(f)

    declared = flags.items() if isinstance(flags, dict) else ((f.name, f) for f in flags)
    t = {"module": path(module), "data": path(data), "version": version,
         "flags": {n: table(f) for n, f in declared}, "classes": classes, "metric": metric}
    if name:
        t["name"] = name
    if ranges:
        t["ranges"] = {k: list(v) for k, v in ranges.items()}
    if fingerprint is not None:
        t["fingerprint"] = path(fingerprint)
    if default_flags:
        t["default_flags"] = list(default_flags)
    if not_identity:
        t["not_identity"] = sorted(not_identity)
    return load(spec_of_table(t, "lightning_task()"))


# ---------------------------------------------------------------- the task, from its spec
def is_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


@functools.cache
def load(spec: str):
    """The Task a spec declares (made once per process: its config class is one class)."""
    from . import Flag, Task

    table = json.loads(spec[len(PREFIX):])
    where = f"task {table['module']}"
    module_cls, data = (_import(table[k], where, k) for k in ("module", "data"))
    _check_module_class(module_cls, table["module"])
    keys = _keys(module_cls, data, table.get("ranges", {}), where)
    name = table.get("name") or module_cls.__name__
    cfg_cls = _config_class(name, keys, spec)
    flags = tuple(Flag(n, f["off"], f["on"], tuple(f.get("reads_off", ())), tuple(f.get("reads_on", ())),
                       tuple(f.get("defines", ())), f.get("label", "")) for n, f in table["flags"].items())
    parts = Parts(table["module"], table["data"], table.get("fingerprint", ""),
                  tuple(k for k in keys if k in _params(module_cls)), tuple(k for k in keys if k in _params(data)))
    return Task(name, int(table.get("version", 0)), cfg_cls, flags, default_flags=tuple(table.get("default_flags", ())),
                not_identity=frozenset(table.get("not_identity", ())),
                classes=int(table.get("classes", 10)), metric=table.get("metric", "test_f1"), lightning=parts,
                source=spec, fingerprint=functools.partial(fingerprint_of, parts), patience=_patience)


def _patience(cfg) -> int | None:
    """Early stopping on val_loss after `patience` epochs without a better one; 0: none."""
    return cfg.patience or None


@dataclasses.dataclass(frozen=True)
class Parts:
    """What a Lightning task runs: the classes (or the loaders' function) by import path, the fingerprint function
    (or ""), and which config keys each constructor takes."""
    module: str
    data: str
    fingerprint: str
    module_args: tuple
    data_args: tuple

    def data_of(self, cfg):
        """The config's data: a LightningDataModule (its prepare_data run, under the host's lock), or the function's
        three loaders."""
        kwargs = self.data_kwargs(cfg)
        data = _import(self.data, "", "data")(**kwargs)
        prepare(data, self.data, kwargs)
        return data

    def data_kwargs(self, cfg) -> dict:
        return {k: getattr(cfg, k) for k in self.data_args}

    def module_of(self, cfg):
        """The config's LightningModule, untrained."""
        return _import(self.module, "", "module")(**{k: getattr(cfg, k) for k in self.module_args})


PREPARE_LOCKS = "LSTM_MNIST_PREPARE_LOCKS"  # where prepare_data's locks live (default: a per-user temp folder)


def prepare(data, path: str, kwargs: dict) -> None:
    """A LightningDataModule's prepare_data, one process of this host at a time for the same class and arguments
    (a file lock per both): two cells starting together never download into the same files."""
    import fcntl
    import tempfile

    import lightning as L

    if not isinstance(data, L.LightningDataModule):
        return
    key = hashlib.sha256(json.dumps([path, kwargs], sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = Path(os.environ.get(PREPARE_LOCKS) or Path(tempfile.gettempdir()) / f"lstm-mnist-prepare-{os.getuid()}")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"prepare-{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when this process dies
        data.prepare_data()


def _import(path: str, where: str, what: str):
    module, _, name = path.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except Exception as e:  # noqa: BLE001 - a user's module may fail in any way; say how, in one line
        raise ConfigError(f"{where or 'task'}: {what} = {path!r} could not be imported ({one_line(e)}); run from the "
                          "folder that holds it or put that folder on PYTHONPATH") from None
    return obj


def _check_module_class(cls, path: str) -> None:
    import lightning as L

    if not (inspect.isclass(cls) and issubclass(cls, L.LightningModule)):
        raise ConfigError(f"task: module = {path!r} is a {type(cls).__name__}, not a LightningModule class")


def _params(obj) -> dict:
    """A constructor's (or function's) parameters by name, without self, *args and **kwargs."""
    fn = obj.__init__ if inspect.isclass(obj) else obj
    sig = inspect.signature(fn)
    return {n: p for n, p in sig.parameters.items() if n != "self"
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}


def _type(p: inspect.Parameter) -> str | None:
    """A parameter's key type: its annotation's when that is bool, int, float or str, else its default's."""
    ann = p.annotation
    if isinstance(ann, str) and ann in TYPES:
        return ann
    if ann in _SCALARS:
        return _SCALARS[ann]
    return _SCALARS.get(type(p.default)) if p.default is not inspect.Parameter.empty else None


def _keys(module_cls, data, ranges: dict, where: str) -> dict:
    """Config key -> (type, default, limits) from the two constructors: every argument with a scalar default (an
    argument without a default is one line; one with another default, a transform say, keeps it and is no key)."""
    harness = {f.name: f for f in dataclasses.fields(RunKeys)}
    keys: dict = {}
    for owner, obj in (("module", module_cls), ("data", data)):
        for n, p in _params(obj).items():
            tp = _type(p)
            if p.default is inspect.Parameter.empty:
                raise ConfigError(f"{where}: {owner} argument {n!r} has no default; give it one in the constructor "
                                  "(the config's default is the constructor's)")
            if tp is None:
                continue  # e.g. transform=None: not a key, the constructor's default stands
            if n == PATIENCE:
                raise ConfigError(f"{where}: {owner} argument {n!r} has the name of the harness's early stopping "
                                  "(epochs without a better val_loss); rename the argument (scheduler_patience, say)")
            default = float(p.default) if tp == "float" and isinstance(p.default, int) else p.default
            if n in harness and HARNESS_KEYS[n] != tp:
                raise ConfigError(f"{where}: {owner} argument {n!r} is a {tp}, but the harness's key {n!r} is a "
                                  f"{HARNESS_KEYS[n]}; rename the argument or change its type")
            if n in keys and keys[n][:2] != (tp, default):
                raise ConfigError(f"{where}: {n!r} is an argument of both the module and the data, with other types "
                                  "or defaults; give both the same, or rename one")
            keys[n] = (tp, default)
    unknown = sorted(set(ranges) - set(keys))
    if unknown:
        raise ConfigError(f"{where}: ranges names {unknown[0]!r}, which neither constructor takes (keys: "
                          f"{', '.join(keys)})")
    return {n: (tp, d, ranges.get(n)) for n, (tp, d) in keys.items()}


def _config_class(name: str, keys: dict, spec: str) -> type:
    """The task's frozen config dataclass: RunKeys, `patience`, then the constructors' keys (a harness key a
    constructor takes gets the constructor's default). Its instances pickle as (spec, values)."""
    harness = {f.name: f for f in dataclasses.fields(RunKeys)}
    fields = [(PATIENCE, int, field(default=0, lo=0))]
    for n, (tp, default, bounds) in keys.items():
        lo, hi = (bounds or (None, None))
        python_type = {"bool": bool, "int": int, "float": float, "str": str}[tp]
        if n in harness and not bounds:  # a harness key a constructor takes keeps the harness's limits
            fields.append((n, python_type, dataclasses.field(default=default, metadata=harness[n].metadata)))
        else:
            fields.append((n, python_type, field(default=default, lo=lo, hi=hi)))
    fields = list({n: (n, t, f) for n, t, f in fields}.values())
    cls = dataclasses.make_dataclass(f"{_identifier(name)}Config", fields, bases=(RunKeys,), frozen=True,
                                     namespace={"__reduce__": _reduce, "_spec": spec})
    cls.__module__ = __name__
    return cls


def _identifier(name: str) -> str:
    out = "".join(c if c.isalnum() else "_" for c in name)
    return out if out[:1].isalpha() else f"T{out}"


def _reduce(cfg):
    return _rebuild, (type(cfg)._spec, dataclasses.asdict(cfg))


def _rebuild(spec: str, values: dict):
    """A config unpickled in another process: its task made from the spec there, then the config."""
    return load(spec).config(**values)


# ---------------------------------------------------------------- the data's fingerprint
def fingerprint_of(parts: Parts, cfg) -> str:
    """The user's fingerprint function's, else the harness's cheap one: the two classes' source, and the relative
    path and size of every file under the data's `data_dir` (or `root`) argument when it has one, read after a
    DataModule's prepare_data has run (so a download does not change it). Content is not read (cheap on any size),
    so a file changed in place at the same size is not noticed: raise the version. Once per process per data."""
    if parts.fingerprint:
        return str(_import(parts.fingerprint, "task", "fingerprint")(cfg))
    return _harness_fingerprint(parts, tuple(sorted(parts.data_kwargs(cfg).items())))


@functools.cache
def _harness_fingerprint(parts: Parts, data_kwargs: tuple) -> str:
    kwargs = dict(data_kwargs)
    if inspect.isclass(data := _import(parts.data, "task", "data")):
        prepare(data(**kwargs), parts.data, kwargs)
    h = hashlib.sha256()
    for path in (parts.module, parts.data):
        obj = _import(path, "task", "module")
        try:
            h.update(inspect.getsource(obj).encode())
        except (OSError, TypeError):
            h.update(path.encode())
    for key in ("data_dir", "root"):
        folder = kwargs.get(key)
        if isinstance(folder, str) and folder and os.path.isdir(folder):
            for f in sorted(Path(folder).rglob("*")):
                if f.is_file():
                    h.update(f"{f.relative_to(folder)}:{f.stat().st_size}\n".encode())
    return h.hexdigest()[:16]

