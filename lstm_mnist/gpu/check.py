"""`python -m lstm_mnist gpu-check`: what one GPU does with this harness, and how many cells to train at once.

In a few minutes it records the GPU and its software (driver, CUDA, cuDNN, whether MPS is there), the
full model's epoch time, the harness against a bare loop, and the grid throughput of 1, 2, 4, 8 pinned
worker processes training real cells of experiments/ablation.toml (optionally again under a private MPS
daemon). It recommends WORKERS = the knee of that curve and projects the wall time of the ablation and
factorial grids. On a machine without CUDA it runs a smoke version of the same steps, marked as such.
Imports neither MLflow nor Optuna: it must run on a bare GPU box in seconds.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import task as task_protocol
from ..grids import grid
from ..machine import host
from ..training import batches as batches_mod
from ..training import bench, devices, train
from . import slices as gpu_slice
from . import mps as mps_daemon
from ..config import ConfigError

SMOKE = "CPU smoke run: not a GPU figure"
KNEE = 0.9
RULE = f"smallest worker count whose throughput is >= {KNEE:.0%} of the best measured"
# The project's own experiment files, wherever the command runs from (a plain checkout on a GPU box).
ROOT = Path(__file__).resolve().parents[2]  # the checkout: lstm_mnist/gpu/check.py -> ./
# Figures published before the epoch's size was recorded with them (docs/gpu/*.json) measured the built-in task's
# full data: 750 steps of 64 training images and 12,000 validation images.
PUBLISHED_BEFORE = {"epoch_steps": 750, "val_images": 12000}
CELLS_FROM = "experiments/ablation.toml"
# The arm every worker trains (its cells cycle over the seeds): one arm for every worker count, so the curve
# measures concurrency alone. Cycling over all arms would not: `baseline` runs ~8x more steps/s than `full`
# on a CPU, so the mix, not the worker count, would make the curve. `full` is also the costliest arm,
# which keeps the projections upper bounds.
ARM = "full"
PROJECTED = ("experiments/ablation.toml", "experiments/factorial.toml")
UPPER_BOUND = "upper bound: every cell runs all max_epochs; early stopping can end runs earlier"
# How much to measure: (warm-up steps, timed steps, rounds, worker warm-up steps, slice seconds)
GPU_BUDGET = (20, 200, 3, 10, 20.0)
CPU_BUDGET = (2, 5, 1, 2, 2.0)


def parse_worker_counts(text: str) -> tuple[int, ...]:
    """`--workers 1,2,4,8` -> (1, 2, 4, 8); anything else is a one-line ConfigError."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ConfigError(f"--workers {text}: give worker counts >= 1 separated by commas, e.g. 1,2,4,8")
    return tuple(sorted({int(p) for p in parts}))


def main(out: str = "reports/gpu-check.json", mps: bool = False, workers=(1, 2, 4, 8),
         seconds: float | None = None, data_dir: str | None = None, plain: bool = True,
         grid_file: str | None = None) -> dict:
    """Measure, recommend, project; print a summary and write the figures as JSON to `out`. `grid_file`: measure
    the `full` arm of that grid (of any task) instead of the built-in task's ablation grid."""
    t0 = time.monotonic()
    on_gpu = torch.cuda.device_count() > 0  # no CUDA context here until the curves are done: MPS comes first
    counts = _counts(workers, on_gpu)
    warmup, batches, rounds, slice_warmup, slice_s = GPU_BUDGET if on_gpu else CPU_BUDGET
    slice_s = seconds or slice_s
    if mps:
        mps_daemon.require()  # a missing binary fails now, not after the first curve
    extra = {"data_dir": data_dir} if data_dir else {}
    device = "cuda:0" if on_gpu else "cpu"
    cells_from = grid_file or CELLS_FROM
    cells = arm_cells(extra, device, cells_from)
    task = task_protocol.of(cells[0][1])
    task.require_tensors("gpu-check")
    full = full_config(extra) if grid_file is None else cells[0][1]
    task.data_fingerprint(full)  # missing or corrupt data: one line now, not N failed workers
    devices.resolve_device(full)   # so is a precision this device cannot train at
    gpu_slice.quiet()
    _say(on_gpu, f"gpu-check on {device}: grid throughput of {', '.join(map(str, counts))} workers, "
         f"{slice_s:g} s slices{' (also under MPS)' if mps else ''}")
    if not (plain or mps):
        raise ConfigError("--no-plain goes with --mps: without both there is no curve to measure")
    curves = {"plain": _curve(cells, counts, slice_s, slice_warmup)} if plain else {}
    if mps:
        with mps_daemon.daemon(True):
            curves["mps"] = _curve(cells, counts, slice_s, slice_warmup)
    _say(on_gpu, f"full model in this process: {rounds} round(s) of harness and bare loop, a validation pass")
    single = single_process(full, warmup, batches, rounds, full_data=grid_file is None)
    result = {"note": SMOKE if not on_gpu else "GPU figures", "cpu_smoke": not on_gpu,
              "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "gpu": environment(on_gpu), "machine": host.describe(), "torch": torch.__version__, **single,
              "task": task.name, "grid": {"cells_from": cells_from, "arm": ARM, "device": device, "slice_s": slice_s,
                       "warmup_steps": slice_warmup, "curves": curves}}
    result["recommended"] = {name: recommend(points) for name, points in curves.items()}
    ratio = result["full_model"]["val_s"] / result["full_model"]["train_s"]
    projected = PROJECTED if grid_file is None else (grid_file,)
    result["projections"] = {name: {path: project(path, rec["steps_per_s"], ratio) for path in projected}
                             for name, rec in result["recommended"].items() if rec}
    result["wall_s"] = time.monotonic() - t0
    print(summary(result))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    print(f"wrote {out}" + ("" if on_gpu else f"  ({SMOKE})"))
    return result


