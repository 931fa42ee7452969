"""One trial: sample the space, train and record it as a child run of the study's MLflow run (runs/runner.py),
feed each epoch's objective to the pruner; and the Optuna study it belongs to (sampler, pruner, storage,
trials left RUNNING by dead processes failed and queued again)."""
from __future__ import annotations

import json
import os

import optuna
from optuna.trial import TrialState

from .. import claims
from ..config import ConfigError
from ..machine import cores, host
from ..runs import runner
from ..tracking import records
from .study import Study, suggest, trial_config


RETRIES = claims.RETRIES  # a trial whose process died is queued again at most this often


class TrialFailed(RuntimeError):
    """Training raised (e.g. the loss diverged): the trial is FAIL and the study goes on."""


class Surplus(RuntimeError):
    """The study already holds its total of trials ahead of this one: this trial is not run."""


class Objective:
    """Train one trial as a child MLflow run; report each epoch's validation metric to the pruner."""

    def __init__(self, study: Study, parent_run_id: str, placement, label: str, total: int, tags: dict | None = None,
                 attrs: dict | None = None):
        """`placement`: the trial's device and threads, or a function that gives them for each trial (and pins
        this process to its current share of the host's cores); `tags`: on every trial's run (a Ray node's)."""
        self.study, self.parent_run_id, self.placement, self.label = study, parent_run_id, placement, label
        self.total, self.tags, self.attrs = total, tags or {}, attrs or {}

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("process", host.process_stamp(os.getpid()))  # lets a later start spot a dead worker
        for k, v in self.attrs.items():  # a Ray task's token: its driver fails its trials if it dies
            trial.set_user_attr(k, v)
        # No overshoot: two workers can both see total-1 trials and each start one. Trial numbers order the
        # starts, so only the trials within the first `total` live ones (lower numbers) run.
        ahead = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                 TrialState.RUNNING))
        if sum(t.number < trial.number for t in ahead) >= self.total:
            trial.set_user_attr("surplus", True)
            raise Surplus(f"trial {trial.number}: the study already has {self.total} trials")
        params = suggest(trial, self.study)
        cfg = trial_config(self.study, params, self.placement() if callable(self.placement) else self.placement)
        tags = {"study_name": self.study.name, "trial_number": trial.number, "trial_state": "RUNNING",
                "lstm_mnist.role": "trial", "trial_params": json.dumps(params),
                "cpu_affinity": cores.share_text(cores.affinity()), **self.tags}
        # force: identical params in two trials are two trials; the study's storage is what resumes.
        out = runner.execute(cfg, run_name=f"{self.study.name}-t{trial.number}", parent_run_id=self.parent_run_id,
                             tags=tags, force=True, catch=True, stop_on=(optuna.TrialPruned,),
                             on_epoch=lambda epoch, record: self._report(trial, epoch, record))
        trial.set_user_attr("mlflow_run_id", out.run_id)
        return self._settle(trial, out, params)

    def _report(self, trial: optuna.Trial, epoch: int, record: dict) -> None:
        value = record[self.study.objective]
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: {self.study.objective} {value:.4f}")

    def _settle(self, trial: optuna.Trial, out: runner.Outcome, params: dict) -> float:
        state = {records.FINISHED: "COMPLETE", records.KILLED: "PRUNED"}.get(out.status, "FAIL")
        if out.run_id:  # "" when the store refused to open the run: the FAIL line below says why
            records.set_tags(out.run_id, {"trial_state": state})
        shown = " ".join(f"{k}={_short(v)}" for k, v in params.items())
        if state == "FAIL":
            print(f"{self.label}trial {trial.number} FAIL  {out.error}  ({shown})", flush=True)
            raise TrialFailed(out.error)
        if state == "PRUNED":
            print(f"{self.label}trial {trial.number} PRUNED  {out.error}  ({shown})  {out.seconds:.0f}s", flush=True)
            raise optuna.TrialPruned(out.error)
        r = out.result
        value = r.history[r.best_epoch][self.study.objective]  # the epoch whose weights the run keeps
        records.end_run(out.run_id, records.FINISHED, metrics={"objective": value})  # already FINISHED; adds the value
        print(f"{self.label}trial {trial.number} COMPLETE  {self.study.objective} {value:.4f} "
              f"(epoch {r.best_epoch})  test_f1 {out.test['test_f1']:.4f}  ({shown})  {out.seconds:.0f}s", flush=True)
        return value


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


# ---------------------------------------------------------------- storage, stale trials, counting
def open_study(study: Study, storage_url: str | None = None, seed_offset: int = 0,
               storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    """Create or load the study: journal file next to the study file, or the RDB at `storage_url`.
    Worker i samples with sampler_seed + i: the same seed in every worker proposes the same points."""
    # open_storage sets Optuna's log level to ERROR: each trial prints its own line; at WARNING Optuna adds a
    # traceback under every FAIL line. open_study is where both `main` and every worker start.
    storage = storage or claims.open_storage(storage_url, study.journal)
    seed = study.sampler_seed + seed_offset
    sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=study.sampler_startup_trials)
               if study.sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed))
    opened = optuna.create_study(storage=storage, sampler=sampler, pruner=_pruner(study), study_name=study.name,
                                 direction=study.direction, load_if_exists=True)
    # load_if_exists ignores `direction`: a changed objective would silently keep the stored direction.
    stored = opened.direction.name.lower()
    if stored != study.direction:
        raise ConfigError(f"{study.path}: study {study.name!r} is stored in {shown_storage(study, storage_url)} "
                          f"with direction {stored}, but objective={study.objective} needs {study.direction}; "
                          f"give this study a new study_name")
    return opened


def _pruner(study: Study) -> optuna.pruners.BasePruner:
    if study.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=study.pruner_startup_trials,
                                           n_warmup_steps=study.pruner_warmup_epochs)
    if study.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=trial_config(study, {}).max_epochs)
    return optuna.pruners.NopPruner()


def fail_stale_trials(study: optuna.Study, dead=None) -> list[int]:
    """Trials left RUNNING by a dead process on this machine (or those `dead(trial)` names: a dead Ray task's,
    on any node): FAIL them and queue their params again.

    The journal file storage has no heartbeat, so each trial records its process and a later start
    checks it; RDB storages also get Optuna's heartbeat, which covers workers on other machines.
    """
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not (dead or claims.is_stale)(t):
            continue
        study._storage.set_trial_user_attr(t._trial_id, "lost", True)  # its process died: not its point's failure
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        retries = t.user_attrs.get("retries", 0)
        # Two processes may judge the same trial stale at once: one retry of it is enough.
        queued = any(x.user_attrs.get("retry_of") == t.number for x in study.get_trials(deepcopy=False))
        if retries < RETRIES and not queued:
            study.enqueue_trial(t.params, user_attrs={"retries": retries + 1, "retry_of": t.number})
        failed.append(t.number)
    return failed


def counted(study: optuna.Study) -> int:
    """Trials that count toward the total: finished ones, and those running now (so workers don't overshoot)."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                        TrialState.RUNNING)))


def failed(study: optuna.Study) -> int:
    """FAIL trials whose point failed (diverged): not a surplus trial (never run), nor one whose process died."""
    return sum(not t.user_attrs.get("surplus") and not t.user_attrs.get("lost")
               for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))


def shown_storage(study: Study, url: str | None) -> str:
    return claims.hide_password(url) if url else str(study.journal)
