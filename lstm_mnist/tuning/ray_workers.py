"""A study's workers as Ray tasks (`tune STUDY --ray [ADDRESS]`): each task is one study worker (tune.work)
placed by Ray, taking trials from the shared Optuna storage and recording each in MLflow itself, as a local
worker does. So, unlike a grid on Ray, the tasks write: every node must reach the study's storage (an RDB
URL given with --storage, or its journal file on a shared or the same file system) and the tracking store
(MLFLOW_TRACKING_URI: a server, or this machine's SQLite file for a cluster on this machine). The driver
passes both, with the credentials in its environment, and the MNIST files' bytes through the object store
(checked on arrival, as for a grid). A task that dies (its worker process or node) has its trials failed
and queued again at once (each trial carries its task's token), and a new task takes its place while the
study still lacks trials."""
from __future__ import annotations

import os
import uuid

import optuna

from ..config import UserError
from ..grids import ray_engine
from ..tracking import store
from ..training import data
from .objective import counted, fail_stale_trials
from .study import load_study_file, trial_config

# Passed on to the tasks when set here: the tracking server's and the databases' credentials.
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "PGPASSWORD")


def _study_task(work, path: str, storage_url: str | None, total: int, timeout: float | None, index: int, n: int,
                parent: str, raws: dict, fingerprint: str, placed: dict, token: str) -> None:
    """`work`: tune.work, the local study worker's loop (handed in: tune.py is the one that imports this)."""
    import socket

    import ray

    from ..machine import host

    host.name_process(f"lstm-mnist-t{index}")
    data.provide(trial_config(load_study_file(path), {}).data_dir, raws, fingerprint)
    node = ray.get_runtime_context().get_node_id()
    tags = {"machine": f"{host.describe()} (Ray node {node[:12]})", "ray_node_id": node,
            "worker": f"ray:{socket.gethostname()}:{os.getpid()}"}
    work(path, storage_url, total, timeout, index, n, parent, os.getpid(), pin=False, placed=placed, tags=tags,
         attrs={"ray_task": token})


def run_on_ray(work, path: str, storage_url: str | None, total: int, timeout: float | None, n_workers: int,
               parent: str, study: optuna.Study, opts: ray_engine.RayOptions) -> None:
    """`n_workers` study workers at once (at most what the cluster holds), replaced when one dies."""
    ray = ray_engine.connect(opts, worker_output=True)
    data_dir = trial_config(load_study_file(path), {}).data_dir
    env = {"MLFLOW_TRACKING_URI": store.tracking_uri(), "LSTM_MNIST_DATA": os.path.abspath(data_dir),
           **{k: os.environ[k] for k in CREDENTIALS if k in os.environ}}
    placed = ray_engine.placement(opts)
    task = ray.remote(num_cpus=opts.cpus_per_cell, num_gpus=opts.gpus_per_cell, max_retries=0)(_study_task)
    shipped = ray_engine.ship(ray, data_dir)
    print(f"Ray: {n_workers} study workers as tasks, {opts.cpus_per_cell:g} CPU and {opts.gpus_per_cell:g} GPU each",
          flush=True)

    def start(i):
        token = uuid.uuid4().hex
        ref = task.options(runtime_env={"env_vars": env}).remote(work, path, storage_url, total, timeout, i,
                                                                 n_workers, parent, *shipped, placed, token)
        return ref, (i, token)

    running, bad, replaced, died = dict([start(i) for i in range(n_workers)]), [], 0, []
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=5.0)
            for ref in ready:
                i, token = running.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # its own error: reported, not replaced
                    bad.append(f"worker {i}: {str(e.cause if e.cause else e).splitlines()[0][:300]}")
                except ray.exceptions.RayError as e:  # its process or node died
                    died.append(type(e).__name__)
                    requeued = fail_stale_trials(study, dead=lambda t, token=token: t.user_attrs.get("ray_task") == token)
                    print(f"worker {i} died ({type(e).__name__}); trial(s) {requeued or 'none'} failed and queued again",
                          flush=True)
                    if counted(study) < total and replaced < total:
                        replaced += 1
                        ref, who = start(i)
                        running[ref] = who
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
    if bad:
        raise UserError(f"{'; '.join(sorted(bad))}; rerun the same command to continue")
    if died and counted(study) < total:
        raise UserError(f"the study's Ray tasks kept dying ({', '.join(sorted(set(died)))}, {len(died)} times) and "
                        f"it holds {counted(study)} of {total} trials; see `ray status`, then rerun the same command")
