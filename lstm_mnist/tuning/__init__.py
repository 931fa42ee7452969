"""Optuna studies over the hyperparameters the ablation does not compare: the study file (study.py, pure),
one trial and its study (objective.py), and the command that runs workers and exports the best trial
(tune.py). May import `config`, `space`, `claims`, `machine`, `runs`, `tracking` and `training`."""
