"""An ablation grid declared in TOML, expanded into cells: pure functions (no torch, no MLflow).

A grid names two reference arms as sets of flags that are on (`full`: all six; `baseline`: none) and
the designs to build from them:
- `leave_one_out`: from full, turn one flag off        -> arm "full-<flag>"
- `add_one_in`:    from baseline, turn one flag on     -> arm "baseline+<flag>"
- `factorial`:     from baseline, the runs of a two-level design over the `factorial` flags: every on/off
                   combination, or a fraction of them chosen by `resolution` or `runs_per_seed`
                   (fractional.py) -> "baseline", "baseline+a", "baseline+a+b", ... ("full" when all on)
Every arm runs once per seed (a seed is a block: it runs the whole fraction). Arms that two designs
share (full, baseline, baseline+a) are one cell. A reference arm is trained only when a design uses it.
`readout` may take part as a flag: on = "final_states", off = "last".

`task = "package.module:name"` names the model under study (task/); without it, the built-in LSTM-MNIST task.
Its flags are what the arms switch; every check below is against its config.

A `[tune]` table makes the grid a tuned ablation (lstm_mnist/tuned/): each arm gets its own search of the
`[tune.space]` keys it reads (`searched`), with trials trained at `tune_seed`, before its replicate cells.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import config
from .. import task as task_protocol
from ..analysis import fractional
from ..config import ConfigError
from ..engine.jobs import Cell  # noqa: F401 - a grid's cells (grid.Cell)
from ..tuning import settings as search_settings
from ..tuning import space as search_space

DESIGNS = ("leave_one_out", "add_one_in", "factorial")
TUNE_KEYS = (*search_settings.KEYS, "fixed", "tune_repeats", "space")  # a [tune] table: a search's settings and its own


class GridFile(BaseModel):
    """A grid file's keys as its TOML gives them, each with its default and what it is (a dry run and the docs
    read these), their shapes checked here; what needs the grid's task (its flags, its config) is checked next,
    by _spec. Unknown keys are refused by config.parse_file first."""
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    task: str | dict = Field(task_protocol.BUILTIN, description="the model under study (package.module:name, or a "
                             "[task] table naming a LightningModule and its data; default: the built-in lstm_mnist)")
    experiment: str = Field("lstm-mnist-ablation", description="MLflow experiment of every cell")
    base: str | None = Field(None, description="experiment file each cell starts from")
    designs: tuple = Field(("leave_one_out", "add_one_in"), description="designs to run")
    flags: object = Field(None, description="flags that take part")
    seeds: tuple = Field((0, 1, 2), description="run seeds")
    full: object = Field(None, description="flags on in the full arm")
    baseline: object = Field([], description="flags on in the baseline arm")
    factorial: object = Field([], description="flags of the factorial design")
    resolution: int | None = Field(None, description="resolution of the factorial fraction")
    runs_per_seed: int | None = Field(None, description="runs per seed of the factorial fraction")
    budget: dict = Field({}, description="config overrides for every cell")
    tune: object = Field(None, description="a search per arm before its replicates")
    tune_seed: object = Field(None, description="the seed every tuning trial trains with")
    effect_of_interest: float | None = Field(None, description="the smallest effect that matters (δ, in the "
                                             "metric's units): the report's verdicts")

    @field_validator("experiment", mode="before")
    @classmethod
    def _experiment(cls, v):
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"experiment={v!r}: expected a non-empty string (an MLflow experiment name)")
        return v

    @field_validator("base", mode="before")
    @classmethod
    def _base(cls, v):
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"base={v!r}: expected the path of an experiment file, e.g. \"full.toml\"")
        return v

    @field_validator("designs", mode="before")
    @classmethod
    def _designs(cls, v):
        return _names("designs", v, DESIGNS)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v):
        ok = isinstance(v, (list, tuple)) and v and all(type(s) is int and s >= 0 for s in v)
        if not ok or len(set(v)) != len(v):
            raise ConfigError(f"seeds={v!r}: expected a non-empty list of distinct integers >= 0")
        return tuple(v)

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, v):
        return None if v is None else fractional.parse_resolution(v)

    @field_validator("runs_per_seed", mode="before")
    @classmethod
    def _runs(cls, v):
        if v is not None and (type(v) is not int or v < 1):
            raise ConfigError(f"runs_per_seed={v!r}: expected a power of two such as 16")
        return v

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, v):
        if not isinstance(v, dict):
            raise ConfigError(f"budget={v!r}: expected a [budget] table of config keys")
        return v

    @field_validator("effect_of_interest", mode="before")
    @classmethod
    def _delta(cls, v):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1):
            raise ConfigError(f"effect_of_interest={v!r}: expected the smallest effect that matters, in the "
                              "metric's units, e.g. effect_of_interest = 0.002 (0.2 points of test F1)")
        return None if v is None else float(v)


KEYS = {name: f.description for name, f in GridFile.model_fields.items()}


@dataclass(frozen=True)
class Tune:
    """A tuned grid's [tune] table: a search's settings (those a study file has), for one study per arm with an
    equal budget."""
    space: dict                       # key -> distribution (tuning/space.py), searched by the arms that read it
    seed: int                         # tune_seed: the seed every trial trains with (never a replicate seed)
    settings: search_settings.Settings = search_settings.Settings()  # trials per arm, objective, sampler, pruner
    fixed: bool = False               # also train the untuned cells (the arms at the grid's own values)
    repeats: int = 1                  # tune_repeats: independent studies per arm (repeat r: tune seed seed + r,
    #                                   sampler seed sampler_seed + r); replicate seed i of the order uses repeat i % R

    @property
    def seeds(self) -> tuple:
        """The seeds the repeats' trials train with (never a replicate seed)."""
        return tuple(self.seed + r for r in range(self.repeats))

    def repeat_of(self, order) -> dict:
        """Replicate seed -> the repeat whose tuned values it trains at: balanced in the seeds' order (seed i of
        the order: repeat i mod R), so every R consecutive seeds, and every block of R, hold each repeat once."""
        return {seed: i % self.repeats for i, seed in enumerate(order)}

    def seeds_of(self, order, repeat: int) -> list:
        """The seeds of `order` that train at `repeat`'s values (repeat_of)."""
        return [seed for seed, r in self.repeat_of(order).items() if r == repeat]


