"""One Optuna study as work for the engine (engine/pool.py, engine/ray_tasks.py): the one trial path.

`tune STUDY` is one search; a tuned grid runs one search per arm. Either way this (the driver) process is the
only one that talks to Optuna and MLflow: it asks the study for a trial, hands it to a worker as a job
(engine/jobs.Job, with this module's `Trial` as its hooks), reports each epoch the worker sends to the pruner,
and tells the study how the trial ended; the engine's writer (engine/writer.py) records the trial's run. So the
rules below exist once:
- the budget: `total` COMPLETE + PRUNED trials; a trial asked beyond it (two drivers that each saw one
  missing) ends FAIL unrun with the user attr `surplus` (trial numbers order the asks: the lower ones run);
- a trial whose process died (a worker, a driver, a host) ends FAIL with `lost` and its point is queued
  again, at most claims.RETRIES times; it does not count against the study (`failed`);
- the process stamp and heartbeat each trial carries (claims/owners.py), by which any driver on the same
  storage, on any host, tells a dead driver's trials and recovers them;
- **best**: the COMPLETE trial with the best objective among the first `total` COMPLETE or PRUNED trials by
  number, ties to the lower number. Why not Optuna's `best_trial` (the best of every trial): a study
  continued past a smaller budget, or two drivers' surplus, would then select from more trials than the
  budget says, and a tuned grid's arms would no longer be tuned with an equal budget.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from .. import claims, config
from .. import task as task_protocol
from ..config import ConfigError
from ..engine.jobs import Job
from ..tracking import artifacts, groups, records
from .settings import PRUNERS, SAMPLERS, Settings


RETRIES = claims.RETRIES  # a trial whose process died is queued again at most this often
STALE_CHECK_S = 5.0       # a study waiting on another process's trials checks this often whether it died


# ---------------------------------------------------------------- what a study searches
@dataclass(frozen=True)
class StudySpec:
    """What one Optuna study searches and how: read from a study file (file.py), or made for each arm of a tuned
    grid (grids/tuned/search.py)."""
    path: Path
    name: str
    experiment: str       # MLflow experiment of the study's parent run and its trials
    start: dict           # config values every trial starts from: base file, then [fixed]
    space: dict           # key -> {type, low, high, log, step} or {type: categorical, choices}
    settings: Settings    # the budget (default total of COMPLETE + PRUNED trials), objective, sampler, pruner
    task: task_protocol.Task  # the model under study: its config is what a trial builds
    task_spec: str = ""   # how the study file names it ("": it names none, the default task)

    @property
    def journal(self) -> Path:
        return self.path.parent / f"{self.name}.journal"


def suggest(trial: optuna.Trial, study: StudySpec) -> dict:
    """The trial's point in the search space."""
    params = {}
    for key, d in study.space.items():
        if d["type"] == "categorical":
            params[key] = trial.suggest_categorical(key, d["choices"])
        elif d["type"] == "int":
            params[key] = trial.suggest_int(key, d["low"], d["high"], step=d.get("step", 1), log=d.get("log", False))
        else:
            params[key] = trial.suggest_float(key, d["low"], d["high"], step=d.get("step"), log=d.get("log", False))
    return params


def trial_config(study: StudySpec, params: dict, overrides: dict | None = None):
    """Later wins: worker placement (device, threads) < start values (base file, then [fixed]) < the trial's
    params; the experiment is always the study's. So a [fixed] device or num_threads overrides placement."""
    return study.task.build({**(overrides or {}), **study.start, **params, "experiment": study.experiment})


# ---------------------------------------------------------------- the study in its storage
def open_study(study: StudySpec, storage_url: str | None = None, seed_offset: int = 0,
               storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    """Create or load the study: journal file next to the study file, or the RDB at `storage_url`."""
    storage = storage or claims.open_storage(storage_url, study.journal)
    s = study.settings
    name, args = SAMPLERS[s.sampler]
    sampler = getattr(optuna.samplers, name)(**args(s, s.sampler_seed + seed_offset))
    name, args = PRUNERS[s.pruner]
    pruner = getattr(optuna.pruners, name)(**args(s, trial_config(study, {}).max_epochs))
    opened = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=study.name,
                                 direction=s.direction, load_if_exists=True)
    # load_if_exists ignores `direction`: a changed objective would silently keep the stored direction.
    stored = opened.direction.name.lower()
    if stored != s.direction:
        raise ConfigError(f"{study.path}: study {study.name!r} is stored in {shown_storage(study, storage_url)} "
                          f"with direction {stored}, but objective={s.objective} needs {s.direction}; "
                          f"give this study a new study_name")
    return opened


