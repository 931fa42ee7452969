"""`python -m lstm_mnist tune studies/NAME.toml`: one Optuna study, run or continued to its total of trials.

The study is one search (search.py) through the engine a grid trains with (engine/drive.py): this process
asks Optuna for each trial and hands it to a worker process (`--workers N`), a Ray task (`--ray`) or trains it
itself, and is the only one that writes to Optuna and MLflow. Every trial is a child run of the study's one
parent run (made under a claim, however many `tune` processes start at once). The Optuna storage (a journal
next to the study file, or the RDB at --storage) is what resumes: a rerun continues up to the total, any
number of processes on one storage share the study, and a trial whose process died (on any host) is failed
and queued again. At the end the best trial (search.Search.best) is recorded on the parent and exported as
an experiment file.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import optuna

from .. import claims, config
from ..config import ConfigError
from ..errors import Preempted
from ..engine import drive as engine
from ..engine.progress import Progress, say
from ..engine.jobs import Cell
from ..engine.writer import Tally, Writer
from ..machine import host
from ..tracking import groups, records, store
from .file import load_study_file
from .search import Search, StudySpec, shown_storage, trial_config


class Trials:
    """The engine's work source for one study: its trials until the budget is spent (or time is up)."""

    def __init__(self, search: Search, writer: Writer, deadline: float):
        self.search, self.writer, self.deadline = search, writer, deadline

    def take(self, where: dict):
        if time.monotonic() >= self.deadline:
            return None
        job = self.search.ask()
        return job if job is not None and self.writer.open(job, where) else None

    def more(self) -> bool:
        return time.monotonic() < self.deadline and self.search.poll() in ("open", "waiting")

    def beating(self) -> list[tuple]:
        return self.search.beating()

    def finish(self) -> None:
        self.search.interrupted(self.writer)


def main(path: str, trials: int | None = None, n_workers: int = 1, storage_url: str | None = None,
         timeout: float | None = None, pin: bool = True, ray=None, out=say) -> dict:
    """Run (or continue) a study to `trials` COMPLETE+PRUNED trials; returns the summary it prints."""
    if n_workers < 1 or (trials is not None and trials < 1):
        raise ConfigError(f"--workers {n_workers} --trials {trials}: both must be at least 1")
    study_def = load_study_file(path)
    total = trials or study_def.settings.trials
    start = trial_config(study_def, {})
    fingerprint = study_def.task.data_fingerprint(start)  # missing data: one line here, before anything starts
    storage = claims.open_storage(storage_url, study_def.journal)
    search = Search(study_def, storage, total, fingerprint,
                    lambda n: Cell(study_def.name, "study", "", start.seed, frozenset(), trial=n),
                    pinned=frozenset(study_def.start))
    left = search.open_study()
    store.share_sqlite_store()
    c = store.client()
    runs_lost(search, study_def, storage_url, c)
    tags = {"storage": shown_storage(study_def, storage_url), "objective": study_def.settings.objective,
            "direction": study_def.settings.direction, "trials_requested": str(total), "study_file": str(path),
            "space": json.dumps(study_def.space), "command": host.invocation()}
    search.run_id = engine.held_run(claims.Claims(storage, f"{study_def.name}.parent-run"), "parent",
                                    lambda: groups.parent_run(study_def.experiment, "study", study_def.name, tags, c),
                                    tags, c)
    with engine.capacity(n_workers, ray, start) as (room, held):
        n = min(n_workers, room)  # on Ray, --workers caps the trials at once; else room is --workers
        n_run = total - left
        out(f"study {study_def.name}: {n_run + search.counts()['RUNNING']} of {total} trials done or running"
            + (f"; failed {len(search.stale)} left RUNNING by a dead process and queued them again"
               if search.stale else "")
            + f"; {n} worker(s); storage {shown_storage(study_def, storage_url)}; MLflow run {search.run_id}")
        writer = Writer(search.run_id, c, Tally(), Progress(left, n, out, "trials"))
        source = Trials(search, writer, time.monotonic() + timeout if timeout else float("inf"))
        try:
            engine.drive(source, writer, n, held, pin, ray, most=n)
        except BaseException as e:
            try:  # this process's trials FAIL and are queued again; the study's run KILLED (Ctrl-C) or FAILED
                source.finish()
                stopped = isinstance(e, (KeyboardInterrupt, SystemExit, Preempted))
                records.end_run(search.run_id, records.KILLED if stopped else records.FAILED, c=c)
            except Exception:  # the store itself is away: the next start reopens the parent
                pass
            raise
        source.finish()
    return finish(search, study_def, c, out)