def _counts(workers, on_gpu: bool) -> tuple[int, ...]:
    """The worker counts to measure; a CPU smoke run keeps those up to 2 (a few seconds each)."""
    counts = tuple(sorted(set(workers)))
    if not counts or not all(type(n) is int and n >= 1 for n in counts):
        raise ConfigError(f"workers={list(workers)!r}: give worker counts >= 1, e.g. 1,2,4,8")
    return counts if on_gpu else tuple(n for n in counts if n <= 2) or (1,)


def _say(on_gpu: bool, text: str) -> None:
    print(text if on_gpu else f"{text}  [{SMOKE}]", flush=True)


# ---------------------------------------------------------------- the GPU and its software
def environment(on_gpu: bool) -> dict:
    """GPU name and count, driver, CUDA and cuDNN versions, and whether MPS can be used here."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"name": torch.cuda.get_device_name(0) if on_gpu else None, "count": torch.cuda.device_count(),
            "driver": _driver(), "cuda": torch.version.cuda, "cudnn": cudnn,
            "mps_available": mps_daemon.available()}


def _driver() -> str | None:
    """The NVIDIA driver version from nvidia-smi (a query; it changes nothing), None without one."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = proc.stdout.split()
    return lines[0] if proc.returncode == 0 and lines else None


# ---------------------------------------------------------------- one process: epoch time, harness vs bare
def full_config(extra: dict):
    """The default task's model at its costliest: every flag on (the built-in task's: all six and readout
    final_states, both directions' states), its default batch."""
    task = task_protocol.builtin()
    return task.build({**task.values(set(task.flag_names), task.flag_names), **extra})


def single_process(cfg, warmup: int, batches: int, rounds: int, full_data: bool = True) -> dict:
    """The full model's epoch time (timed steps extrapolated to an epoch: with `full_data`, of the splits the task
    says its full data holds (its sizes hook: the built-in task's 48,000 training and 12,000 validation images);
    else of the splits loaded here) and bench's harness and bare loop on this device, interleaved, medians
    kept."""
    task = task_protocol.of(cfg)
    device = devices.resolve_device(cfg)
    ds = task.load_data(cfg, device)
    sizes = task.split_sizes(cfg) if full_data else {"train": len(ds.train_y), "validation": len(ds.val_y)}
    epoch_steps, val_images = math.ceil(sizes["train"] / cfg.batch_size), sizes["validation"]
    batches = bench.in_one_epoch(batches, warmup, ds, cfg)
    rates = {"harness": [], "bare": []}
    for _ in range(rounds):
        rates["harness"].append(bench.harness(cfg, ds, device, warmup, batches))
        rates["bare"].append(bench.bare(cfg, ds, device, warmup, batches))
    harness, bare = statistics.median(rates["harness"]), statistics.median(rates["bare"])
    step_s = cfg.batch_size / harness
    val_s = validation_s(cfg, ds, device) * val_images / len(ds.val_y)
    values = dataclasses.asdict(cfg)
    what = f"{task.on_text(lambda f: task.flag(f).is_on(values))}{task.title}, batch {cfg.batch_size}"
    return {"full_model": {"config": what, "step_s": step_s, "epoch_steps": epoch_steps, "val_images": val_images,
                           "steps_timed": batches, "train_s": step_s * epoch_steps, "val_s": val_s,
                           "val_images_timed": len(ds.val_y), "epoch_s": step_s * epoch_steps + val_s},
            "throughput": {"harness_samples_per_s": harness, "bare_samples_per_s": bare,
                           "harness_over_bare": harness / bare, "rounds": rounds, "batches": batches}}


