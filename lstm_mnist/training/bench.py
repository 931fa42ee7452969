"""`make bench`: training throughput of three pipelines for the same model (its task's full arm: the default flags
on; the built-in task's: all six, batch 64).

  (a) harness    this project's loop: Lightning Trainer over device-resident batches, the task's prepare
                 (the built-in task: batched per-sample augmentation on the device)
  (b) dataloader a task with a loader hook, its reference pipeline in a plain torch loop: the built-in task's is
                 what the original assignment did (torchvision MNIST-style Dataset with PIL RandomRotation +
                 RandomAffine, DataLoader with 2 worker processes)
  (c) bare       the floor: a plain torch loop over inputs prepared once, in memory, no augmentation, under the
                 same autocast as the harness at each precision

Each arm shape (the task's shape_flags on and off, the other flags on; the built-in task: 1 x 100 or 2 x 128, one
way or both) is measured at each precision the device can train at (--precision to choose), so the ratios
harness/bare and bf16-mixed/32 come from one run. `--task SPEC` measures another task's model (task/); the default
is the built-in one.

Each pipeline runs `warmup` untimed batches, then `batches` timed ones; samples/s is steady state.
"""
from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from pathlib import Path

import lightning as L
import torch

from . import batches as batches_mod
from . import devices, train, trainers
from .. import config
from .. import task as task_protocol


class _Clock(L.Callback):
    """Timestamps the end of every training batch (synchronized on GPU)."""

    def __init__(self, device):
        self.device, self.stamps = device, []

    def on_train_batch_end(self, *args):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stamps.append(time.perf_counter())


def _rate(stamps: list[float], warmup: int, batch_size: int) -> float:
    timed = stamps[warmup - 1:]  # the interval from the end of the last warm-up batch
    return (len(timed) - 1) * batch_size / (timed[-1] - timed[0])


class _NoEpochEnd(train.LitClassifier):
    """The plateau scheduler steps once per epoch on val_loss; a throughput run has no val pass."""

    def configure_optimizers(self):
        return first_optimizer(super().configure_optimizers())


def first_optimizer(made):
    """The optimizer of what a task's optimizer hook made (an optimizer, or Lightning's dict with a scheduler)."""
    return made["optimizer"] if isinstance(made, dict) else made


def in_one_epoch(batches: int, warmup: int, ds, cfg) -> int:
    """The timed batches, cut to what one epoch of the training split holds after the warm-up (tiny data)."""
    return max(2, min(batches, math.ceil(len(ds.train_y) / cfg.batch_size) - warmup))


def harness(cfg, ds, device, warmup, batches) -> float:
    task = task_protocol.of(cfg)
    torch.manual_seed(0)
    lit = _NoEpochEnd(cfg, task.hook("model")(cfg), task)
    loader = batches_mod.Batches(ds.train_x, ds.train_y, cfg, cfg.batch_size, shuffle=True, train=True, seed=0,
                                 prepare=task.hook("prepare"))
    clock = _Clock(device)
    trainer = trainers.make_trainer(cfg, device, [clock], max_epochs=1, limit_train_batches=warmup + batches,
                                 limit_val_batches=0)
    trainer.fit(lit, train_dataloaders=loader)
    return _rate(clock.stamps, warmup, cfg.batch_size)


