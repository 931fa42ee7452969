"""The offline install: what a wheel folder holds when packages are left to the target, the lock, the one-line
errors for a folder that misses a wheel, the supported ranges against pyproject.toml
(tests/test_makefile.py: the install stamp that follows the content of pyproject.toml)."""
import hashlib
import re
import shutil
import subprocess
import tomllib

import pytest

from lstm_mnist.config import UserError
from lstm_mnist.machine import versions
from lstm_mnist.tools.wheels import build, install
from lstm_mnist.tools.wheels import lock as lockfile

from .conftest import REPO
from .test_makefile import make


def _item(name, version="1.0", requires=()):
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)},
            "download_info": {"url": f"https://files/{name}-{version}-py3-none-any.whl"}}


REPORT = {"environment": {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux"},
          "install": [_item("lightning", "2.6.6", ["torch>=2.1", "fsspec", "pytest; extra == 'test'"]),
                      _item("torch", "2.14.1", ["nvidia-cudnn-cu13; platform_system == 'Linux'", "filelock",
                                                "fsspec", "tomli; python_version < '3.11'"]),
                      _item("nvidia-cudnn-cu13"), _item("filelock"), _item("fsspec"), _item("pytest"),
                      _item("tomli"), _item("torchmetrics", "1.9.0", ["torch", "numpy"]), _item("numpy")]}


def _names(items):
    return [i["metadata"]["name"] for i in items]


def test_a_skipped_package_leaves_with_what_only_it_needs():
    env = build.marker_environment(REPORT, build.Target())
    kept = build.needed(REPORT, ["lightning>=2.6", "torchmetrics==1.9.0"], {"torch"}, env)
    # torch's CUDA library and filelock go with it; fsspec stays (lightning needs it too); no extra was asked
    assert _names(kept) == ["fsspec", "lightning", "numpy", "torchmetrics"]
    everything = build.needed(REPORT, ["lightning[test]", "torchmetrics"], set(), env)
    assert _names(everything) == ["filelock", "fsspec", "lightning", "numpy", "nvidia-cudnn-cu13", "pytest", "torch",
                                  "torchmetrics"]  # tomli's marker (python < 3.11) does not hold
    older = build.marker_environment(REPORT, build.Target.parse("3.12"))
    assert older["python_version"] == "3.12" and "tomli" not in _names(build.needed(REPORT, ["torch"], set(), older))


def test_build_locks_what_it_downloaded_without_the_skipped(tmp_path, monkeypatch):
    downloads = []

    def download(cmd, what):  # pip download: a wheel file per pinned name==version
        downloads.append(cmd)
        for pin in cmd[cmd.index("--only-binary=:all:") + 1:]:
            name, version = pin.split("==")
            (tmp_path / "wh" / f"{name}-{version}-py3-none-any.whl").write_bytes(pin.encode())

    monkeypatch.setattr(build, "project_requirements", lambda path, extras: ["lightning>=2.6", "torchmetrics==1.9.0"])
    monkeypatch.setattr(build, "resolve", lambda python, reqs, constraints, target: REPORT)
    monkeypatch.setattr(build, "_pip", download)
    made = build.build(tmp_path / "wh", build.Target(), ["torch"], "slim", "python3", made_by="make wheelhouse X")
    assert [w.name for w in made.wheels] == ["fsspec", "lightning", "numpy", "torchmetrics"] and len(downloads) == 1
    again = lockfile.read_lock(tmp_path / "wh")
    assert [(w.name, w.sha256) for w in again.wheels] == [(w.name, w.sha256) for w in made.wheels]
    assert again.skip == ["torch"] and again.header["made by"] == "make wheelhouse X"
    lockfile.check_folder(tmp_path / "wh", again)  # every wheel there, every hash right


def test_a_dependency_pip_left_out_for_the_target_is_one_line():
    # pip evaluates markers on the Python running it: resolving on 3.11 for 3.12, tomli (needed on the target
    # by this marker) would be missing from the report, and the folder would not install there
    report = {**REPORT, "install": [_item("lib", "1.0", ["tomli; python_version >= '3.12'"])]}
    env = build.marker_environment(report, build.Target.parse("3.12"))
    with pytest.raises(lockfile.WheelError, match=r"tomli; python_version >= \"3.12\" is needed on the target, but "
                                                r"pip, resolving on this machine's Python, left it out"):
        build.needed(report, ["lib"], set(), env)
    assert build.needed(report, ["lib"], set(), build.marker_environment(report, build.Target())) == \
        report["install"]  # on 3.11 itself the marker does not hold


def test_another_python_is_resolved_for_its_tags_and_a_bad_one_is_one_line():
    opts = build.Target.parse("3.12").pip_options()
    pairs = set(zip(opts, opts[1:]))
    assert {("--python-version", "3.12"), ("--implementation", "cp"), ("--abi", "cp312"), ("--abi", "abi3"),
            ("--platform", "manylinux_2_28_x86_64"), ("--platform", "manylinux2014_x86_64")} <= pairs
    assert "--only-binary=:all:" in opts and build.Target.parse(None).pip_options() == ["--only-binary=:all:"]
    assert build.Target.parse("3.12-aarch64").arch == "aarch64"
    with pytest.raises(lockfile.WheelError, match="FOR=py312: give a Python version such as 3.12"):
        build.Target.parse("py312")


def _folder(tmp_path, files: dict[str, bytes], listed: dict[str, bytes]):
    folder = tmp_path / "wh"
    folder.mkdir()
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    lock = lockfile.Lock([lockfile.Wheel(n.split("-")[0], n.split("-")[1], hashlib.sha256(b).hexdigest(), n, len(b))
                        for n, b in listed.items()],
                       {"made by": "make wheelhouse WHEELS=wh/ FOR=3.12 PROFILE=slim", "python": "3.12",
                        "profile": "slim", "extras": "ui,test", "skip": "lightning torch"})
    (folder / lockfile.LOCK).write_text(lock.text())
    return folder, lock


def test_the_lock_reads_back_as_written(tmp_path):
    folder, lock = _folder(tmp_path, {}, {"alpha-1.0-py3-none-any.whl": b"a" * 3000, "beta-2.0-py3-none-any.whl": b"b"})
    again = lockfile.read_lock(folder)
    assert [(w.name, w.version, w.sha256, w.file) for w in again.wheels] == \
           [(w.name, w.version, w.sha256, w.file) for w in lock.wheels]
    assert again.skip == ["lightning", "torch"] and again.extras == ["ui", "test"]
    assert again.header["wheels"].startswith("2, ")
    line = (folder / lockfile.LOCK).read_text().splitlines()[-1]
    assert re.fullmatch(r"beta==2\.0 --hash=sha256:[0-9a-f]{64}  # beta-2\.0-py3-none-any\.whl 0\.0 MiB", line)


def test_a_folder_missing_a_wheel_or_its_lock_is_one_line_naming_it_and_the_fix(tmp_path):
    blobs = {"alpha-1.0-py3-none-any.whl": b"a", "beta-2.0-py3-none-any.whl": b"b"}
    folder, lock = _folder(tmp_path, {"alpha-1.0-py3-none-any.whl": b"a"}, blobs)
    with pytest.raises(lockfile.WheelError) as e:
        lockfile.check_folder(folder, lock)
    assert str(e.value) == (f"{folder}/ has no wheel for beta==2.0 (beta-2.0-py3-none-any.whl, listed in "
                            "requirements.lock): add it on a connected machine with `make wheelhouse WHEELS=wh/ "
                            "FOR=3.12 PROFILE=slim`")
    (folder / "beta-2.0-py3-none-any.whl").write_bytes(b"not b")
    with pytest.raises(lockfile.WheelError, match="its SHA-256 is not the one in requirements.lock"):
        lockfile.check_folder(folder, lock)
    (folder / lockfile.LOCK).unlink()
    with pytest.raises(lockfile.WheelError, match=r"has no requirements.lock: make the folder .* `make wheelhouse"):
        lockfile.read_lock(folder)


def test_what_pip_cannot_find_becomes_one_line(tmp_path):
    _, lock = _folder(tmp_path, {}, {})
    missing = ("ERROR: Could not find a version that satisfies the requirement optuna==5.0.0 (from versions: none)\n"
               "ERROR: No matching distribution found for optuna==5.0.0\n")
    assert install.explain_pip_failure(missing, lock, tmp_path / "wh") == (
        f"{tmp_path}/wh/ has no wheel for optuna==5.0.0: add it on a connected machine with "
        "`make wheelhouse WHEELS=wh/ FOR=3.12 PROFILE=slim`")
    old_torch = "ERROR: No matching distribution found for torch<=2.14.1,>=2.11\n"
    text = install.explain_pip_failure(old_torch, lock, tmp_path / "wh", version_of=lambda name: "2.9.0")
    assert "torch was left to this machine" in text and "has torch 2.9.0" in text and "torch<=2.14.1,>=2.11" in text
    assert install.explain_pip_failure("boom\nERROR: disk full\n", lock, tmp_path).endswith("ERROR: disk full")


def _dependency_specs() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for d in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*([<>=!~].*)", d)
        out[m.group(1)] = m.group(2).replace(" ", "")
    return out


def test_the_supported_ranges_are_pyprojects_and_the_pins_lie_inside_them():
    specs = _dependency_specs()
    assert {n: specs[n] for n in versions.SUPPORTED} == versions.SUPPORTED
    pins = dict(line.split("==") for line in (REPO / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert set(pins) == set(versions.SUPPORTED)
    assert all(versions.satisfies(pins[n], versions.SUPPORTED[n]) for n in pins), pins


def test_a_release_outside_the_range_is_one_line_with_the_range(monkeypatch):
    assert versions.satisfies("2.11.0+cu130", ">=2.11,<=2.14.1") and versions.satisfies("2.14.1", ">=2.11,<=2.14.1")
    assert not versions.satisfies("2.10.2", ">=2.11,<=2.14.1") and not versions.satisfies("2.15.0", ">=2.11,<=2.14.1")
    assert versions.satisfies("2.6.6", ">=2.6,<2.7") and not versions.satisfies("2.7.0rc1", ">=2.6,<2.7")
    real = versions.installed
    monkeypatch.setattr(versions, "installed", lambda n: "2.9.0" if n == "torch" else real(n))
    with pytest.raises(UserError, match=r"torch 2\.9\.0 is outside the range the harness supports "
                                        r"\(torch>=2\.11,<=2\.14\.1\)"):
        versions.check("ablate")
    monkeypatch.setattr(versions, "installed", lambda n: None if n in ("mlflow-skinny", "mlflow") else real(n))
    versions.check("gpu-check")  # training only: no MLflow needed
    with pytest.raises(UserError, match=r"`tune` needs mlflow-skinny, which this Python does not have"):
        versions.check("tune")


@pytest.mark.subprocess
def test_make_install_from_a_folder_missing_a_wheel_says_which_in_one_line(tmp_path):
    folder, _ = _folder(tmp_path, {}, {"optuna-5.0.0-py3-none-any.whl": b"o"})
    proc = make("install", f"WHEELS={folder}", f"VENV={tmp_path / 'v'}", cwd=REPO)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr
    assert "has no wheel for optuna==5.0.0" in errors[0] and "make wheelhouse WHEELS=wh/" in errors[0]
    assert "Traceback" not in proc.stderr and not (tmp_path / "v").exists()  # checked before anything is made


@pytest.mark.subprocess
def test_a_venv_without_ensurepip_gets_pip_from_the_folder(tmp_path):
    import ensurepip
    import sys
    from pathlib import Path

    folder = tmp_path / "wh"
    folder.mkdir()
    for wheel in (Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"):  # the pip wheel Python ships
        shutil.copy(wheel, folder)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "v")], check=True)
    py = tmp_path / "v" / "bin" / "python"
    assert subprocess.run([str(py), "-m", "pip", "--version"], capture_output=True).returncode != 0
    install.bootstrap_pip(py, folder)
    assert subprocess.run([str(py), "-m", "pip", "--version"], capture_output=True).returncode == 0
    with pytest.raises(lockfile.WheelError, match="has no pip wheel"):
        install.bootstrap_pip(py, tmp_path)
