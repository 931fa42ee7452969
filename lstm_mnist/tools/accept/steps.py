"""gpu-accept's steps. Each runs the harness as a user does (`python -m lstm_mnist ...` in a process of its
own, its output in OUT/logs/STEP.log, a time limit), then checks what the harness promises in the MLflow
store, the Optuna study or the files written, and returns a Step: pass, fail or skip, one line of figures.

GPU mode trains at the budgets below; CPU mode (`CPU=1`) runs the same steps at tiny budgets, without MPS
and without the probes that need CUDA, so the script cannot rot where no GPU is.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from .harness import (Context, Failed, Step, cell_counts, cli, grid_cells, grid_file, last_line, start, stop,
                      trained_once, write_toml)

ROOT = Path(__file__).resolve().parents[3]  # the checkout: lstm_mnist/tools/accept/steps.py -> ./
GRID = "experiments/factorial-gpu.toml"
CHECK_EXPERIMENT = "lstm-mnist-gpu-accept"
# A tiny model and budget for CPU mode (a cell in a second or two).
CPU_BUDGET = {"max_epochs": 1, "batch_size": 32, "eval_batch_size": 256, "hidden_on": 16, "hidden_off": 16,
              "layers_on": 1, "train_samples": 512, "num_threads": 1}
# The checks' own small grid on the GPU: 2^3 over three flags x 2 seeds = 16 cells of a few seconds each.
CHECK_BUDGET = {"max_epochs": 3, "train_samples": 12000, "eval_batch_size": 2000}
KILL_EPOCHS = 6  # the kill grid's cells: long enough that a worker is caught with epochs left to train


# ---------------------------------------------------------------- the steps
def environment(ctx: Context) -> Step:
    """GPU, driver, CUDA, cuDNN and the libraries' versions (read, nothing trained)."""
    import torch

    from ...gpu import check
    from ...machine import host, versions

    on_gpu = torch.cuda.device_count() > 0
    gpu = check.environment(on_gpu)
    libs = {n: versions.installed(n) for n in ("torch", "torchvision", "lightning", "torchmetrics", "mlflow-skinny",
                                               "mlflow", "optuna", "ray", "pandas", "scipy", "matplotlib")}
    figures = {"gpu": gpu, "libraries": libs, "python": sys.version.split()[0], "machine": host.describe()}
    shown = ", ".join(f"{n} {v}" for n, v in libs.items() if v)
    where = (f"{gpu['name']} x{gpu['count']}, driver {gpu['driver']}, CUDA {gpu['cuda']}, cuDNN {gpu['cudnn']}, "
             f"MPS {'available' if gpu['mps_available'] else 'not found'}" if on_gpu else "no GPU (CPU mode)")
    return Step("environment", "pass", f"{where}; Python {figures['python']}, {shown}", figures)


def gpu_check(ctx: Context) -> Step:
    """A short gpu-check at the worker counts that matter on a big GPU (the H200's MPS knee was 12); its
    recommendation is what `--workers auto` reads next (reports/gpu-check.json)."""
    report = ctx.out / "reports" / "gpu-check.json"
    args = ["--workers", "1", "--seconds", "1"] if ctx.cpu else ["--mps", "--no-plain", "--workers", "8,12,16",
                                                                 "--seconds", "10"]
    seconds = cli(ctx, "gpu-check", "gpu-check", *args, "--out", str(report), timeout=120 if ctx.cpu else 300)
    figures = json.loads(report.read_text())
    rec = figures["recommended"].get("mps" if not ctx.cpu else "plain")
    if not rec:
        raise Failed("every gpu-check point failed: see logs/gpu-check.log")
    curve = figures["grid"]["curves"]["mps" if not ctx.cpu else "plain"]
    points = ", ".join(f"{p['workers']}: {p.get('steps_per_s', float('nan')):.0f}" for p in curve)
    return Step("gpu-check", "pass", f"knee {rec['workers']} workers{' under MPS' if not ctx.cpu else ''} at "
                f"{rec['steps_per_s']:.0f} steps/s (steps/s by workers: {points}); full-model step "
                f"{figures['full_model']['step_s'] * 1000:.1f} ms", {"recommended": rec, "curve": curve}, seconds)


def answer_grid(ctx: Context) -> Path:
    """The factorial the answer trains: experiments/factorial-gpu.toml, or its CPU-mode copy at a tiny budget."""
    if not ctx.cpu:
        return ROOT / GRID
    import tomllib

    raw = tomllib.loads((ROOT / GRID).read_text())
    return write_toml(ctx.out / "grids" / "factorial-gpu.toml", {**raw, "seeds": [0], "budget": CPU_BUDGET})


