"""One run being written: open it with its tags, params, config and datasets, log epochs and the result,
close it FINISHED only when tested (else FAILED or KILLED with the reason), and know who owns it."""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from .. import config
from ..errors import Preempted
from .. import task as task_protocol
from ..machine import host
from . import artifacts
from .models import log_datasets, log_model
from .store import client, experiment_id, provenance


FINISHED, FAILED, KILLED, RUNNING = "FINISHED", "FAILED", "KILLED", "RUNNING"


def find_runs(c: MlflowClient, exp_id: str, config_hash: str, statuses=(FINISHED,)) -> list:
    """Runs of this identity in the experiment with one of the given statuses (query.Run)."""
    from .query import Run

    runs = c.search_runs([exp_id], filter_string=f"tags.config_hash = '{config_hash}'", max_results=1000)
    return [Run.of(r) for r in runs if r.info.status in statuses]


class RunRecord:
    """One MLflow run being written: params and tags up front, metrics per epoch, results at the end."""

    def __init__(self, c: MlflowClient, run_id: str, cfg=None, config_hash: str = ""):
        self.client, self.run_id = c, run_id
        self.cfg, self.config_hash = cfg, config_hash  # what log_model records with the weights

    def log_epoch(self, epoch: int, record: dict) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, epoch) for k, v in record.items()])

    def log_result(self, result) -> None:
        """Test metrics, summary metrics, provenance of the device, and the artifacts."""
        from ..analysis import figures

        now = int(time.time() * 1000)
        summary = {**result.test, "epochs_trained": result.epochs_trained, "best_epoch": result.best_epoch}
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()],
                              tags=[RunTag("device_name", result.device_name)])
        with tempfile.TemporaryDirectory() as tmp:
            figures.confusion_png(result.confusion, Path(tmp) / artifacts.CONFUSION_PNG)
            (Path(tmp) / artifacts.PER_CLASS).write_text(json.dumps(result.per_class, indent=1))
            (Path(tmp) / artifacts.CONFUSION).write_text(json.dumps(result.confusion))
            self.client.log_artifacts(self.run_id, tmp)
        # tested and recorded: the weights below are a convenience, not the result
        if self.cfg is not None and self.cfg.log_model and result.weights:
            try:
                log_model(self.client, self.run_id, self.cfg, self.config_hash, result.weights, result.best_epoch)
            except Exception as e:  # a full disk or an unreachable store: the run keeps its FINISHED result
                self.client.set_tag(self.run_id, "model_error", f"{type(e).__name__}: {e}"[:5000])


def task_tags(cfg) -> dict:
    """Which task a run is of (`task`, `task_version`): the default task's runs carry none, as before tasks."""
    t = task_protocol.of(cfg)
    if t.named is None:
        return {}
    return {"task": t.name, "task_version": str(t.version), "task_spec": t.spec}


