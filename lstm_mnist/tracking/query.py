"""Reading the store back: runs of an experiment, metric histories, artifacts, the newest grid or study.

Runs come back as `Run`, a plain record of what a run holds: nothing outside tracking/ reads MLflow's own
objects, tag names of its own (`mlflow.parentRunId`) or filter strings.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from . import outages
from .store import TrackingError, client, experiment_id, tracking_uri


@dataclass(frozen=True)
class Run:
    """A run as the store holds it."""
    run_id: str
    name: str
    status: str                   # FINISHED, FAILED, KILLED, RUNNING
    start_time: int               # ms since the epoch
    end_time: int | None
    experiment_id: str
    artifact_uri: str
    tags: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)   # each metric's latest value

    @property
    def parent_id(self) -> str:
        """The run it is a child of ("" for none)."""
        return self.tags.get("mlflow.parentRunId", "")

    @classmethod
    def of(cls, r) -> Run:
        i, d = r.info, r.data
        return cls(i.run_id, i.run_name or "", i.status, i.start_time, i.end_time, i.experiment_id, i.artifact_uri,
                   dict(d.tags), dict(d.params), dict(d.metrics))


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
    tag = run.tags.get("last_invoked_ms", "")
    return max(run.start_time, int(tag)) if tag.isdigit() else run.start_time


PAGE = 1000  # runs per search request (MLflow's most); every search pages through all of them


def paged(search, **kwargs) -> list:
    """Every result of an MLflow search call (`search_runs`, `search_experiments`), page after page."""
    out, token = [], None
    while True:
        page = search(max_results=PAGE, page_token=token, **kwargs)
        out.extend(page)
        token = page.token
        if not token:
            return out


def search(experiment: str, filter_string: str = "", statuses=None, c: MlflowClient | None = None,
           **tags: str) -> list[Run]:
    """Every run of an experiment (paged) with these tag values (`config_hash="..."`), matching an MLflow filter
    (within tracking/), optionally only some statuses."""
    c = c or client()
    exp_id = experiment_id(c, experiment, create=False)
    if exp_id is None:
        return []
    flt = " and ".join([*([filter_string] if filter_string else []), *(f"tags.`{k}` = '{v}'" for k, v in tags.items())])
    runs = paged(c.search_runs, experiment_ids=[exp_id], filter_string=flt)
    return [Run.of(r) for r in runs if statuses is None or r.info.status in statuses]


def parents(experiment: str, role: str, name: str | None = None, c: MlflowClient | None = None) -> list:
    """The parent runs of this role ("grid", "study") in the experiment, those of grid or study `name` only when
    given."""
    runs = search(experiment, f"tags.`lstm_mnist.role` = '{role}'", c=c)
    return [r for r in runs if name is None or r.tags.get(f"{role}_name") == name]


def metric_history(run_id: str, key: str, c: MlflowClient | None = None) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in (c or client()).get_metric_history(run_id, key)]


def latest_parent(roles=("grid", "study"), grid: str | None = None, c: MlflowClient | None = None):
    """The newest grid or study parent run in the whole store, of the named grid if given (None: none).
    Every parent is read (paged), however many there are: "newest" is by last invocation, which no
    server-side ordering knows."""
    c = c or client()
    exps = [e.experiment_id for e in paged(c.search_experiments)]
    if not exps:
        return None
    found = []
    for role in roles:  # one search per role: tag filters take `=`, not `IN`
        flt = f"tags.`lstm_mnist.role` = '{role}'" + (f" and tags.grid_name = '{grid}'" if grid else "")
        found += [Run.of(r) for r in paged(c.search_runs, experiment_ids=exps, filter_string=flt)]
    return max(found, key=last_invoked) if found else None


def get_run(c: MlflowClient, run_id: str) -> Run:
    """The run, or a one-line error naming the store that does not hold it."""
    try:
        return Run.of(c.get_run(run_id))
    except MlflowException:
        raise TrackingError(f"no run {run_id!r} in the tracking store {tracking_uri()}; copy the id from `make ui` "
                            "or set MLFLOW_TRACKING_URI to the store that holds it") from None


def download(run_id: str, path: str, dst: str | Path, c: MlflowClient | None = None) -> Path:
    return Path((c or client()).download_artifacts(run_id, path, str(dst)))


def read_json_artifact(run_id: str, path: str, c: MlflowClient | None = None):
    """A run's JSON artifact, or None when the run has none (an older or interrupted run)."""
    # One tiny file per run: MLflow's progress bar for each would bury the report's tables in noise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return json.loads(download(run_id, path, tmp, c).read_text())
        except (MlflowException, OSError, ValueError):
            return None
