"""MLflow tracking, the only package that imports mlflow: the store and its client (store.py), a run being
written (records.py), datasets and logged weights (models.py), parent runs of grids and studies (groups.py),
reading back (query.py), waiting out a store outage (outages.py) and the UI (ui.py).
May import `config`, `machine`, `training` (to rebuild a logged model) and `analysis.figures`."""
