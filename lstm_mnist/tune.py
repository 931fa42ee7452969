"""Optuna studies over the nuisance hyperparameters: `python -m lstm_mnist tune studies/NAME.toml`.

A study file names the config the study starts from (`base` experiment file, `[fixed]` keys), the
`[space]` searched, the sampler, the pruner, the trial budget and the objective (a validation metric,
never a test metric). Every trial is one `runner.execute` call, recorded as a child of the study's
MLflow run; per-epoch validation metrics feed the pruner. The Optuna storage (a journal file next to
the study file, or any RDB URL) is the resume mechanism: rerunning continues up to the requested total.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path

import optuna
from optuna.trial import TrialState

from . import claims, config, data, runner, track, workers
from .config import ConfigError, UserError

OBJECTIVES = {"val_f1": "maximize", "val_loss": "minimize"}
PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random")
STUDY_KEYS = {"study_name", "experiment", "base", "trials", "objective", "sampler", "sampler_seed",
              "sampler_startup_trials", "pruner", "pruner_startup_trials", "pruner_warmup_epochs", "fixed", "space"}
RETRIES = claims.RETRIES  # a trial whose process died is queued again at most this often


@dataclass(frozen=True)
class Study:
    path: Path
    name: str
    experiment: str       # MLflow experiment of the study's parent run and its trials
    start: dict           # config values every trial starts from: base file, then [fixed]
    space: dict           # key -> {type, low, high, log, step} or {type: categorical, choices}
    trials: int           # default total of COMPLETE + PRUNED trials
    objective: str        # val_f1 (maximize) or val_loss (minimize), at the best-val_loss epoch
    sampler: str
    sampler_seed: int
    sampler_startup_trials: int
    pruner: str
    pruner_startup_trials: int
    pruner_warmup_epochs: int

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]

    @property
    def journal(self) -> Path:
        return self.path.parent / f"{self.name}.journal"


# ---------------------------------------------------------------- the study file
def load_study_file(path: str | Path) -> Study:
    """Read and check a study file; every mistake is a one-line ConfigError naming the file."""
    return config.parse_file(path, _parse, "study", STUDY_KEYS)


def _parse(path: Path, raw: dict) -> Study:
    objective = raw.get("objective", "val_f1")
    if objective not in OBJECTIVES:
        why = "the test set is never used for a choice" if str(objective).startswith("test") else "unknown metric"
        raise ConfigError(f"objective={objective!r}: {why}; allowed are {', '.join(OBJECTIVES)}")
    start = _start_values(path, raw)
    space = raw.get("space", {})
    if not isinstance(space, dict) or not space:
        raise ConfigError("[space]: give at least one hyperparameter to search, e.g. adamw_lr = {type=\"float\", ...}")
    for key, dist in space.items():
        _check_dist(key, dist, start)
    study = Study(path, _str(raw, "study_name", path.stem), _str(raw, "experiment", "lstm-mnist-tune"), start,
                  space, _int(raw, "trials", 20, 1), objective, _choice(raw, "sampler", "tpe", SAMPLERS),
                  _int(raw, "sampler_seed", 0, 0), _int(raw, "sampler_startup_trials", 10, 0),
                  _choice(raw, "pruner", "median", PRUNERS), _int(raw, "pruner_startup_trials", 3, 0),
                  _int(raw, "pruner_warmup_epochs", 0, 0))
    trial_config(study, {k: _some_value(d) for k, d in space.items()})  # the combination is a valid config
    return study


def _start_values(path: Path, raw: dict) -> dict:
    """Base experiment file (relative to the working directory or the project root), then [fixed]."""
    values = {}
    if "base" in raw:
        base = Path(_str(raw, "base", ""))
        if not base.is_absolute() and not base.exists():
            base = path.resolve().parent.parent / base  # studies/x.toml -> the project root
        values = dict(config.read_toml(base))
        config.build(values, str(base))
    fixed = raw.get("fixed", {})
    if not isinstance(fixed, dict):
        raise ConfigError("fixed: write it as a [fixed] table of config keys")
    values.update(fixed)
    config.build(values, "[fixed]")
    return values


def _check_dist(key: str, dist, start: dict) -> None:
    if key not in config.FIELDS:
        raise ConfigError(f"[space] {key}: unknown config key; known keys are {', '.join(config.FIELDS)}")
    if key in config.NEVER_SEARCHED:
        raise ConfigError(f"[space] {key}: never searched ({config.NEVER_SEARCHED[key]}); set it in [fixed] or the "
                          "base file instead")
    if not isinstance(dist, dict):
        raise ConfigError(f"[space] {key}: write it as {{type=\"float\", low=..., high=...}} or "
                          f"{{type=\"categorical\", choices=[...]}}")
    kind, field_type = dist.get("type"), config.FIELDS[key].type
    allowed = {"float": {"type", "low", "high", "log", "step"}, "int": {"type", "low", "high", "log", "step"},
               "categorical": {"type", "choices"}}
    if kind not in allowed:
        raise ConfigError(f"[space] {key}: type={kind!r}; allowed are float, int, categorical")
    extra = sorted(set(dist) - allowed[kind])
    if extra:
        raise ConfigError(f"[space] {key}: unknown option {extra[0]!r} for type {kind}")
    if kind != "categorical" and kind != field_type:
        raise ConfigError(f"[space] {key}: type {kind} does not match the config field, which is {field_type}")
    values = dist.get("choices") if kind == "categorical" else _bounds(key, dist, kind)
    if not isinstance(values, list) or not values:
        raise ConfigError(f"[space] {key}: choices must be a non-empty list")
    for v in values:
        config.build({**start, key: v}, f"[space] {key}")


def _bounds(key: str, dist: dict, kind: str) -> list:
    low, high = dist.get("low"), dist.get("high")
    number = int if kind == "int" else (int, float)
    if not all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high)):
        raise ConfigError(f"[space] {key}: low and high must both be given, as {'integers' if kind == 'int' else 'numbers'}")
    if low >= high:
        raise ConfigError(f"[space] {key}: low={low} must be below high={high}")
    if dist.get("log") and low <= 0:
        raise ConfigError(f"[space] {key}: log=true needs low > 0, got low={low}")
    if dist.get("log") and "step" in dist:
        raise ConfigError(f"[space] {key}: step and log=true cannot be combined")
    return [low, high]


def _some_value(dist: dict):
    return dist["choices"][0] if dist["type"] == "categorical" else dist["low"]


def _str(raw, key, default) -> str:
    v = raw.get(key, default)
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{key}={v!r}: expected a non-empty string")
    return v


def _int(raw, key, default, lo) -> int:
    v = raw.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ConfigError(f"{key}={v!r}: expected an integer >= {lo}")
    return v


def _choice(raw, key, default, allowed) -> str:
    v = raw.get(key, default)
    if v not in allowed:
        raise ConfigError(f"{key}={v!r}: allowed values are {', '.join(allowed)}")
    return v


# ---------------------------------------------------------------- one trial
def suggest(trial: optuna.Trial, study: Study) -> dict:
    """The search space, read straight from the study file."""
    params = {}
    for key, d in study.space.items():
        if d["type"] == "categorical":
            params[key] = trial.suggest_categorical(key, d["choices"])
        elif d["type"] == "int":
            params[key] = trial.suggest_int(key, d["low"], d["high"], step=d.get("step", 1), log=d.get("log", False))
        else:
            params[key] = trial.suggest_float(key, d["low"], d["high"], step=d.get("step"), log=d.get("log", False))
    return params


def trial_config(study: Study, params: dict, overrides: dict | None = None) -> config.Config:
    """Later wins: worker placement (device, threads) < start values (base file, then [fixed]) < the trial's
    params; the experiment is always the study's. So a [fixed] device or num_threads overrides placement."""
    return config.build({**(overrides or {}), **study.start, **params, "experiment": study.experiment})


