"""The task protocol: what the harness knows of the model under study.

A task is a model whose enhancements are flags. It describes itself with
- a frozen config dataclass: every key with its type, default and range (`field(lo=..., hi=...)`);
- its flags: each a name and the config values on its two sides, with the keys that only one side reads (the
  rule a tuned ablation searches by: an arm searches a key only when its config reads it) and the keys that
  define what the sides are (an ablation compares them, so no arm searches them);
- the keys that are its protocol (a split, a normalization), which no search may touch, with the reason;
- its runtime: `data(cfg, device) -> Splits` (train/validation/test tensors and their fingerprint), `model(cfg)`,
  and optionally `fingerprint(cfg)` (cheap: the plan asks it per cell), `prepare(cfg, x, train, generator)` (one
  batch as the model reads it; the harness passes train=False for validation and test, so those are never
  augmented), `loss(cfg, logits, y)` (the training loss; validation and test are scored by plain cross-entropy),
  `optimizer(cfg, params)`, `patience(cfg)` (early stopping), `derived(cfg)` (values worth logging),
  `cost(cfg)` (a cell's relative training cost: the largest cells start first), `datasets(cfg)` (the splits as
  MLflow dataset inputs), and `ship`/`receive` (how a Ray driver hands its data to a node).
  Each is a callable or "module:function", imported when first called (a grid is read without torch).
The harness's grids, searches and reports are built from this description; its protocol (validation never
augmented, the test set used once, on the best-validation weights) stays the harness's, not the task's. A task is
a classifier: the harness computes cross-entropy, macro-F1 and accuracy over `classes` classes, and reports rank
arms by the task's `metric` (default: test macro-F1). The LSTM-MNIST task (lstm_mnist/builtin/) is
the built-in one (`BUILTIN`, found by `builtin()`); `load("package.module:name")` finds another.
A task depends on this protocol, never the reverse: nothing here imports a task but by its name.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping

from .. import metrics
from ..errors import ConfigError, one_line
from .hooks import DEFAULT_HOOKS, HOOKS, REQUIRED_HOOKS, Splits, resolve_hook  # noqa: F401 - one import
from .keys import (FLAG_REASON, HARNESS_KEYS, HARNESS_NEVER_SEARCHED, HARNESS_NOT_IDENTITY,  # noqa: F401
                   IDENTITY_WHEN_NOT, PRECISIONS, TYPES, RunKeys, check_device, check_precision, check_value, field,
                   limits, type_of)

BUILTIN = "lstm_mnist"
_WORDS = ("none", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
BUILTIN_PATH = "lstm_mnist.builtin.config:TASK"


@dataclass(frozen=True)
class Flag:
    """One enhancement: the config values with it off and on, and which keys depend on its side."""
    name: str
    off: Mapping[str, object]
    on: Mapping[str, object]
    reads_off: tuple = ()   # keys only a config with the flag off reads (e.g. SGD's learning rate)
    reads_on: tuple = ()    # keys only a config with the flag on reads (e.g. the dropout rate)
    defines: tuple = ()     # keys that say what the two sides are (e.g. the widths a width flag compares)
    label: str = ""         # how a report names the on side beside the default flags (default: the flag's name)

    def __post_init__(self):
        object.__setattr__(self, "off", MappingProxyType(dict(self.off)))
        object.__setattr__(self, "on", MappingProxyType(dict(self.on)))

    def side(self, on: bool) -> dict:
        """The config values of one side."""
        return dict(self.on if on else self.off)

    @property
    def keys(self) -> tuple:
        """The config keys the flag sets (those of either side)."""
        return tuple(dict.fromkeys([*self.off, *self.on]))

    def is_on(self, values: Mapping) -> bool:
        """Whether a config's values (or a run's, as MLflow keeps them: strings) are this flag's on side; a
        missing key is not."""
        return all(k in values and (values[k] == v or str(values[k]) == str(v)) for k, v in self.on.items())


@dataclass(frozen=True, eq=False)  # a task is one object: compared and hashed by identity
class Task:
    """A model under study, described for the harness (see the module's docstring); checked when made."""
    name: str
    version: int
    config: type                               # a frozen dataclass: the task's config keys
    flags: tuple                               # Flag, ...: what an ablation switches, in the order reports use
    never_searched: Mapping[str, str] = dataclasses.field(default_factory=dict)  # the protocol's keys: why
    not_identity: frozenset = frozenset()      # keys that say where or how a run executes, not what it computes
    default_flags: tuple = ()                  # the flags a grid varies when its file names none (empty: all); a
    #                                            grid sets these on every cell, the others only when they take part
    shape_flags: tuple = ()                    # the flags that change the model's shape, so a step's cost: `bench`
    #                                            measures every on/off combination of them (the others on)
    # The runtime (see the module's docstring): each a callable or "module:function"; data and model are required.
    data: Callable | str | None = None         # (cfg, device) -> Splits
    model: Callable | str | None = None        # cfg -> torch.nn.Module mapping a prepared batch to class logits
    fingerprint: Callable | str | None = None  # cfg -> str, cheaply (default: data(cfg, "cpu").fingerprint)
    prepare: Callable | str | None = None      # (cfg, x, train, generator) -> the batch the model reads
    loss: Callable | str | None = None         # (cfg, logits, y) -> the training loss (default: cross-entropy)
    optimizer: Callable | str | None = None    # (cfg, params) -> an optimizer, or Lightning's dict with a scheduler
    patience: Callable | str | None = None     # cfg -> early stopping's patience in epochs, or None: no early stop
    derived: Callable | str | None = None      # cfg -> {name: value} logged with the config (e.g. a hidden size)
    cost: Callable | str | None = None         # cfg -> a cell's relative training cost (only its order matters)
    datasets: Callable | str | None = None     # cfg -> [{split, rows, source, schema, profile}]: MLflow dataset inputs
    ship: Callable | str | None = None         # cfg -> what a Ray driver puts in the object store for the nodes
    receive: Callable | str | None = None      # (cfg, shipped, fingerprint) -> None: a node takes the driver's data
    loader: Callable | str | None = None       # (cfg, splits, device) -> (x, y) training batches as a plain PyTorch
    #                                            loop reads them (a DataLoader): `bench`'s reference pipeline
    sizes: Callable | str | None = None        # cfg -> {"train": n, "validation": n} with the full data, cheaply
    #                                            (gpu-check's projections; default: the data hook's splits, loaded)
    classes: int = 10                          # how many classes the labels hold
    metric: str = "test_f1"                    # what reports compare and rank arms by, and --until-decided decides
    #                                            on: test_f1 or test_acc (higher is better) or test_loss (lower)
    lightning: object = None                   # lightning.Parts: a LightningModule and its data run as they are
    #                                            (data and model hooks unused); made by lightning.load
    source: str = ""                           # its spec when not an import path (a Lightning task's declaration)

    def __post_init__(self):
        object.__setattr__(self, "flags", tuple(self.flags))
        object.__setattr__(self, "never_searched", MappingProxyType(dict(self.never_searched)))
        object.__setattr__(self, "not_identity", frozenset(self.not_identity) | HARNESS_NOT_IDENTITY)
        object.__setattr__(self, "default_flags", tuple(self.default_flags) or tuple(f.name for f in self.flags))
        object.__setattr__(self, "shape_flags", tuple(self.shape_flags))
        self._check()
        _BY_CONFIG[self.config] = self

    def _check(self) -> None:
        where = f"task {self.name!r}"
        if not self.name or not isinstance(self.name, str):
            raise ConfigError("a task needs a name: Task(name='my_task', ...)")
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 0:
            raise ConfigError(f"{where}: version={self.version!r}: give an integer >= 0, raised with any change "
                              "that alters what a run computes")
        params = getattr(self.config, "__dataclass_params__", None)
        if params is None or not params.frozen:
            raise ConfigError(f"{where}: config must be a frozen dataclass (@dataclass(frozen=True) class ...)")
        fields = self.fields
        odd = [f for f in fields.values() if type_of(f) not in TYPES]
        if odd:
            raise ConfigError(f"{where}: config key {odd[0].name!r} is a {type_of(odd[0])}; a key is a bool, int, "
                              "float or str")
        names = [f.name for f in self.flags if isinstance(f, Flag)]
        if len(names) != len(self.flags):
            raise ConfigError(f"{where}: flags must be Flag(...) objects")
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"{where}: flag {twice[0]!r} is given twice; give each flag one name")
        read_by: dict[str, str] = {}
        for flag in self.flags:
            for what, keys in (("off", flag.off), ("on", flag.on), ("reads_off", flag.reads_off),
                               ("reads_on", flag.reads_on), ("defines", flag.defines)):
                unknown = [k for k in keys if k not in fields]
                if unknown:
                    raise ConfigError(f"{where}: flag {flag.name!r} {what} names {unknown[0]!r}, which its config "
                                      f"does not define (its keys: {', '.join(fields)}); add it to the config or "
                                      "correct the flag")
            if not flag.on or set(flag.on) != set(flag.off) or dict(flag.on) == dict(flag.off):
                raise ConfigError(f"{where}: flag {flag.name!r} needs the same keys on both sides, with different "
                                  "values (e.g. off={'gru': False}, on={'gru': True})")
            for key in (*flag.reads_off, *flag.reads_on):
                if key in read_by:
                    raise ConfigError(f"{where}: {key!r} is read by one side of both {read_by[key]!r} and "
                                      f"{flag.name!r}; a key may depend on one flag's side")
                read_by[key] = flag.name
        for what in ("default_flags", "shape_flags"):
            strange = [n for n in getattr(self, what) if n not in names]
            if strange:
                raise ConfigError(f"{where}: {what} names {strange[0]!r}, which is not one of its flags "
                                  f"({', '.join(names)})")
        missing = [k for k, tp in HARNESS_KEYS.items() if k not in fields or type_of(fields[k]) != tp]
        if missing:
            key = missing[0]
            raise ConfigError(f"{where}: its config lacks the harness's key {key!r} ({HARNESS_KEYS[key]}); derive it "
                              "from lstm_mnist.task.RunKeys, which has them all")
        unknown = sorted((set(self.never_searched) | self.not_identity) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: {unknown[0]!r} is not a key of its config; correct never_searched or "
                              "not_identity")
        for hook, shape in REQUIRED_HOOKS.items():
            if getattr(self, hook) is None and self.lightning is None:
                raise ConfigError(f"{where}: give its {hook}= ({shape})")
        for hook in HOOKS:
            value = getattr(self, hook)
            if value is not None and not callable(value) and not (isinstance(value, str) and ":" in value):
                raise ConfigError(f"{where}: {hook}={value!r}: give a callable or \"module:function\"")
        if self.metric not in metrics.TEST:
            raise ConfigError(f"{where}: metric={self.metric!r}: give one of {', '.join(metrics.TEST)} (the harness "
                              "scores every run by these)")
        if not isinstance(self.classes, int) or isinstance(self.classes, bool) or self.classes < 2:
            raise ConfigError(f"{where}: classes={self.classes!r}: give the number of classes, an integer >= 2")

    @property
    def spec(self) -> str:
        """How a file names this task: "lstm_mnist" for the built-in one, else "module:name" of the variable that
        holds it in its config's module (what load() imports)."""
        if self.name == BUILTIN:
            return BUILTIN
        if self.source:
            return self.source
        module = importlib.import_module(self.config.__module__)
        names = [n for n, v in vars(module).items() if v is self]
        if not names:
            raise ConfigError(f"task {self.name!r}: define it at the top level of {self.config.__module__}, the module "
                              "of its config, so that worker processes can import it by name")
        return f"{self.config.__module__}:{names[0]}"

    @property
    def named(self) -> str | None:
        """How files, plans and runs name this task: None for the default one (what a file that names no task
        studies: they name none, as before tasks), else its spec."""
        return None if self.name == BUILTIN else self.spec

    @property
    def title(self) -> str:
        """The task in a line for people: "" for the default task, else " (task NAME)"."""
        return "" if self.named is None else f" (task {self.name})"

    def hook(self, name: str) -> Callable | None:
        """The runtime hook `name` as a callable (imported on first use), or its default (None: there is none)."""
        cache = self.__dict__.setdefault("_hooks", {})
        if name not in cache:
            given = getattr(self, name)
            where = f"task {self.name!r}: {name}="
            cache[name] = DEFAULT_HOOKS.get(name) if given is None else resolve_hook(given, where)
        return cache[name]

    def require_tensors(self, what: str) -> None:
        """One line when a command that times the model on in-memory batches (bench, gpu-check) is given a Lightning
        task, which trains on its own loaders."""
        if self.lightning is not None:
            raise ConfigError(f"{what} times a task's model on in-memory batches; task {self.name!r} is a "
                              "LightningModule on its own loaders: read its cost from a grid's epoch_time_s and "
                              "train_samples_per_s metrics instead")

    def new_model(self, cfg):
        """The config's model, untrained: the model hook's, or a Lightning task's LightningModule."""
        return self.lightning.module_of(cfg) if self.lightning is not None else self.hook("model")(cfg)

    def load_data(self, cfg, device="cpu") -> Splits:
        """The task's splits on `device`; anything but Splits is one line naming the hook."""
        splits = self.hook("data")(cfg, device)
        if not isinstance(splits, Splits):
            raise ConfigError(f"task {self.name!r}: data() returned a {type(splits).__name__}; return "
                              "lstm_mnist.task.Splits(train_x, train_y, val_x, val_y, test_x, test_y, fingerprint)")
        return splits

    def data_fingerprint(self, cfg) -> str:
        """The hash of the data a config trains on (part of its identity)."""
        fp = self.hook("fingerprint")
        return str(fp(cfg)) if fp else self.load_data(cfg).fingerprint

    def params(self, cfg) -> dict:
        """What a run logs as its MLflow params: every config key, then what the task derives from them."""
        return {**dataclasses.asdict(cfg), **self.hook("derived")(cfg)}

    @functools.cached_property
    def fields(self) -> dict:
        """Config key -> its dataclass Field (type, default, range metadata); read once (the task is frozen)."""
        return {f.name: f for f in dataclasses.fields(self.config)}

    def _field(self, name: str) -> dataclasses.Field:
        fields = self.fields
        if name not in fields:
            raise ConfigError(f"unknown config key {name!r}: known keys are {', '.join(fields)}")
        return fields[name]

    def coerce(self, name: str, value):
        """A TOML value brought to the key's type: an int is accepted where a float is expected."""
        if type_of(self._field(name)) == "float" and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    def parse_value(self, name: str, text: str):
        """The right-hand side of a `key=value` override, parsed by the key's type."""
        tp = type_of(self._field(name))
        try:
            if tp == "bool":
                low = text.strip().lower()
                if low in ("true", "1", "yes", "on"):
                    return True
                if low in ("false", "0", "no", "off"):
                    return False
                raise ValueError
            if tp == "int":
                return int(text)
            if tp == "float":
                return float(text)
        except ValueError:
            raise ConfigError(f"{name}={text}: expected {TYPES[tp]}") from None
        return text

    def parse_overrides(self, items: list) -> dict:
        """`key=value` overrides (the command line's), each parsed by its key's type."""
        out = {}
        for item in items:
            key, sep, text = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"override {item!r}: write it as key=value, e.g. max_epochs=3")
            out[key.strip()] = self.parse_value(key.strip(), text)
        return out

    def build(self, values: dict, source: str = ""):
        """The task's config from a flat dict (defaults for the keys it leaves out), every value checked; any
        mistake is one line, with the source named."""
        try:
            for key, value in values.items():
                if isinstance(value, dict):
                    raise ConfigError(f"[{key}]: tables are not config keys; write flat `key = value` lines")
            given = {k: self.coerce(k, v) for k, v in values.items()}
            cfg = self.config(**given)
            for f in dataclasses.fields(cfg):  # a task's own config may not check itself
                check_value(f, getattr(cfg, f.name))
            check_device(cfg.device)
            check_precision(cfg.precision)
            if not cfg.experiment.strip():
                raise ConfigError("experiment='': give the MLflow experiment a name")
            return cfg
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}" if source else str(e)) from None

    def identity(self, cfg, data_fingerprint: str, protocol: int) -> str:
        """A run's identity: a hash of every config key that decides its result (not `not_identity`), the data's
        fingerprint and the harness's protocol version (0: left out, the identity of runs from before it). Another
        task's name and version are part of it (a Lightning task's classes too); the built-in task's are not, so its
        runs keep the identity they had before tasks existed."""
        keys = {k: v for k, v in dataclasses.asdict(cfg).items()
                if k not in self.not_identity and IDENTITY_WHEN_NOT.get(k, object()) != v}
        keys["data_fingerprint"] = data_fingerprint
        if protocol:
            keys["protocol_version"] = protocol
        if self.name != BUILTIN:
            keys["task"], keys["task_version"] = self.name, self.version
        if self.lightning is not None:  # the classes it runs: another module of the same name is another task
            keys["task_classes"] = [self.lightning.module, self.lightning.data]
        blob = json.dumps(keys, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def split_sizes(self, cfg) -> dict:
        """{"train": n, "validation": n}: the training and validation splits' sizes (the sizes hook: with the full
        data, without reading it; else the data hook's splits, loaded)."""
        hook = self.hook("sizes")
        if hook is not None:
            return hook(cfg)
        ds = self.load_data(cfg, "cpu")
        return {"train": len(ds.train_y), "validation": len(ds.val_y)}

    @property
    def flag_names(self) -> tuple:
        return tuple(f.name for f in self.flags)

    def on_text(self, is_on: Callable[[str], bool]) -> str:
        """The flags that are on (`is_on(name)`), in words: the default flags ("all six", "all but width",
        "dropout, adamw", "none"), then each other flag that is on (" + final_states readout": its label)."""
        flags = self.default_flags
        on = [f for f in flags if is_on(f)]
        extra = "".join(f" + {f.label or f.name}" for f in self.flags if f.name not in flags and is_on(f.name))
        if len(on) == len(flags):
            return f"all {_WORDS[len(flags)] if len(flags) < len(_WORDS) else len(flags)}" + extra
        if len(on) > len(flags) // 2:
            return "all but " + ", ".join(f for f in flags if f not in on) + extra
        return (", ".join(on) or "none") + extra

    def values(self, on, taking_part=()) -> dict:
        """The flag values of a cell with the flags `on` on: every default flag's side, and the side of each other
        flag that is on or takes part (`taking_part`); a flag left out keeps the value its base file gives."""
        return {k: v for f in self.flags if f.name in self.default_flags or f.name in on or f.name in taking_part
                for k, v in f.side(f.name in on).items()}

    def on_flags(self, values: Mapping) -> frozenset:
        """The flags whose on side a config's (or a run's) values are."""
        return frozenset(f.name for f in self.flags if f.is_on(values))

    def flag(self, name: str) -> Flag:
        for f in self.flags:
            if f.name == name:
                return f
        raise ConfigError(f"{name!r} is not a flag of task {self.name!r}: its flags are {', '.join(self.flag_names)}")

    @functools.cached_property
    def read_only_when(self) -> dict:
        """Key -> (flag, side) for every key that only one side of a flag reads."""
        return {**{k: (f.name, False) for f in self.flags for k in f.reads_off},
                **{k: (f.name, True) for f in self.flags for k in f.reads_on}}

    def reads(self, sides: Mapping[str, bool], key: str) -> bool:
        """Whether a config with these flags on (name -> True; missing: off) reads `key` at all."""
        flag, side = self.read_only_when.get(key, (None, None))
        return flag is None or bool(sides.get(flag, False)) == side

    def why_never_searched(self, key: str) -> str | None:
        """Why no search (`tune`'s [space], a tuned grid's [tune.space]) may hold `key`; None: it may."""
        if key in self.never_searched:
            return self.never_searched[key]
        if key in HARNESS_NEVER_SEARCHED:
            return HARNESS_NEVER_SEARCHED[key]
        if any(key in f.keys for f in self.flags):
            return FLAG_REASON
        if key in self.not_identity:
            return "it says where or how a run executes, not what it computes"
        return None

    def why_never_searched_in_ablation(self, key: str) -> str | None:
        """Why a tuned ablation's arms may not search `key`: the above, or it defines what a flag compares."""
        for f in self.flags:
            if key in f.defines:
                return self.why_never_searched(key) or f"it defines what the {f.name} flag compares"
        return self.why_never_searched(key)


_BY_CONFIG: dict = {}  # config class -> its task (every Task registers itself when made)


def builtin() -> Task:
    """The built-in LSTM-MNIST task (lstm_mnist/builtin/), found by name as any task is: what a file that names
    no task studies."""
    return load(BUILTIN)


def of(cfg) -> Task:
    """The task a config belongs to (a worker that is handed a config finds its task here)."""
    task = _BY_CONFIG.get(type(cfg))
    if task is None:
        if type(cfg).__module__.startswith("lstm_mnist."):
            importlib.import_module(BUILTIN_PATH.partition(":")[0])
            task = _BY_CONFIG.get(type(cfg))
    if task is None:
        raise ConfigError(f"a {type(cfg).__name__} is the config of no task: build a Task(config={type(cfg).__name__}, "
                          "...) in the module that defines it")
    return task


def spec_of(value) -> str | None:
    """A file's `task = ...` value, checked: the spec as written (stripped), a `[task]` table's (a Lightning task:
    lightning.py), or None when the file names none."""
    if isinstance(value, dict):
        from . import lightning

        return lightning.spec_of_table(value)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"task={value!r}: expected \"package.module:name\" (or \"{BUILTIN}\"), or a [task] table "
                          "naming a LightningModule and its data")
    return value.strip() if value is not None else None


