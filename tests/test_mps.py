"""The private MPS daemon, against a stand-in `nvidia-cuda-mps-control` that records every call: started
with its own pipe and log folders, stopped and cleaned up however the block ends, never touching the
GPU's compute mode."""
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from lstm_mnist.gpu import mps
from lstm_mnist.config import ConfigError

STANDIN = """#!{python}
# Stand-in for nvidia-cuda-mps-control: records argv, stdin and the MPS variables, one JSON line a call.
import json, os, sys
from pathlib import Path
argv = sys.argv[1:]
stdin = "" if "-d" in argv else sys.stdin.read()
keys = ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")
with open(os.environ["MPS_STANDIN_LOG"], "a") as f:
    f.write(json.dumps({{"argv": argv, "stdin": stdin, "env": {{k: os.environ.get(k) for k in keys}}}}) + "\\n")
if "-d" in argv and {comes_up}:
    Path(os.environ["CUDA_MPS_PIPE_DIRECTORY"], "control").touch()
    Path(os.environ["CUDA_MPS_LOG_DIRECTORY"], "control.log").write_text("daemon started\\n")
if "-d" in argv and {fails}:
    print("An instance of this daemon is already running", file=sys.stderr)
    sys.exit(1)
"""
SMI = """#!/bin/sh
echo "$@" >> "{log}"
"""


