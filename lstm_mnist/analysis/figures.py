"""Figures shared by the run artifacts and the report (matplotlib, no display).

Every report figure is written three ways (`_save`): a PNG for the Markdown report and MLflow's UI, and a PDF and an
SVG for a paper, drawn two columns wide (7 in: a two-column page's text width; LaTeX scales it to one column with
width=\\columnwidth), fonts embedded (TrueType in the PDF, glyphs as paths in the SVG), and with no date in them, so
the same numbers give the same files."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

WIDTH_IN = 7.0   # a two-column page's text width: every report figure's width
VECTORS = (".pdf", ".svg")  # written beside each report figure's PNG
plt.rcParams.update({"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "path", "svg.hashsalt": "lstm-mnist"})

if TYPE_CHECKING:
    from .budget import Curve


def confusion_png(confusion: list[list[int]], path: str | Path, title: str = "test confusion matrix",
                  vectors: bool = False) -> Path:
    """Counts per (true, predicted) class, with the off-diagonal errors written in (PDF and SVG beside the PNG
    with `vectors`: the report's; a run's artifact is the PNG alone)."""
    n = len(confusion)
    fig, ax = plt.subplots(figsize=(6, 5.4))
    im = ax.imshow(confusion, cmap="Blues")
    for i in range(n):
        for j in range(n):
            if confusion[i][j] and i != j:
                ax.text(j, i, str(confusion[i][j]), ha="center", va="center", fontsize=7, color="crimson")
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path, vectors)


# ---- report
def delta_png(flags: list[str], designs: dict[str, list[tuple[float, float, float]]], metric: str,
              path: str | Path) -> Path:
    """Δmetric per flag with 95% CI bars, one marker per design; `designs` maps a label to (Δ, lo, hi) per flag.

    A missing CI (too few seeds) is drawn as a hollow marker without a bar, so it cannot pass for a tight one.
    """
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.55 * len(flags) + 1.6))
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


VERDICT_COLORS = {"effect": "tab:red", "no effect ≥ δ": "tab:green", "undecided": "dimgrey", "": "tab:blue"}


def answer_png(rows: list[tuple[str, float, float, float, str]], delta: float | None, metric: str, path: str | Path,
               title: str) -> Path:
    """The grid's answer in one figure: every effect (`rows`: label, estimate, CI low, CI high, verdict) as its
    estimate and 95% CI, δ's band shaded when the grid has one, and each verdict written at the right and
    coloured by it; an effect without a CI (too few seeds) is a hollow marker."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.32 * len(rows) + 1.3))
    if delta:
        ax.axvspan(-delta, delta, color="tab:green", alpha=0.12, lw=0, label=f"±δ = ±{delta:g}")
    ax.axvline(0, color="grey", lw=0.8)
    for y, (label, est, lo, hi, verdict) in enumerate(rows):
        color = VERDICT_COLORS.get(verdict, "tab:blue")
        known = lo == lo and hi == hi  # NaN != NaN
        ax.errorbar(est, y, xerr=[[est - lo], [hi - est]] if known else None, fmt="o", ms=4, capsize=2, lw=1.2,
                    color=color, mfc=color if known else "white")
        if verdict:
            ax.annotate(verdict, (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=7, color=color)
    ax.set(yticks=range(len(rows)), yticklabels=[r[0] for r in rows], ylim=(len(rows) - 0.5, -0.5),
           xlabel=f"effect on {metric} (with − without), 95% CI", title=title)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="x", alpha=0.3)
    if delta:
        ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def curves_png(curves: dict[str, tuple[list[int], list[float]]], ylabel: str, path: str | Path) -> Path:
    """One line per arm (its mean over seeds at each epoch)."""
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.4))
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
    """Budget curves (see budget.py): one line per arm, the expected best after k trials, its bootstrap band shaded.
    Two panels: where the arms differ (budget_zoom: from k = 2 on, the expected bests only) and, small, the full
    range from one trial, where a single trial's spread would squeeze the differences into a few pixels."""
    fig, (ax, whole) = plt.subplots(1, 2, figsize=(WIDTH_IN, 3.8), gridspec_kw={"width_ratios": [2.4, 1]})
    colors = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20").colors
    for i, (arm, c) in enumerate(curves.items()):
        color = colors[i % len(colors)]
        for a, lw in ((ax, 1.4), (whole, 0.9)):
            a.plot(c.ks, c.mean, color=color, lw=lw, marker="o" if len(c.ks) <= 20 else None, ms=3 if a is ax else 1.5,
                   label=arm if a is ax else None)
            a.fill_between(c.ks, c.lo, c.hi, color=color, alpha=0.07 if a is ax else 0.15, lw=0)
    zoom = budget_zoom(curves)
    if zoom:
        ax.set_ylim(*zoom)
        whole.axhspan(*zoom, color="grey", alpha=0.12, lw=0)
    ax.set(xlabel="number of trials k", ylabel=f"expected best {objective}", title=title)
    whole.set(xlabel="k", title="full range (grey: the left panel)")
    whole.title.set_fontsize(8)
    for a in (ax, whole):
        a.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        a.grid(alpha=0.3)
    if curves:
        ax.legend(loc="lower right", fontsize=7, ncol=2 if len(curves) > 6 else 1)
    return _save(fig, path)


