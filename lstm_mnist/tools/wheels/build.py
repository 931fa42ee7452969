"""`make wheelhouse`: resolve the project's requirements (pyproject.toml, for a profile's extras) under the
pins of constraints.txt with pip's own resolver (`pip install --dry-run --report`) for a chosen Python and
platform, leave out the packages the target brings itself (SKIP) and whatever only they need, download the
rest and write the lock."""
from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .lock import LOCK, Lock, Wheel, WheelError, canonical, pip_error, sha256

ROOT = Path(__file__).resolve().parents[3]  # the checkout: lstm_mnist/tools/wheels/build.py -> ./
# What each profile installs beyond the project's own requirements (pyproject.toml's extras).
# slim: ablate, tune, report and evaluate on the SQLite store (mlflow-skinny); no UI, no Ray, no PostgreSQL.
# full: what `make install` gives a connected machine: the UI (the full mlflow package), Ray, psycopg2, the tests.
PROFILES = {"slim": (), "full": ("ui", "ray", "postgres", "test", "dashboard", "digits")}
MANYLINUX_GLIBC = range(5, 40)  # manylinux_2_5 .. manylinux_2_39: any glibc up to Ubuntu 24.04's
LEGACY_MANYLINUX = ("manylinux1", "manylinux2010", "manylinux2014")


# ---------------------------------------------------------------- what to resolve, and for which Python
@dataclass(frozen=True)
class Target:
    """The Python the wheels are for: this interpreter (python=None) or another version on manylinux."""
    python: str | None = None   # "3.12", or None for the interpreter running pip
    arch: str = "x86_64"

    @staticmethod
    def parse(text: str | None) -> "Target":
        """`--for 3.12` or `--for 3.12-aarch64`; None: this interpreter."""
        if not text:
            return Target()
        m = re.fullmatch(r"(3\.\d{1,2})(?:-(x86_64|aarch64))?", text.strip())
        if not m:
            raise WheelError(f"FOR={text}: give a Python version such as 3.12 (or 3.12-aarch64)")
        return Target(m.group(1), m.group(2) or "x86_64")

    def pip_options(self) -> list[str]:
        """pip's options that resolve and download for this target (none for this interpreter)."""
        if self.python is None:
            return ["--only-binary=:all:"]
        tag = self.python.replace(".", "")
        platforms = [f"manylinux_2_{g}_{self.arch}" for g in MANYLINUX_GLIBC]
        platforms += [f"{legacy}_{self.arch}" for legacy in LEGACY_MANYLINUX]
        options = ["--only-binary=:all:", "--python-version", self.python, "--implementation", "cp"]
        for abi in (f"cp{tag}", "abi3", "none"):
            options += ["--abi", abi]
        for p in platforms:
            options += ["--platform", p]
        return options

    def describe(self, python: str) -> str:
        if self.python is None:
            tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
            return f"python {platform.python_version()} ({tag}, {sysconfig.get_platform()}) as {python}"
        return f"python {self.python} (cp{self.python.replace('.', '')}, manylinux {self.arch})"


def project_requirements(pyproject: Path, extras: tuple[str, ...]) -> list[str]:
    """The project's requirements and its extras', and its build backend (an editable install builds it)."""
    import tomllib

    meta = tomllib.loads(pyproject.read_text())
    optional = meta["project"].get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise WheelError(f"extras {unknown} are not in {pyproject}: known {sorted(optional)}")
    reqs = list(meta["project"]["dependencies"])
    for e in extras:
        reqs += optional[e]
    # pip itself: a venv made without it (a Python with no ensurepip, as Debian's without python3-venv) gets it here
    return reqs + list(meta["build-system"]["requires"]) + ["pip"]


# ---------------------------------------------------------------- resolving, and leaving out what the target has
def resolve(python: str, reqs: list[str], constraints: Path, target: Target) -> dict:
    """pip's resolution of `reqs` for `target`, as its JSON installation report (nothing installed)."""
    with tempfile.TemporaryDirectory(prefix="lstm-mnist-wheels-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [python, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--report",
               str(report), "-c", str(constraints), *target.pip_options()]
        if target.python is not None:
            cmd += ["--target", str(Path(tmp) / "target")]  # pip's rule for another platform's resolution
        _pip(cmd + reqs, "resolving the requirements")
        return json.loads(report.read_text())


def marker_environment(report: dict, target: Target) -> dict:
    env = dict(report.get("environment") or {})
    if target.python is not None:
        env.update(python_version=target.python, python_full_version=f"{target.python}.0",
                   platform_machine=target.arch, sys_platform="linux", platform_system="Linux")
    return env