def standin(folder: Path, monkeypatch, comes_up: bool = True, fails: bool = False) -> Path:
    """Put a recording `nvidia-cuda-mps-control` (and a recording `nvidia-smi`) first on PATH; returns the
    log of the stand-in's calls."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = folder / "mps-calls.jsonl"
    _executable(bin_dir / mps.CONTROL, STANDIN.format(python=sys.executable, comes_up=comes_up, fails=fails))
    _executable(bin_dir / "nvidia-smi", SMI.format(log=folder / "nvidia-smi-calls.txt"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("MPS_STANDIN_LOG", str(log))
    return log


def calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def clean_env(monkeypatch):
    """An environment with the MPS variables set by the user, to check they come back as they were."""
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", "/users/own/pipe")
    monkeypatch.delenv("CUDA_MPS_LOG_DIRECTORY", raising=False)


def _check_started_and_stopped(log: Path, root: Path) -> None:
    started, stopped = calls(log)
    want_env = {"CUDA_MPS_PIPE_DIRECTORY": str(root / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(root / "log")}
    assert started == {"argv": ["-d"], "stdin": "", "env": want_env}
    assert stopped == {"argv": [], "stdin": "quit\n", "env": want_env}
    assert not root.exists()
    assert os.environ["CUDA_MPS_PIPE_DIRECTORY"] == "/users/own/pipe"
    assert "CUDA_MPS_LOG_DIRECTORY" not in os.environ


@pytest.mark.subprocess
def test_daemon_starts_with_private_folders_and_stops_on_normal_exit(tmp_path, monkeypatch, clean_env):
    log = standin(tmp_path, monkeypatch)
    with mps.daemon(True) as root:
        assert (root / "pipe" / "control").exists() and (root / "log").is_dir()
        assert os.environ["CUDA_MPS_PIPE_DIRECTORY"] == str(root / "pipe")  # what spawned workers inherit
        assert os.environ["CUDA_MPS_LOG_DIRECTORY"] == str(root / "log")
        assert len(calls(log)) == 1
    _check_started_and_stopped(log, root)


@pytest.mark.subprocess
def test_daemon_stops_when_the_block_raises(tmp_path, monkeypatch, clean_env):
    log = standin(tmp_path, monkeypatch)
    with pytest.raises(ZeroDivisionError):
        with mps.daemon(True) as root:
            1 / 0
    _check_started_and_stopped(log, root)


@pytest.mark.subprocess
def test_daemon_stops_on_ctrl_c(tmp_path, monkeypatch, clean_env):
    log = standin(tmp_path, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        with mps.daemon(True) as root:
            raise KeyboardInterrupt
    _check_started_and_stopped(log, root)


def test_disabled_does_nothing(tmp_path, monkeypatch, clean_env):
    log = standin(tmp_path, monkeypatch)
    with mps.daemon(False) as root:
        assert root is None
    assert calls(log) == [] and os.environ["CUDA_MPS_PIPE_DIRECTORY"] == "/users/own/pipe"


def test_missing_binary_is_a_one_line_error(tmp_path, monkeypatch, clean_env):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(mps.MPSError, match="nvidia-cuda-mps-control not found on PATH.*without --mps") as e:
        with mps.daemon(True):
            pytest.fail("the block must not run")
    assert "\n" not in str(e.value) and isinstance(e.value, ConfigError)
    assert not mps.available()
    with pytest.raises(mps.MPSError):
        mps.require()


@pytest.mark.subprocess
def test_daemon_that_never_comes_up_is_an_error_and_cleaned_up(tmp_path, monkeypatch, clean_env):
    log = standin(tmp_path, monkeypatch, comes_up=False)
    # 2 s: the stand-in's `-d` must return first (a Python start-up, slow on a loaded machine: 0.3 s was not)
    with pytest.raises(mps.MPSError, match="did not come up within 2 s.*without --mps") as e:
        with mps.daemon(True, timeout_s=2):
            pytest.fail("the block must not run")
    assert "\n" not in str(e.value)
    started, stopped = calls(log)
    assert started["argv"] == ["-d"] and stopped["stdin"] == "quit\n"  # told to quit in case it came up late
    root = Path(started["env"]["CUDA_MPS_PIPE_DIRECTORY"]).parent
    assert not root.exists() and os.environ["CUDA_MPS_PIPE_DIRECTORY"] == "/users/own/pipe"


@pytest.mark.subprocess
def test_daemon_that_refuses_to_start_names_its_reason(tmp_path, monkeypatch, clean_env):
    standin(tmp_path, monkeypatch, comes_up=False, fails=True)
    with pytest.raises(mps.MPSError, match=r"-d failed \(exit code 1: An instance of this daemon is already running\)"):
        with mps.daemon(True, timeout_s=2):
            pytest.fail("the block must not run")


@pytest.mark.subprocess
def test_compute_mode_is_never_touched(tmp_path, monkeypatch, clean_env):
    log = standin(tmp_path, monkeypatch)
    with mps.daemon(True):
        pass
    with pytest.raises(ZeroDivisionError):
        with mps.daemon(True):
            1 / 0
    assert not (tmp_path / "nvidia-smi-calls.txt").exists()  # nvidia-smi (and so `-c`) never ran
    assert all(c["argv"] in (["-d"], []) for c in calls(log))
    assert "nvidia-smi" not in Path(mps.__file__).read_text()  # and no other way to set `-c` there


@pytest.mark.chaos
@pytest.mark.subprocess
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_ablate_under_mps_survives_a_worker_crash_and_stops_the_daemon_on_ctrl_c(project, tmp_path, monkeypatch):
    """`ablate --mps --workers 2` end to end with the stand-in: a worker SIGKILLed mid-cell fails its cell
    only; Ctrl-C then ends the grid, and the daemon is told to quit and its folders are gone."""
    import signal
    import subprocess
    import time

    from . import launcher
    from .chaos_tools import descendants, runs, training, worker_name

    log = standin(tmp_path, monkeypatch)
    (project / "g.toml").write_text('designs = ["add_one_in"]\nflags = ["dropout", "width", "adamw"]\nseeds = [0, 1]\n'
                                    '[budget]\nmax_epochs = 2000\nbatch_size = 32\neval_batch_size = 256\n')
    proc = launcher.popen(["ablate", "g.toml", "--workers", "2", "--mps"], project, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while len([c for c in descendants(proc.pid) if worker_name(c)]) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "the workers did not start"
            time.sleep(0.5)
        daemon_dirs = [c["env"]["CUDA_MPS_PIPE_DIRECTORY"] for c in calls(log) if c["argv"] == ["-d"]]
        assert len(daemon_dirs) == 1 and Path(daemon_dirs[0]).is_dir()
        running = lambda: proc.poll() is None  # noqa: E731
        assert training(project, "lstm-mnist-ablation", 2, alive=running)  # both workers are mid-cell
        before = {c for c in descendants(proc.pid) if worker_name(c)}
        worker = sorted(before)[0]
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 120  # the grid notices, fails that cell, replaces the worker and goes on
        while running() and time.monotonic() < deadline and not (
                any(r.info.status == "FAILED" for r in runs(f"sqlite:///{project}/mlruns/mlflow.db",
                                                            "lstm-mnist-ablation"))
                and len({c for c in descendants(proc.pid) if worker_name(c)} - {worker}) == 2):
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "worker process died (exit code -9)" in out and "Traceback" not in out
    recorded = calls(log)
    assert recorded[0]["argv"] == ["-d"] and recorded[-1]["stdin"].strip() == "quit"
    assert not Path(daemon_dirs[0]).exists()
