"""The metrics the harness scores runs by, which way each is better and how a person reads its name: written
once, read by the task protocol (a task's metric), tracking (a run's test metrics), tuning (an objective's
direction), the CLI and the report (ranking, labels). Pure: imports nothing."""
from __future__ import annotations

TEST = ("test_f1", "test_acc", "test_loss")    # every run's test split, scored once with its best-val_loss weights
OBJECTIVES = ("val_f1", "val_loss")            # what a search may select on: a validation metric, never a test one
COSTS = ("epochs_trained", "train_time_s")     # what a run cost
SUMMARY = (*TEST, *COSTS)                      # per arm in the report: mean ± sd

BETTER = {"test_f1": "maximize", "test_acc": "maximize", "test_loss": "minimize",
          "val_f1": "maximize", "val_acc": "maximize", "val_loss": "minimize",
          "epochs_trained": "minimize", "train_time_s": "minimize"}
LABELS = {"test_f1": "test F1", "test_acc": "test acc", "test_loss": "test loss",
          "epochs_trained": "epochs", "train_time_s": "train time (s)"}


def direction(metric: str) -> str:
    """"maximize" or "minimize": which way `metric` is better."""
    return BETTER[metric]


def lower_is_better(metric: str) -> bool:
    return BETTER[metric] == "minimize"
