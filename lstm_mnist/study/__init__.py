"""`tune`: an Optuna study over the hyperparameters the ablation does not compare. The study file read into an
engine/search.StudySpec (file.py, pure) and the command (tune.py: one search through the engine, the best
trial exported). May import `config`, `space`, `machine`, `claims`, `training`, `tracking`, `engine` and
`grids` (a trial's cell); never `report` or above.
"""