def grid(ctx: Context) -> Step:
    path = answer_grid(ctx)
    workers = ["--workers", "2"] if ctx.cpu else ["--workers", "auto", *ctx.mps]
    seconds = cli(ctx, "grid", "ablate", str(path), *workers, timeout=300 if ctx.cpu else 460)
    counts = trained_once(path, path.name)
    return Step("grid", "pass", f"{counts['cells']} cells of {path.name} FINISHED once in {seconds:.0f} s "
                f"({' '.join(workers[1:])} workers)", {**counts, "wall_s": seconds}, seconds)


def report(ctx: Context) -> Step:
    path = answer_grid(ctx)
    experiment, _ = grid_cells(path)
    out = ctx.out / "report"
    seconds = cli(ctx, "report", "report", "--grid", path.stem, "--experiment", experiment, "--out", str(out),
                  timeout=180)
    rows = list(csv.DictReader((out / "main_effects.csv").open()))
    effects = {r["term"]: {k: float(r[k]) for k in ("estimate", "ci_lo", "ci_hi", "p_holm")} for r in rows}
    top = sorted(effects.items(), key=lambda kv: -abs(kv[1]["estimate"]))[:3]
    shown = "; ".join(f"{t} {e['estimate']:+.4f} [{e['ci_lo']:+.4f}, {e['ci_hi']:+.4f}]" for t, e in top)
    return Step("report", "pass", f"main effects on test_f1 (largest): {shown} -> {out.name}/report.md",
                {"main_effects": effects}, seconds)


def kill_rerun(ctx: Context) -> Step:
    """A grid whose worker is SIGKILLed mid-cell, then the same command again: every cell FINISHED once. Each
    attempt is a grid of its own (kill-1, kill-2, ...), so a rerun of this step has cells left to kill."""
    # CPU mode: 8 cells of several epochs each, so a worker is caught with epochs still to train
    budget = {**CPU_BUDGET, "max_epochs": KILL_EPOCHS} if ctx.cpu else {**CHECK_BUDGET, "max_epochs": KILL_EPOCHS}
    seeds = [0] if ctx.cpu else [0, 1]
    attempt = 1 + len(list((ctx.out / "grids").glob("kill-*.toml")))
    path = grid_file(ctx, f"kill-{attempt}", f"{CHECK_EXPERIMENT}-kill-{attempt}", ["bidirectional", "width", "adamw"],
                     seeds, budget)
    experiment, hashes = grid_cells(path)
    args = ["ablate", str(path), "--workers", "2" if ctx.cpu else "4", *ctx.mps]
    t0 = time.monotonic()
    limit = ctx.limit(300)
    proc = start(ctx, "kill-rerun", *args)
    try:
        killed = _kill_a_worker(proc, experiment, hashes, budget["max_epochs"], timeout=min(240, limit))
        first_rc = proc.wait(timeout=max(limit - (time.monotonic() - t0), 1))
    except subprocess.TimeoutExpired:
        stop(proc)
        raise Failed("the grid did not end after its worker was killed (a hang): see logs/kill-rerun.log") from None
    except BaseException:
        stop(proc)
        raise
    before = cell_counts(experiment, hashes, path.stem)
    cli(ctx, "kill-rerun", *args, timeout=300)
    after = trained_once(path, "after the kill and a rerun")
    retrained = after["finished"] - before["finished"]
    hit = before["failed_or_killed"] >= 1  # the killed worker's cell ended FAILED, for the rerun to train
    figures = {"experiment": experiment, "killed_pid": killed, "first_exit": first_rc,
               "finished_before_rerun": before["finished"], "retrained_by_rerun": retrained,
               "kill_failed_a_cell": hit, **after}
    where = "mid-cell" if hit else "(between two of its cells)"
    return Step("kill-rerun", "pass", f"killed worker {killed} {where} (first run exited {first_rc}, "
                f"{before['finished']}/{after['cells']} FINISHED); the rerun trained {retrained}: every cell "
                f"FINISHED once, none left RUNNING", figures, time.monotonic() - t0)


def _kill_a_worker(proc: subprocess.Popen, experiment: str, hashes: set[str], epochs: int, timeout: float) -> int:
    """Once a cell has FINISHED, SIGKILL a worker process caught mid-cell: its run (whose `worker` tag names
    the process, lstm-mnist-wN) has logged an epoch and has at least two left. A run merely RUNNING may be
    one whose worker is done and whose results the grid is still writing. The worker's pid."""
    from ...machine import host
    from ...tracking import query

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failed(f"the grid ended (exit {proc.returncode}) before a worker could be killed mid-grid")
        runs = [r for r in query.search(experiment) if r.tags.get("config_hash") in hashes]
        if any(r.status == "FINISHED" for r in runs):
            for r in runs:
                if r.status != "RUNNING" or "val_loss" not in r.metrics:
                    continue
                if len(query.metric_history(r.run_id, "val_loss")) > epochs - 2:
                    continue
                name = f"lstm-mnist-w{r.tags.get('worker')}"
                workers = [p for p in host.descendants(proc.pid) if host.comm(p) == name]
                if workers:
                    os.kill(workers[0], signal.SIGKILL)
                    return workers[0]
        time.sleep(0.2)
    stop(proc)
    raise Failed(f"no worker mid-cell within {timeout:.0f} s: see logs/kill-rerun.log")


