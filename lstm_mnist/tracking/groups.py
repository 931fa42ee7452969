"""Parent runs of grids and studies: made once, reopened by later invocations, and what they carry at the
end (report files and tables, trial runs settled to Optuna's states)."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from mlflow.entities import Param
from mlflow.tracking import MlflowClient

from .query import search
from .records import FAILED, FINISHED, KILLED, RUNNING, tag_list, set_tags
from .store import client, experiment_id, provenance


def start_parent(experiment: str, run_name: str, tags: dict | None = None, params: dict | None = None,
                 c: MlflowClient | None = None, parent: str = "") -> str:
    """A run that groups child runs (a grid, a study, an arm's search: a child itself of `parent`, if given);
    returns its run id."""
    c = c or client()
    exp_id = experiment_id(c, experiment)
    nested = {"mlflow.parentRunId": parent} if parent else {}
    run = c.create_run(exp_id, run_name=run_name, tags={**provenance(), **(tags or {}), **nested})
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
    return reopen(found[0].run_id, tags, c)  # search returns newest first


def reopen(run_id: str, tags: dict, c: MlflowClient | None = None) -> str:
    """A parent run continued by another invocation: RUNNING again, its tags brought up to date."""
    c = c or client()
    c.update_run(run_id, status=RUNNING)
    # Provenance too: the code and machine of the latest invocation, not of the first one.
    set_tags(run_id, {**provenance(), **tags, "last_invoked_ms": str(int(time.time() * 1000))}, c)  # start_time stays
    return run_id


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


def log_files(run_id: str, paths: list[Path], artifact_path: str | None = None,
              c: MlflowClient | None = None) -> None:
    """Log exactly these files (not a whole folder, which may hold stale files from an older report)."""
    c = c or client()
    for p in paths:
        c.log_artifact(run_id, str(p), artifact_path)


# What a trial's MLflow run ends as, for each final Optuna state.
TRIAL_RUN_STATUS = {"COMPLETE": (FINISHED,), "PRUNED": (KILLED,), "FAIL": (FAILED, KILLED)}


def _trials_of(study_name: str) -> str:
    return f"tags.study_name = '{study_name}' and tags.`lstm_mnist.role` = 'trial'"


def trial_runs(experiment: str, study_name: str, c: MlflowClient | None = None) -> int:
    """How many runs of the study's trials this store holds (any status)."""
    return len(search(experiment, _trials_of(study_name), c=c or client()))


def settle_trial_runs(experiment: str, study_name: str, states: dict[int, str],
                      c: MlflowClient | None = None) -> int:
    """Make every trial's MLflow run agree with Optuna: tag `trial_state` = the trial's state, and a run status
    that state allows. A trial whose worker died (RUNNING in MLflow, or FINISHED just before the worker died
    and Optuna never heard) ends KILLED with the reason in `error`. Returns how many runs were changed."""
    c = c or client()
    changed = 0
    for r in search(experiment, _trials_of(study_name), c=c):
        state = states.get(int(r.tags.get("trial_number", -1)))
        if state not in TRIAL_RUN_STATUS:  # still RUNNING (a live worker), or not this study's trial
            continue
        tags = {"trial_state": state} if r.tags.get("trial_state") != state else {}
        wrong = r.status not in TRIAL_RUN_STATUS[state]
        if wrong:
            tags["error"] = "its worker process died (killed) before the trial ended"
        if tags:
            c.log_batch(r.run_id, tags=tag_list(tags))
            changed += 1
        if wrong:
            c.set_terminated(r.run_id, TRIAL_RUN_STATUS[state][-1])
    return changed
