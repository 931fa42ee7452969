"""Run an Optuna study (`python -m lstm_mnist tune studies/NAME.toml`): N worker processes share the study,
each trial recorded in MLflow; the Optuna storage (a journal next to the study file, or any RDB URL) is the
resume mechanism, so rerunning continues up to the requested total; at the end the best trial is exported
as an experiment file and every trial's MLflow run is settled to its Optuna state."""
from __future__ import annotations

import json
import os
import sys
import time
from multiprocessing.connection import wait
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import claims, config
from ..config import ConfigError, UserError
from ..machine import cores, host, lease
from ..tracking import groups, query, records, store
from ..training import data
from .objective import Objective, Surplus, TrialFailed, counted, fail_stale_trials, failed, open_study, shown_storage
from .study import Study, load_study_file, trial_config


# ---------------------------------------------------------------- workers
def work(path: str, storage_url: str | None, total: int, timeout: float | None, index: int, n_workers: int,
         parent_run_id: str, holder: int, pin: bool = True, placed: dict | None = None, tags: dict | None = None,
         attrs: dict | None = None) -> None:
    """One worker: take trials until the study holds `total` finished-or-running ones (or time is up). Each
    trial runs on the share of the host's cores that the lease held by `holder` (the tune process) gives
    this worker then, so several invocations on one host divide the cores; or, on Ray, on what the task was
    given (`placed`: device and threads)."""
    study_def = load_study_file(path)
    study = open_study(study_def, storage_url, seed_offset=index)
    label = f"[worker {index}] " if n_workers > 1 else ""

    def placement() -> dict:
        if placed is not None:
            return placed
        share = lease.share(index, holder)
        if pin:
            cores.pin_to(share)
        return cores.settings(index, n_workers, share)

    objective = Objective(study_def, parent_run_id, placement, label, total, tags, attrs)
    deadline = time.monotonic() + timeout if timeout else float("inf")
    failures = 0
    while counted(study) < total and failures < total and time.monotonic() < deadline:
        before = failed(study)
        study.optimize(objective, n_trials=1, catch=(TrialFailed, Surplus))
        failures += failed(study) > before


def _worker_main(path: str, storage_url: str | None, total: int, timeout: float | None, index: int,
                 n_workers: int, parent_run_id: str, holder: int, pin: bool) -> None:
    """A worker process: user mistakes are one line and exit 2 (the parent reports the exit code once);
    Ctrl-C reaches every worker, so each exits 130 quietly and the parent says it was interrupted."""
    host.name_process(f"lstm-mnist-t{index}")
    host.die_with_parent()
    try:
        work(path, storage_url, total, timeout, index, n_workers, parent_run_id, holder, pin)
    except KeyboardInterrupt:
        sys.exit(130)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)


def run_workers(path: str, storage_url: str | None, total: int, timeout: float | None, n_workers: int,
                parent_run_id: str, pin: bool = True, study: optuna.Study | None = None) -> None:
    """The workers, watched: one killed (a signal, the OOM killer) has its trial failed and queued again at
    once (`fail_stale_trials`) and is replaced while the study still lacks trials, so a kill costs one trial's
    time, not the total. A worker that stops on a user error (exit 2) is reported, not replaced."""
    if n_workers == 1:
        work(path, storage_url, total, timeout, 0, 1, parent_run_id, os.getpid(), pin)
        return
    ctx = host.worker_context([__name__, "lstm_mnist.training.train"])  # nothing forked of this process's state

    def start(i):
        p = ctx.Process(target=_worker_main, args=(path, storage_url, total, timeout, i, n_workers, parent_run_id,
                                                   os.getpid(), pin))
        p.start()
        return p

    procs, bad, replaced = {i: start(i) for i in range(n_workers)}, [], 0
    try:
        while procs:
            wait([p.sentinel for p in procs.values()], timeout=5.0)
            for i, p in [(i, p) for i, p in procs.items() if p.exitcode is not None]:
                del procs[i]
                if p.exitcode == 0:
                    continue
                if p.exitcode > 0:  # it said why on stderr
                    bad.append(f"worker {i} exited with code {p.exitcode}")
                    continue
                requeued = fail_stale_trials(study) if study is not None else []
                print(f"worker {i} was killed (signal {-p.exitcode}); trial(s) {requeued or 'none'} failed and queued "
                      "again", flush=True)
                if study is not None and counted(study) < total and replaced < total:
                    replaced += 1
                    procs[i] = start(i)
    except KeyboardInterrupt:
        _stop_workers(list(procs.values()))
        raise
    if bad:
        raise UserError(f"{'; '.join(sorted(bad))} (see the error lines above); rerun the same command to continue")


def _stop_workers(procs: list, grace_s: float = 30) -> None:
    """Ctrl-C reached the workers too: give them grace_s together to record their trials as failed, then
    kill any still alive (also on a second Ctrl-C), rather than rely on PDEATHSIG alone (Linux only)."""
    deadline = time.monotonic() + grace_s
    try:
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()