@dataclass(frozen=True)
class GridSpec:
    """A grid file, read and checked: its arms, designs, seeds, budget and, for a tuned grid, its [tune]."""
    name: str                            # the grid file's stem: the parent run's name and the `grid_name` tag
    path: str                            # the grid file
    experiment: str
    base: dict                           # values from the `base` experiment file
    designs: tuple
    flags: tuple                         # flags that take part (the file's, else the task's default flags)
    seeds: tuple
    full: frozenset                      # flags on in the full arm
    baseline: frozenset = frozenset()
    factorial: tuple = ()                # factors of the factorial design, in letter order A, B, C, ...
    resolution: int | None = None        # smallest fraction of at least this resolution
    runs_per_seed: int | None = None     # or: the fraction with this many runs per seed (neither: full factorial)
    budget: dict = field(default_factory=dict)
    tune: Tune | None = None             # a tuned ablation: one search per arm before its replicates
    effect_of_interest: float | None = None  # δ: rows say "effect", "no effect ≥ δ" or "undecided"
    task: task_protocol.Task = field(kw_only=True)  # the model under study: its flags, its config
    task_spec: str = field(kw_only=True)            # how the grid file names it (recorded in the plan)

    @property
    def start(self):
        """The config every cell starts from (its base file and budget; the flags are each cell's)."""
        return self.task.build({**self.base, **self.budget})


# ---------------------------------------------------------------- reading a grid file
def load(path: str | Path) -> GridSpec:
    """Read and check a grid file; any mistake is a one-line ConfigError naming the key and what is allowed."""
    return config.parse_file(path, _spec, "grid", KEYS)


