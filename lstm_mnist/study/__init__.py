"""Optuna studies over the hyperparameters the ablation does not compare: the study file (study.py, pure), one
study as the engine's work (search.py: the one trial path, which tuned grids use too), and the `tune` command
(tune.py). May import `config`, `space`, `claims`, `machine`, `tracking`, `training` and `grids`."""
