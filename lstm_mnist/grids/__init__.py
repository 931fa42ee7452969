"""Ablation grids, the definition and its variants: a grid file read into a GridSpec and expanded into cells
(grid.py, pure), the plan against the store (plan.py) and the plan as recorded for the report (planned.py), the
options a grid runs with (options.py, built once by the CLI or the API) and the one runner that picks the
variant (runner.py): the plain grid (ablate.py), the tuned grid (tuned/: every arm searched with an equal budget
before its replicates) and the grid run until decided (until_decided.py: seeds in blocks, judged by the stopping
rule). May import `config`, `analysis`, `machine`, `claims`, `training`, `tracking`, `engine` and `tuning`; never
`report` or above (until_decided is handed the report's judge by the caller).
"""