def validation_s(cfg, ds: task_protocol.Splits, device: torch.device) -> float:
    """One validation pass as training runs it (eval batches, loss, macro-F1, accuracy); the second of two,
    so cuDNN's first-call costs stay out."""
    task = task_protocol.of(cfg)
    lit = train.LitClassifier(cfg, task.hook("model")(cfg), task).to(device).eval()
    times = []
    with torch.no_grad():
        for _ in range(2):
            t0 = time.perf_counter()
            for x, y in batches_mod.of_task(task, ds, cfg)[1]:
                with devices.autocast(cfg.precision, device):  # as Lightning validates at the run's precision
                    logits = lit.net(x)
                lit.val_metrics.update(logits, y)
            lit.val_metrics.compute("val")  # brings the figures to the host: the pass has finished
            times.append(time.perf_counter() - t0)
    return times[-1]


# ---------------------------------------------------------------- grid throughput, knee, projection
def arm_cells(extra: dict, device: str, cells_from: str = CELLS_FROM) -> list[tuple[str, object]]:
    """(cell name, config) of a grid's ARM cells (default: the built-in task's ablation grid), on one device:
    worker i trains cell i mod their number."""
    path = Path(cells_from) if Path(cells_from).is_file() else ROOT / cells_from
    spec = grid.load(path)
    out = []
    for cell in (c for c in grid.expand(spec) if c.arm == ARM):
        values = {**grid.values(spec, cell), **{k: v for k, v in extra.items() if k in spec.task.fields},
                  "device": device}
        out.append((cell.name, spec.task.build(values, f"{cells_from} cell {cell.name}")))
    if not out:
        fix = "restore the file from git" if cells_from == CELLS_FROM else "give a grid with a full arm (leave_one_out)"
        raise ConfigError(f"{cells_from}: no {ARM!r} arm to measure the grid throughput with; {fix}")
    return out


def _curve(cells: list, counts: tuple[int, ...], seconds: float, warmup: int) -> list[dict]:
    points = []
    for n in counts:
        points.append(gpu_slice.point(cells, n, seconds, warmup))
        p = points[-1]
        print(f"  {n} worker{'s' * (n > 1)}: " + (f"{p['steps_per_s']:.1f} steps/s" if "error" not in p
                                                  else f"failed ({p['error']})"), flush=True)
    return points


def recommend(points: list[dict]) -> dict | None:
    """The knee: the fewest workers within KNEE of the best throughput (more would add processes, memory
    and contention for little). None when no point was measured."""
    ok = [p for p in points if "steps_per_s" in p]
    if not ok:
        return None
    best = max(p["steps_per_s"] for p in ok)
    knee = min((p for p in ok if p["steps_per_s"] >= KNEE * best), key=lambda p: p["workers"])
    return {"workers": knee["workers"], "steps_per_s": knee["steps_per_s"], "best_steps_per_s": best, "rule": RULE,
            "measure_more": larger_counts(ok, knee)}


