"""The engine every command trains through: a work source hands out jobs (jobs.py), the one writer records
their runs (writer.py), and they train in this process or in worker processes (pool.py) or as Ray tasks
(ray_tasks.py), with progress lines (progress.py); drive.py runs a source to its end and makes the runs that
hold the jobs' runs once, under a claim. An Optuna study is a work source too (tuning/search.py). May import
`config`, `machine`, `claims`, `training` and `tracking`; never `tuning`, `grids`, `report` or above.
"""
