"""The releases the harness runs on: the range it supports for what an image may bring itself (the same
specifiers as pyproject.toml; tests/test_wheels.py holds the two together), checked before a command imports
any of them, so an old torch is one line with the range instead of a traceback deep inside Lightning.

Reads package metadata only (importlib.metadata): nothing is imported, so the check costs milliseconds.
"""
from __future__ import annotations

import re
from importlib import metadata

from ..errors import UserError

SUPPORTED = {
    "torch": ">=2.11,<=2.14.1",
    "torchvision": ">=0.26,<=0.29.1",
    "lightning": ">=2.6,<2.7",
    "torchmetrics": ">=1.9,<1.10",
    "pandas": ">=2.2,<4",
    "scipy": ">=1.13,<2",
    "matplotlib": ">=3.8,<4",
}
TRAINING = ("torch", "lightning", "torchmetrics")
# What each command needs beyond the training stack (gpu-check and gpu-probes nothing more: a bare GPU box).
TRACKING = ("torchvision", "mlflow-skinny", "optuna", "pandas", "scipy", "matplotlib")
NEEDS = {"gpu-check": (), "gpu-probes": (), "bench": ("torchvision",)}
INSTALL = "install it with `make install` (offline: `make install WHEELS=dir`, docs/offline.md)"


def release(text: str) -> tuple[int, ...]:
    """'2.11.0+cu130' -> (2, 11, 0); the numeric release, without local or pre-release parts."""
    m = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(p) for p in m.group(0).split(".")) if m else ()


def satisfies(version: str, spec: str) -> bool:
    """Whether `version` meets a specifier such as '>=2.11,<=2.14.1' (the operators >=, >, <=, <, ==)."""
    have = release(version)
    for clause in spec.split(","):
        op, bound = re.fullmatch(r"\s*(>=|<=|==|>|<)\s*(\S+)\s*", clause).groups()
        want = release(bound)
        n = max(len(have), len(want))
        a, b = have + (0,) * (n - len(have)), want + (0,) * (n - len(want))
        if not {">=": a >= b, "<=": a <= b, "==": a == b, ">": a > b, "<": a < b}[op]:
            return False
    return True


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check(command: str) -> None:
    """One line for the first package the command needs that is missing or outside the supported range."""
    for name in (*TRAINING, *NEEDS.get(command, TRACKING)):
        have = installed(name)
        if have is None and name == "mlflow-skinny":
            have = installed("mlflow")  # the full package brings skinny; a bare `mlflow` counts too
        if have is None:
            raise UserError(f"`{command}` needs {name}, which this Python does not have: {INSTALL}")
        spec = SUPPORTED.get(name)
        if spec and not satisfies(have, spec):
            raise UserError(f"{name} {have} is outside the range the harness supports ({name}{spec}): install a "
                            f"release in that range (constraints.txt pins the tested one)")