def shown_storage(study: StudySpec, url: str | None) -> str:
    return claims.hide_password(url) if url else str(study.journal)


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage,
                      dead: Callable | None = None) -> list[int]:
    """Trials left RUNNING by a dead process (claims.is_stale: this host's by its pid, another host's by its
    heartbeat; or those `dead(trial)` names): FAIL and `lost`, their points queued again; their numbers."""
    failed, study_id = [], storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not (dead or claims.is_stale)(t):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            storage.set_trial_user_attr(trial_id, "lost", True)  # its process died: not its point's failure
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:  # another process ended it first
            continue
        retries = t.user_attrs.get("retries", 0)
        # Two processes may judge the same trial stale at once: one retry of it is enough.
        queued = any(x.user_attrs.get("retry_of") == t.number for x in study.get_trials(deepcopy=False))
        if retries < RETRIES and not queued:
            requeue(study, t.params, t.number, t.user_attrs)
        failed.append(t.number)
    return failed


def requeue(study: optuna.Study, params: dict, number: int, attrs: dict) -> None:
    """A trial whose process died queued again at its point: the retry knows which trial it retries and the first
    of the chain (`origin`), whose checkpoint it goes on from (Trial.chain)."""
    study.enqueue_trial(params, user_attrs={"retries": attrs.get("retries", 0) + 1, "retry_of": number,
                                            "origin": attrs.get("origin", number)})


def failed(study: optuna.Study) -> int:
    """FAIL trials whose point failed (diverged): not a surplus trial (never run), nor one whose process died."""
    return sum(not t.user_attrs.get("surplus") and not t.user_attrs.get("lost")
               for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))


