"""A wheel folder for machines without internet: `make wheelhouse` on a connected machine, `make install
WHEELS=dir` on the offline one (pip with --no-index: it never reaches the network).

    python -m lstm_mnist.machine.wheels build DIR [--for 3.12] [--skip "torch torchvision lightning"] [--profile slim]
    python -m lstm_mnist.machine.wheels install DIR --venv .venv [--stamp .venv/.installed-HASH]

`build` resolves the project's requirements (pyproject.toml, for a profile's extras) under the pins of
constraints.txt with pip's own resolver (`pip install --dry-run --report`) for a chosen Python and platform,
leaves out the packages the target brings itself (`--skip`) and whatever only they need, downloads the rest
and writes DIR/requirements.lock: one pinned, hashed line per wheel, in pip's own format. `install` checks the
folder against the lock (every wheel there, every hash right) before pip starts, so a missing wheel is one
line that names it and the command that adds it.

Standard library only (and pip's vendored `packaging`): it runs before anything is installed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: lstm_mnist/machine/wheels.py -> ./
LOCK = "requirements.lock"
# What each profile installs beyond the project's own requirements (pyproject.toml's extras).
# slim: ablate, tune, report and evaluate on the SQLite store (mlflow-skinny); no UI, no Ray, no PostgreSQL.
# full: what `make install` gives a connected machine: the UI (the full mlflow package), Ray, psycopg2, the tests.
PROFILES = {"slim": (), "full": ("ui", "ray", "postgres", "test")}
MANYLINUX_GLIBC = range(5, 40)  # manylinux_2_5 .. manylinux_2_39: any glibc up to Ubuntu 24.04's
LEGACY_MANYLINUX = ("manylinux1", "manylinux2010", "manylinux2014")
TELEMETRY_PTH = "lstm_mnist_offline.pth"  # sets MLFLOW_DISABLE_TELEMETRY=true in every process of the venv
PARENT_PTH = "lstm_mnist_parent_venv.pth"  # the site-packages of the venv the interpreter came from (SKIP=...)


class WheelError(Exception):
    """A mistake with the wheel folder: one line naming the problem and the fix (the CLI exits 2)."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


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


# ---------------------------------------------------------------- the lock: pip's requirement format, with hashes
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
                raise WheelError(f"{path}:{n}: not a line `make wheelhouse` writes ({raw[:60]!r}); make the folder again")
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


