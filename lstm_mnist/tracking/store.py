"""The tracking store: which one (SQLite at mlruns/mlflow.db by default, else MLFLOW_TRACKING_URI), opening
it safely, its client (made to wait out outages), experiments, and the code's provenance.

Runs are written through `MlflowClient` with explicit run ids (no global "active run"), so several runs can
be open at once. Artifacts of a SQLite store live in `artifacts/` beside its database file.
"""
from __future__ import annotations

import functools
import logging
import os
import subprocess
import time
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..config import UserError
from . import outages
from ..machine import host


STORE_DIR = Path("mlruns")


def _not_an_interrupt(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


def _quiet_interrupted_resets() -> None:
    """Ctrl-C that lands while SQLAlchemy returns a connection to its pool makes the pool log "Exception
    during reset or similar" with a traceback of the KeyboardInterrupt. The interrupt is the command's to
    handle (a grid ends in one line and resumes), so that record is dropped; any other exception is still
    logged. The filter sits on each pool class's own logger (a filter on a parent logger would not see it)."""
    from sqlalchemy import pool

    for cls in vars(pool).values():
        if isinstance(cls, type) and issubclass(cls, pool.Pool):
            logging.getLogger(f"{cls.__module__}.{cls.__name__}").addFilter(_not_an_interrupt)


_quiet_interrupted_resets()


def _not_a_wait(record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return exc is None or outages.unreachable(exc) is None


def _quiet_waited_out_errors() -> None:
    """MLflow's SQL store logs every OperationalError with its traceback ("SQLAlchemy database error") before
    it raises it. One that says the store is locked or unreachable is waited out by outages.WaitingClient,
    which says so in one line, so that record is dropped; any other database error is still logged."""
    logging.getLogger("mlflow.store.db.utils").addFilter(_not_a_wait)


_quiet_waited_out_errors()


class TrackingError(UserError):
    """The tracking store cannot be used as asked; one line says why."""


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    STORE_DIR.mkdir(exist_ok=True)
    return f"sqlite:///{(STORE_DIR / 'mlflow.db').resolve()}"


def artifact_root(uri: str | None = None) -> Path | None:
    """Where a SQLite store's artifacts go: `artifacts/` beside its database file, so a store in another
    folder keeps its files with it (MLflow's own default is ./mlruns of the current folder). None for a
    server or other database: its artifact settings stay as they are."""
    uri = uri or tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).resolve().parent / "artifacts"


# MLflow 3's UI opens an experiment in its GenAI view unless told this is model training.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def client() -> MlflowClient:
    """The store's client, its calls made to wait out an outage (outages.WaitingClient): one per store and
    process, made on first use, so every module of a command writes and reads through the same one."""
    return _client(tracking_uri())


@functools.cache
def _client(uri: str) -> MlflowClient:
    # An explicit URI, not mlflow.set_tracking_uri(): that one also sets MLFLOW_TRACKING_URI for the process.
    _ready(uri)
    for key, value in outages.SERVER_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return outages.WaitingClient(MlflowClient(tracking_uri=uri), uri)


def local_dir() -> Path:
    """The folder of this project's local files beside the store: the SQLite database's folder, else ./mlruns."""
    root = artifact_root()
    return root.parent if root else STORE_DIR.resolve()


CHECKPOINTS_ENV = "LSTM_MNIST_CHECKPOINTS"  # where running cells keep their checkpoints (default: beside the store)


def checkpoints_dir() -> Path:
    """Where a running cell's checkpoint lives: $LSTM_MNIST_CHECKPOINTS (a folder every machine of a grid sees, for
    a cell that may resume on another), else checkpoints/ beside the store (one machine)."""
    given = os.environ.get(CHECKPOINTS_ENV)
    return Path(given) if given else local_dir() / "checkpoints"


STORE_LOCK_WAIT_S = 120.0  # creating and migrating a SQLite store takes ~2 s; a holder that dies frees the lock


@functools.cache
def _ready(uri: str) -> None:
    """Open (create, migrate) a SQLite store once per process, under a file lock beside its database.

    MLflow's schema creation and migrations are not safe when two processes open a fresh store at the same
    instant (seen here: a CircularDependencyError traceback, and a store left half-migrated with
    `_alembic_tmp_*` tables that every later command failed on). Serialized, the first process creates
    the store and the others find it ready. Servers and other databases migrate on their own side."""
    if not uri.startswith("sqlite:///"):
        return
    import fcntl

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        deadline = time.monotonic() + STORE_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TrackingError(f"{db}: another process has held the store's lock ({lock.name}) for "
                                        f"{STORE_LOCK_WAIT_S:.0f} s; end it, or remove the lock file if no process "
                                        "uses the store") from None
                time.sleep(0.05)
        try:
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        except MlflowException as e:
            raise TrackingError(f"{db}: the MLflow store cannot be opened ({str(e).splitlines()[0][:200]}); "
                                "point MLFLOW_TRACKING_URI at a healthy store or move this one aside") from None
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def experiment_id(c: MlflowClient, name: str, create: bool = True) -> str | None:
    """Get or create the experiment (creation races between processes are fine)."""
    exp = c.get_experiment_by_name(name)
    if exp is None and create:
        root = artifact_root()
        location = (root / name.replace("/", "_")).as_uri() if root else None
        try:
            return c.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
        except MlflowException:
            exp = c.get_experiment_by_name(name)  # another process created it first
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise TrackingError(f"MLflow experiment {name!r} is deleted; restore it in the UI or choose experiment=NEW")
    return exp.experiment_id if exp else None


@functools.cache
def provenance() -> dict[str, str]:
    """Code and library versions, so any run can be reproduced. Read once per process: the code that runs
    is the code loaded at start, from the package's own checkout (not the working directory)."""
    import lightning
    import torch

    def git(*args):
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                                  cwd=Path(__file__).resolve().parent).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "mlflow.source.git.commit": commit, "git_dirty": str(bool(dirty)).lower(),
            "torch_version": torch.__version__, "lightning_version": lightning.__version__,
            "mlflow_version": mlflow.__version__, "machine": host.describe()}


def share_sqlite_store() -> None:
    """Before several worker processes write to the default SQLite store: switch it to WAL journaling.

    In SQLite's default rollback journal a reader blocks writers, so worker processes logging epochs while
    another searches runs hit "database is locked" sooner; WAL lets readers and one writer proceed together
    (mlflow already sets a 20 s busy_timeout per session for the writers' turns). The mode is stored in the
    database file, so this is done once, from the main process. Other stores are servers: nothing to do.
    Two invocations started together both try; the switch needs the file to itself, and SQLite can answer
    "database is locked" at once rather than wait, so it is retried until the mode is WAL (set by either).
    """
    import sqlite3

    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return
    _ready(uri)  # a store not made yet (its folder included) is made first
    deadline = time.monotonic() + 30
    while True:
        try:
            with sqlite3.connect(uri.removeprefix("sqlite:///"), timeout=30) as con:
                if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):
                raise
            if time.monotonic() > deadline:
                raise TrackingError(f"the MLflow store {uri} stayed locked by another process for 30 s; "
                                    "rerun the same command to continue") from None
        time.sleep(0.1)