# ---------------------------------------------------------------- one search
class Search:
    """One study as a source of trial jobs; `cell(number)` names a trial's cell (engine.jobs.Cell), `pinned`
    the config keys the engine leaves alone, `tags` what every trial's run carries beside the trial tags."""

    def __init__(self, definition: StudySpec, storage, total: int, fingerprint: str, cell: Callable[[int], object],
                 pinned: frozenset = frozenset(), tags: dict | None = None):
        self.definition, self.storage, self.total, self.fingerprint = definition, storage, total, fingerprint
        self.cell, self.pinned, self.tags = cell, pinned, tags or {}
        self.study: optuna.Study | None = None
        self.study_id = -1        # the study's id in `storage`, once open
        self.stale: list[int] = []  # trials a dead process left RUNNING, failed when the study was opened
        self.run_id = ""          # the run the trials' runs go under (a study's parent, an arm's tuning run)
        self.live: dict[int, Trial] = {}  # this process's trials that have not ended
        self.checked = 0.0        # when stale trials were last looked for

    # ------------------------------------------------------------ opening
    def open_study(self) -> int:
        """The study (created once, shared), trials left RUNNING by a dead process failed and queued again;
        returns how many trials of the budget are still to run."""
        self.study = open_study(self.definition, storage=self.storage)
        # A sampler seeded alike in every start would propose a resumed study's first points again: the seed
        # moves on with the trials already in the study (an uninterrupted run stays reproducible).
        offset = len(self.study.get_trials(deepcopy=False))
        if offset:
            self.study = open_study(self.definition, storage=self.storage, seed_offset=offset)
        self.study_id = self.storage.get_study_id_from_name(self.definition.name)
        self.stale = fail_stale_trials(self.study, self.storage)
        n = self.counts()
        return max(0, self.total - n["COMPLETE"] - n["PRUNED"])

    def settle_runs(self, c) -> None:
        """Trial runs of trials that ended without this process hearing of it (a killed driver or worker) made
        to agree with Optuna."""
        states = {t.number: t.state.name for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}
        groups.settle_trial_runs(self.definition.experiment, self.definition.name, states, c)

    # ------------------------------------------------------------ where the study stands
    def counts(self) -> dict:
        trials = self.study.get_trials(deepcopy=False)
        n = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "RUNNING", "WAITING")}
        n["FAIL"] = failed(self.study)
        return n

    def state(self) -> str:
        """open (a trial may be asked for), waiting (the rest of the budget runs in another process, or its
        retries are queued), complete (the budget is spent and nothing runs), exhausted (as many failures
        as the budget: the search gives up)."""
        n = self.counts()
        counted = n["COMPLETE"] + n["PRUNED"]
        if counted >= self.total and not n["RUNNING"]:
            return "complete"
        if n["FAIL"] >= self.total and not n["RUNNING"]:  # trained and failed (diverged): not kills, not surplus
            return "exhausted"
        return "open" if counted + n["RUNNING"] < self.total else "waiting"

    def poll(self) -> str:
        """state(), after failing (every STALE_CHECK_S) the trials of a process that died while this one waits
        on them."""
        state = self.state()
        if state == "waiting" and time.monotonic() - self.checked > STALE_CHECK_S:
            self.checked = time.monotonic()
            if fail_stale_trials(self.study, self.storage):
                state = self.state()
        return state

    def beating(self) -> list[tuple]:
        """(storage, trial id) of this process's live trials: the engine's heartbeat keeps them alive."""
        return [(self.storage, t.trial_id) for t in list(self.live.values())]

    # ------------------------------------------------------------ trials
    def ask(self) -> Job | None:
        """The next trial as a job (its run goes under `run_id`), or None when none may start now."""
        if self.state() != "open":
            return None
        trial = self.study.ask()
        claims.stamp(trial.set_user_attr)  # any later start, on any host, can tell when we are gone
        ahead = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                              TrialState.RUNNING))
        if sum(t.number < trial.number for t in ahead) >= self.total:  # the budget rule (module docstring)
            trial.set_user_attr("surplus", True)
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        try:
            params = suggest(trial, self.definition)
            cfg = trial_config(self.definition, params)
        except BaseException:  # a bad point or Ctrl-C between ask and the job: the trial must not stay RUNNING
            trial.set_user_attr("lost", True)
            self.study.tell(trial, state=TrialState.FAIL)
            raise
        tags = {**self.tags, "lstm_mnist.role": "trial", "study_name": self.definition.name,
                "trial_number": str(trial.number), "trial_state": "RUNNING", "trial_params": json.dumps(params)}
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        self.live[trial.number] = Trial(self, trial, params, trial_id)
        return Job(self.cell(trial.number), cfg, config.identity(cfg, self.fingerprint), pinned=self.pinned,
                   fingerprint=self.fingerprint, parent=self.run_id, tags=tags, trial=self.live[trial.number])

    def interrupted(self, writer) -> None:
        """This process stops (Ctrl-C, an error, the end of its time) with trials of its own unfinished: each
        FAIL and queued again, as a dead process's would be at the next start (the engine's writer tags their
        runs)."""
        for t in list(self.live.values()):
            writer.trial_ended(t, "", "FAIL", 0.0, reason="interrupted", died=True)

    # ------------------------------------------------------------ the budget and its best trial
    def budget(self) -> list[optuna.trial.FrozenTrial]:
        """The first `total` COMPLETE or PRUNED trials by number."""
        counted = sorted(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                         key=lambda t: t.number)
        return counted[:self.total]

    def best(self) -> optuna.trial.FrozenTrial | None:
        """The best COMPLETE trial of the budget (module docstring), None when none completed."""
        return self.definition.settings.better([t for t in self.budget() if t.state == TrialState.COMPLETE])

    def record(self, c) -> tuple[dict, dict]:
        """The finished search on its run: every trial of the budget and every failed one in trials.json; the
        counts and training seconds as metrics; the best trial as metrics and tags. Returns (metrics, tags)
        for the caller to end the run with (any process may write this; all write the same)."""
        budget = {t.number for t in self.budget()}
        trials = [t for t in self.study.get_trials(deepcopy=False)
                  if t.number in budget or t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
        self.settle_runs(c)
        rows = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                 "seconds": t.user_attrs.get("seconds"), "run_id": t.user_attrs.get("mlflow_run_id", ""),
                 "lost": bool(t.user_attrs.get("lost"))} for t in trials]
        n = {s: sum(r["state"] == s and not r["lost"] for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")}
        metrics = {f"n_{k.lower()}": v for k, v in n.items()}
        metrics["train_seconds"] = float(sum(r["seconds"] or 0.0 for r in rows))
        tags = {"searched": ",".join(self.definition.space)}
        if len(budget) < self.total:
            tags["budget_short"] = f"{len(budget)} of {self.total} trials COMPLETE or PRUNED; {n['FAIL']} failed"
        best = self.best()
        if best is not None:
            metrics |= {"best_value": best.value, "best_trial": best.number}
            tags |= {"best_params": json.dumps(best.params, sort_keys=True), "best_trial": str(best.number),
                     "best_run_id": best.user_attrs.get("mlflow_run_id", "")}
            tags |= {f"best.{k}": str(v) for k, v in best.params.items()}
        records.log_dict(self.run_id, {"objective": self.definition.settings.objective,
                                       "direction": self.definition.settings.direction, "trials": rows},
                         artifacts.TRIALS, c)
        return metrics, tags


class Trial:
    """A trial's hooks, called by the engine's writer: its epochs go to the pruner, its end to Optuna. It writes
    nothing to MLflow: it tells the writer what the trial's run records."""

    def __init__(self, search: Search, trial: optuna.Trial, params: dict, trial_id: int):
        self.search, self.trial, self.params, self.trial_id = search, trial, params, trial_id
        self.run_id = ""  # its MLflow run, once the writer opened it
        self.requeued = False  # it ended FAIL because its process died, and a retry of it is queued

    @property
    def chain(self) -> str:
        """The trial and its retries (each goes on from the checkpoint the one before left): its study and the
        number of the chain's first trial, as a file name."""
        origin = self.trial.user_attrs.get("origin", self.trial.number)
        return re.sub(r"[^\w.-]", "_", f"{self.search.definition.name}-t{origin}")

    def epoch(self, epoch: int, record: dict) -> str | None:
        """Report the epoch's objective; the reason to stop the trial now (its pruner's), or None."""
        objective = self.search.definition.settings.objective
        self.trial.report(record[objective], epoch)
        if self.trial.should_prune():
            return f"epoch {epoch}: {objective} {record[objective]:.4f}"
        return None

    def ended(self, run_id: str, state: str, seconds: float, result=None, reason: str = "",
              died: bool = False) -> tuple[str, dict, dict]:
        """Tell Optuna how the trial ended; a trial whose process `died` is queued again (at most RETRIES times).
        Returns the progress line's words, and the metrics and tags its run records (the writer writes them)."""
        study, objective = self.search.study, self.search.definition.settings.objective
        self.search.live.pop(self.trial.number, None)
        run_id = run_id or self.run_id
        if run_id:
            self.trial.set_user_attr("mlflow_run_id", run_id)
        self.trial.set_user_attr("seconds", seconds)  # the trial's training and evaluation: the search's cost
        shown = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        tags = {"trial_state": state}
        if state == "COMPLETE":
            value = result.history[result.best_epoch][objective]  # the epoch whose weights the run keeps
            study.tell(self.trial, value)
            return f"COMPLETE {objective} {value:.4f} (epoch {result.best_epoch}, {shown})", {"objective": value}, tags
        if died:  # killed or interrupted, not a failure of its point: not counted against the study
            self.trial.set_user_attr("lost", True)
        study.tell(self.trial, state=TrialState.PRUNED if state == "PRUNED" else TrialState.FAIL)
        retries = self.trial.user_attrs.get("retries", 0)
        self.requeued = died and retries < RETRIES
        if self.requeued:
            requeue(study, self.params, self.trial.number, self.trial.user_attrs)
            reason += "; queued again"
        return f"{state} {reason} ({shown})", {}, tags