# ---------------------------------------------------------------- the whole study
def main(path: str, trials: int | None = None, n_workers: int = 1, storage_url: str | None = None,
         timeout: float | None = None, pin: bool = True, ray=None) -> dict:
    """Run (or continue) a study to `trials` COMPLETE+PRUNED trials; returns the summary it prints."""
    if n_workers < 1 or (trials is not None and trials < 1):
        raise ConfigError(f"--workers {n_workers} --trials {trials}: both must be at least 1")
    study_def = load_study_file(path)
    total = trials or study_def.trials
    data.fingerprint(trial_config(study_def, {}).data_dir)  # missing data: one line here, not one per worker
    storage = claims.open_storage(storage_url, study_def.journal)
    study = open_study(study_def, storage_url, storage=storage)  # created here, before any worker races to create it
    stale = fail_stale_trials(study)
    store.share_sqlite_store()
    tags = {"storage": shown_storage(study_def, storage_url), "objective": study_def.objective,
            "direction": study_def.direction, "trials_requested": total, "study_file": str(path),
            "space": json.dumps(study_def.space), "command": host.invocation()}
    # One parent run however many `tune` processes start at once: created under a claim in the same storage.
    parent_claims = claims.Claims(storage, f"{study_def.name}.parent-run")
    parent, made = claims.once(parent_claims, "parent",
                               lambda: groups.parent_run(study_def.experiment, "study", study_def.name, tags),
                               valid=query.exists)
    if not made:
        groups.reopen(parent, tags)
    if ray is not None:  # as many tasks as the cluster holds, at most --workers
        from ..grids import ray_engine

        n_workers = min(n_workers, ray_engine.join(ray, worker_output=True))
    done = counted(study)
    print(f"study {study_def.name}: {done} of {total} trials done or running"
          f"{f'; failed {len(stale)} left RUNNING by a dead process and queued them again' if stale else ''}; "
          f"{n_workers} worker(s); storage {shown_storage(study_def, storage_url)}; MLflow run {parent}", flush=True)
    try:
        if ray is not None:  # the study's workers as Ray tasks (ray_workers.py)
            from .ray_workers import run_on_ray

            run_on_ray(work, str(Path(path).resolve()), storage_url, total, timeout, n_workers, parent, study, ray)
        else:
            with lease.Lease(n_workers):  # this host's cores, divided with any other invocation's workers
                run_workers(str(path), storage_url, total, timeout, n_workers, parent, pin, study)
    except BaseException as e:
        # Interrupted: KILLED, like an interrupted run; anything else (e.g. a worker's error) FAILED.
        try:
            records.end_run(parent, records.KILLED if isinstance(e, (KeyboardInterrupt, SystemExit)) else records.FAILED)
        except Exception:  # the store itself is away: the next start reopens the parent
            pass
        raise
    return finish(study, study_def, parent)


def finish(study: optuna.Study, study_def: Study, parent: str) -> dict:
    """Record the counts and the best trial on the study's run and export the best trial."""
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    states = {t.number: t.state.name for t in trials}
    groups.settle_trial_runs(study_def.experiment, study_def.name, states)
    summary = {s.lower(): sum(1 for v in states.values() if v == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    metrics, tags = {f"n_{k}": v for k, v in summary.items()}, {}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        out = export(study_def, best)
        metrics |= {"best_value": best.value, "best_trial": best.number}
        tags = {"best_trial": best.number, "best_params": json.dumps(best.params),
                "best_run_id": best.user_attrs.get("mlflow_run_id", ""), "exported": str(out)}
        tags |= {f"best.{k}": v for k, v in best.params.items()}
        records.log_text(parent, out.read_text(), out.name)
        summary |= {"best_value": best.value, "best_trial": best.number, "exported": str(out)}
    records.end_run(parent, records.FINISHED, metrics=metrics, tags=tags)
    print(_summary_line(study_def, summary), flush=True)
    return summary


def _summary_line(study_def: Study, s: dict) -> str:
    line = f"study {study_def.name}: {s['complete']} complete, {s['pruned']} pruned, {s['fail']} failed"
    if "best_value" in s:
        line += (f"; best trial {s['best_trial']}: {study_def.objective} {s['best_value']:.4f}; "
                 f"exported {s['exported']} (python -m lstm_mnist run {s['exported']})")
    return line


def export(study_def: Study, best: optuna.trial.FrozenTrial) -> Path:
    """The best trial as an experiment file: only what differs from the defaults, runnable by `run`."""
    cfg, defaults = trial_config(study_def, best.params), config.Config()
    keys = [k for k in config.FIELDS if k not in config.NOT_IDENTITY and getattr(cfg, k) != getattr(defaults, k)]
    header = (f"# Tuned by Optuna: study {study_def.name!r} ({study_def.path}), trial {best.number}, "
              f"{study_def.objective} = {best.value:.4f}\n"
              f"# (validation split, at the best-val_loss epoch; the test set chose nothing). Written by\n"
              f"# `python -m lstm_mnist tune`: rerun the study rather than edit. Budget keys are the study's.\n")
    out = Path("experiments") / f"best-{study_def.name}.toml"
    out.parent.mkdir(exist_ok=True)
    out.write_text(header + "".join(f"{k} = {config._toml_value(getattr(cfg, k))}\n" for k in keys))
    return out
