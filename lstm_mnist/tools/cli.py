"""The tools' commands on the harness's command line: `gpu-probes` and `gpu-accept`, added to the harness's
parser (cli.parser) by `python -m lstm_mnist` (__main__.py). Here, not in cli.py: the tools import the harness,
the harness never imports the tools."""
from __future__ import annotations

import argparse

from .. import cli


def cmd_gpu_probes(args) -> int:
    from . import probes  # imports neither MLflow nor Optuna

    probes.main(out=args.out, mps=args.mps, data_dir=args.data_dir)
    return 0


def cmd_gpu_accept(args) -> int:
    from .accept import run

    skip = tuple(n.strip() for n in (args.skip or "").split(",") if n.strip())
    return run.main(out=args.out, part=args.part, cpu=args.cpu, again=args.again, budget=args.budget, skip=skip)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """gpu-probes and gpu-accept, with their options, among the harness's subcommands."""
    gp = sub.add_parser("gpu-probes", help="speed probes of one optimizer step: harness, bare loop, CUDA graph, "
                        "fused models vs processes under MPS -> reports/gpu-probes.json",
                        description="Prototypes that decide what the training path builds next (tools/probes.py). "
                        "On a CPU, a smoke run without the probes that need CUDA.")
    cli.measure_options(gp, "reports/gpu-probes.json", "also measure M worker processes under a private MPS daemon")
    gp.set_defaults(func=cmd_gpu_probes)

    ga = sub.add_parser("gpu-accept", help="every GPU-specific check and the GPU answer, resumable -> OUT/",
                        description="Every GPU-specific path of the harness checked, and the GPU answer "
                        "(experiments/factorial-gpu.toml and its report), in two resumable parts of under 8 "
                        "minutes each on an H200: answer (gpu-check, grid, report) and checks (kill + rerun, "
                        "tune, evaluate on the CPU, Ray, speed probes). Summary in OUT/summary.txt.")
    ga.add_argument("--out", default="gpu-accept", help="folder for everything it writes (default gpu-accept/)")
    ga.add_argument("--part", default="all", choices=["answer", "checks", "all"], help="which steps (default all)")
    ga.add_argument("--cpu", action="store_true", help="CPU mode where there is no GPU: tiny budgets, no MPS, "
                    "no CUDA probes (what the test suite runs)")
    ga.add_argument("--again", action="store_true", help="run steps that passed before too")
    ga.add_argument("--skip", metavar="STEP[,STEP]", help="leave out steps that cannot run here, e.g. ray")
    ga.add_argument("--budget", type=cli.positive_seconds, metavar="SECONDS", help="end this call within SECONDS: "
                    "a command that would run past it is cut (and resumes on the next call), later steps wait for "
                    "that call")
    ga.set_defaults(func=cmd_gpu_accept)


def parser() -> argparse.ArgumentParser:
    """`python -m lstm_mnist`'s parser: the harness's commands and the tools'."""
    return cli.parser(more=add_commands)
