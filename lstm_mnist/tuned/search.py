"""One arm's search in a tuned grid: its Optuna study, its tuning run, its trials, and its tuned cells.

The study lives in the grid's claims storage (a journal beside the tracking store, or the RDB at --storage),
so every invocation on the grid shares it; its name carries a hash of everything a trial's result depends on
(the arm's config at `tune_seed`, its search space, the sampler and pruner settings), so a changed grid
starts a new study rather than continue an old one. Trials are handed to the grid's workers as jobs; this
(the main) process asks Optuna for each, reports its epochs to the pruner and tells Optuna how it ended.
The tuning run is a child of the grid's parent run; the trials' runs are its children. Once the study holds
its budget of COMPLETE + PRUNED trials, the best trial's values make the arm's tuned cells, one per seed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import optuna
from optuna.trial import TrialState

from .. import claims, config
from ..grids import grid
from ..grids.plan import TRIALS_FILE, Job, classify
from ..machine import host
from ..tracking import groups, query, records
from ..tuning import objective as trials_of
from ..tuning.study import Study, suggest, trial_config



@dataclasses.dataclass(frozen=True)
class Arm:
    arm: str
    design: str
    flag: str
    on: frozenset
    designs: tuple


def arms(s: grid.Study) -> list[Arm]:
    """The grid's arms, each once (an arm two designs share is one), in the grid's order."""
    merged: dict[frozenset, Arm] = {}
    for arm, design, flag, on in grid.arms(s):
        if on in merged:
            merged[on] = dataclasses.replace(merged[on], designs=(*merged[on].designs, design))
        else:
            merged[on] = Arm(arm, design, flag, on, (design,))
    return list(merged.values())


def definition(s: grid.Study, a: Arm, fingerprint: str) -> Study:
    """The arm's study, as a study file would declare it: its config at tune_seed, the keys it searches."""
    t = s.tune
    cell = grid.Cell(a.arm, a.design, a.flag, t.seed, a.on, a.designs)
    start = grid.values(s, cell)
    space = grid.searched(s, a.on)
    settings = {k: getattr(t, k) for k in ("objective", "sampler", "sampler_seed", "sampler_startup_trials", "pruner",
                                           "pruner_startup_trials", "pruner_warmup_epochs")}
    key = json.dumps({"config": config.build(start).identity(fingerprint), "space": space, **settings}, sort_keys=True)
    name = f"tune {s.experiment}/{s.name}/{a.arm}/{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    return Study(path=Path(s.path), name=name, experiment=s.experiment, start=start,
                 space=space, trials=t.trials, **settings)


