"""`python -m lstm_mnist COMMAND ...`: the user's interface (the Make targets wrap it).

User mistakes (bad config, missing data, unusable store) end in one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from . import metrics
from .config import UserError
from .errors import Preempted


def cmd_run(args) -> int:
    from . import config

    cfg = config.load(args.file, args.overrides)  # a mistake in the file is answered before seconds of imports
    import dataclasses

    from . import task as task_protocol
    from .runs import runner
    from .training import devices

    devices.resolve_device(cfg)  # a device or precision this host lacks: one line, before a run is recorded

    name = args.name or (f"{_stem(args.file)}-s{cfg.seed}" if args.file else f"run-s{cfg.seed}")
    task, values = task_protocol.of(cfg), dataclasses.asdict(cfg)
    print(f"run {name}{task.title}: {task.on_text(lambda f: task.flag(f).is_on(values))}; "
          f"max_epochs={cfg.max_epochs} precision={cfg.precision} experiment={cfg.experiment}", flush=True)
    out = runner.execute(cfg, run_name=name, force=args.force,
                         on_epoch=lambda e, r: print(runner.epoch_line(e, r), flush=True))
    if out.status == "FAILED":
        print(f"run {name} FAILED after {out.seconds:.0f}s: {out.error} [run {out.run_id}, config_hash "
              f"{out.config_hash}]", file=sys.stderr)
        return 1
    if out.status == "SKIPPED":
        print(f"already FINISHED as run {out.run_id} (config_hash {out.config_hash}): test_f1 "
              f"{out.test.get('test_f1', float('nan')):.4f}; pass --force to train it again")
        return 0
    t = out.test
    print(f"test (best epoch {out.result.best_epoch}): test_f1 {t['test_f1']:.4f}  test_acc {t['test_acc']:.4f}  "
          f"test_loss {t['test_loss']:.4f}  [{out.seconds:.0f}s, run {out.run_id}, config_hash {out.config_hash}]")
    return 0


def cmd_bench(args) -> int:
    from .training import bench

    bench.main(batches=args.batches, warmup=args.warmup, rounds=args.rounds, out=args.out, data_dir=args.data_dir,
               task_spec=args.task, precisions=args.precision, threads=args.threads)
    return 0


def cmd_report(args) -> int:
    from .report import make, render

    r, paths = make.make(args.experiment, args.grid, args.metric, args.out, args.against, args.against_experiment)
    print(render.terminal(r))
    print(f"wrote {len(paths)} files to {paths[0].parent}/ and logged them on MLflow run {r.grid.parent_id} "
          f"(the grid's latest parent) under report/")
    return 0


def cmd_tune(args) -> int:
    from .tuning import file as study_file

    study_file.load_study_file(args.file)  # a mistake in the file is answered before seconds of imports
    from .gpu import mps
    from .tracking import outages
    from .tuning import tune

    ray = _ray(args)
    # On Ray, --workers caps the study's tasks; without it, as many as the cluster holds.
    n = _workers(args.workers) if not (ray and args.workers == "1") else 1 << 20
    outages.set_store_wait(args.store_wait)
    with mps.daemon(args.mps):
        tune.main(args.file, trials=args.trials, n_workers=n, storage_url=args.storage, timeout=args.timeout,
                  pin=not args.no_pin, ray=ray)
    return 0


def cmd_ablate(args) -> int:
    import dataclasses

    from .grids import grid
    from .grids.options import Options

    spec = grid.load(args.file)  # the grid file, read once: a mistake in it is answered before seconds of imports
    opts = Options(shard=grid.parse_shard(args.shard) if args.shard else None, force=args.force,
                   dry_run=args.dry_run, pin=not args.no_pin, storage_url=args.storage,
                   until_decided=args.until_decided, max_seeds=args.max_seeds, block=args.block)
    opts.check(spec.tune is not None)  # flags that do not go together (with --ray: once it is known, below)
    judge = None
    if args.until_decided:
        from .grids import until_decided

        until_decided.design(spec, args.max_seeds, args.block)  # a bad design is answered before any import
        from .report import looks  # the report's estimates, judged by the stopping rule after each block

        judge = looks.judge
    opts = dataclasses.replace(opts, ray=_ray(args), workers=_workers(args.workers, args.mps), judge=judge)
    from .grids import runner
    from .gpu import mps
    from .tracking import outages

    if args.dry_run:
        return runner.run(spec, opts)
    outages.set_store_wait(args.store_wait)
    with mps.daemon(args.mps):
        return runner.run(spec, opts)


def _ray_options(p) -> None:
    p.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS",
                   help="train on a Ray cluster: its address (e.g. 10.0.0.5:6379), or none for RAY_ADDRESS, the "
                   "cluster `ray start` made here, else a local one; a grid then trains as many cells as the cluster "
                   "holds (--workers is ignored), a study at most --workers trials at once")
    p.add_argument("--cpus-per-cell", type=float, default=1.0, metavar="N",
                   help="with --ray: CPUs per cell (torch's threads follow it; default 1)")
    p.add_argument("--gpus-per-cell", type=float, default=0.0, metavar="F",
                   help="with --ray: GPUs per cell, fractional (0.25: four cells share a GPU; default 0)")


def _ray(args):
    """--ray's options (engine/ray_tasks.RayOptions), or None; --cpus/--gpus-per-cell without --ray, or --mps
    with it, is a mistake."""
    from .config import ConfigError

    if args.ray is None:
        if args.cpus_per_cell != 1.0 or args.gpus_per_cell != 0.0:
            raise ConfigError("--cpus-per-cell and --gpus-per-cell go with --ray: add it, or drop them")
        return None
    if args.mps:
        raise ConfigError("--mps does not go with --ray: Ray places the work on the cluster's CPUs and GPUs "
                          "(--gpus-per-cell 0.25 shares a GPU four ways); drop it")
    from .engine.ray_tasks import RayOptions, check

    opts = RayOptions(args.ray, args.cpus_per_cell, args.gpus_per_cell)
    check(opts)
    return opts


def cmd_gpu_check(args) -> int:
    from .gpu import check as gpu_check  # imports neither MLflow nor Optuna: runs on a bare GPU box

    kwargs = {"workers": gpu_check.parse_worker_counts(args.workers)} if args.workers else {}
    if args.seconds is not None:
        kwargs["seconds"] = args.seconds
    # --mps: measured under MPS too (and only, with --no-plain)
    gpu_check.main(out=args.out, mps=args.mps, data_dir=args.data_dir, plain=not args.no_plain,
                   grid_file=args.grid, **kwargs)
    return 0


def _workers(text: str, mps: bool = False) -> int:
    """`--workers N` or `--workers auto` (what gpu-check last recommended for this GPU, else a stated rule)."""
    from .machine import cores

    n, rule = cores.from_arg(text, mps=mps)
    if text.strip().lower() == "auto":
        print(f"--workers auto: {n} ({rule})", flush=True)
    return n


def cmd_evaluate(args) -> int:
    from .runs import evaluate

    ch = evaluate.check(args.run_id, data_dir=args.data_dir, device=args.device)
    print("\n".join(evaluate.lines(ch)))
    return 1 if ch.differences() else 0


def cmd_ui(args) -> int:
    from .tracking import ui

    return ui.main(port=args.port, host=args.host, experiment=args.experiment, open_browser=args.open)


def cmd_dashboard(args) -> int:
    from .tuning import dashboard

    return dashboard.main(args.file, storage=args.storage, host=args.host, port=args.port)


def _stem(path: str) -> str:
    from pathlib import Path

    return Path(path).stem


def _worker_options(p: argparse.ArgumentParser, what: str, storage: str) -> None:
    """--workers N|auto, --mps, --no-pin, --storage and --store-wait: the same for `ablate` and `tune`."""
    p.add_argument("--workers", default="1", help=f"{what}; auto: what `gpu-check` recommended for this GPU, else "
                   "4 per GPU (CPU: one per core)")
    p.add_argument("--mps", action="store_true", help="run the workers under a private NVIDIA MPS daemon (GPU)")
    p.add_argument("--no-pin", action="store_true", help="do not pin workers to their own CPU cores")
    p.add_argument("--storage", help=f"Optuna RDB URL, e.g. postgresql://user@host/optuna (default: {storage})")
    p.add_argument("--store-wait", type=positive_seconds, default=600.0, metavar="SECONDS",
                   help="how long a tracking-store outage (server down, database locked or read-only) is waited "
                   "out with backoff before the command stops; a rerun resumes (default 600)")


def measure_options(p: argparse.ArgumentParser, out: str, mps: str | None = None) -> None:
    """--out, --data-dir and (with its help) --mps: the same for `bench`, `gpu-check` and `gpu-probes`
    (tools/cli.py)."""
    p.add_argument("--out", default=out, help="where to write the JSON figures")
    if mps:
        p.add_argument("--mps", action="store_true", help=mps)
    p.add_argument("--data-dir", default=None, help="MNIST folder (default: LSTM_MNIST_DATA, else data/)")


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0, e.g. 600")
    return value


def parser(more: Callable[[argparse._SubParsersAction], None] | None = None) -> argparse.ArgumentParser:
    """The harness's commands; `more` adds commands from above it to the subcommands (__main__.py passes the
    tools', tools/cli.py), so this module imports nothing of lstm_mnist.tools."""
    p = argparse.ArgumentParser(prog="python -m lstm_mnist", description="LSTM-on-MNIST ablation harness")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train and record one run", description="Train one config and record it in MLflow. "
                       "Later keys win: defaults < FILE.toml < key=value.")
    r.add_argument("file", nargs="?", help="experiment file (TOML), e.g. experiments/full.toml")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. max_epochs=3 seed=1")
    r.add_argument("--name", help="MLflow run name (default: FILE-sSEED)")
    r.add_argument("--force", action="store_true", help="train even if this config already has a FINISHED run")
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("bench", help="throughput: this harness vs a torchvision DataLoader vs a bare loop")
    b.add_argument("--batches", type=int, default=60, help="timed batches per pipeline")
    b.add_argument("--warmup", type=int, default=10, help="untimed batches first")
    b.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each pipeline's median counts")
    b.add_argument("--task", default="lstm_mnist", help="the task whose model to measure, every flag on: "
                   "package.module:name (default: the built-in lstm_mnist)")
    b.add_argument("--precision", metavar="LIST", help="precisions to measure, comma-separated, the first the "
                   "reference of the ratios (default: every one the device can train at: 32,bf16-mixed on a CPU)")
    b.add_argument("--threads", type=int, default=0, metavar="N", help="torch CPU threads (default: torch's, all "
                   "cores; 1 is what each of --workers 2 gets on 2 cores)")
    measure_options(b, "reports/bench.json")
    b.set_defaults(func=cmd_bench)

    a = sub.add_parser("ablate", help="train every cell of an ablation grid (resumable, parallel)",
                       description="Train every arm x seed of a grid file as child runs of one parent run. "
                       "Cells whose config_hash already has a FINISHED run are skipped, so a rerun resumes.")
    a.add_argument("file", help="grid file (TOML), e.g. experiments/ablation.toml")
    a.add_argument("--dry-run", action="store_true",
                   help="print the cells (arm, design, seed, hash, done/todo); train nothing")
    _worker_options(a, "cells trained at once, each in its own process pinned to its own CPU cores (default 1)",
                    "claims.journal beside the tracking store; give one RDB to every machine of a grid")
    a.add_argument("--shard", metavar="K/N", help="train only this machine's share K of N (deterministic)")
    a.add_argument("--force", action="store_true", help="train cells again even if FINISHED (or RUNNING elsewhere)")
    _ray_options(a)
    a.add_argument("--until-decided", action="store_true",
                   help="add whole-design seeds in blocks, looking after each, until every effect is \"effect\" or "
                   "\"no effect ≥ δ\" (δ: the file's effect_of_interest); looks fixed in advance, α spent over them")
    a.add_argument("--max-seeds", type=int, metavar="N", help="with --until-decided: the most seeds (default: the "
                   "file's seeds + 4)")
    a.add_argument("--block", type=int, default=1, metavar="B", help="with --until-decided: seeds added per look "
                   "(default 1)")
    a.set_defaults(func=cmd_ablate)

    t = sub.add_parser("tune", help="run or continue an Optuna study (studies/*.toml)",
                       description="Tune the nuisance hyperparameters of a study file with Optuna; every trial is a "
                       "child MLflow run of the study's run; the best trial is exported to experiments/best-NAME.toml. "
                       "Rerunning continues the study up to --trials COMPLETE+PRUNED trials.")
    t.add_argument("file", help="study file, e.g. studies/quick.toml")
    t.add_argument("--trials", type=int, help="total COMPLETE+PRUNED trials wanted (default: the study file's)")
    _worker_options(t, "trials trained at once, in worker processes (sharing the GPUs), each pinned to its own "
                    "CPU cores",
                    "a journal file next to the study file")
    t.add_argument("--timeout", type=float, help="seconds after which no worker starts a new trial")
    _ray_options(t)
    t.set_defaults(func=cmd_tune)

    rp = sub.add_parser("report", help="results tables (CIs, paired tests) and figures of an ablation grid",
                        description="Report an ablation grid from MLflow: per-arm table, paired comparisons, "
                        "what each enhancement is worth; CSV, Markdown, LaTeX and PNG, also logged on the grid's run.")
    rp.add_argument("--experiment", help="MLflow experiment holding the grid (default: the latest grid's)")
    rp.add_argument("--grid", help="grid name (its file's stem, e.g. ablation-quick; default: the latest grid)")
    rp.add_argument("--metric", default=None, choices=metrics.TEST,
                    help="metric compared and ranked (default: the grid's task's, test_f1 for the built-in one)")
    rp.add_argument("--out", help="output folder (default reports/<grid>)")
    rp.add_argument("--against", metavar="GRID", help="another grid of the same design and task (e.g. the same "
                    "file at another precision or budget): each effect in both, their difference, its CI and a "
                    "verdict at δ")
    rp.add_argument("--against-experiment", metavar="NAME", help="the MLflow experiment of the --against grid "
                    "(default: this grid's)")
    rp.set_defaults(func=cmd_report)

    g = sub.add_parser("gpu-check", help="measure this GPU: epoch time, harness vs bare loop, grid throughput per "
                       "number of workers, the recommended WORKERS -> reports/gpu-check.json",
                       description="Needs only torch, lightning and torchmetrics (no MLflow, no Optuna). On a CPU it "
                       "runs a small smoke version and says it is not a GPU figure.")
    measure_options(g, "reports/gpu-check.json", "also measure the workers under a private NVIDIA MPS daemon")
    g.add_argument("--workers", help="worker counts to try, e.g. 1,2,4,8 (default: chosen for the device)")
    g.add_argument("--no-plain", action="store_true", help="with --mps: measure under MPS only (half the time)")
    g.add_argument("--seconds", type=positive_seconds, metavar="S", help="length of each throughput slice "
                   "(default 20 on a GPU, 2 on a CPU)")
    g.add_argument("--grid", metavar="FILE", help="measure the full arm of this grid file, of any task (default: the "
                   "built-in task's experiments/ablation.toml, and its full model at its costliest)")
    g.set_defaults(func=cmd_gpu_check)

    if more is not None:  # the tools' commands (tools/cli.py): beside gpu-check in --help
        more(sub)

    ev = sub.add_parser("evaluate", help="re-verify a run: recompute its test metrics from its logged weights",
                        description="Load RUN_ID's logged weights and config, recompute the test metrics on the same "
                        "data, print them beside the recorded ones. Exit 0 when they agree, 1 when they differ.")
    ev.add_argument("run_id", help="MLflow run id (see `make ui`)")
    ev.add_argument("--data-dir", help="MNIST folder (default: LSTM_MNIST_DATA, else data/); must hold the run's data")
    ev.add_argument("--device", help="device to recompute on (default: the run's; auto, cpu, cuda, cuda:N)")
    ev.set_defaults(func=cmd_evaluate)

    u = sub.add_parser("ui", help="MLflow UI on this project's store, opened on the latest grid's runs table")
    u.add_argument("--port", type=int, default=5000)
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--experiment", help="experiment to link to (default: the one holding the latest grid or study)")
    u.add_argument("--open", action="store_true", help="also open the link in a browser, where one is available")
    u.set_defaults(func=cmd_ui)

    d = sub.add_parser("dashboard", help="optuna-dashboard on a study's storage (the dashboard extra)",
                       description="Optuna's dashboard on a study's storage: the journal beside a study file, or an "
                       "RDB URL or journal file given as --storage (a tuned grid's studies: mlruns/claims.journal).")
    d.add_argument("file", nargs="?", help="study file (studies/*.toml)")
    d.add_argument("--storage", help="an RDB URL (postgresql://...) or a journal file, instead of the study file's")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080)
    d.set_defaults(func=cmd_dashboard)
    return p


def main(argv: list[str] | None = None, make_parser: Callable[[], argparse.ArgumentParser] = parser) -> int:
    """One command, parsed by `make_parser` (`python -m lstm_mnist`: the harness's and the tools' commands,
    tools/cli.parser; by default the harness's alone), run; a user's mistake is one line and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `run FILE.toml k=v`: a first positional with "=" is an override, not a file.
    if len(argv) >= 2 and argv[0] == "run" and "=" in argv[1] and not argv[1].endswith(".toml"):
        argv.insert(1, "")
    args = make_parser().parse_args(argv)
    if getattr(args, "file", None) == "":
        args.file = None
    try:
        from .machine import versions

        versions.check(args.command)  # an old torch or a missing MLflow: one line, before any import of them
        return args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Preempted as e:
        print(f"stopped by {e}: every cell in training keeps its last epoch's checkpoint; rerun (or requeue) the same "
              "command to resume", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to continue", file=sys.stderr)
        return 130
