"""Every artifact file the harness writes on a run and reads back (the report, a rerun, `evaluate`), named once."""
from __future__ import annotations

PLAN = "plan.json"                  # a grid's parent run: its planned cells (grids/planned.Plan)
LOOKS = "looks.json"                # a grid run --until-decided, on its parent: the looks so far
TRIALS = "trials.json"              # a search's run (a study's parent, an arm's tuning run): every trial of it
PER_CLASS = "per_class.json"        # a cell's run: precision, recall and F1 per class on the test split
CONFUSION = "confusion_matrix.json"  # a cell's run: the test split's confusion matrix (rows: true class)
CONFUSION_PNG = "confusion_matrix.png"
REPORT = "report"                   # a grid's parent run: the folder its report's files are logged under
