"""A task's config keys as the harness reads them: a key's type and range (`field`), its check, and the keys the
harness itself reads from every task's config (RunKeys)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import ConfigError

# Keys the harness itself gives a meaning to, whatever the task: never searched, with the reason.
HARNESS_NEVER_SEARCHED = {"seed": "seeds are replicates, never tuned",
                          "precision": "precision is a setting of a whole grid, never tuned: compare two grids with "
                                       "report --against"}
FLAG_REASON = "flags are what the ablation compares, never tuned"
# The keys the harness reads from every task's config (RunKeys gives them all), with their types.
HARNESS_KEYS = {"seed": "int", "max_epochs": "int", "batch_size": "int", "eval_batch_size": "int",
                "experiment": "str", "device": "str", "num_threads": "int", "log_model": "bool", "precision": "str"}
# Of those, the ones that say where or how a run executes, not what it computes: never in a run's identity.
HARNESS_NOT_IDENTITY = frozenset({"experiment", "device", "num_threads", "log_model"})
# Keys that entered the identity after runs existed: at these values they are left out of it, so every run from
# before them keeps its config_hash (tests/cell_identities.json pins them).
IDENTITY_WHEN_NOT = {"precision": "32"}
# Lightning's precision names a run may train at: "32" full float32; "bf16-mixed" bfloat16 autocast (CPUs with
# AVX-512/AMX-BF16, GPUs from Ampere on); "16-mixed" float16 autocast with a gradient scaler (CUDA only).
PRECISIONS = ("32", "bf16-mixed", "16-mixed")


def limits(lo=None, hi=None, lo_open: bool = False, hi_open: bool = False) -> dict:
    """A config key's allowed range as its field's metadata (None: unbounded; an open end excludes the bound)."""
    return {"lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open}


def field(default=dataclasses.MISSING, *, lo=None, hi=None, lo_open: bool = False, hi_open: bool = False,
          default_factory=dataclasses.MISSING):
    """A config key with its allowed range (limits)."""
    meta = limits(lo, hi, lo_open, hi_open)
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


TYPES = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}


def type_of(f: dataclasses.Field) -> str:
    """A config key's type as a name ("bool", "int", "float", "str"), whether or not its module postpones
    annotations; any other type is refused when the task is made."""
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def check_value(f: dataclasses.Field, value) -> None:
    """A config key's value against its type and range: one line naming the key, the value and what is allowed."""
    tp = type_of(f)
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, float),
        "str": isinstance(value, str),
    }[tp]
    if not ok:
        raise ConfigError(f"{f.name}={value!r}: expected {TYPES[tp]}")
    m = f.metadata
    if not m:
        return
    lo, hi = m["lo"], m["hi"]
    below = lo is not None and (value <= lo if m["lo_open"] else value < lo)
    above = hi is not None and (value >= hi if m["hi_open"] else value > hi)
    if below or above:
        lo_s = "" if lo is None else f"{lo} {'<' if m['lo_open'] else '<='} "
        hi_s = "" if hi is None else f" {'<' if m['hi_open'] else '<='} {hi}"
        raise ConfigError(f"{f.name}={value!r}: out of range, allowed {lo_s}{f.name}{hi_s}")


@dataclass(frozen=True)
class RunKeys:
    """The keys the harness reads from every config: a task's config inherits them
    (`@dataclass(frozen=True) class MyConfig(RunKeys): ...`) and may change their defaults."""
    seed: int = field(default=0, lo=0)                      # run seed: init, shuffling, augmentation
    max_epochs: int = field(default=10, lo=1, hi=10000)     # epoch budget
    batch_size: int = field(default=64, lo=1, hi=65536)     # training batch size
    eval_batch_size: int = field(default=1000, lo=1, hi=65536)  # validation/test batch (no effect on results)
    experiment: str = "lstm-mnist"                          # MLflow experiment name
    device: str = "auto"                                    # auto (cuda when visible) | cpu | cuda | cuda:N
    num_threads: int = field(default=0, lo=0, hi=1024)      # torch CPU threads (0: torch's default)
    log_model: bool = True                                  # log the tested weights as an MLflow model
    precision: str = "32"                                   # 32 | bf16-mixed | 16-mixed (CUDA): part of the identity


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: allowed values are {', '.join(PRECISIONS)} (Lightning's names; "
                          "16-mixed on CUDA only)")


def check_device(device: str) -> None:
    if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:") and device[5:].isdigit()):
        raise ConfigError(f"device={device!r}: allowed values are auto, cpu, cuda, cuda:N")