# ---------------------------------------------------------------- install: check, venv, pip --no-index, stamp
def install(folder: Path, venv: Path, python: str, stamp: Path | None = None) -> None:
    lock = read_lock(folder)
    check_folder(folder, lock)
    here = subprocess.run([python, "-c", "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                          capture_output=True, text=True).stdout.strip()
    if lock.header.get("python") and here != lock.header["python"]:
        raise WheelError(f"{folder}/ holds wheels for Python {lock.header['python']}, and {python} is Python "
                         f"{here}: add PYTHON=python{lock.header['python']}, or make the folder with FOR={here}")
    py = venv / "bin" / "python"
    parents = _venv_site(python) if lock.skip else []
    if not py.exists():
        system = bool(lock.skip) and not parents  # the skipped packages are the system Python's
        make_venv(python, venv, system, folder)
    if parents:  # site.addsitedir: the image venv's own .pth files (editable installs) count too
        (_purelib(py) / PARENT_PTH).write_text("".join(f"import site; site.addsitedir({d!r})\n" for d in parents))
    pip = [str(py), "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(folder)]
    _install_step(pip + ["--require-hashes", "-r", str(folder / LOCK)], lock, folder, py)
    extras = f"[{','.join(lock.extras)}]" if lock.extras else ""
    _install_step(pip + ["--no-build-isolation", "-e", f"{ROOT}{extras}"], lock, folder, py)
    (_purelib(py) / TELEMETRY_PTH).write_text(
        "import os; os.environ.setdefault('MLFLOW_DISABLE_TELEMETRY', 'true')  # installed offline: no telemetry\n")
    if stamp is not None:
        for old in venv.glob(".installed*"):
            old.unlink()
        stamp.write_text(f"installed from {folder}/ ({lock.header.get('target', '?')})\n")


def make_venv(python: str, venv: Path, system: bool, folder: Path) -> None:
    """`python -m venv`; where the Python has no ensurepip, a venv without pip, which then gets pip from the
    folder's own wheel (a pip wheel runs as a program)."""
    cmd = [python, "-m", "venv", *(["--system-site-packages"] if system else []), str(venv)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        return
    if "ensurepip" not in proc.stdout + proc.stderr:
        raise WheelError(f"creating {venv} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    shutil.rmtree(venv, ignore_errors=True)
    _run(cmd[:3] + ["--without-pip"] + cmd[3:], f"creating {venv} without pip")
    bootstrap_pip(venv / "bin" / "python", folder)


def bootstrap_pip(py: Path, folder: Path) -> None:
    wheel = next(iter(sorted(folder.glob("pip-*.whl"))), None)
    if wheel is None:
        raise WheelError(f"{py.parent.parent} has no pip (this Python has no ensurepip) and {folder}/ has no pip "
                         f"wheel: make the folder again with this version of `make wheelhouse`")
    _run([str(py), f"{wheel}/pip", "install", "--quiet", "--no-index", "--find-links", str(folder), "pip"],
         f"installing pip into {py.parent.parent} from {wheel.name}")


def _venv_site(python: str) -> list[str]:
    """The site-packages of `python` when it is itself a venv (an image's /opt/torch/.venv), else []. The
    packages left to the target (SKIP) live there: a .pth file in the new venv adds them after its own, our
    wheels first, the image's torch after them. (--system-site-packages would show the base Python's
    instead, not the venv's.) A venv that itself sees its system's packages passes those on too."""
    code = ("import site, sys\nif sys.prefix != sys.base_prefix:\n"
            "    print('\\n'.join(p for p in sys.path if p.endswith('-packages')))")
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def _purelib(py: Path) -> Path:
    return Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())


def _install_step(cmd: list[str], lock: Lock, folder: Path, py: Path) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        return
    raise WheelError(explain_pip_failure(proc.stderr, lock, folder, lambda name: _installed_version(py, name)))


def explain_pip_failure(stderr: str, lock: Lock, folder: Path, version_of=lambda name: None) -> str:
    """pip's failure as one line: a requirement the folder cannot meet names the package and the fix."""
    again = lock.header.get("made by", f"make wheelhouse WHEELS={folder}/")
    m = re.search(r"No matching distribution found for (\S+)", stderr)
    if m:
        req = m.group(1)
        name = canonical(re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0])
        if name in {canonical(s) for s in lock.skip}:
            have = version_of(name)
            return (f"{name} was left to this machine (the folder was made with SKIP={' '.join(lock.skip)}), but its "
                    f"Python has {f'{name} {have}' if have else f'no {name}'}; the harness needs {req}: install "
                    f"such a release, or make the folder without skipping {name}")
        return f"{folder}/ has no wheel for {req}: add it on a connected machine with `{again}`"
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()] or ["(no output)"]
    error = next((line for line in lines if line.startswith("ERROR")), lines[-1])
    if "hash" in stderr.lower():
        return f"pip refused a wheel of {folder}/ ({error}): make the folder again with `{again}`"
    return f"pip could not install from {folder}/: {error}"


def _installed_version(py: Path, name: str) -> str | None:
    """The version of `name` the venv's Python sees (its own or the system's site-packages), None without one."""
    code = f"import importlib.metadata as m\ntry: print(m.version({name!r}))\nexcept m.PackageNotFoundError: pass"
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True).stdout.strip()
    return out or None


def _pip(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()] or ["(no output)"]
        error = next((line for line in lines if line.startswith("ERROR")), lines[-1])
        raise WheelError(f"pip failed {what}: {error.strip()}")


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise WheelError(f"{what} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")


# ---------------------------------------------------------------- the command line (the Make targets call it)
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lstm_mnist.machine.wheels", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="download every wheel the project needs into DIR, with a lock")
    b.add_argument("dest")
    b.add_argument("--for", dest="target", help="another Python: 3.12 -> cp312 manylinux x86_64 (default: this one)")
    b.add_argument("--skip", default="", help='packages the target has already, e.g. "torch torchvision lightning"')
    b.add_argument("--profile", default="full", help="slim (no UI, Ray, PostgreSQL or tests) or full (default)")
    b.add_argument("--dry-run", action="store_true", help="resolve and list the wheels; download nothing")
    i = sub.add_parser("install", help="install the project from DIR with pip --no-index")
    i.add_argument("folder")
    i.add_argument("--venv", default=".venv")
    i.add_argument("--stamp", help="the file that marks the venv installed (the Makefile's)")
    args = p.parse_args(argv)
    if sys.version_info < (3, 11):
        print(f"error: {sys.executable} is Python {platform.python_version()}; the project needs 3.11 or newer: "
              "give PYTHON=python3.11 (or 3.12)", file=sys.stderr)
        return 2
    python = os.environ.get("LSTM_MNIST_PYTHON") or sys.executable
    try:
        if args.command == "build":
            made_by = "make wheelhouse " + " ".join(
                f"{k}={shlex.quote(v)}" for k, v in (("WHEELS", f"{args.dest.rstrip('/')}/"), ("FOR", args.target),
                                                     ("SKIP", args.skip), ("PROFILE", args.profile)) if v)
            lock = build(Path(args.dest), Target.parse(args.target), args.skip.split(), args.profile, python,
                         args.dry_run, made_by)
            print(_built(lock, Path(args.dest), args.dry_run))
        else:
            install(Path(args.folder), Path(args.venv), python, Path(args.stamp) if args.stamp else None)
            print(f"installed the project into {args.venv}/ from {args.folder.rstrip('/')}/ with pip --no-index")
    except WheelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _built(lock: Lock, dest: Path, dry_run: bool) -> str:
    h = lock.header
    skip = f"; left to the target: {h['skip']}" if h.get("skip") else ""
    if dry_run:
        names = ", ".join(f"{w.name} {w.version}" for w in lock.wheels)
        return f"{len(lock.wheels)} wheels for {h['target']} (profile {h['profile']}{skip}): {names}"
    size = sum(w.size for w in lock.wheels) / 2**20
    return (f"{len(lock.wheels)} wheels, {size:.1f} MiB, in {dest}/ for {h['target']} (profile {h['profile']}"
            f"{skip}); lock: {dest}/{LOCK}")


if __name__ == "__main__":
    sys.exit(main())
