"""Figures shared by the run artifacts and the report (matplotlib, no display)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

if TYPE_CHECKING:
    from .budget import Curve


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


# ---- report
def delta_png(flags: list[str], designs: dict[str, list[tuple[float, float, float]]], metric: str,
              path: str | Path) -> Path:
    """Δmetric per flag with 95% CI bars, one marker per design; `designs` maps a label to (Δ, lo, hi) per flag.

    A missing CI (too few seeds) is drawn as a hollow marker without a bar, so it cannot pass for a tight one.
    """
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(flags) + 1.6))
    offsets = [0.15 * (i - (len(designs) - 1) / 2) for i in range(len(designs))]
    for (label, points), off, color in zip(designs.items(), offsets, ("tab:blue", "tab:orange", "tab:green")):
        for y, (d, lo, hi) in enumerate(points):
            known = lo == lo and hi == hi  # NaN != NaN
            err = [[d - lo], [hi - d]] if known else None
            ax.errorbar(d, y + off, xerr=err, fmt="o", color=color, capsize=3,
                        mfc=color if known else "white", label=label if y == 0 else None)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set(yticks=range(len(flags)), yticklabels=flags, xlabel=f"Δ {metric} (with − without the flag), 95% CI",
           title=f"what each enhancement is worth ({metric})")
    ax.invert_yaxis()  # rank 1 at the top
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def curves_png(curves: dict[str, tuple[list[int], list[float]]], ylabel: str, path: str | Path) -> Path:
    """One line per arm (its mean over seeds at each epoch)."""
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab20").colors
    for i, (arm, (epochs, values)) in enumerate(curves.items()):
        ax.plot(epochs, values, color=colors[i % len(colors)], lw=1.4, label=arm)
    ax.set(xlabel="epoch", ylabel=f"{ylabel} (mean over seeds)", title=f"validation curves per arm: {ylabel}")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return _save(fig, path)


def budget_png(curves: dict[str, Curve], objective: str, path: str | Path,
               title: str = "expected best validation score vs trials") -> Path:
    """Budget curves (see budget.py): one line per arm, the expected best after k trials, its bootstrap band shaded."""
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20").colors
    for i, (arm, c) in enumerate(curves.items()):
        color = colors[i % len(colors)]
        ax.plot(c.ks, c.mean, color=color, lw=1.4, marker="o" if len(c.ks) <= 20 else None, ms=3, label=arm)
        ax.fill_between(c.ks, c.lo, c.hi, color=color, alpha=0.15, lw=0)
    ax.set(xlabel="number of trials k", ylabel=f"expected best {objective}", title=title)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if len(curves) > 6:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    elif curves:
        ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def half_normal_png(points: list[tuple[str, float, float]], metric: str, design: str, path: str | Path,
                    key: str = "") -> Path:
    """Daniel's half-normal plot: |effect| against its half-normal quantile, every contrast labelled.
    Inactive effects fall on a line through the origin; active ones stand above it (the line's slope is
    the median-based scale of the smaller half, drawn for reference)."""
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    q = [p[1] for p in points]
    v = [p[2] for p in points]
    ax.scatter(q, v, color="tab:blue", zorder=3)
    for i, (label, x, y) in enumerate(points):  # small effects crowd the origin: alternate above and below
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4 if i % 2 else -10), fontsize=7)
    if key:  # the letters' factors; an interaction is labelled by its chain's first word (see the table)
        ax.text(0.02, 0.88, key.replace(", ", "\n"), transform=ax.transAxes, ha="left", va="top", fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "grey"})
    if points:
        half = points[: max(1, len(points) // 2)]
        slope = sum(y for _, _, y in half) / max(sum(x for _, x, _ in half), 1e-12)
        ax.plot([0, max(q)], [0, slope * max(q)], color="grey", lw=0.8, ls="--", label="line through the smaller half")
        ax.legend(loc="upper left", fontsize=8)
    ax.set(xlabel="half-normal quantile", ylabel=f"|effect| on {metric}",
           title=f"half-normal plot of the {design} effects ({metric})")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def intervals_png(series: dict[str, tuple[list[int], list[float], list[float], list[float], list[float], list[float]]],
                  delta: float, metric: str, path: str | Path) -> Path:
    """One panel per effect: its estimate and intervals (`series`: seeds, estimates, lows, highs of the 1 − α_k
    interval, lows, highs of the 1 − 2α_k one) at each look, against the seeds seen, with the ±δ band shaded and
    0 drawn: "effect" once the thin bar leaves 0, "no effect ≥ δ" once the thick (1 − 2α_k) bar sits inside the band."""
    n = max(1, len(series))
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (name, (seeds, est, lo, hi, tlo, thi)) in zip(axes.flat, series.items()):
        ax.axhspan(-delta, delta, color="tab:green", alpha=0.12, lw=0, label=f"±δ = ±{delta:g}")
        ax.axhline(0, color="grey", lw=0.8)
        err = [[e - low for e, low in zip(est, lo)], [h - e for e, h in zip(est, hi)]]
        ax.errorbar(seeds, est, yerr=err, fmt="o", ms=4, capsize=3, color="tab:blue", lw=1)
        ax.vlines(seeds, tlo, thi, color="tab:blue", lw=4, alpha=0.45)
        ax.set_title(name, fontsize=9)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    for ax in list(axes.flat)[:len(series)]:
        ax.set_xlabel("seeds")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"Δ {metric}")
    axes.flat[0].legend(loc="best", fontsize=7)
    fig.suptitle(f"each effect at each look against the seeds ({metric}): 1 − α_k interval (thin), 1 − 2α_k (thick)",
                 fontsize=10)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
