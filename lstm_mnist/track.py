"""MLflow tracking: the only module that imports mlflow.

Default store: SQLite at mlruns/mlflow.db with artifacts under mlruns/artifacts/, unless
MLFLOW_TRACKING_URI is set (then that server or database is used unchanged). Runs are written through
`MlflowClient` with explicit run ids (no global "active run"), so several runs can be open at once.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from . import config, outages, workers
from .config import Config, UserError

STORE_DIR = Path("mlruns")
FINISHED, FAILED, KILLED, RUNNING = "FINISHED", "FAILED", "KILLED", "RUNNING"
TEST_METRICS = ("test_loss", "test_f1", "test_acc")


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
    """The store's client, its calls made to wait out an outage (outages.Patient)."""
    # An explicit URI, not mlflow.set_tracking_uri(): that one also sets MLFLOW_TRACKING_URI for the process.
    uri = tracking_uri()
    _ready(uri)
    for key, value in outages.SERVER_DEFAULTS.items():
        os.environ.setdefault(key, value)
    return outages.Patient(MlflowClient(tracking_uri=uri), uri)


def local_dir() -> Path:
    """The folder of this project's local files beside the store: the SQLite database's folder, else ./mlruns."""
    root = artifact_root()
    return root.parent if root else STORE_DIR.resolve()


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
            "mlflow_version": mlflow.__version__, "machine": workers.machine()}


def find_runs(c: MlflowClient, exp_id: str, config_hash: str, statuses=(FINISHED,)) -> list:
    """Runs of this identity in the experiment with one of the given statuses."""
    runs = c.search_runs([exp_id], filter_string=f"tags.config_hash = '{config_hash}'", max_results=1000)
    return [r for r in runs if r.info.status in statuses]


class RunRecord:
    """One MLflow run being written: params and tags up front, metrics per epoch, results at the end."""

    def __init__(self, c: MlflowClient, run_id: str, cfg: Config | None = None, config_hash: str = ""):
        self.client, self.run_id, self.finished_ok = c, run_id, False
        self.cfg, self.config_hash = cfg, config_hash  # what log_model records with the weights

    def log_epoch(self, epoch: int, record: dict) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in record.items()])

    def log_result(self, result) -> None:
        """Test metrics, summary metrics, provenance of the device, and the artifacts."""
        from . import figures

        now = int(time.time() * 1000)
        summary = {**result.test, "epochs_trained": result.epochs_trained, "best_epoch": result.best_epoch}
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()],
                              tags=[RunTag("device_name", result.device_name)])
        with tempfile.TemporaryDirectory() as tmp:
            figures.confusion_png(result.confusion, Path(tmp) / "confusion_matrix.png")
            (Path(tmp) / "per_class.json").write_text(json.dumps(result.per_class, indent=1))
            (Path(tmp) / "confusion_matrix.json").write_text(json.dumps(result.confusion))
            self.client.log_artifacts(self.run_id, tmp)
        self.finished_ok = True  # tested and recorded: the weights below are a convenience, not the result
        if self.cfg is not None and self.cfg.log_model and result.weights:
            try:
                log_model(self.client, self.run_id, self.cfg, self.config_hash, result.weights, result.best_epoch)
            except Exception as e:  # a full disk or an unreachable store: the run keeps its FINISHED result
                self.client.set_tag(self.run_id, "model_error", f"{type(e).__name__}: {e}"[:5000])


# ---------------------------------------------------------------- what a run saw and what it tested
DATASET_CONTEXT = {"train": "training", "validation": "validation", "test": "testing"}


