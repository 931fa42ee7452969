"""`python -m lstm_mnist evaluate RUN_ID`: re-verify a recorded result from the run's logged weights.

Loads the weights the run tested (its MLflow LoggedModel) and its resolved config (config.toml), checks
that the data here is the data it saw (the fingerprint), recomputes the test metrics the way training
did, and prints them beside the recorded ones. Same device: they must agree to the last digit. Another
device (a GPU run checked on a CPU) may flip a few of the 10,000 predictions: TOLERANCE then applies.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from .. import config, metrics
from ..tracking import models, query, store
from .. import task as task_protocol
from ..training import devices, train
from ..config import UserError

TOLERANCE = {"test_f1": 5e-4, "test_acc": 5e-4, "test_loss": 2e-3}  # across devices: 5 of 10,000 images


@dataclass
class Check:
    run_id: str
    recorded: dict
    recomputed: dict
    same_device: bool

    def differences(self) -> dict[str, float]:
        """Metrics that disagree beyond what the devices allow (exactly, on the same device)."""
        out = {}
        for k in metrics.TEST:
            diff = abs(self.recomputed[k] - self.recorded[k])
            if diff > (0.0 if self.same_device else TOLERANCE[k]):
                out[k] = self.recomputed[k] - self.recorded[k]
        return out


def check(run_id: str, data_dir: str | None = None, device: str | None = None) -> Check:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # the output is the comparison
    c = store.client()
    run = query.get_run(c, run_id)
    recorded = {k: run.metrics[k] for k in metrics.TEST if k in run.metrics}
    if len(recorded) < len(metrics.TEST):
        raise UserError(f"run {run_id} has no test metrics ({run.status}): only FINISHED runs can be re-verified")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(c, run, tmp, data_dir, device)
    _same_data(run, cfg)
    can = devices.precisions_of(devices.resolve_device(config.rebuilt(cfg, precision="32")))
    if cfg.precision not in can:  # its precision here: say what to do
        raise UserError(f"run {run_id} trained at precision {cfg.precision}, which this device cannot run (it can "
                        f"{', '.join(can)}); evaluate it on a device that can, e.g. --device cuda")
    net = models.load_logged_model(c, run_id)
    recomputed = {k: float(v) for k, v in train.evaluate(cfg, net).items() if k in metrics.TEST}
    here = devices.device_name(devices.resolve_device(cfg))
    return Check(run_id, recorded, recomputed, here == run.tags.get("device_name"))


def _config(c, run, tmp: str, data_dir: str | None, device: str | None):
    """The run's resolved config (of the task its config.toml names), with this machine's data folder and the
    run's own threads."""
    try:
        path = query.download(run.run_id, "config.toml", tmp, c)
    except Exception as e:  # MlflowException or OSError: the artifact is not there
        raise UserError(f"run {run.run_id} has no config.toml artifact ({type(e).__name__}); it was not "
                        "recorded by this harness") from None
    task = config.task_of_file(dict(config.read_toml(path)), str(path))
    overrides = {"data_dir": data_dir or task.config().data_dir} if "data_dir" in task.fields else {}
    threads = devices.threads_of(run.tags.get("device_name", ""))
    if threads:  # the run's own CPU thread count: the same arithmetic, so the same last digit
        overrides["num_threads"] = threads
    if device:
        overrides["device"] = device
    return config.load(path, overrides)


def _same_data(run, cfg) -> None:
    want, have = run.tags.get("data_fingerprint"), task_protocol.of(cfg).data_fingerprint(cfg)
    if want != have:
        where = getattr(cfg, "data_dir", "the data here")
        raise UserError(f"run {run.run_id} was trained on data {want} but {where} holds {have}: point "
                        "LSTM_MNIST_DATA (or --data-dir) at the data it was trained on")


def lines(ch: Check) -> list[str]:
    out = [f"{'metric':<10} {'recorded':>20} {'recomputed':>20} {'difference':>12}"]
    for k in metrics.TEST:
        out.append(f"{k:<10} {ch.recorded[k]:>20.17g} {ch.recomputed[k]:>20.17g} "
                   f"{ch.recomputed[k] - ch.recorded[k]:>+12.3g}")
    rule = "exact (same device)" if ch.same_device else f"within {TOLERANCE} (another device)"
    diffs = ch.differences()
    out.append(f"run {ch.run_id}: " + (f"agree, {rule}" if not diffs else
                                       "DIFFER: " + ", ".join(f"{k} {v:+.3g}" for k, v in diffs.items())
                                       + f" (allowed: {rule})"))
    return out
