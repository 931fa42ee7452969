"""What gpu-accept's steps stand on: running the CLI as a user does (a process of its own in OUT, logged,
a time limit within the call's budget, stopped with gpu-accept), writing the grid and study files it runs,
and what the MLflow store says about a grid (every cell FINISHED once, nothing left RUNNING)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Step:
    name: str
    status: str                    # pass, fail or skip
    line: str                      # one line of figures for the summary
    figures: dict = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Context:
    out: Path
    cpu: bool                      # CPU mode: tiny budgets, no MPS, no CUDA probes
    env: dict                      # the commands' environment: the tracking store under OUT
    deadline: float | None = None  # time.monotonic() by which this call must end (--budget), or None
    state: dict = field(default_factory=dict)  # earlier steps' results (steps.json), for the steps that need them

    @property
    def mps(self) -> list[str]:
        return [] if self.cpu else ["--mps"]

    def log(self, step: str) -> Path:
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        return self.out / "logs" / f"{step}.log"

    def limit(self, seconds: float) -> float:
        """A command's time limit: its own, or what is left of the call's budget (less a reserve for the
        summary), whichever is shorter; Failed when too little is left to start it. In CPU mode a command's own
        limit is CPU_SLACK times longer: there it only catches a hang, on a machine that may be loaded (the test
        suite runs both parts beside other tests, where a step takes up to six times its time alone)."""
        if self.cpu:
            seconds *= CPU_SLACK
        if self.deadline is None:
            return seconds
        left = self.deadline - time.monotonic() - RESERVE_S
        if left < MIN_START_S:
            raise OutOfTime(f"not started: {max(left, 0):.0f} s of this call's budget left; rerun to continue")
        return min(seconds, left)


RESERVE_S = 15.0    # of a --budget: stopping a cut command and writing the summary
MIN_START_S = 30.0  # a command given less than this would only be cut off
CPU_SLACK = 4.0     # CPU mode: each command's limit, times this


class Failed(Exception):
    """A step's check did not hold: its message is the summary line."""


class OutOfTime(Failed):
    """The call's --budget ran out before the step could start: not run, not failed."""


# ---------------------------------------------------------------- running the CLI as a user does
def cli(ctx: Context, step: str, *args: str, timeout: float) -> float:
    """`python -m lstm_mnist ARGS` to its end (or its time limit); seconds taken. A non-zero exit is Failed,
    with the command's last line. Interrupted here (Ctrl-C, SIGTERM), the command is stopped too."""
    timeout = ctx.limit(timeout)
    t0 = time.monotonic()
    proc = start(ctx, step, *args)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc)
        raise Failed(f"`{' '.join(args[:2])}` cut off after {timeout:.0f} s; rerun gpu-accept to resume it") from None
    except BaseException:
        stop(proc)
        raise
    if rc != 0:
        raise Failed(f"`{' '.join(args[:2])}` exited {rc}: {last_line(ctx.log(step))}")
    return time.monotonic() - t0


def start(ctx: Context, step: str, *args: str) -> subprocess.Popen:
    with ctx.log(step).open("a") as log:
        log.write(f"$ python -m lstm_mnist {' '.join(args)}\n")
        log.flush()
        # In OUT: what a command writes beside itself (reports/gpu-check.json, which `--workers auto` reads
        # next; experiments/best-STUDY.toml) stays there, and a CPU-mode run never replaces this checkout's
        # GPU figures. Its own session, so it is stopped with its workers.
        return subprocess.Popen([sys.executable, "-m", "lstm_mnist", *args], cwd=ctx.out, env=ctx.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """The command and its workers (its own process group): Ctrl-C first, so it ends as a user's Ctrl-C ends
    it (its MPS daemon told to quit, its runs marked), then SIGKILL for what is left after `grace_s`."""
    for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(proc.pid, sig)  # the second time: whatever of the group outlived its leader
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


def last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"


def write_toml(path: Path, values: dict) -> Path:
    """A grid or study file: top-level keys, then one table per dict value (strings, numbers, bools, lists;
    a dict inside a table is an inline table)."""
    top = [f"{k} = {_value(x)}" for k, x in values.items() if not isinstance(x, dict)]
    tables = [f"\n[{k}]\n" + "\n".join(f"{kk} = {_value(xx)}" for kk, xx in x.items())
              for k, x in values.items() if isinstance(x, dict)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(top) + "\n" + "\n".join(tables) + "\n")
    return path


def _value(x) -> str:
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k} = {_value(v)}" for k, v in x.items()) + "}"
    return str(x).lower() if isinstance(x, bool) else json.dumps(x)


# ---------------------------------------------------------------- what the store says about a grid
def grid_cells(path: Path) -> tuple[str, set[str]]:
    """A grid file's experiment and the config_hash of every cell (what FINISHED once must cover)."""
    from ...grids import grid, plan

    study = grid.load(path)
    return study.experiment, {plan.resolve_cell(study, cell).config_hash for cell in grid.expand(study)}


def cell_counts(experiment: str, hashes: set[str], name: str) -> dict:
    """Over the grid `name`'s parent runs and its cells' runs: FINISHED runs per expected cell, duplicates,
    cells without one, and runs left RUNNING."""
    from ...tracking import query

    runs = query.search(experiment)
    children = [r for r in runs if r.tags.get("config_hash") in hashes
                and r.tags.get("lstm_mnist.role") not in ("grid", "study", "trial")]
    parents = [r for r in runs if r.tags.get("lstm_mnist.role") == "grid" and r.tags.get("grid_name") == name]
    finished = Counter(r.tags.get("config_hash") for r in children if r.status == "FINISHED")
    return {"cells": len(hashes), "finished": sum(finished.values()),
            "duplicates": sum(n - 1 for n in finished.values() if n > 1), "missing": len(hashes - set(finished)),
            "left_running": sum(r.status == "RUNNING" for r in children + parents),
            "failed_or_killed": sum(r.status in ("FAILED", "KILLED") for r in children)}


def trained_once(path: Path, when: str) -> dict:
    """The grid file's cell counts when every cell FINISHED exactly once and nothing is left RUNNING; else
    Failed, saying what is wrong."""
    experiment, hashes = grid_cells(path)
    counts = cell_counts(experiment, hashes, path.stem)
    wrong = [f"{counts[k]} {k.replace('_', ' ')}" for k in ("missing", "duplicates", "left_running") if counts[k]]
    if wrong:
        raise Failed(f"{when}: {', '.join(wrong)} (of {counts['cells']} cells)")
    return counts


def grid_file(ctx: Context, name: str, experiment: str, factors: list[str], seeds: list[int], budget: dict) -> Path:
    return write_toml(ctx.out / "grids" / f"{name}.toml", {
        "experiment": experiment, "designs": ["factorial"], "flags": factors, "factorial": factors,
        "seeds": seeds, "budget": budget})