def open_run(cfg, config_hash: str, data_fingerprint: str, run_name: str | None, parent_run_id: str | None,
             tags: dict, c: MlflowClient) -> RunRecord:
    """Create a run with its tags, every config value as a param, and config.toml. `run` closes it after
    training in this process; the grid's main process (the only writer) closes it when a worker reports."""
    all_tags = {"config_hash": config_hash, "data_fingerprint": data_fingerprint,
                "protocol_version": str(config.PROTOCOL_VERSION),
                "settings_key": config.settings_key(cfg, data_fingerprint), **task_tags(cfg),
                **provenance(), **owner_tags(), **tags}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    rec = RunRecord(c, c.create_run(experiment_id(c, cfg.experiment), run_name=run_name, tags=all_tags).info.run_id,
                    cfg, config_hash)
    try:
        params = {**task_protocol.of(cfg).params(cfg), "config_hash": config_hash, "data_fingerprint": data_fingerprint}
        c.log_batch(rec.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        c.log_text(rec.run_id, config.to_toml(cfg), "config.toml")
        log_datasets(c, rec.run_id, cfg, data_fingerprint)
    except BaseException as e:
        end_on_error(c, rec.run_id, e)
        raise
    return rec


def reopen_run(cfg, config_hash: str, run_id: str, tags: dict, c: MlflowClient) -> tuple[RunRecord, int]:
    """A cell's run continued from its checkpoint by this process: RUNNING again, its owner this process, its
    tags brought up to date (`tags`: where it trains, how often and from which epoch it resumed). Returns its
    record and the last epoch it has logged (-1: none)."""
    before = c.get_run(run_id).data.tags
    resumes = int(before.get("resumes", "0")) + 1
    c.update_run(run_id, status=RUNNING)
    if "error" in before:  # why it stopped is history now: a FINISHED run carries no error
        c.delete_tag(run_id, "error")
    set_tags(run_id, {**provenance(), **owner_tags(), **tags, "resumes": str(resumes)}, c)
    logged = c.get_metric_history(run_id, "train_loss")
    return RunRecord(c, run_id, cfg, config_hash), max((m.step for m in logged), default=-1)


def mark_failed(c: MlflowClient, run_id: str, reason: str, status: str = FAILED) -> None:
    c.set_tag(run_id, "error", reason[:5000])
    c.set_terminated(run_id, status)


def end_on_error(c: MlflowClient, run_id: str, e: BaseException) -> None:
    """Ctrl-C (or an exit) leaves a run KILLED; any other exception leaves it FAILED with the error."""
    interrupted = isinstance(e, (KeyboardInterrupt, SystemExit, Preempted))
    reason = "interrupted" if interrupted else f"{type(e).__name__}: {e}"
    mark_failed(c, run_id, reason, KILLED if interrupted else FAILED)


def end_run(run_id: str, status: str = FINISHED, metrics: dict | None = None, tags: dict | None = None,
            c: MlflowClient | None = None) -> None:
    """Log final metrics/tags on a run and close it with the given status."""
    c = c or client()
    now = int(time.time() * 1000)
    c.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
                tags=tag_list(tags or {}))
    c.set_terminated(run_id, status)


def log_metric(run_id: str, key: str, value: float, step: int = 0, c: MlflowClient | None = None) -> None:
    (c or client()).log_batch(run_id, metrics=[Metric(key, float(value), int(time.time() * 1000), step)])


def set_tags(run_id: str, tags: dict, c: MlflowClient | None = None) -> None:
    (c or client()).log_batch(run_id, tags=tag_list(tags))


def tag_list(tags: dict) -> list[RunTag]:
    return [RunTag(k, str(v)) for k, v in tags.items()]


def log_text(run_id: str, text: str, artifact_file: str, c: MlflowClient | None = None) -> None:
    (c or client()).log_text(run_id, text, artifact_file)


def log_dict(run_id: str, value: dict, artifact_file: str, c: MlflowClient | None = None) -> None:
    """A JSON artifact, rewritten in place when the file exists (a grid's plan, on each invocation)."""
    log_text(run_id, json.dumps(value, indent=1), artifact_file, c)


def owner_tags() -> dict:
    """Who writes a run: a RUNNING run whose owner process is gone was left by a process that died."""
    name, pid, start = host.process_stamp(os.getpid()).split(":")
    return {"owner_host": name, "owner_pid": pid, "owner_start": start}


def owner_alive(tags: dict) -> bool | None:
    """True/False for a run owned on this host; None when another host (or an unknown process) owns it."""
    name, pid, start = tags.get("owner_host"), tags.get("owner_pid", ""), tags.get("owner_start", "")
    if name != host.name() or not pid.isdigit():
        return None
    if int(pid) == os.getpid():  # a restarted container reuses pids: this process has opened no runs yet
        return False
    return host.process_stamp(int(pid)) == f"{name}:{pid}:{start}"  # gone, a zombie, or a reused pid: dead
