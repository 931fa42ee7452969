"""A private NVIDIA MPS control daemon for the duration of a `with` block.

With MPS, the CUDA work of several worker processes on one GPU runs in one shared context instead of
being time-sliced between contexts, which can raise a grid's throughput when each cell alone leaves the
GPU idle. The daemon here is private: its pipe and log folders live in a temporary directory named by
CUDA_MPS_PIPE_DIRECTORY / CUDA_MPS_LOG_DIRECTORY, which the workers started inside the block take from
os.environ, so it neither needs root nor meets a system-wide daemon. It never changes the GPU's compute mode.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from ..config import ConfigError

CONTROL = "nvidia-cuda-mps-control"
ENV_KEYS = ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")
_SKIP = "or run without --mps"


class MPSError(ConfigError):
    """MPS could not be used; the message names the problem and the fix (one line). A ConfigError, so the
    CLI prints it as `error: ...` with exit code 2."""


def available() -> bool:
    """Whether the MPS control binary is on PATH (it ships with the NVIDIA driver's compute utilities)."""
    return shutil.which(CONTROL) is not None


def require() -> str:
    """The control binary's path, or the one-line MPSError that says how to get it (checked up front, so
    a run that needs MPS fails before its first measurement, not after)."""
    binary = shutil.which(CONTROL)
    if binary is None:
        raise MPSError(f"{CONTROL} not found on PATH: install the NVIDIA driver's compute utilities "
                       f"(e.g. nvidia-compute-utils), {_SKIP}")
    return binary


@contextlib.contextmanager
def daemon(enabled: bool, timeout_s: float = 5.0) -> Iterator[Path | None]:
    """Run the block under a private MPS control daemon (enabled) or as it is (not); yields the daemon's
    temporary folder (pipe/ and log/) or None. On any exit, Ctrl-C included, the daemon is told to quit,
    its folder removed and the environment restored."""
    if not enabled:
        yield None
        return
    binary = require()
    root = Path(tempfile.mkdtemp(prefix="lstm-mnist-mps-"))
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    try:
        (root / "pipe").mkdir()
        (root / "log").mkdir()
        os.environ.update(CUDA_MPS_PIPE_DIRECTORY=str(root / "pipe"), CUDA_MPS_LOG_DIRECTORY=str(root / "log"))
        try:
            _start(binary, root, timeout_s)
            yield root
        finally:
            _stop(binary, root)
    finally:
        _restore(saved)
        shutil.rmtree(root, ignore_errors=True)


def _start(binary: str, root: Path, timeout_s: float) -> None:
    """`nvidia-cuda-mps-control -d`, then wait (bounded) for the daemon's control pipe to appear."""
    try:
        proc = subprocess.run([binary, "-d"], env=dict(os.environ), capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise MPSError(f"{CONTROL} -d did not return within {timeout_s:g} s; start it by hand to see why, "
                       f"{_SKIP}") from None
    if proc.returncode != 0:
        why = _last_line(proc.stderr or proc.stdout) or _log_tail(root) or "no message"
        raise MPSError(f"{CONTROL} -d failed (exit code {proc.returncode}: {why}); check that no other MPS "
                       f"daemon owns the GPU and that its compute mode allows MPS, {_SKIP}")
    control = root / "pipe" / "control"
    deadline = time.monotonic() + timeout_s
    while not control.exists():
        if time.monotonic() > deadline:
            raise MPSError(f"the MPS control daemon did not come up within {timeout_s:g} s (no {control}; log: "
                           f"{_log_tail(root) or 'empty'}); start `{CONTROL} -d` by hand to see why, {_SKIP}")
        time.sleep(0.05)


def _stop(binary: str, root: Path) -> None:
    """`echo quit | nvidia-cuda-mps-control` with the daemon's own pipe folder; a daemon that never came
    up makes this fail, which is fine. A daemon that does not answer is reported, not raised over the
    block's own outcome."""
    try:
        proc = subprocess.run([binary], input="quit\n", env=dict(os.environ), capture_output=True, text=True,
                              timeout=30)
    except subprocess.TimeoutExpired:
        print(f"warning: the MPS control daemon in {root} did not answer `quit` within 30 s; "
              f"stop it with `echo quit | CUDA_MPS_PIPE_DIRECTORY=... {CONTROL}` or kill it", file=sys.stderr)
        return
    if proc.returncode != 0 and (root / "pipe" / "control").exists():
        print(f"warning: `echo quit | {CONTROL}` exited with code {proc.returncode} "
              f"({_last_line(proc.stderr or proc.stdout) or 'no message'})", file=sys.stderr)


def _restore(saved: dict) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _log_tail(root: Path) -> str:
    """The daemon's last log line (control.log), for an error message that outlives the folder."""
    try:
        return _last_line((root / "log" / "control.log").read_text(errors="replace"))
    except OSError:
        return ""
