"""Tuning, one home: a search's settings (settings.py: budget, objective and its direction, the sampler and pruner
tables), its space (space.py), a study file (file.py), one Optuna study as the engine's work (search.py: Search,
Trial, the best trial of a budget), the `tune` command (tune.py) and Optuna's dashboard on a study (dashboard.py).
A tuned grid (grids/tuned/) runs one Search per arm. "Study" here means an Optuna study; a grid file is a grid.
May import `config`, `metrics`, `task`, `machine`, `claims`, `tracking` and `engine`; never `grids` or above.
"""