class Search:
    """One arm's study, opened in the grid's storage; trials handed out as jobs."""

    def __init__(self, s: grid.Study, a: Arm, fingerprint: str, storage):
        self.grid, self.arm, self.fingerprint, self.storage = s, a, fingerprint, storage
        self.definition = definition(s, a, fingerprint)
        self.total = s.tune.trials
        self.study: optuna.Study | None = None
        self.run_id = ""          # the arm's tuning run
        self.done = False         # complete, closed, its tuned cells handed to the schedule
        self.gave_up = ""         # why the arm has no tuned values (every trial failed), else ""
        self.live: dict[int, Trial] = {}  # this process's trials that have not ended
        self.client = None        # the writer's MLflow client, once the tuning run is open

    # ------------------------------------------------------------ opening
    def open_study(self) -> int:
        """The study (created once, shared), trials left RUNNING by a dead process failed and queued again;
        returns how many trials of the budget are still to run."""
        self.study = trials_of.open_study(self.definition, storage=self.storage)
        # A sampler seeded alike in every start would propose a resumed study's first points again: the seed
        # moves on with the trials already in the study (an uninterrupted run stays reproducible).
        offset = len(self.study.get_trials(deepcopy=False))
        if offset:
            self.study = trials_of.open_study(self.definition, storage=self.storage, seed_offset=offset)
        trials_of.fail_stale_trials(self.study)
        n = self.counts()
        return max(0, self.total - n["COMPLETE"] - n["PRUNED"])

    def open_run(self, parent: str, grid_claims: claims.Claims, c) -> None:
        """The arm's tuning run (made once under a claim, reopened by later invocations); trial runs of trials
        that ended without this process hearing of it (a killed invocation) made to agree with Optuna."""
        self.client = c
        self._settle_runs(c)
        tags = {"mlflow.parentRunId": parent, "lstm_mnist.role": "tuning", "grid_name": self.grid.name,
                "arm": self.arm.arm, "study_name": self.definition.name, "searched": ",".join(self.definition.space),
                "objective": self.definition.objective, "trials_requested": str(self.total)}
        self.run_id, made = claims.once(
            grid_claims, f"tuning {self.definition.name}",
            lambda: groups.start_parent(self.grid.experiment, f"{self.arm.arm}-tuning", tags, c=c),
            valid=lambda run_id: query.exists(run_id, c))
        if not made and self.state() != "complete":
            groups.reopen(self.run_id, tags, c)

    def _settle_runs(self, c) -> None:
        states = {t.number: t.state.name for t in self.study.get_trials(deepcopy=False) if t.state.is_finished()}
        groups.settle_trial_runs(self.grid.experiment, self.definition.name, states, c)

    # ------------------------------------------------------------ where the study stands
    def counts(self) -> dict:
        trials = self.study.get_trials(deepcopy=False)
        n = {s: sum(t.state.name == s for t in trials) for s in ("COMPLETE", "PRUNED", "RUNNING", "WAITING")}
        n["FAIL"] = trials_of.failed(self.study)
        return n

    def state(self) -> str:
        """open (a trial may be asked for), waiting (the rest of the budget runs in another process, or its
        retries are queued), complete (the budget is spent and nothing runs), exhausted (as many failures
        as the budget: the arm gives up)."""
        n = self.counts()
        counted = n["COMPLETE"] + n["PRUNED"]
        if counted >= self.total and not n["RUNNING"]:
            return "complete"
        if n["FAIL"] >= self.total and not n["RUNNING"]:  # trained and failed (diverged): not kills, not surplus
            return "exhausted"
        return "open" if counted + n["RUNNING"] < self.total else "waiting"

    # ------------------------------------------------------------ trials
    def ask(self) -> Job | None:
        """The next trial as a job (its run goes under the tuning run), or None when none may start now."""
        if self.state() != "open":
            return None
        trial = self.study.ask()
        trial.set_user_attr("process", host.process_stamp(os.getpid()))  # a later start can spot us dead
        # Two invocations may both see one trial missing and each ask: trial numbers order the asks, and
        # only those within the budget (lower numbers first) run; a surplus one ends FAIL unrun, as in `tune`.
        ahead = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                              TrialState.RUNNING))
        if sum(t.number < trial.number for t in ahead) >= self.total:
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
        a = self.arm
        cell = grid.Cell(a.arm, a.design, a.flag, self.grid.tune.seed, a.on, a.designs, trial=trial.number)
        tags = {"lstm_mnist.role": "trial", "study_name": self.definition.name, "trial_number": str(trial.number),
                "trial_state": "RUNNING", "trial_params": json.dumps(params)}
        self.live[trial.number] = Trial(self, trial, params)
        return Job(cell, cfg, cfg.identity(self.fingerprint), pinned=frozenset({*self.grid.base, *self.grid.budget}),
                   fingerprint=self.fingerprint, parent=self.run_id, tags=tags, trial=self.live[trial.number])

    def interrupted(self, c) -> None:
        """This invocation stops (Ctrl-C, an error) with trials of its own unfinished: each FAIL and queued again,
        as a dead process's would be at the next start; the tuning run KILLED unless another process still
        runs trials of the study (a later start reopens it)."""
        for t in list(self.live.values()):
            t.ended("", "FAIL", 0.0, reason="interrupted", died=True)
        if self.study is not None and self.run_id and not self.done and not self.counts()["RUNNING"]:
            records.end_run(self.run_id, records.KILLED, c=c)

    # ------------------------------------------------------------ complete: the best trial, the tuned cells
    def budget(self) -> list[optuna.trial.FrozenTrial]:
        """The trials of the budget: the first `trials` COMPLETE or PRUNED ones by number (a study continued with
        a smaller `trials` than it already ran selects from as many trials as every other arm)."""
        counted = sorted((t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                                   TrialState.PRUNED))),
                         key=lambda t: t.number)
        return counted[:self.total]

    def best(self) -> optuna.trial.FrozenTrial | None:
        complete = [t for t in self.budget() if t.state == TrialState.COMPLETE]
        if not complete:
            return None
        pick = max if self.definition.direction == "maximize" else min
        return pick(complete, key=lambda t: (t.value, -t.number) if pick is max else (t.value, t.number))

    def tuned_jobs(self, force: bool = False) -> list[Job]:
        """The arm's replicate cells at its best trial's values, one per seed, resolved against the store."""
        best = self.best()
        a, s = self.arm, self.grid
        jobs = []
        for seed in s.seeds:
            cell = grid.Cell(a.arm, a.design, a.flag, seed, a.on, a.designs, variant="tuned")
            cfg = config.build({**grid.values(s, cell), **best.params}, f"{s.path} cell {cell.name}")
            tags = {"tuned_from": best.user_attrs.get("mlflow_run_id", ""), "tuning_run": self.run_id,
                    "tuned_values": json.dumps(best.params, sort_keys=True)}
            job = Job(cell, cfg, cfg.identity(self.fingerprint), pinned=frozenset({*s.base, *s.budget}),
                      fingerprint=self.fingerprint, tags=tags)
            classify(job, query.search(s.experiment, f"tags.config_hash = '{job.config_hash}'"), force)
            jobs.append(job)
        return jobs

    def close(self, c) -> dict:
        """The tuning run's record of the finished search (any invocation may write it; all write the same):
        counts, training seconds, the best trial, every trial in trials.json; then FINISHED."""
        budget = {t.number for t in self.budget()}
        trials = [t for t in self.study.get_trials(deepcopy=False)
                  if t.number in budget or t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
        self._settle_runs(c)
        rows = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                 "seconds": t.user_attrs.get("seconds"), "run_id": t.user_attrs.get("mlflow_run_id", ""),
                 "lost": bool(t.user_attrs.get("lost"))} for t in trials]
        n = {s: sum(r["state"] == s and not r["lost"] for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")}
        metrics = {f"n_{k.lower()}": v for k, v in n.items()}
        metrics["train_seconds"] = float(sum(r["seconds"] or 0.0 for r in rows))
        best = self.best()
        tags = {"searched": ",".join(self.definition.space)}
        if len(budget) < self.total:  # as many trials failed (diverged) as the budget: the arm stopped short
            tags["budget_short"] = f"{len(budget)} of {self.total} trials COMPLETE or PRUNED; {n['FAIL']} failed"
        if best is not None:
            metrics |= {"best_value": best.value, "best_trial": best.number}
            tags |= {"best_params": json.dumps(best.params, sort_keys=True), "best_trial": str(best.number),
                     "best_run_id": best.user_attrs.get("mlflow_run_id", "")}
            tags |= {f"best.{k}": str(v) for k, v in best.params.items()}
        else:
            self.gave_up = f"no trial of arm {self.arm.arm} completed ({n['PRUNED']} pruned, {n['FAIL']} failed)"
            tags["gave_up"] = self.gave_up
        records.log_dict(self.run_id, {"objective": self.definition.objective,
                                       "direction": self.definition.direction, "trials": rows}, TRIALS_FILE, c)
        records.end_run(self.run_id, records.FINISHED if best is not None else records.FAILED, metrics, tags, c=c)
        self.done = True
        return metrics


class Trial:
    """A trial's hooks, called by the grid's writer: its epochs go to the pruner, its end to Optuna."""

    def __init__(self, search: Search, trial: optuna.Trial, params: dict):
        self.search, self.trial, self.params = search, trial, params
        self.run_id = ""  # its MLflow run, once the writer opened it

    def epoch(self, epoch: int, record: dict) -> str | None:
        objective = self.search.definition.objective
        self.trial.report(record[objective], epoch)
        if self.trial.should_prune():
            return f"epoch {epoch}: {objective} {record[objective]:.4f}"
        return None

    def ended(self, run_id: str, state: str, seconds: float, result=None, reason: str = "", died: bool = False) -> str:
        """Tell Optuna (and tag the run) how the trial ended; a trial whose worker died is queued again (at most
        claims.RETRIES times, as `tune` does). Returns the progress line's words."""
        study, objective, c = self.search.study, self.search.definition.objective, self.search.client
        self.search.live.pop(self.trial.number, None)
        run_id = run_id or self.run_id
        if run_id:
            self.trial.set_user_attr("mlflow_run_id", run_id)
        self.trial.set_user_attr("seconds", seconds)  # the trial's training and evaluation: the arm's tuning cost
        shown = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        tags = {"trial_state": state}
        if state == "COMPLETE":
            value = result.history[result.best_epoch][objective]  # the epoch whose weights the run keeps
            study.tell(self.trial, value)
            records.end_run(run_id, records.FINISHED, metrics={"objective": value}, tags=tags, c=c)
            return f"COMPLETE {objective} {value:.4f} ({shown})"
        if died:  # killed or interrupted, not a failure of its point: not counted against the arm
            self.trial.set_user_attr("lost", True)
        study.tell(self.trial, state=TrialState.PRUNED if state == "PRUNED" else TrialState.FAIL)
        if run_id:
            records.set_tags(run_id, tags, c)
        retries = self.trial.user_attrs.get("retries", 0)
        if died and retries < trials_of.RETRIES:
            study.enqueue_trial(self.params, user_attrs={"retries": retries + 1, "retry_of": self.trial.number})
            reason += "; queued again"
        return f"{state} {reason} ({shown})"

