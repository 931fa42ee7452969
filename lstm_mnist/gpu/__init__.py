"""What a GPU does with the harness: the measurement (check.py), fixed-length slices of training in worker
processes (slices.py) and a private NVIDIA MPS daemon (mps.py). Imports `config`, `machine`, `training` and
`grids.grid`; never mlflow or optuna, so a bare GPU box with torch runs the check."""