def budget_zoom(curves: dict[str, Curve]) -> tuple[float, float] | None:
    """The budget curves' y range where the arms differ: every arm's expected best over the second half of the
    trials (from k = 2 on at least: a single trial's is a draw's mean, far below), padded by a tenth; None when
    there is nothing to zoom into."""
    last = max((int(max(c.ks)) for c in curves.values() if len(c.ks)), default=0)
    start = max(2, -(-last // 2))
    values = [v for c in curves.values() for k, v in zip(c.ks, c.mean) if k >= start]
    if not values:
        return None
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.1, 1e-4)
    return lo - pad, hi + pad


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
    fig, axes = plt.subplots(rows, cols, figsize=(WIDTH_IN, 2.2 * rows + 0.6), squeeze=False, sharey=True)
    low, high = looks_scale(series, delta)
    clipped = 0
    for ax, (name, (seeds, est, lo, hi, tlo, thi)) in zip(axes.flat, series.items()):
        ax.axhspan(-delta, delta, color="tab:green", alpha=0.12, lw=0, label=f"±δ = ±{delta:g}")
        ax.axhline(0, color="grey", lw=0.8)
        c = [min(max(v, low), high) for v in est]
        clo, chi = ([min(max(v, low), high) for v in vs] for vs in (lo, hi))
        ax.errorbar(seeds, c, yerr=[[e - v for e, v in zip(c, clo)], [v - e for e, v in zip(c, chi)]], fmt="o", ms=3,
                    capsize=2, color="tab:blue", lw=1)
        ax.vlines(seeds, [min(max(v, low), high) for v in tlo], [min(max(v, low), high) for v in thi],
                  color="tab:blue", lw=4, alpha=0.45)
        for s, a, b in zip(seeds, lo, hi):  # an interval past the scale: an arrow at the edge it leaves by
            for end, edge, mark, va in ((a, low, "v", "bottom"), (b, high, "^", "top")):
                if (end < low) if mark == "v" else (end > high):
                    ax.plot(s, edge, marker=mark, color="crimson", ms=5, clip_on=False)
                    ax.annotate(f"{end:+.2g}", (s, edge), textcoords="offset points", xytext=(5, 0), fontsize=6,
                                color="crimson", va=va)
            clipped += (a < low) + (b > high)
        ax.set_title(name, fontsize=8)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    for ax in list(axes.flat)[:len(series)]:
        ax.set_xlabel("seeds")
    for ax in axes[:, 0]:
        ax.set_ylabel(f"Δ {metric}")
    axes.flat[0].set_ylim(low, high)
    axes.flat[0].legend(loc="best", fontsize=6)
    off = f"; red arrows: {clipped} interval ends beyond the scale" if clipped else ""
    fig.suptitle(f"each effect at each look ({metric}): 1 − α_k interval (thin), 1 − 2α_k (thick){off}", fontsize=9)
    return _save(fig, path)


def looks_scale(series: dict, delta: float) -> tuple[float, float]:
    """The looks plot's y range: δ's band and every effect's last look (the intervals that decided, or the
    narrowest so far), padded by a fifth; an earlier, wider interval runs off it and is marked so."""
    ends = [-delta, delta]
    for seeds, est, lo, hi, tlo, thi in series.values():
        if seeds:
            ends += [est[-1], lo[-1], hi[-1], tlo[-1], thi[-1]]
    lo, hi = min(ends), max(ends)
    pad = (hi - lo) * 0.2
    return lo - pad, hi + pad


def _save(fig, path: str | Path, vectors: bool = True) -> Path:
    """The PNG at `path`, and the same figure as PDF and SVG beside it (vector_files)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    for suffix, stamp in zip(VECTORS if vectors else (), ({"CreationDate": None}, {"Date": None})):
        fig.savefig(Path(path).with_suffix(suffix), bbox_inches="tight", metadata=stamp)
    plt.close(fig)
    return Path(path)


def vector_files(png: Path) -> list[Path]:
    """The PDF and SVG `_save` wrote beside a figure's PNG."""
    return [png.with_suffix(s) for s in VECTORS]
