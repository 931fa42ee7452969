"""Tuned ablations: a grid whose every arm is tuned with an equal budget before it is compared (search.py: one
arm's Optuna study and its trials; schedule.py: trials, then each arm's tuned cells, on the grid's workers;
run.py: the `ablate` command for a grid file with a [tune] table)."""
