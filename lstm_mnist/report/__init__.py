"""The results report of a grid, derived from MLflow and never edited: which runs are the grid's (members.py),
its rows (gather.py), the numbers (compare.py, factorial.py), the tables and documents (render.py), figures
(plots.py), and writing and logging it all (make.py). May import `config`, `analysis`, `machine`, `tracking`,
`engine` (the trials file's name) and `grids` (the
plan); never `study` or above."""
