"""One recorded run: train a config and record it in MLflow unless its identity is already FINISHED
(runner.py), and re-verify a recorded run from its logged weights (evaluate.py).
May import `config`, `training` and `tracking`."""