def tune(ctx: Context) -> Step:
    """A short study under MPS: every Optuna trial has its MLflow trial run, and the other way round."""
    trials = 2 if ctx.cpu else 6
    fixed = CPU_BUDGET if ctx.cpu else {"train_samples": 6000, "max_epochs": 2, "eval_batch_size": 2000}
    path = write_toml(ctx.out / "studies" / "accept.toml", {
        "study_name": "gpu-accept", "experiment": CHECK_EXPERIMENT, "base": str(ROOT / "experiments/full.toml"),
        "trials": trials, "objective": "val_f1", "sampler": "tpe", "sampler_seed": 0, "pruner": "median",
        "fixed": fixed, "space": {"adamw_lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True}}})
    seconds = cli(ctx, "tune", "tune", str(path), "--workers", "1" if ctx.cpu else "3", *ctx.mps, timeout=300)
    optuna_trials, mlflow_trials = _study_trials(path, "gpu-accept")
    if set(optuna_trials) != set(mlflow_trials):
        raise Failed(f"trials in Optuna {sorted(optuna_trials)} but trial runs in MLflow {sorted(mlflow_trials)}")
    states = Counter(optuna_trials.values())
    return Step("tune", "pass", f"{len(optuna_trials)} trials in Optuna = {len(mlflow_trials)} trial runs in MLflow "
                f"({', '.join(f'{s} {n}' for s, n in sorted(states.items()))})",
                {"optuna": optuna_trials, "mlflow": mlflow_trials}, seconds)


def _study_trials(path: Path, name: str) -> tuple[dict, dict]:
    """trial number -> state, in the study's journal and among the MLflow trial runs."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from ...tracking import query

    storage = JournalStorage(JournalFileBackend(str(path.parent / f"{name}.journal")))
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    in_optuna = {t.number: t.state.name for t in trials}
    runs = query.search(CHECK_EXPERIMENT, study_name=name, **{"lstm_mnist.role": "trial"})
    in_mlflow = {int(r.tags["trial_number"]): r.status for r in runs}
    return in_optuna, in_mlflow


def evaluate(ctx: Context) -> Step:
    """One GPU-trained run of the checks' grid re-verified on the CPU from its logged weights."""
    from ...tracking import query

    experiment = ctx.state.get("kill-rerun", {}).get("figures", {}).get("experiment")
    runs = [r for r in query.search(experiment, statuses=["FINISHED"])
            if r.tags.get("lstm_mnist.role") not in ("grid", "study", "trial")] if experiment else []
    if not runs:
        raise Failed("no FINISHED cell of the kill-rerun grid to evaluate: the kill-rerun step must pass first")
    run = runs[0]
    seconds = cli(ctx, "evaluate", "evaluate", run.run_id, "--device", "cpu", timeout=180)
    trained_on = run.tags.get("device_name", "?")
    return Step("evaluate", "pass", f"trained on {trained_on}, recomputed on the CPU from its logged weights: "
                f"{last_line(ctx.log('evaluate'))}", {"run_id": run.run_id, "trained_on": trained_on}, seconds)


def ray(ctx: Context) -> Step:
    if importlib.util.find_spec("ray") is None:
        return Step("ray", "skip", "ray is not installed here (its wheel alone is ~76 MB, more than travels to an "
                    "offline GPU box with the slim wheel folder): `make install` on a connected machine has it")
    budget = CPU_BUDGET if ctx.cpu else CHECK_BUDGET
    path = grid_file(ctx, "ray", CHECK_EXPERIMENT + "-ray", ["bidirectional", "adamw"], [0], budget)
    gpus = [] if ctx.cpu else ["--gpus-per-cell", "0.25"]
    # `--ray local`: a Ray instance of this step's own, never a cluster that happens to run on this host
    seconds = cli(ctx, "ray", "ablate", str(path), "--ray", "local", *gpus, timeout=300)
    counts = trained_once(path, "on Ray")
    return Step("ray", "pass", f"{counts['cells']} cells on a local Ray cluster{' at 0.25 GPU each' if gpus else ''}: "
                f"each FINISHED once in {seconds:.0f} s", counts, seconds)


def probes(ctx: Context) -> Step:
    out = ctx.out / "probes.json"
    seconds = cli(ctx, "probes", "gpu-probes", "--out", str(out), *([] if ctx.cpu else ["--mps"]), timeout=420)
    figures = json.loads(out.read_text())
    from .. import probes as probe_mod

    return Step("probes", "pass", " | ".join(probe_mod.summary(figures)), figures, seconds)


ANSWER = (environment, gpu_check, grid, report)
CHECKS = (environment, kill_rerun, tune, evaluate, ray, probes)