class TrialFailed(RuntimeError):
    """Training raised (e.g. the loss diverged): the trial is FAIL and the study goes on."""


class Surplus(RuntimeError):
    """The study already holds its total of trials ahead of this one: this trial is not run."""


class Objective:
    """Train one trial as a child MLflow run; report each epoch's validation metric to the pruner."""

    def __init__(self, study: Study, parent_run_id: str, placement: dict, label: str, total: int):
        self.study, self.parent_run_id, self.placement, self.label = study, parent_run_id, placement, label
        self.total = total

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("process", workers.process_stamp(os.getpid()))  # lets a later start spot a dead worker
        # No overshoot: two workers can both see total-1 trials and each start one. Trial numbers order the
        # starts, so only the trials within the first `total` live ones (lower numbers) run.
        ahead = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                 TrialState.RUNNING))
        if sum(t.number < trial.number for t in ahead) >= self.total:
            trial.set_user_attr("surplus", True)
            raise Surplus(f"trial {trial.number}: the study already has {self.total} trials")
        params = suggest(trial, self.study)
        cfg = trial_config(self.study, params, self.placement)
        tags = {"study_name": self.study.name, "trial_number": trial.number, "trial_state": "RUNNING",
                "lstm_mnist.role": "trial", "trial_params": json.dumps(params),
                "cpu_affinity": workers.share_text(workers.affinity())}
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
        state = {track.FINISHED: "COMPLETE", track.KILLED: "PRUNED"}.get(out.status, "FAIL")
        track.set_tags(out.run_id, {"trial_state": state})
        shown = " ".join(f"{k}={_short(v)}" for k, v in params.items())
        if state == "FAIL":
            print(f"{self.label}trial {trial.number} FAIL  {out.error}  ({shown})", flush=True)
            raise TrialFailed(out.error)
        if state == "PRUNED":
            print(f"{self.label}trial {trial.number} PRUNED  {out.error}  ({shown})  {out.seconds:.0f}s", flush=True)
            raise optuna.TrialPruned(out.error)
        r = out.result
        value = r.history[r.best_epoch][self.study.objective]  # the epoch whose weights the run keeps
        track.end_run(out.run_id, track.FINISHED, metrics={"objective": value})  # already FINISHED; adds the value
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
        raise ConfigError(f"{study.path}: study {study.name!r} is stored in {_shown_storage(study, storage_url)} "
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


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a dead process on this machine: FAIL them and queue their params again.

    The journal file storage has no heartbeat, so each trial records its process and a later start
    checks it; RDB storages also get Optuna's heartbeat, which covers workers on other machines.
    """
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not claims.is_stale(t):
            continue
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        retries = t.user_attrs.get("retries", 0)
        if retries < RETRIES:
            study.enqueue_trial(t.params, user_attrs={"retries": retries + 1, "retry_of": t.number})
        failed.append(t.number)
    return failed


def counted(study: optuna.Study) -> int:
    """Trials that count toward the total: finished ones, and those running now (so workers don't overshoot)."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                        TrialState.RUNNING)))


def failed(study: optuna.Study) -> int:
    """FAIL trials that were run (a surplus trial was never run: it is not a failure)."""
    return sum(not t.user_attrs.get("surplus") for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))


# ---------------------------------------------------------------- workers
def work(path: str, storage_url: str | None, total: int, timeout: float | None, index: int, n_workers: int,
         parent_run_id: str) -> None:
    """One worker: take trials until the study holds `total` finished-or-running ones (or time is up)."""
    study_def = load_study_file(path)
    study = open_study(study_def, storage_url, seed_offset=index)
    label = f"[worker {index}] " if n_workers > 1 else ""
    objective = Objective(study_def, parent_run_id, workers.settings(index, n_workers), label, total)
    deadline = time.monotonic() + timeout if timeout else float("inf")
    failures = 0
    while counted(study) < total and failures < total and time.monotonic() < deadline:
        before = failed(study)
        study.optimize(objective, n_trials=1, catch=(TrialFailed, Surplus))
        failures += failed(study) > before


def _worker_main(path: str, storage_url: str | None, total: int, timeout: float | None, index: int,
                 n_workers: int, parent_run_id: str, pin: bool) -> None:
    """A worker process: user mistakes are one line and exit 2 (the parent reports the exit code once);
    Ctrl-C reaches every worker, so each exits 130 quietly and the parent says it was interrupted."""
    workers.die_with_parent()
    if pin:
        workers.pin(index, n_workers)  # its own share of the cores, as the grid's workers
    try:
        work(path, storage_url, total, timeout, index, n_workers, parent_run_id)
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
        work(path, storage_url, total, timeout, 0, 1, parent_run_id)
        return
    ctx = multiprocessing.get_context("spawn")  # no forked torch/sqlite/journal state in the children

    def start(i):
        p = ctx.Process(target=_worker_main, args=(path, storage_url, total, timeout, i, n_workers, parent_run_id, pin))
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
         timeout: float | None = None, pin: bool = True) -> dict:
    """Run (or continue) a study to `trials` COMPLETE+PRUNED trials; returns the summary it prints."""
    if n_workers < 1 or (trials is not None and trials < 1):
        raise ConfigError(f"--workers {n_workers} --trials {trials}: both must be at least 1")
    study_def = load_study_file(path)
    total = trials or study_def.trials
    data.fingerprint(trial_config(study_def, {}).data_dir)  # missing data: one line here, not one per worker
    storage = claims.open_storage(storage_url, study_def.journal)
    study = open_study(study_def, storage_url, storage=storage)  # created here, before any worker races to create it
    stale = fail_stale_trials(study)
    track.share_sqlite_store()
    tags = {"storage": _shown_storage(study_def, storage_url), "objective": study_def.objective,
            "direction": study_def.direction, "trials_requested": total, "study_file": str(path),
            "space": json.dumps(study_def.space)}
    # One parent run however many `tune` processes start at once: created under a claim in the same storage.
    once = claims.Claims(storage, f"{study_def.name}.parent-run")
    parent, made = once.once("parent", lambda: track.parent_run(study_def.experiment, "study", study_def.name, tags),
                             valid=track.exists)
    if not made:
        track.reopen(parent, tags)
    done = counted(study)
    print(f"study {study_def.name}: {done} of {total} trials done or running"
          f"{f'; failed {len(stale)} left RUNNING by a dead process and queued them again' if stale else ''}; "
          f"{n_workers} worker(s); storage {_shown_storage(study_def, storage_url)}; MLflow run {parent}", flush=True)
    try:
        run_workers(str(path), storage_url, total, timeout, n_workers, parent, pin, study)
    except BaseException as e:
        # Interrupted: KILLED, like an interrupted run; anything else (e.g. a worker's error) FAILED.
        try:
            track.end_run(parent, track.KILLED if isinstance(e, (KeyboardInterrupt, SystemExit)) else track.FAILED)
        except Exception:  # the store itself is away: the next start reopens the parent
            pass
        raise
    return finish(study, study_def, parent)


def _shown_storage(study: Study, url: str | None) -> str:
    return claims.hide_password(url) if url else str(study.journal)


def finish(study: optuna.Study, study_def: Study, parent: str) -> dict:
    """Record the counts and the best trial on the study's run and export the best trial."""
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]
    states = {t.number: t.state.name for t in trials}
    track.settle_trial_runs(study_def.experiment, study_def.name, states)
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
        track.log_text(parent, out.read_text(), out.name)
        summary |= {"best_value": best.value, "best_trial": best.number, "exported": str(out)}
    track.end_run(parent, track.FINISHED, metrics=metrics, tags=tags)
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
    out = Path("experiments") / f"tuned-{study_def.name}.toml"
    out.parent.mkdir(exist_ok=True)
    out.write_text(header + "".join(f"{k} = {config._toml_value(getattr(cfg, k))}\n" for k in keys))
    return out
