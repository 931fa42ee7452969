"""Tuned ablations: a grid whose every arm is tuned with an equal budget before it is compared (search.py: one
arm's search, tuning/search.py's, its tuning run and its tuned cells; schedule.py: trials, then each arm's
tuned cells, as the engine's work source; run.py: `ablate` for a grid file with a [tune] table)."""
