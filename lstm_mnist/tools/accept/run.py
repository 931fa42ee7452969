"""`make gpu-accept [OUT=gpu-accept/] [PART=answer|checks|all] [CPU=1]` (`python -m lstm_mnist gpu-accept`):
every GPU-specific path checked, and the GPU answer, in one prepared call.

Sized for an offline GPU box with 15 minutes of GPU time, 10 minutes per command, a 1-2 minute start and
at most 64 MiB carried there (source, MNIST, the slim wheel folder). So it runs as two commands of under
8 minutes each, each resumable if cut off (a step that passed is not run again; a cut grid resumes):

    make install WHEELS=wheels/ PYTHON=python3.12   # the image's torch stays; MLflow, Optuna from the folder
    make gpu-accept PART=answer                     # gpu-check (short, MPS), the factorial-gpu grid, its report
    make gpu-accept PART=checks                     # kill + rerun, tune, evaluate on the CPU, Ray, speed probes

Everything goes under OUT: its own MLflow store (mlruns/), logs/, the figures as JSON, report/, steps.json
(each step's result) and summary.txt (the one screen printed at the end). Without a GPU it runs only when
asked for its CPU mode (CPU=1: tiny budgets, no MPS, no CUDA probes); the test suite runs that.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

from ...config import UserError
from . import steps as s
from .harness import Context, Failed, OutOfTime, Step

PARTS = {"answer": s.ANSWER, "checks": s.CHECKS, "all": (*s.ANSWER, *s.CHECKS[1:])}
MARK = {"pass": "PASS", "fail": "FAIL", "skip": "SKIP"}
# A step that reads what another made: not run until that one passed, and run again whenever that one ran.
NEEDS = {"report": "grid", "evaluate": "kill-rerun"}


def main(out: str = "gpu-accept", part: str = "all", cpu: bool = False, again: bool = False,
         budget: float | None = None, skip: tuple[str, ...] = ()) -> int:
    """Run the part's steps (those that passed before are kept unless `again`), ending within `budget`
    seconds when given; 0 when none of them failed."""
    import torch

    if part not in PARTS:
        raise UserError(f"PART={part}: choose answer, checks or all")
    known = [_name(f) for f in PARTS["all"]]
    unknown = [n for n in skip if n not in known or n == "environment"]
    if unknown:
        raise UserError(f"--skip {','.join(unknown)}: not a step that can be left out; the steps: "
                        f"{', '.join(known[1:])}")
    if torch.cuda.device_count() == 0 and not cpu:
        raise UserError("gpu-accept: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                        "`make gpu-accept CPU=1` runs its CPU mode (tiny budgets, no MPS, no CUDA probes)")
    t0 = time.monotonic()
    folder = Path(out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    state = _load(folder, again)
    ctx = Context(folder, cpu, _environment(folder, cpu), t0 + budget if budget else None, state)
    mode = "CPU mode: tiny budgets, not GPU figures" if cpu else "GPU mode"
    print(f"gpu-accept {part} ({mode}) -> {folder}/" + (f"; ends within {budget:.0f} s" if budget else ""), flush=True)
    names, ran = [_name(step) for step in PARTS[part]], set()
    with _tracking(ctx.env), _sigterm_as_interrupt():
        for step, name in zip(PARTS[part], names):
            need = NEEDS.get(name)
            if name in skip:
                state[name] = _record(Step(name, "skip", "left out (--skip)"), cpu)
                continue
            if state.get(name, {}).get("status") == "pass" and name != "environment" and need not in ran:
                print(f"  {name}: passed earlier ({state[name]['line'][:100]})", flush=True)
                continue
            if need and state.get(need, {}).get("status") != "pass":
                state[name] = _record(Step(name, "skip", f"not run: {need} has not passed"), cpu)
                continue
            print(f"  {name} ...", flush=True)
            result = _run(step, ctx)
            if result is None:  # out of this call's budget: left for the next call
                print(f"  {name}: not started, this call's budget is spent; rerun to continue", flush=True)
                break
            ran.add(name)
            state[name] = _record(result, cpu)
            _save(folder, state)
            print(f"  {MARK[result.status]} {name} ({result.seconds:.0f} s): {result.line}", flush=True)
    _save(folder, state)
    text = summary(state, cpu, time.monotonic() - t0, folder)
    (folder / "summary.txt").write_text(text + "\n")
    print(text)
    return 1 if any(state.get(n, {}).get("status") == "fail" for n in names) else 0


def _record(result: Step, cpu: bool) -> dict:
    """A step's entry in steps.json."""
    return {**result.__dict__, "cpu_mode": cpu}


def _name(step) -> str:
    return step.__name__.replace("_", "-")


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """`kill` (SIGTERM) ends gpu-accept as Ctrl-C does: the running command is stopped with it."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(step, ctx: Context) -> Step | None:
    """The step's result; None when the call's budget does not leave it time to start."""
    t0 = time.monotonic()
    name = _name(step)
    try:
        result = step(ctx)
    except OutOfTime:
        return None
    except Failed as e:
        result = Step(name, "fail", str(e))
    except UserError as e:  # the harness refused something the step asked: that is the step's failure
        result = Step(name, "fail", f"error: {e}")
    result.name, result.seconds = name, result.seconds or time.monotonic() - t0
    return result


def _environment(folder: Path, cpu: bool) -> dict:
    """The commands' environment: this checkout importable (a plain checkout runs with PYTHONPATH=.), the
    tracking store under OUT (a grid interrupted by the command's time limit resumes from it), the data
    folder as an absolute path (the commands run in OUT), and in CPU mode no GPU at all."""
    path = os.pathsep.join(p for p in (str(s.ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}",
           "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true"),
           "LSTM_MNIST_DATA": str(Path(os.environ.get("LSTM_MNIST_DATA", "data")).resolve())}
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU mode on a GPU machine too
    return env


@contextlib.contextmanager
def _tracking(env: dict):
    """This process reads the same store the commands write."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def _load(folder: Path, again: bool) -> dict:
    path = folder / "steps.json"
    if again or not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path} is not JSON (cut off mid-write?): delete it, or rerun with --again") from None


def _save(folder: Path, state: dict) -> None:
    tmp = folder / "steps.json.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(folder / "steps.json")


def summary(state: dict, cpu: bool, wall_s: float, folder: Path) -> str:
    """One screen: pass, fail or skip per step with its figures, in the order the parts run them."""
    order = [_name(f) for f in PARTS["all"]]
    lines = ["gpu-accept summary" + (" (CPU mode: tiny budgets, not GPU figures)" if cpu else "")]
    for name in order:
        if name in state:
            st = state[name]
            lines.append(f"{MARK[st['status']]}  {name:<12} {st['line']}")
        else:
            lines.append(f"....  {name:<12} not run yet (PART={'answer' if name in _names(s.ANSWER) else 'checks'})")
    failed = [n for n in order if state.get(n, {}).get("status") == "fail"]
    lines.append(f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''}; this call {wall_s:.0f} s; "
                 f"logs and figures under {folder}/")
    return "\n".join(lines)


def _names(part) -> set[str]:
    return {_name(f) for f in part}
