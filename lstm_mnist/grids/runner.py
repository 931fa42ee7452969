"""`ablate`: the one grid runner. The grid file is read once (grid.load, by the caller) and its variant chosen
once, here: --until-decided (until_decided.py), a grid with a [tune] table (tuned/run.py), else the plain grid
(ablate.py). Each variant takes the GridSpec and the Options (options.py) the CLI or the Python API built."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from . import grid
from .options import Options


def run(spec: grid.GridSpec, opts: Options, spelled: Callable[[str], str] | None = None) -> int:
    """Run (or dry-run) the grid as `opts` say; 0 unless a cell failed. `spelled`: how the caller names an option
    in its one-line errors (default: the CLI's flags)."""
    opts.check(spec.tune is not None, *([spelled] if spelled else []))
    if opts.until_decided:  # each variant imported when chosen: a plain grid loads none of the others' code
        from . import until_decided as variant
    elif spec.tune is not None:
        from .tuned import run as variant
    else:
        from . import ablate as variant
    return variant.main(spec, opts)


def run_file(path: str | Path, **options) -> int:
    """The grid file read and run with these options (Options' fields), as `python -m lstm_mnist ablate` runs it."""
    return run(grid.load(path), Options(**options))