def load(spec: str) -> Task:
    """The task a grid, run or study file names: "lstm_mnist" (the built-in one) or "package.module:name"
    (imported from the current directory or PYTHONPATH). Each mistake is one line naming the fix."""
    spec = (spec or "").strip()
    from . import lightning

    if lightning.is_spec(spec):
        return lightning.load(spec)
    module, sep, name = (BUILTIN_PATH if spec == BUILTIN else spec).partition(":")
    if not sep or not module or not name:
        raise ConfigError(f"task {spec!r}: write it as package.module:name (e.g. task = \"my_task:task\"), or "
                          f"\"{BUILTIN}\" for the built-in LSTM-MNIST task")
    try:
        mod = importlib.import_module(module)
    except ConfigError as e:
        raise ConfigError(f"task {spec!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a user's module may fail in any way; say how, in one line
        raise ConfigError(f"task {spec!r}: module {module!r} does not import ({one_line(e)}); run from the folder "
                          "that holds it or put that folder on PYTHONPATH") from None
    if not hasattr(mod, name):
        raise ConfigError(f"task {spec!r}: module {module!r} has no {name!r}; name the Task object it defines")
    task = getattr(mod, name)
    if not isinstance(task, Task):
        raise ConfigError(f"task {spec!r}: {module}.{name} is a {type(task).__name__}, not a task; build it with "
                          "lstm_mnist.task.Task(...) (docs: Your own model)")
    return task
