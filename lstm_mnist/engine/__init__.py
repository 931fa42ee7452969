"""The engine every command trains through: a work source hands out jobs (jobs.py), the one writer records
their runs (writer.py), and they train in this process or in worker processes (pool.py) or as Ray tasks
(ray_tasks.py), with progress lines (progress.py); drive.py runs a source to its end and makes the runs that
hold the jobs' runs once, under a claim. search.py is an Optuna study as a work source: the one trial path of
`tune` and of tuned grids. May import `config`, `space`, `machine`, `claims`, `training` and `tracking`;
never `grids`, `study`, `report` or above.
"""
