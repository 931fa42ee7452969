"""`make install WHEELS=dir`: check the folder against its lock (every wheel there, every hash right) before
pip starts, make the venv (seeing what the folder left to the target), install with pip --no-index, and
mark the venv installed. Never the network."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from .lock import LOCK, Lock, WheelError, canonical, check_folder, pip_error, read_lock

ROOT = Path(__file__).resolve().parents[3]  # the checkout: lstm_mnist/tools/wheels/install.py -> ./
TELEMETRY_PTH = "lstm_mnist_offline.pth"  # sets MLFLOW_DISABLE_TELEMETRY=true in every process of the venv
PARENT_PTH = "lstm_mnist_parent_venv.pth"  # the site-packages of the venv the interpreter came from (SKIP=...)


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
    error = pip_error(stderr)
    if "hash" in stderr.lower():
        return f"pip refused a wheel of {folder}/ ({error}): make the folder again with `{again}`"
    return f"pip could not install from {folder}/: {error}"


def _installed_version(py: Path, name: str) -> str | None:
    """The version of `name` the venv's Python sees (its own or the system's site-packages), None without one."""
    code = f"import importlib.metadata as m\ntry: print(m.version({name!r}))\nexcept m.PackageNotFoundError: pass"
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True).stdout.strip()
    return out or None


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise WheelError(f"{what} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}")