def needed(report: dict, roots: list[str], skip: set[str], env: dict) -> list[dict]:
    """The report's packages reachable from `roots` without passing through a skipped package: a package that
    only a skipped one needs (torch's CUDA libraries) is left out with it."""
    from pip._vendor.packaging.requirements import Requirement

    items = {canonical(i["metadata"]["name"]): i for i in report["install"]}
    wanted: dict[str, set[str]] = {}  # name -> the extras it is needed with
    todo = [r for r in map(Requirement, roots) if _applies(r, env, "")]  # a dependency's marker: when pushed
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        if name in skip:
            continue
        if name not in items:
            # pip evaluates markers on the Python that runs it (pip issues 11010, 13296), not the --for target
            raise WheelError(f"{req} is needed on the target, but pip, resolving on this machine's Python, left it "
                             "out: make the folder on a Linux machine of the target's architecture, with the "
                             "target's Python (PYTHON=python3.12, no FOR)")
        if name in wanted and set(req.extras) <= wanted[name]:
            continue  # seen already, with these extras
        extras = wanted.setdefault(name, set())
        extras |= set(req.extras)
        for dep in items[name]["metadata"].get("requires_dist") or []:
            d = Requirement(dep)
            if any(_applies(d, env, e) for e in ("", *sorted(extras))):
                todo.append(d)
    return [items[n] for n in sorted(wanted)]


def _applies(req, env: dict, extra: str) -> bool:
    return req.marker is None or req.marker.evaluate({**env, "extra": extra})


# ---------------------------------------------------------------- build: resolve, leave out, download, lock
def build(dest: Path, target: Target, skip: list[str], profile: str, python: str, dry_run: bool = False,
          made_by: str = "") -> Lock:
    if profile not in PROFILES:
        raise WheelError(f"PROFILE={profile}: choose one of {', '.join(PROFILES)}")
    extras = PROFILES[profile]
    roots = project_requirements(ROOT / "pyproject.toml", extras)
    report = resolve(python, roots, ROOT / "constraints.txt", target)
    skipped = {canonical(s) for s in skip}
    resolved = {canonical(i["metadata"]["name"]) for i in report["install"]}
    unknown = sorted(skipped - resolved)
    if unknown:
        raise WheelError(f"SKIP={' '.join(unknown)}: not among the {len(resolved)} packages the project needs "
                         f"(e.g. {', '.join(sorted(resolved)[:5])})")
    items = needed(report, roots, skipped, marker_environment(report, target))
    header = {"made by": made_by or f"make wheelhouse WHEELS={dest}/", "target": target.describe(python),
              "python": target.python or f"{sys.version_info.major}.{sys.version_info.minor}",
              "profile": profile, "extras": ",".join(extras), "skip": " ".join(sorted(skipped))}
    pins = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in items]
    if dry_run:
        return Lock([Wheel(i["metadata"]["name"], i["metadata"]["version"], _report_sha(i) or "-",
                           i["download_info"]["url"].rsplit("/", 1)[-1]) for i in items], header)
    dest.mkdir(parents=True, exist_ok=True)
    _pip([python, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(dest), *target.pip_options(),
          *pins], f"downloading {len(pins)} wheels")
    lock = Lock([_wheel_of(dest, i) for i in items], header)
    (dest / LOCK).write_text(lock.text())
    return lock


def _report_sha(item: dict) -> str | None:
    return ((item.get("download_info") or {}).get("archive_info") or {}).get("hashes", {}).get("sha256")


def _wheel_of(dest: Path, item: dict) -> Wheel:
    """The downloaded file of a resolved package, hashed (and checked against the index's hash when it gave one)."""
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    file = item["download_info"]["url"].rsplit("/", 1)[-1].split("#")[0]
    from urllib.parse import unquote

    path = dest / unquote(file)
    if not path.is_file():
        candidates = [p for p in dest.glob("*.whl") if _wheel_name(p.name) == (canonical(name), version)]
        if len(candidates) != 1:  # none, or wheels of other platforms from an earlier build in this folder
            raise WheelError(f"pip download left {len(candidates)} wheels for {name}=={version} in {dest}/: make "
                             "the folder again in an empty one")
        path = candidates[0]
    digest = sha256(path)
    expected = _report_sha(item)
    if expected and expected != digest:
        raise WheelError(f"{path}: SHA-256 {digest[:12]}... is not the index's {expected[:12]}...; delete it and "
                         "make the folder again")
    return Wheel(name, version, digest, path.name, path.stat().st_size)


def _wheel_name(file: str) -> tuple[str, str]:
    parts = file[:-4].split("-")
    return canonical(parts[0]), parts[1]


def _pip(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise WheelError(f"pip failed {what}: {pip_error(proc.stderr)}")