def _spec(p: Path, raw: dict) -> GridSpec:
    f = config.validated(GridFile, raw)  # the keys' shapes; then what needs the task
    spec = task_protocol.spec_of(f.task)
    task = task_protocol.load(spec)
    factors, defaults = task.flag_names, task.default_flags
    flags = _names("flags", f.flags if f.flags is not None else list(defaults), factors, task)
    full = frozenset(_names("full", f.full if f.full is not None else sorted({*defaults, *flags}), factors, task))
    name = config.check_name("grid name", p.stem, "rename the grid file")
    g = GridSpec(name=name, path=str(p), experiment=f.experiment, base=_base(p, f.base, task, spec),
                 designs=f.designs, flags=flags, seeds=f.seeds, full=full,
                 baseline=frozenset(_names("baseline", f.baseline, factors, task)),
                 factorial=_names("factorial", f.factorial, factors, task), budget=_budget(f.budget, task),
                 resolution=f.resolution, runs_per_seed=f.runs_per_seed, effect_of_interest=f.effect_of_interest,
                 task=task, task_spec=spec)
    _check_designs(g)
    g.start  # a bad budget value fails now, not in cell 9
    if "tune" in raw or "tune_seed" in raw:
        g = dataclasses.replace(g, tune=_tune(raw, g))
    return g


def _tune(raw: dict, s: GridSpec) -> Tune:
    """The [tune] table and tune_seed, checked against the grid's arms."""
    t = raw.get("tune")
    if not isinstance(t, dict):
        raise ConfigError("tune_seed is set but there is no [tune] table: add one with trials and [tune.space], "
                          "or remove tune_seed")
    unknown = sorted(set(t) - set(TUNE_KEYS))
    if unknown:
        raise ConfigError(f"[tune] unknown key {unknown[0]!r}: known keys are {', '.join(TUNE_KEYS)}")
    seed = raw.get("tune_seed")
    if type(seed) is not int or seed < 0:
        raise ConfigError(f"tune_seed={seed!r}: give the seed trials train with, an integer >= 0 outside seeds "
                          f"(e.g. tune_seed = {max(s.seeds) + 100})")
    repeats = t.get("tune_repeats", 1)
    if type(repeats) is not int or repeats < 1:
        raise ConfigError(f"[tune] tune_repeats={repeats!r}: give the independent studies per arm, an integer >= 1 "
                          "(1: one study per arm; 2: each arm tuned twice, the replicate seeds split between them)")
    clash = sorted({seed + r for r in range(repeats)} & set(s.seeds))
    if clash:
        what = (f"tune_seed={seed} is also a replicate seed" if repeats == 1 else
                f"tune_seed={seed} with tune_repeats={repeats} trains trials at seed {clash[0]}, also a replicate seed")
        raise ConfigError(f"{what}: replicates must not be the runs that were selected on; choose a tune_seed "
                          f"outside seeds={list(s.seeds)}, e.g. tune_seed = {max(s.seeds) + 100}")
    if "fixed" in t and not isinstance(t["fixed"], bool):
        raise ConfigError(f"[tune] fixed={t['fixed']!r}: expected true (also train the untuned cells) or false")
    sp = t.get("space", {})
    if not isinstance(sp, dict) or not sp:
        raise ConfigError("[tune.space]: give at least one key to search, e.g. adamw_lr = {type=\"float\", low=1e-4, "
                          "high=1e-2, log=true}")
    start = {**s.base, **s.budget}
    for key, dist in sp.items():
        search_space.check_dist(key, dist, start, s.task, "[tune.space]", s.task.why_never_searched_in_ablation,
                                "it is what the arms compare, so every arm keeps the grid's value")
        readers = [arm for arm, *_, on in arms(s) if s.task.reads(_sides(s, on), key)]
        if not readers:
            flag, side = s.task.read_only_when[key]
            raise ConfigError(f"[tune.space] {key}: no arm of this grid reads it (it is read only with {flag} "
                              f"{'on' if side else 'off'}); remove it from [tune.space]")
    tune = Tune(sp, seed, search_settings.read(t), t.get("fixed", False), repeats)
    for arm, *_, on in arms(s):  # every arm's lowest point is a valid config
        s.task.build({**start, **s.task.values(on, (*s.flags, *s.factorial)),
                      **{k: search_space.some_value(d)
                         for k, d in searched(dataclasses.replace(s, tune=tune), on).items()}},
                     f"[tune.space] arm {arm}")
    return tune