def log_datasets(c: MlflowClient, run_id: str, cfg: Config, data_fingerprint: str) -> None:
    """The three splits as MLflow dataset inputs (the UI's Datasets column): digest = the data fingerprint,
    source = the data folder; the name carries the split and its size (MLflow keeps one record per name
    and digest, so a capped training set must not share the full one's name)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from . import data

    sizes = data.split_sizes(cfg)
    source = json.dumps({"uri": str(Path(cfg.data_dir).resolve())})
    schema = json.dumps({"images": "uint8 (28, 28), one row per time step", "labels": "int64 0-9"})
    inputs = []
    for split, n in sizes.items():
        profile = {"num_rows": n, "split_seed": cfg.split_seed, "val_fraction": cfg.val_fraction,
                   "source_split": "t10k" if split == "test" else "train"}
        ds = Dataset(name=f"mnist-{split}-{n}", digest=data_fingerprint, source_type="local", source=source,
                     schema=schema, profile=json.dumps(profile))
        inputs.append(DatasetInput(ds, tags=[InputTag("mlflow.data.context", DATASET_CONTEXT[split])]))
    c.log_inputs(run_id, datasets=inputs)


def log_model(c: MlflowClient, run_id: str, cfg: Config, config_hash: str, weights: bytes, step: int = 0) -> str:
    """The tested weights as an MLflow LoggedModel (the Models tab) linked to the run as its output.

    Written with the client, not the fluent `mlflow.pytorch.log_model` (that one files the model under the
    process's active experiment and tracking URI, not the run's). Format: pickle of the `nn.Module`, so
    `mlflow.pytorch.load_model` gives back the exact module and `evaluate` recomputes bit for bit; the
    `pt2` export would fix the batch size from its example and reload as an ExportedProgram instead.
    """
    import io
    import logging

    import mlflow.pytorch
    import torch
    from mlflow.entities import LoggedModelOutput

    from . import model as model_mod

    net = model_mod.build(cfg)
    net.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    net.eval()
    exp_id = c.get_run(run_id).info.experiment_id
    params = {k: str(v) for k, v in cfg.to_dict().items() if k not in ("data_dir",)}
    lm = c.create_logged_model(exp_id, name="model", source_run_id=run_id, params=params,
                               tags={"config_hash": config_hash}, model_type="pytorch")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            logger = logging.getLogger("mlflow.pytorch")
            level, logger.level = logger.level, logging.ERROR  # the pickle caution, once per model: we chose it
            try:
                mlflow.pytorch.save_model(net, f"{tmp}/model", serialization_format="pickle",
                                          pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
            finally:
                logger.setLevel(level)
            (Path(tmp) / "model" / "config.toml").write_text(cfg.to_toml())
            c.log_model_artifacts(lm.model_id, f"{tmp}/model")
    except BaseException:
        c.finalize_logged_model(lm.model_id, "FAILED")
        raise
    c.finalize_logged_model(lm.model_id, "READY")
    c.log_outputs(run_id, [LoggedModelOutput(lm.model_id, step)])
    c.set_tag(run_id, "model_id", lm.model_id)
    return lm.model_id


class NoModel(TrackingError):
    """The run has no logged weights."""


def load_logged_model(c: MlflowClient, run_id: str):
    """The `nn.Module` the run logged (tag `model_id`), on the CPU. NoModel when it has none; a
    TrackingError when its files do not load (damaged)."""
    import mlflow.artifacts
    import mlflow.pytorch

    model_id = c.get_run(run_id).data.tags.get("model_id")
    if not model_id:
        raise NoModel(f"run {run_id} has no logged weights (trained with log_model=false, or before models were "
                      "logged); rerun it with --force to log them")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            location = c.get_logged_model(model_id).artifact_location
            folder = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp)
            return mlflow.pytorch.load_model(folder, map_location="cpu")
        except Exception as e:  # unpickling damaged bytes can raise almost anything
            raise TrackingError(f"run {run_id}: its logged weights (model {model_id}) do not load "
                                f"({type(e).__name__}: {str(e)[:200]}); the model files in the store are "
                                "damaged") from None


def open_run(cfg: Config, config_hash: str, data_fingerprint: str, run_name: str | None, parent_run_id: str | None,
             tags: dict, c: MlflowClient) -> RunRecord:
    """Create a run with its tags, every config value as a param, and config.toml. `run` closes it after
    training in this process; the grid's main process (the only writer) closes it when a worker reports."""
    all_tags = {"config_hash": config_hash, "data_fingerprint": data_fingerprint,
                "protocol_version": str(config.PROTOCOL_VERSION), "settings_key": cfg.settings_key(data_fingerprint),
                **provenance(), **owner_tags(), **tags}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    rec = RunRecord(c, c.create_run(experiment_id(c, cfg.experiment), run_name=run_name, tags=all_tags).info.run_id,
                    cfg, config_hash)
    try:
        params = {**cfg.to_dict(), "hidden_size": cfg.hidden_size, "num_layers": cfg.num_layers,
                  "config_hash": config_hash, "data_fingerprint": data_fingerprint}
        c.log_batch(rec.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        c.log_text(rec.run_id, cfg.to_toml(), "config.toml")
        log_datasets(c, rec.run_id, cfg, data_fingerprint)
    except BaseException as e:
        end_on_error(c, rec.run_id, e)
        raise
    return rec


@contextmanager
def run(cfg: Config, config_hash: str, data_fingerprint: str, run_name: str | None = None,
        parent_run_id: str | None = None, tags: dict | None = None, c: MlflowClient | None = None,
        stop_on: tuple[type[BaseException], ...] = ()):
    """Open a run for `cfg`; FINISHED only if `log_result` was called, FAILED (with the error) otherwise.

    An exception of a `stop_on` type is the caller stopping the run on purpose (an Optuna prune): the run
    ends KILLED with the reason in the tag `stopped`, not FAILED with an `error`.
    """
    c = c or client()
    rec = open_run(cfg, config_hash, data_fingerprint, run_name, parent_run_id, tags or {}, c)
    try:
        yield rec
    except stop_on as e:
        c.set_tag(rec.run_id, "stopped", f"{type(e).__name__}: {e}"[:5000])
        c.set_terminated(rec.run_id, KILLED)
        raise
    except BaseException as e:
        end_on_error(c, rec.run_id, e)
        raise
    if rec.finished_ok:
        c.set_terminated(rec.run_id, FINISHED)
    else:
        mark_failed(c, rec.run_id, "ended without test metrics")


def mark_failed(c: MlflowClient, run_id: str, reason: str, status: str = FAILED) -> None:
    c.set_tag(run_id, "error", reason[:5000])
    c.set_terminated(run_id, status)


def end_on_error(c: MlflowClient, run_id: str, e: BaseException) -> None:
    """Ctrl-C (or an exit) leaves a run KILLED; any other exception leaves it FAILED with the error."""
    interrupted = isinstance(e, (KeyboardInterrupt, SystemExit))
    reason = "interrupted" if interrupted else f"{type(e).__name__}: {e}"
    mark_failed(c, run_id, reason, KILLED if interrupted else FAILED)


# ---------------------------------------------------------------- parent runs (grids, studies)
def start_parent(experiment: str, run_name: str, tags: dict | None = None, params: dict | None = None,
                 c: MlflowClient | None = None) -> str:
    """A parent run that groups child runs (a grid, a study); returns its run id."""
    c = c or client()
    exp_id = experiment_id(c, experiment)
    run = c.create_run(exp_id, run_name=run_name, tags={**provenance(), **(tags or {})})
    if params:
        c.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id


def parent_run(experiment: str, role: str, name: str, tags: dict, c: MlflowClient | None = None) -> str:
    """The parent run of a grid or study (role) called `name` (tag `<role>_name`): reopened (RUNNING again)
    when a rerun continues it, so one grid or study has one parent; created the first time. Concurrent
    starts call this under a claim (claims.Claims.once), so only one of them can create it."""
    c = c or client()
    key = f"{role}_name"
    found = search(experiment, f"tags.{key} = '{name}' and tags.`lstm_mnist.role` = '{role}'", c=c)
    if not found:
        tags = {**tags, "last_invoked_ms": str(int(time.time() * 1000))}
        return start_parent(experiment, name, tags={**tags, key: name, "lstm_mnist.role": role}, c=c)
    return reopen(found[0].info.run_id, tags, c)  # search returns newest first


def reopen(run_id: str, tags: dict, c: MlflowClient | None = None) -> str:
    """A parent run continued by another invocation: RUNNING again, its tags brought up to date."""
    c = c or client()
    c.update_run(run_id, status=RUNNING)
    set_tags(run_id, {**tags, "last_invoked_ms": str(int(time.time() * 1000))}, c)  # start_time stays the first
    return run_id


def exists(run_id: str, c: MlflowClient | None = None) -> bool:
    """Whether the store holds this run, not deleted (a claims journal may outlive the store it was beside)."""
    try:
        return (c or client()).get_run(run_id).info.lifecycle_stage != "deleted"
    except MlflowException as e:
        if outages.unreachable(e):
            raise
        return False


def last_invoked(run) -> int:
    """When a grid's or study's parent run was last started or reopened (ms); its start time for older runs."""
    tag = run.data.tags.get("last_invoked_ms", "")
    return max(run.info.start_time, int(tag)) if tag.isdigit() else run.info.start_time


def end_run(run_id: str, status: str = FINISHED, metrics: dict | None = None, tags: dict | None = None,
            c: MlflowClient | None = None) -> None:
    """Log final metrics/tags on a run and close it with the given status."""
    c = c or client()
    now = int(time.time() * 1000)
    c.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                tags=_tags(tags or {}))
    c.set_terminated(run_id, status)