def _plain_loop(cfg, batch_iter, device, warmup, batches) -> float:
    """A plain torch loop: the task's model, optimizer and training loss over (x, y) batches as the model reads them."""
    task = task_protocol.of(cfg)
    torch.manual_seed(0)
    net = task.hook("model")(cfg).to(device).train()
    opt = first_optimizer(task.hook("optimizer")(cfg, net.parameters()))
    loss_of = task.hook("loss")
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "16-mixed")  # Lightning's 16-mixed does so
    stamps = []
    for i, (x, y) in enumerate(batch_iter):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with devices.autocast(cfg.precision, device):
            logits = net(x)
        loss = loss_of(cfg, logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        if i + 1 == warmup + batches:
            break
    return _rate(stamps, warmup, cfg.batch_size)


def dataloader(cfg, ds, device, warmup, batches) -> float:
    """The task's own reference pipeline (its loader hook: the built-in task's is the assignment's) in a plain loop."""
    return _plain_loop(cfg, task_protocol.of(cfg).hook("loader")(cfg, ds, device), device, warmup, batches)


def bare(cfg, ds, device, warmup, batches) -> float:
    x = task_protocol.of(cfg).hook("prepare")(cfg, ds.train_x, False, None)  # prepared once (normalized), in memory
    g = torch.Generator().manual_seed(0)

    def batch_iter():
        while True:
            idx = torch.randperm(len(x), generator=g)[: cfg.batch_size].to(x.device)
            yield x[idx], ds.train_y[idx]

    return _plain_loop(cfg, batch_iter(), device, warmup, batches)


def full_config(task: task_protocol.Task, data_dir: str | None = None):
    """The task's full arm: its defaults with its default flags on (what a grid's full arm is when its file names
    none; the built-in task's: all six, as experiments/full.toml)."""
    values = task.values(set(task.default_flags))
    return task.build({**values, **({"data_dir": data_dir} if data_dir and "data_dir" in task.fields else {})})


def shapes(task: task_protocol.Task, cfg) -> dict:
    """Arm name -> config: the full config and every on/off combination of the task's shape flags (the others as in
    the full config),
    e.g. "full", "full-width", "full-bidirectional", "full-bidirectional-width" for the built-in task."""
    out = {}
    for off in itertools.chain.from_iterable(itertools.combinations(task.shape_flags, k)
                                             for k in range(len(task.shape_flags) + 1)):
        sides = {k: v for f in off for k, v in task.flag(f).side(False).items()}
        out["-".join(["full", *off])] = config.rebuilt(cfg, **sides)
    return out


def parse_precisions(text: str | None, device) -> tuple:
    """--precision's comma list (default: every precision the device can train at), each checked against it."""
    names = tuple(dict.fromkeys(p.strip() for p in text.split(","))) if text else devices.precisions_of(device)
    for name in names:
        task_protocol.check_precision(name)
        devices.check_precision(name, device)
    return names


def main(batches: int = 60, warmup: int = 10, rounds: int = 3, out: str = "reports/bench.json",
         data_dir: str | None = None, task_spec: str = task_protocol.BUILTIN, precisions: str | None = None,
         threads: int = 0) -> dict:
    """Every arm shape at every precision, the pipelines interleaved for `rounds` rounds; each figure is the
    median of its rounds (this machine is noisy), and each ratio is of figures measured in this run."""
    task = task_protocol.load(task_spec)
    task.require_tensors("bench")
    cfg = full_config(task, data_dir)
    trainers.quiet_lightning()
    if threads < 0:
        raise config.ConfigError(f"--threads {threads}: give a thread count >= 1, or 0 for torch's default")
    if threads:  # as a grid's worker has them: one core each (--workers 2 on 2 cores)
        torch.set_num_threads(threads)
    device = devices.resolve_device(cfg)
    names = parse_precisions(precisions, device)
    ds = task.load_data(cfg, device)
    batches = in_one_epoch(batches, warmup, ds, cfg)
    arms = {(arm, p): config.rebuilt(c, precision=p) for arm, c in shapes(task, cfg).items() for p in names}
    print(f"bench of task {task.name} on {devices.device_name(device)} (torch threads {torch.get_num_threads()}): "
          f"{len(arms) // len(names)} arm shapes x precision {', '.join(names)}, batch {cfg.batch_size}; {rounds} "
          f"rounds of {warmup} warm-up + {batches} timed batches each", flush=True)
    pipelines = {"harness": harness, "bare": bare}
    with_dataloader = task.loader is not None  # the task's reference pipeline (the built-in task's: the assignment's)
    samples = {key: {name: [] for name in pipelines} for key in arms}
    if with_dataloader:  # the assignment's pipeline, once: the full arm at the reference precision
        samples[("full", names[0])]["dataloader"] = []
    for r in range(rounds):
        for key, c in arms.items():
            for name in samples[key]:
                samples[key][name].append({**pipelines, "dataloader": dataloader}[name](c, ds, device, warmup, batches))
        print(f"  round {r + 1} done", flush=True)
    rows = _rows(samples, names)
    full = {n: statistics.median(v) for n, v in samples[("full", names[0])].items()}
    result = {"task": task.name, "device": devices.device_name(device), "threads": torch.get_num_threads(),
              "batch_size": cfg.batch_size,
              "batches": batches, "rounds": rounds, "precisions": list(names), "shapes": rows,
              "samples_per_s": full, "harness_over_bare": full["harness"] / full["bare"]}
    if "dataloader" in full:
        result["harness_over_dataloader"] = full["harness"] / full["dataloader"]
    print(table(rows, names))
    target_c = 0.8 if device.type == "cuda" else 0.9
    print(f"the full arm at precision {names[0]}: "
          + (f"a/b = {result['harness_over_dataloader']:.2f} (harness/dataloader, target >= 1.5 on CPU)   "
             if "dataloader" in full else "")
          + f"a/c = {result['harness_over_bare']:.2f} (harness/bare, target >= {target_c})")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


def _rows(samples: dict, names: tuple) -> list[dict]:
    """One row per arm shape and precision: medians, harness/bare, and each pipeline against the first precision."""
    rows = []
    for (arm, p), figures in samples.items():
        rates = {n: statistics.median(v) for n, v in figures.items()}
        ref = {n: statistics.median(v) for n, v in samples[(arm, names[0])].items()}
        rows.append({"arm": arm, "precision": p, **{f"{n}_samples_per_s": v for n, v in rates.items()},
                     "harness_over_bare": rates["harness"] / rates["bare"],
                     f"harness_over_{names[0]}": rates["harness"] / ref["harness"],
                     f"bare_over_{names[0]}": rates["bare"] / ref["bare"],
                     "each_round": figures})
    return rows


def table(rows: list[dict], names: tuple) -> str:
    """The rows as the Markdown table a user reads (and a closing note quotes)."""
    ref = names[0]
    lines = [f"| arm | precision | harness samples/s | bare samples/s | harness/bare | harness vs {ref} | "
             f"bare vs {ref} |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['arm']} | {r['precision']} | {r['harness_samples_per_s']:,.0f} | "
                     f"{r['bare_samples_per_s']:,.0f} | {r['harness_over_bare']:.2f} | "
                     f"{r[f'harness_over_{ref}']:.2f} | {r[f'bare_over_{ref}']:.2f} |")
    return "\n".join(lines)