def _names(key: str, value, allowed: tuple, task: task_protocol.Task | None = None) -> tuple:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}={value!r}: expected a list of names from {', '.join(allowed)}")
    for v in value:
        if v not in allowed:
            whose = f" (not a flag of task {task.name!r})" if task is not None and task.named is not None else ""
            raise ConfigError(f"{key}: unknown name {v!r}{whose}; allowed are {', '.join(allowed)}")
    if len(set(value)) != len(value):
        raise ConfigError(f"{key}={value!r}: a name appears twice")
    return tuple(value)


def _base(p: Path, base, task: task_protocol.Task, spec: str) -> dict:
    """The `base` experiment file, relative to the grid file; its flags are overridden per cell anyway."""
    if base is None:
        return {}
    values = config.read_toml(p.parent / base)
    config.task_of_file(values, str(p.parent / base), spec)
    task.build(values, str(p.parent / base))
    # readout stays unless it is a factor of this grid (then each cell's own value wins in `values`).
    grid_sets = {k for f in task.default_flags for k in task.flag(f).keys}
    return {k: v for k, v in values.items() if k not in {*grid_sets, "seed", "experiment"}}


def _budget(budget: dict, task: task_protocol.Task) -> dict:
    owned = sorted(set(budget) & {*task.flag_names, "seed", "experiment"})  # the grid decides them per cell
    if owned:
        raise ConfigError(f"[budget] {owned[0]}: set per cell by the grid; use `flags`, `full`, `baseline`, `seeds` "
                          "or `experiment` instead")
    return dict(budget)


def _check_designs(s: GridSpec) -> None:
    """Each design must change something: leave-one-out flags on in full, add-one-in flags off in baseline."""
    if "leave_one_out" in s.designs:
        _require("full", [f for f in s.flags if f not in s.full], "on", "leave_one_out")
    if "add_one_in" in s.designs:
        _require("baseline", [f for f in s.flags if f in s.baseline], "off", "add_one_in")
    if "factorial" in s.designs:
        if not s.factorial:
            raise ConfigError("designs includes factorial: list its flags, "
                              "e.g. factorial = [\"bidirectional\", \"width\"]")
        _require("baseline", [f for f in s.factorial if f in s.baseline], "off", "factorial")
        design(s)  # an impossible fraction fails at load time
    elif s.factorial or s.resolution is not None or s.runs_per_seed is not None:
        raise ConfigError(f"factorial={list(s.factorial)!r}: add \"factorial\" to designs to run it")


def _require(arm: str, wrong: list, side: str, design: str) -> None:
    if wrong:
        raise ConfigError(f"{design}: flag {wrong[0]!r} must be {side} in the {arm} arm, or left out of `flags`")


# ---------------------------------------------------------------- expansion
def design(s: GridSpec) -> fractional.Design | None:
    """The two-level design of the factorial arms (None when the grid has none)."""
    if "factorial" not in s.designs:
        return None
    return fractional.choose(s.factorial, s.resolution, s.runs_per_seed)