def larger_counts(ok: list[dict], knee: dict) -> list[int]:
    """Worker counts to measure next when the knee is the largest count measured and the curve still rose
    into it (by more than the knee's tolerance): the best may lie beyond what was tried. [] otherwise.
    Seen on an H200 under MPS: 1,2,4,8 gave 152, 362, 599, 1150 steps/s (knee 8, at the edge); 8,12,16
    then gave 1302, 1757, 1697 (knee 12)."""
    largest = max(ok, key=lambda p: p["workers"])
    below = [p for p in ok if p["workers"] < largest["workers"]]
    if knee is not largest or not below:
        return []
    previous = max(below, key=lambda p: p["workers"])
    if previous["steps_per_s"] >= KNEE * largest["steps_per_s"]:
        return []
    n = largest["workers"]
    return sorted({n, n + max(1, n // 2), 2 * n})


def project(path: str, steps_per_s: float, val_ratio: float) -> dict:
    """A grid's wall time at `steps_per_s`: every cell's max_epochs x ceil(train images / batch) steps (an
    upper bound), and the same with validation passes at the full model's val/train time ratio."""
    spec = grid.load(Path(path) if Path(path).is_file() else ROOT / path)
    cells = grid.expand(spec)
    steps, n_train = 0, None
    for cell in cells:
        cfg = spec.task.build(grid.values(spec, cell), f"{path} cell {cell.name}")
        if n_train is None:  # one grid: one data set, its training split as the task says the full data holds it
            n_train = spec.task.split_sizes(cfg)["train"]
        steps += cfg.max_epochs * math.ceil(n_train / cfg.batch_size)
    train_s = steps / steps_per_s
    return {"cells": len(cells), "steps": steps, "steps_per_s": steps_per_s, "train_h": train_s / 3600,
            "with_val_h": train_s * (1 + val_ratio) / 3600, "bound": UPPER_BOUND}


# ---------------------------------------------------------------- the printed summary
def summary(r: dict) -> str:
    g, f, t = r["gpu"], r["full_model"], r["throughput"]
    lines = [SMOKE] if r["cpu_smoke"] else []
    lines.append(f"GPU: {g['name'] or 'none'} (x{g['count']}), driver {g['driver'] or 'n/a'}, "
                 f"CUDA {g['cuda'] or 'n/a'}, "
                 f"cuDNN {g['cudnn'] or 'n/a'}, MPS {'available' if g['mps_available'] else 'not found'}")
    lines.append(f"machine: {r['machine']}")
    f = {**PUBLISHED_BEFORE, **f}
    lines.append(f"full model epoch: {f['epoch_s']:.1f} s = {f['epoch_steps']} steps x {f['step_s'] * 1000:.1f} ms "
                 f"+ validation of {f['val_images']:,} images {f['val_s']:.1f} s")
    lines.append(f"samples/s: harness {t['harness_samples_per_s']:.0f}, bare loop {t['bare_samples_per_s']:.0f} "
                 f"(harness/bare {t['harness_over_bare']:.2f})")
    curves = r["grid"]["curves"]
    lines.append(f"grid throughput, optimizer steps/s over all workers ({r['grid']['slice_s']:g} s slices of "
                 f"{r['grid']['cells_from']} cells of arm {r['grid']['arm']}):")
    lines.append("  workers " + "".join(f"{name:>10}" for name in curves))
    for i, p in enumerate(next(iter(curves.values()))):
        row = [c[i].get("steps_per_s") for c in curves.values()]
        lines.append(f"  {p['workers']:>7} " + "".join(f"{v:>10.1f}" if v is not None else f"{'failed':>10}"
                                                        for v in row))
    mem = [w for c in curves.values() for p in c for w in p.get("per_worker", []) if "gpu_reserved_mib" in w]
    if mem:
        lines.append(f"GPU memory per worker (torch's count; the CUDA context adds a few hundred MiB): peak allocated "
                     f"{max(w['gpu_peak_allocated_mib'] for w in mem):.0f} MiB, reserved "
                     f"{max(w['gpu_reserved_mib'] for w in mem):.0f} MiB")
    for name, rec in r["recommended"].items():
        if rec is None:
            lines.append(f"{name}: every point failed; no recommendation")
            continue
        lines.append(f"recommended WORKERS={rec['workers']}{' with MPS' if name == 'mps' else ''} ({rec['rule']}): "
                     f"{rec['steps_per_s']:.1f} steps/s, best {rec['best_steps_per_s']:.1f}")
        if rec.get("measure_more"):
            more = ",".join(map(str, rec["measure_more"]))
            lines.append(f"  still rising at {rec['workers']} workers, the largest count measured: more may be faster; "
                         f"measure them with `gpu-check{' --mps' if name == 'mps' else ''} --workers {more}`")
        for path, p in r["projections"][name].items():
            lines.append(f"  {path}: {p['cells']} cells, {p['steps']:,} steps -> {p['train_h']:.1f} h training, "
                         f"{p['with_val_h']:.1f} h with validation")
    lines.append(f"  ({UPPER_BOUND})")
    lines.append(f"gpu-check took {r['wall_s']:.0f} s")
    if r["cpu_smoke"]:
        lines.append(SMOKE)
    return "\n".join(lines)
