"""What a run saw and what it tested: the splits as MLflow dataset inputs, the tested weights as a
LoggedModel, and loading them back."""
from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from .. import config
from .. import task as task_protocol
from .store import TrackingError


DATASET_CONTEXT = {"train": "training", "validation": "validation", "test": "testing"}


def log_datasets(c: MlflowClient, run_id: str, cfg, data_fingerprint: str) -> None:
    """The three splits as MLflow dataset inputs (the UI's Datasets column): digest = the data fingerprint,
    source = the data folder; the name carries the split and its size (MLflow keeps one record per name
    and digest, so a capped training set must not share the full one's name)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for d in task_protocol.of(cfg).hook("datasets")(cfg):  # [] for a task that describes none
        ds = Dataset(name=d["name"], digest=data_fingerprint, source_type="local", source=json.dumps(d["source"]),
                     schema=json.dumps(d["schema"]), profile=json.dumps(d["profile"]))
        inputs.append(DatasetInput(ds, tags=[InputTag("mlflow.data.context", DATASET_CONTEXT[d["split"]])]))
    if inputs:
        c.log_inputs(run_id, datasets=inputs)


def log_model(c: MlflowClient, run_id: str, cfg, config_hash: str, weights: bytes, step: int = 0) -> str:
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

    net = task_protocol.of(cfg).new_model(cfg)
    net.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
    net.eval()
    exp_id = c.get_run(run_id).info.experiment_id
    params = {k: str(v) for k, v in dataclasses.asdict(cfg).items() if k not in ("data_dir",)}
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
            (Path(tmp) / "model" / "config.toml").write_text(config.to_toml(cfg))
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


OLD_MODEL_PATHS = ("lstm_mnist.model", "lstm_mnist.training.model")


def old_model_paths() -> None:
    """The built-in task's weights were pickled under the module paths its model had before it moved: before the
    package had subpackages (`lstm_mnist.model`), and before the task had a package (`lstm_mnist.training.model`);
    both name the model's module now (lstm_mnist/builtin/model.py)."""
    import importlib
    import sys

    builtin_model = importlib.import_module("lstm_mnist.builtin.model")  # by name: the harness imports no task
    for old in OLD_MODEL_PATHS:
        sys.modules.setdefault(old, builtin_model)


def load_logged_model(c: MlflowClient, run_id: str):
    """The `nn.Module` the run logged (tag `model_id`), on the CPU. NoModel when it has none; a
    TrackingError when its files do not load (damaged)."""
    import mlflow.artifacts
    import mlflow.pytorch

    old_model_paths()
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
