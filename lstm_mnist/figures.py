"""Figures shared by the run artifacts and the report (matplotlib, no display)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def confusion_png(confusion: list[list[int]], path: str | Path, title: str = "test confusion matrix") -> Path:
    """Counts per (true, predicted) class, with the off-diagonal errors written in."""
    n = len(confusion)
    fig, ax = plt.subplots(figsize=(6, 5.4))
    im = ax.imshow(confusion, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if confusion[i][j] and i != j:
                ax.text(j, i, str(confusion[i][j]), ha="center", va="center", fontsize=7, color="crimson")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
