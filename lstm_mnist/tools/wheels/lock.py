"""The wheel folder's lock: one pinned, hashed line per wheel in pip's own requirements format, with a header
saying who made the folder, for which Python, which profile and what was left to the target; and what both
sides of the folder share (its one-line error, pip's own error line)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

LOCK = "requirements.lock"


class WheelError(Exception):
    """A mistake with the wheel folder: one line naming the problem and the fix (the CLI exits 2)."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_error(stderr: str) -> str:
    """pip's own ERROR line from what it printed, else its last line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()] or ["(no output)"]
    return next((line for line in lines if line.startswith("ERROR")), lines[-1])


@dataclass
class Wheel:
    name: str
    version: str
    sha256: str
    file: str
    size: int = 0

    def line(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}  # {self.file} {self.size / 2**20:.1f} MiB"


@dataclass
class Lock:
    wheels: list[Wheel]
    header: dict = field(default_factory=dict)  # made-by, target, python, profile, extras, skip

    @property
    def skip(self) -> list[str]:
        return self.header.get("skip", "").split()

    @property
    def extras(self) -> list[str]:
        return [e for e in self.header.get("extras", "").split(",") if e]

    def text(self) -> str:
        size = sum(w.size for w in self.wheels)
        head = {**self.header, "wheels": f"{len(self.wheels)}, {size / 2**20:.1f} MiB"}
        lines = ["# lstm-mnist wheel folder: `make install WHEELS=<this folder>` installs from it with pip --no-index"]
        lines += [f"# {k}: {v}" for k, v in head.items()]
        return "\n".join(lines + [w.line() for w in self.wheels]) + "\n"


_LINE = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+) --hash=sha256:(?P<sha>[0-9a-f]{64})\s+#\s+"
                   r"(?P<file>\S+\.whl)(?:\s+(?P<mib>[\d.]+) MiB)?$")


def read_lock(folder: Path) -> Lock:
    path = folder / LOCK
    if not path.is_file():
        raise WheelError(f"{folder}/ has no {LOCK}: make the folder on a connected machine with "
                         f"`make wheelhouse WHEELS={folder}/`")
    header, wheels = {}, []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        if raw.startswith("# ") and ": " in raw:
            key, value = raw[2:].split(": ", 1)
            header[key] = value
        elif raw.strip() and not raw.startswith("#"):
            m = _LINE.match(raw.strip())
            if not m:
                raise WheelError(f"{path}:{n}: not a line `make wheelhouse` writes ({raw[:60]!r}); "
                                 "make the folder again")
            wheels.append(Wheel(m["name"], m["version"], m["sha"], m["file"], int(float(m["mib"] or 0) * 2**20)))
    return Lock(wheels, header)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_folder(folder: Path, lock: Lock) -> None:
    """Every wheel of the lock is in the folder with its hash; else one line naming it and the fix."""
    again = lock.header.get("made by", f"make wheelhouse WHEELS={folder}/")
    for w in lock.wheels:
        path = folder / w.file
        if not path.is_file():
            raise WheelError(f"{folder}/ has no wheel for {w.name}=={w.version} ({w.file}, listed in {LOCK}): "
                             f"add it on a connected machine with `{again}`")
        if sha256(path) != w.sha256:
            raise WheelError(f"{path}: its SHA-256 is not the one in {LOCK} (a damaged or replaced file): "
                             f"download it again with `{again}`")