def runs_lost(search: Search, study_def: StudySpec, storage_url: str | None, c) -> None:
    """One line when the study's storage holds ended trials and this MLflow store none of their runs (a store
    deleted or another one pointed at): continuing would count trials whose runs nobody can see."""
    n = search.counts()
    ended = n["COMPLETE"] + n["PRUNED"]
    if not ended or groups.trial_runs(study_def.experiment, study_def.name, c):
        return
    afresh = (f"delete {study_def.journal}" if not storage_url else
              f"optuna delete-study --study-name {study_def.name} --storage {shown_storage(study_def, storage_url)}")
    raise ConfigError(f"study {study_def.name}: its storage {shown_storage(study_def, storage_url)} holds {ended} "
                      f"ended trials, but the MLflow store {store.tracking_uri()} holds none of their runs: point "
                      f"MLFLOW_TRACKING_URI at the store that has them, or start the study afresh ({afresh})")


def finish(search: Search, study_def: StudySpec, c, out=say) -> dict:
    """The study's record on its run (Search.record), the best trial exported; the run FINISHED."""
    metrics, tags = search.record(c)
    summary = {"complete": metrics["n_complete"], "pruned": metrics["n_pruned"], "fail": metrics["n_fail"]}
    best = search.best()
    if best is not None:
        exported = export(study_def, best)
        tags["exported"] = str(exported)
        records.log_text(search.run_id, exported.read_text(), exported.name, c)
        summary |= {"best_value": best.value, "best_trial": best.number, "exported": str(exported)}
    records.end_run(search.run_id, records.FINISHED, metrics=metrics, tags=tags, c=c)
    out(_summary_line(study_def, summary))
    return summary


def _summary_line(study_def: StudySpec, s: dict) -> str:
    line = f"study {study_def.name}: {s['complete']} complete, {s['pruned']} pruned, {s['fail']} failed"
    if "best_value" in s:
        line += (f"; best trial {s['best_trial']}: {study_def.settings.objective} {s['best_value']:.4f}; "
                 f"exported {s['exported']} (python -m lstm_mnist run {s['exported']})")
    return line


def export(study_def: StudySpec, best: optuna.trial.FrozenTrial) -> Path:
    """The best trial as an experiment file: only what differs from the defaults, runnable by `run`."""
    task = study_def.task
    cfg, defaults = trial_config(study_def, best.params), task.config()
    keys = [k for k in task.fields if k not in task.not_identity and getattr(cfg, k) != getattr(defaults, k)]
    header = (f"# Tuned by Optuna: study {study_def.name!r} ({study_def.path}), trial {best.number}, "
              f"{study_def.settings.objective} = {best.value:.4f}\n"
              f"# (validation split, at the best-val_loss epoch; the test set chose nothing). Written by\n"
              f"# `python -m lstm_mnist tune`: rerun the study rather than edit. Budget keys are the study's.\n")
    out = Path("experiments") / f"best-{study_def.name}.toml"
    out.parent.mkdir(exist_ok=True)
    named = "" if task.named is None else f"task = {config._toml_value(study_def.task_spec)}\n"
    out.write_text(header + named + "".join(f"{k} = {config._toml_value(getattr(cfg, k))}\n" for k in keys))
    return out
