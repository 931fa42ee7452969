"""`python -m lstm_mnist.tools.wheels build DIR [--for 3.12] [--skip "torch ..."] [--profile slim]` and
`python -m lstm_mnist.tools.wheels install DIR --venv .venv [--stamp FILE]`: what `make wheelhouse` and
`make install WHEELS=dir` run. Standard library only (and pip's vendored `packaging`): it runs before
anything is installed."""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from pathlib import Path

from . import build, install
from .lock import LOCK, Lock, WheelError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lstm_mnist.tools.wheels", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="download every wheel the project needs into DIR, with a lock")
    b.add_argument("dest")
    b.add_argument("--for", dest="target", help="another Python: 3.12 -> cp312 manylinux x86_64 (default: this one)")
    b.add_argument("--skip", default="", help='packages the target has already, e.g. "torch torchvision lightning"')
    b.add_argument("--profile", default="full", help="slim (no UI, Ray, PostgreSQL or tests) or full (default)")
    b.add_argument("--dry-run", action="store_true", help="resolve and list the wheels; download nothing")
    i = sub.add_parser("install", help="install the project from DIR with pip --no-index")
    i.add_argument("folder")
    i.add_argument("--venv", default=".venv")
    i.add_argument("--stamp", help="the file that marks the venv installed (the Makefile's)")
    args = p.parse_args(argv)
    if sys.version_info < (3, 11):
        print(f"error: {sys.executable} is Python {platform.python_version()}; the project needs 3.11 or newer: "
              "give PYTHON=python3.11 (or 3.12)", file=sys.stderr)
        return 2
    python = os.environ.get("LSTM_MNIST_PYTHON") or sys.executable
    try:
        if args.command == "build":
            made_by = "make wheelhouse " + " ".join(
                f"{k}={shlex.quote(v)}" for k, v in (("WHEELS", f"{args.dest.rstrip('/')}/"), ("FOR", args.target),
                                                     ("SKIP", args.skip), ("PROFILE", args.profile)) if v)
            lock = build.build(Path(args.dest), build.Target.parse(args.target), args.skip.split(), args.profile,
                               python, args.dry_run, made_by)
            print(_built(lock, Path(args.dest), args.dry_run))
        else:
            install.install(Path(args.folder), Path(args.venv), python, Path(args.stamp) if args.stamp else None)
            print(f"installed the project into {args.venv}/ from {args.folder.rstrip('/')}/ with pip --no-index")
    except WheelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _built(lock: Lock, dest: Path, dry_run: bool) -> str:
    h = lock.header
    skip = f"; left to the target: {h['skip']}" if h.get("skip") else ""
    if dry_run:
        names = ", ".join(f"{w.name} {w.version}" for w in lock.wheels)
        return f"{len(lock.wheels)} wheels for {h['target']} (profile {h['profile']}{skip}): {names}"
    size = sum(w.size for w in lock.wheels) / 2**20
    return (f"{len(lock.wheels)} wheels, {size:.1f} MiB, in {dest}/ for {h['target']} (profile {h['profile']}"
            f"{skip}); lock: {dest}/{LOCK}")


if __name__ == "__main__":
    sys.exit(main())
