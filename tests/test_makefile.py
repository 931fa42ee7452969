"""The Makefile as a user drives it (`make -n`: what would run): the install stamp that follows the content of
pyproject.toml rather than its modification time, variables taken alike from the command line and the
environment, TORCH=cpu and its one line when the index cannot be reached; the suite names what it left out."""
import os
import re
import shutil
import subprocess
import sys

import pytest

from .conftest import REPO


def clean_env(**env):
    """This process's environment without what an outer make (`make test ARGS=...`) hands its children (the
    variables given on its command line travel in MAKEFLAGS and would count as this make's own), nor what
    pytest-xdist tells its workers (PYTEST_XDIST_WORKER: a pytest started here is not one of them)."""
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES",
            *re.findall(r"^([A-Z_]+) \?=", (REPO / "Makefile").read_text(), re.M)}
    return {**{k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PYTEST_")}, **env}


def make(*args, cwd):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd, capture_output=True, text=True,
                          env=clean_env(), timeout=60)


def installed_copy(folder):
    """The Makefile and what its install stamp is named by, in `folder`, with venv v/ marked installed."""
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(REPO / name, folder / name)
    plan = make("-n", "install", "VENV=v", cwd=folder).stdout
    (folder / "v").mkdir()
    (folder / re.search(r"touch (v/\.installed-[0-9a-f]{16})", plan).group(1)).touch()
    return folder


@pytest.mark.subprocess
def test_the_install_stamp_follows_the_content_of_pyproject_not_its_time(tmp_path):
    installed_copy(tmp_path)
    (tmp_path / "pyproject.toml").touch()  # newer than the stamp, the same content: a fresh clone
    assert "venv" not in make("-n", "install", "VENV=v", cwd=tmp_path).stdout
    with open(tmp_path / "pyproject.toml", "a") as f:
        f.write("\n# changed\n")
    assert "-m venv v" in make("-n", "install", "VENV=v", cwd=tmp_path).stdout


@pytest.mark.subprocess
def test_variables_from_the_environment_count_as_on_the_command_line(tmp_path):
    installed_copy(tmp_path)

    def plan(*args, **env):
        out = subprocess.run(["make", "--no-print-directory", "-n", *args, "VENV=v"], cwd=tmp_path, text=True,
                             capture_output=True, env=clean_env(**env), timeout=60).stdout
        return out.strip().splitlines()[-1]

    assert " ablate experiments/ablation.toml " in plan("ablation")  # the grid's own default
    assert " ablate experiments/ablation-quick.toml " in plan("ablation", EXP="experiments/ablation-quick.toml")
    assert " ablate experiments/factorial-quick.toml " in plan("ablation", "EXP=experiments/factorial-quick.toml")
    assert plan("run").endswith(" run experiments/full.toml")
    assert "--workers" not in plan("gpu-check") and "--workers 8,12,16" in plan("gpu-check", "WORKERS=8,12,16")
    assert "--workers 4" in plan("gpu-check", WORKERS="4")


@pytest.mark.subprocess
def test_torch_cpu_from_an_index_that_cannot_be_reached_is_one_line_naming_the_alternatives(tmp_path):
    for name in ("Makefile", "pyproject.toml", "constraints.txt"):
        shutil.copy(REPO / name, tmp_path / name)
    assert "--index-url https://download.pytorch.org/whl/cpu" in make("-n", "install", "TORCH=cpu", "VENV=v",
                                                                      cwd=tmp_path).stdout
    bad = make("install", "TORCH=gpu", "VENV=v", cwd=tmp_path)
    assert bad.returncode == 2 and "TORCH=gpu: give TORCH=cpu for the CPU-only wheels" in bad.stderr
    assert not (tmp_path / "v").exists()
    # An index nobody listens on, and no local wheel to fall back on: pip fails at once.
    env = clean_env(PIP_FIND_LINKS="", PIP_EXTRA_INDEX_URL="", PIP_RETRIES="0", PIP_DEFAULT_TIMEOUT="5")
    proc = subprocess.run(["make", "--no-print-directory", "install", "TORCH=cpu", "VENV=v",
                           "TORCH_INDEX=http://127.0.0.1:9/simple"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=240)
    ours = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2 and len(ours) == 1, proc.stderr[-2000:]
    assert "could not be installed from http://127.0.0.1:9/simple" in ours[0]
    assert "leave out TORCH=cpu" in ours[0] and "make install WHEELS=dir" in ours[0]
    assert (tmp_path / "v" / "torch-install.log").exists() and not list((tmp_path / "v").glob(".installed-*"))


@pytest.mark.subprocess
def test_the_suite_names_the_tests_it_left_out_and_what_runs_them(tmp_path):
    # Scenarios that ran in xdist's workers left their figures in the report file: the summary prints them.
    (tmp_path / "chaos.jsonl").write_text('{"scenario": "a worker SIGKILLed", "kills": 1}\n')
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not scenario",
                           "tests/test_data.py::test_real_mnist_split_counts"], cwd=REPO, capture_output=True,
                          text=True, timeout=180,
                          env=clean_env(LSTM_MNIST_DATA=str(tmp_path), CHAOS_REPORT=str(tmp_path / "chaos.jsonl")))
    assert "chaos figures" in proc.stdout and "scenario=a worker SIGKILLed kills=1" in proc.stdout, proc.stdout
    assert proc.returncode == 0 and "tests left out here, and what runs them" in proc.stdout, proc.stdout[-2000:]
    assert "1 skipped: real MNIST not found (set LSTM_MNIST_DATA to the folder of its four .gz files)" in proc.stdout
    assert "scenarios left out, and what runs them" in proc.stdout and "make scenarios" in proc.stdout