def log_metric(run_id: str, key: str, value: float, step: int = 0, c: MlflowClient | None = None) -> None:
    (c or client()).log_batch(run_id, metrics=[Metric(key, float(value), int(time.time() * 1000), step)])


def search(experiment: str, filter_string: str = "", statuses=None, c: MlflowClient | None = None) -> list:
    """Every run of an experiment matching an MLflow filter (paged), optionally only some statuses."""
    c = c or client()
    exp_id = experiment_id(c, experiment, create=False)
    if exp_id is None:
        return []
    runs, token = [], None
    while True:
        page = c.search_runs([exp_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return [r for r in runs if statuses is None or r.info.status in statuses]


def metric_history(run_id: str, key: str, c: MlflowClient | None = None) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in (c or client()).get_metric_history(run_id, key)]


def latest_parent(roles=("grid", "study"), grid: str | None = None, c: MlflowClient | None = None):
    """The newest grid or study parent run in the whole store, of the named grid if given (None: none)."""
    c = c or client()
    exps = [e.experiment_id for e in c.search_experiments()]
    if not exps:
        return None
    found = []
    for role in roles:  # one search per role: tag filters take `=`, not `IN`
        flt = f"tags.`lstm_mnist.role` = '{role}'" + (f" and tags.grid_name = '{grid}'" if grid else "")
        found += c.search_runs(exps, flt, max_results=1000)
    return max(found, key=last_invoked) if found else None


def get_run(c: MlflowClient, run_id: str):
    """The run, or a one-line error naming the store that does not hold it."""
    try:
        return c.get_run(run_id)
    except MlflowException:
        raise TrackingError(f"no run {run_id!r} in the tracking store {tracking_uri()}; copy the id from `make ui` "
                            "or set MLFLOW_TRACKING_URI to the store that holds it") from None


def log_tables(run_id: str, frames: dict, artifact_dir: str = "report/tables", c: MlflowClient | None = None) -> None:
    """Tables as MLflow table artifacts: the JSON `log_table` writes (orient "split"), listed in the run's
    `mlflow.loggedArtifacts` tag so the UI shows them as tables. Written here rather than with `log_table`,
    which appends to an existing file: a second `make report` would double every table."""
    from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

    c = c or client()
    listed = json.loads(c.get_run(run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
    with tempfile.TemporaryDirectory() as tmp:
        for name, df in frames.items():
            path = Path(tmp) / f"{name}.json"
            df.to_json(path, orient="split", index=False)
            c.log_artifact(run_id, str(path), artifact_dir)
            entry = {"path": f"{artifact_dir}/{name}.json", "type": "table"}
            listed += [entry] if entry not in listed else []
    c.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps(listed))


def download(run_id: str, path: str, dst: str | Path, c: MlflowClient | None = None) -> Path:
    return Path((c or client()).download_artifacts(run_id, path, str(dst)))


# ---- report
def log_files(run_id: str, paths: list[Path], artifact_path: str | None = None,
              c: MlflowClient | None = None) -> None:
    """Log exactly these files (not a whole folder, which may hold stale files from an older report)."""
    c = c or client()
    for p in paths:
        c.log_artifact(run_id, str(p), artifact_path)


def read_json_artifact(run_id: str, path: str, c: MlflowClient | None = None):
    """A run's JSON artifact, or None when the run has none (an older or interrupted run)."""
    # One tiny file per run: MLflow's progress bar for each would bury the report's tables in noise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return json.loads(download(run_id, path, tmp, c).read_text())
        except (MlflowException, OSError, ValueError):
            return None


# ---- tune
def share_sqlite_store() -> None:
    """Before several worker processes write to the default SQLite store: switch it to WAL journaling.

    In SQLite's default rollback journal a reader blocks writers, so worker processes logging epochs while
    another searches runs hit "database is locked" sooner; WAL lets readers and one writer proceed together
    (mlflow already sets a 20 s busy_timeout per session for the writers' turns). The mode is stored in the
    database file, so this is done once, from the main process. Other stores are servers: nothing to do.
    """
    import sqlite3

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        with sqlite3.connect(uri.removeprefix("sqlite:///"), timeout=30) as con:
            con.execute("PRAGMA journal_mode=WAL")


def set_tags(run_id: str, tags: dict, c: MlflowClient | None = None) -> None:
    (c or client()).log_batch(run_id, tags=_tags(tags))


def _tags(tags: dict) -> list[RunTag]:
    return [RunTag(k, str(v)) for k, v in tags.items()]


def log_text(run_id: str, text: str, artifact_file: str, c: MlflowClient | None = None) -> None:
    (c or client()).log_text(run_id, text, artifact_file)


def log_dict(run_id: str, value: dict, artifact_file: str, c: MlflowClient | None = None) -> None:
    """A JSON artifact, rewritten in place when the file exists (a grid's plan, on each invocation)."""
    log_text(run_id, json.dumps(value, indent=1), artifact_file, c)


# What a trial's MLflow run ends as, for each final Optuna state.
TRIAL_RUN_STATUS = {"COMPLETE": (FINISHED,), "PRUNED": (KILLED,), "FAIL": (FAILED, KILLED)}


def settle_trial_runs(experiment: str, study_name: str, states: dict[int, str],
                      c: MlflowClient | None = None) -> int:
    """Make every trial's MLflow run agree with Optuna: tag `trial_state` = the trial's state, and a run status
    that state allows. A trial whose worker died (RUNNING in MLflow, or FINISHED just before the worker died
    and Optuna never heard) ends KILLED with the reason in `error`. Returns how many runs were changed."""
    c = c or client()
    flt = f"tags.study_name = '{study_name}' and tags.`lstm_mnist.role` = 'trial'"
    changed = 0
    for r in search(experiment, flt, c=c):
        state = states.get(int(r.data.tags.get("trial_number", -1)))
        if state not in TRIAL_RUN_STATUS:  # still RUNNING (a live worker), or not this study's trial
            continue
        tags = {"trial_state": state} if r.data.tags.get("trial_state") != state else {}
        wrong = r.info.status not in TRIAL_RUN_STATUS[state]
        if wrong:
            tags["error"] = "its worker process died (killed) before the trial ended"
        if tags:
            c.log_batch(r.info.run_id, tags=_tags(tags))
            changed += 1
        if wrong:
            c.set_terminated(r.info.run_id, TRIAL_RUN_STATUS[state][-1])
    return changed


# ---- grid
def owner_tags() -> dict:
    """Who writes a run: a RUNNING run whose owner process is gone was left by a process that died."""
    host, pid, start = workers.process_stamp(os.getpid()).split(":")
    return {"owner_host": host, "owner_pid": pid, "owner_start": start}


def owner_alive(tags: dict) -> bool | None:
    """True/False for a run owned on this host; None when another host (or an unknown process) owns it."""
    import socket

    host, pid, start = tags.get("owner_host"), tags.get("owner_pid", ""), tags.get("owner_start", "")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    if int(pid) == os.getpid():  # a restarted container reuses pids: this process has opened no runs yet
        return False
    return workers.process_stamp(int(pid)) == f"{host}:{pid}:{start}"  # gone, a zombie, or a reused pid: dead