def arms(s: GridSpec) -> list[tuple[str, str, str, frozenset]]:
    """(arm, design, flag, factors on) in a fixed order: references, leave-one-out, add-one-in, factorial."""
    runs = [s.baseline | on for on in design(s).on_sets()] if "factorial" in s.designs else []
    out = []
    if "leave_one_out" in s.designs or s.full in runs:
        out.append(("full", "reference", "", s.full))
    if "add_one_in" in s.designs or s.baseline in runs:
        out.append(("baseline", "reference", "", s.baseline))
    if "leave_one_out" in s.designs:
        out += [(f"full-{f}", "leave_one_out", f, s.full - {f}) for f in s.flags]
    if "add_one_in" in s.designs:
        out += [(f"baseline+{f}", "add_one_in", f, s.baseline | {f}) for f in s.flags]
    for on in runs:
        combo = [f for f in s.factorial if f in on]  # in the grid's factor order
        out.append(("+".join(("baseline", *combo)), "factorial", combo[0] if len(combo) == 1 else "", on))
    return out


@dataclass(frozen=True)
class Arm:
    """An arm once, however many designs use it: its name and factors from the first design that asked for
    it, and its role in each: (design, the flag it varies there, its name there)."""
    arm: str
    on: frozenset
    roles: tuple  # ((design, flag, name), ...) in the grid's design order

    @property
    def designs(self) -> tuple:
        return tuple(r[0] for r in self.roles)

    def cell(self, seed: int, variant: str = "", trial: int | None = None) -> Cell:
        (design, flag, _), *_ = self.roles
        return Cell(self.arm, design, flag, seed, self.on, self.designs, variant, trial, self.roles)


def unique_arms(s: GridSpec) -> list[Arm]:
    """The grid's arms, each once (an arm two designs share is one), in the grid's order."""
    merged: dict[frozenset, Arm] = {}
    for arm, design, flag, on in arms(s):
        if on in merged:
            merged[on] = dataclasses.replace(merged[on], roles=(*merged[on].roles, (design, flag, arm)))
        else:
            merged[on] = Arm(arm, on, ((design, flag, arm),))
    return list(merged.values())


def expand(s: GridSpec) -> list[Cell]:
    """Every (arm, seed) once: an arm two designs share is one cell that lists both designs."""
    cells = [a.cell(seed) for seed in s.seeds for a in unique_arms(s)]
    if s.tune is None:
        return cells
    # A tuned grid plans the cells known before any search: an arm that searches nothing (its values are its
    # tuned ones: "both"), and with `fixed = true` every other arm at the grid's values ("fixed"). The tuned
    # cells of the other arms are known once their searches are complete (tuned/).
    return [dataclasses.replace(c, variant="fixed" if searched(s, c.on) else "both") for c in cells
            if s.tune.fixed or not searched(s, c.on)]


def _sides(s: GridSpec, on: frozenset) -> dict:
    """Flag -> whether it is on, for every flag of the grid's task."""
    return {f: f in on for f in s.task.flag_names}


def searched(s: GridSpec, on: frozenset) -> dict:
    """The [tune.space] keys an arm with these factors on searches: those its config reads (Task.reads)."""
    if s.tune is None:
        return {}
    return {k: d for k, d in s.tune.space.items() if s.task.reads(_sides(s, on), k)}


def values(s: GridSpec, cell: Cell) -> dict:
    """The cell's config values: defaults < base file < [budget] < the cell's flags, seed and experiment."""
    return {**s.base, **s.budget, **s.task.values(cell.on, (*s.flags, *s.factorial)), "seed": cell.seed,
            "experiment": s.experiment}


def tags(s: GridSpec, cell: Cell) -> dict:
    """Child-run tags: the contract the report reads (arm, design, flag, seed, grid_name)."""
    out = {"arm": cell.arm, "design": cell.design, "designs": ",".join(cell.designs), "seed": str(cell.seed),
           "grid_name": s.name}
    if cell.flag:
        out["flag"] = cell.flag
    if cell.variant:
        out["variant"] = cell.variant
    return out


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' (1-based) -> (K, N)."""
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise ConfigError(f"--shard {text}: write it as K/N with 1 <= K <= N, e.g. --shard 1/3")
    return int(k), int(n)


def shard(hashes: list[str], k: int, n: int) -> set[str]:
    """Machine k of n takes every n-th identity in sorted order: the same split on every machine."""
    return {h for i, h in enumerate(sorted(set(hashes))) if i % n == k - 1}
