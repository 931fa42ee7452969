"""Ablation grids: a grid file expanded into cells (grid.py, pure), the plan against the store (plan.py), the
one MLflow writer (writer.py), worker processes (pool.py), progress (progress.py) and the command (ablate.py).
May import `config`, `space`, `analysis`, `claims`, `machine`, `tracking` and `training`; never `report` or `tuning`."""
