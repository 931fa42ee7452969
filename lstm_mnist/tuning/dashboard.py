"""`python -m lstm_mnist dashboard [STUDY_FILE] [--storage URL|JOURNAL]` (`make dashboard STUDY=...`): Optuna's own
dashboard (optuna-dashboard, the `dashboard` extra) on a study's storage, read as Optuna's users read any study.

A study file's storage is its journal beside the file (`studies/quick.journal`), or the RDB given as --storage;
a tuned grid's arm studies are in the journal beside the tracking store (`mlruns/claims.journal`). The harness
keeps its claims as studies of their own in the same storage (`<study>.parent-run`, `grid <experiment>/<name>`):
they list beside the real ones, with no trials of interest.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .. import claims
from ..config import ConfigError, UserError
from .file import load_study_file


def command(path: str | None, storage: str | None, host: str, port: int) -> tuple[list[str], str]:
    """optuna-dashboard's command line for this study's storage, and the storage as shown to the user."""
    if storage and "://" not in storage:  # a journal file named directly
        target = shown = storage
        if not Path(storage).is_file():
            raise ConfigError(f"--storage {storage}: no such journal file (a study file's journal lies beside it, "
                              "a tuned grid's studies in mlruns/claims.journal)")
    elif storage:
        target, shown = storage, claims.hide_password(storage)  # a password in the URL is not shown
    elif path:
        study = load_study_file(path)
        target = shown = str(study.journal)
        if not study.journal.is_file():
            raise ConfigError(f"{path}: its study has no storage yet ({study.journal}): run it first "
                              f"(make tune STUDY={path}), or give --storage where it lives")
    else:
        raise ConfigError("give a study file (make dashboard STUDY=studies/quick.toml), or --storage URL|JOURNAL")
    exe = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or shutil.which("optuna-dashboard")
    if exe is None:
        raise UserError("optuna-dashboard is not installed in this Python: `make dashboard` installs it "
                        "(pip install -e '.[dashboard]')")
    return [exe, target, "--host", host, "--port", str(port)], shown


def main(path: str | None, storage: str | None = None, host: str = "127.0.0.1", port: int = 8080) -> int:
    argv, shown = command(path, storage, host, port)
    print(f"optuna-dashboard on {shown}: http://{host}:{port}/dashboard/ (Ctrl-C stops it)", flush=True)
    os.execv(argv[0], argv)  # its own process from here: Ctrl-C and kill reach it directly
    return 0
