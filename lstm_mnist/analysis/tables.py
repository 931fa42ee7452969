"""Render a table of already-formatted string cells as Markdown, LaTeX (booktabs) or terminal text.

Written here rather than with pandas' to_markdown/to_latex: those need tabulate/jinja2 and their output
changes between versions; these few lines give the exact layout the report promises.
"""
from __future__ import annotations

import pandas as pd

EMPTY = "(no rows)"

# Characters LaTeX treats specially, and the Unicode the report's cells use.
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
          "±": r"$\pm$", "Δ": r"$\Delta$", "−": "-", "–": "--", "<": r"$<$", "†": r"\textdagger{}",
          "δ": r"$\delta$", "≥": r"$\geq$", "α": r"$\alpha$"}


def markdown(df: pd.DataFrame) -> str:
    """A pipe table; text columns left-aligned, the rest right-aligned (numbers line up in a README)."""
    if df.empty:
        return EMPTY + "\n"
    align = ["---" if _is_text(df[c]) else "---:" for c in df.columns]
    rows = [list(df.columns), align, *df.astype(str).values.tolist()]
    return "\n".join("| " + " | ".join(_md_cell(v) for v in r) + " |" for r in rows) + "\n"


def _md_cell(value: str) -> str:
    return str(value).replace("|", r"\|")


def _is_text(col: pd.Series) -> bool:
    """A column whose cells do not start like numbers (a sign, a digit, '<', '[')."""
    return not col.astype(str).str.match(r"^[-+−<\[\d]").any()


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


# Fitting a table to an article page (10pt, \textwidth = 345pt) in \footnotesize with narrow gaps.
TEXT_WIDTH_PT = 345.0
CHAR_PT = 4.4          # a generous average glyph width of 8pt Computer Modern (digits are 4.0pt)
GAP_PT = 6.0           # 2 x \tabcolsep (3pt)
MIN_TEXT_PT = 40.0
SLACK_PT = 8.0         # what the estimate may miss (math glyphs such as $\delta$, $\geq$): left unshared


def latex(df: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table that fits the text width (needs only the booktabs package): cells escaped, numbers
    right-aligned, long text wrapped in paragraph columns, headers on two lines; a table too wide even so
    is split into parts by columns, each repeating the first (key) column."""
    if df.empty:
        return f"% {latex_escape(caption)}: {EMPTY}\n"
    parts = _split(df)
    out = []
    for i, part in enumerate(parts):
        cap = caption if len(parts) == 1 else f"{caption} (part {i + 1} of {len(parts)})"
        out.append(_latex_table(part, cap, label if i == 0 else f"{label}-{i + 1}"))
    return "".join(out)


def _tokens(text: str) -> list[str]:
    """Pieces a line may break between: spaces, and after '+', ':' and ',' (arm names, alias chains)."""
    import re

    return [t for t in re.split(r"(?<=[+:,])|\s+", str(text)) if t]


def _widths(df: pd.DataFrame) -> list[tuple[bool, float, float]]:
    """(is text, natural width, narrowest width) of each column in points, its two-line header included."""
    out = []
    for c in df.columns:
        head = max(map(len, _header_lines(str(c))))
        cells = df[c].astype(str)
        natural = max(head, cells.str.len().max()) * CHAR_PT + GAP_PT
        if _is_text(df[c]):
            narrow = max(head, max(len(t) for v in cells for t in _tokens(v) or [""])) * CHAR_PT
            out.append((True, natural, max(narrow, MIN_TEXT_PT) + GAP_PT))
        else:
            out.append((False, natural, natural))
    return out


def _split(df: pd.DataFrame) -> list[pd.DataFrame]:
    """The table, or parts of it (by column, the first repeated) that each fit at their narrowest."""
    w = _widths(df)
    if sum(n for _, _, n in w) <= TEXT_WIDTH_PT or df.shape[1] <= 2:
        return [df]
    parts, current, used = [], [], w[0][2]
    for i in range(1, df.shape[1]):
        if current and used + w[i][2] > TEXT_WIDTH_PT:
            parts.append(current)
            current, used = [], w[0][2]
        current.append(i)
        used += w[i][2]
    parts.append(current)
    return [df.iloc[:, [0, *cols]] for cols in parts]


def _spec(df: pd.DataFrame) -> list[str]:
    """Column types: natural widths when they fit; else text columns become wrapping p{} columns, sharing
    what the numbers leave in proportion to how much they would like beyond their narrowest."""
    w = _widths(df)
    if sum(n for _, n, _ in w) <= TEXT_WIDTH_PT:
        return ["l" if t else "r" for t, _, _ in w]
    spare = max(TEXT_WIDTH_PT - SLACK_PT - sum(n for _, _, n in w), 0.0)
    want = sum(nat - nar for t, nat, nar in w if t) or 1.0
    return [f"p{{{min(nat, nar + spare * (nat - nar) / want) - GAP_PT:.1f}pt}}" if t else "r" for t, nat, nar in w]


def _header_lines(text: str) -> list[str]:
    """A header on one line, or on two split at the space nearest its middle."""
    words = text.split(" ")
    if len(words) < 2 or len(text) <= 10:
        return [text]
    cuts = [(abs(len(" ".join(words[:i])) - len(" ".join(words[i:]))), i) for i in range(1, len(words))]
    i = min(cuts)[1]
    return [" ".join(words[:i]), " ".join(words[i:])]


def _latex_header(text: str, align: str) -> str:
    lines = [latex_escape(x) for x in _header_lines(text)]
    if len(lines) == 1:
        return lines[0]
    return rf"\begin{{tabular}}[b]{{@{{}}{align}@{{}}}}{lines[0]}\\{lines[1]}\end{{tabular}}"


def _latex_cell(text: str, wrap: bool) -> str:
    cell = latex_escape(text)
    if wrap:  # let a long arm name or alias chain break after its separators
        for sep in ("+", ":", ","):
            cell = cell.replace(sep, sep + r"\allowbreak{}")
        cell = r"\raggedright " + cell
    return cell


def _latex_table(df: pd.DataFrame, caption: str, label: str) -> str:
    kinds = _spec(df)
    head = " & ".join(_latex_header(str(c), "l" if k != "r" else "r") for c, k in zip(df.columns, kinds))
    body = [" & ".join(_latex_cell(v, k.startswith("p")) for v, k in zip(row, kinds)) + r" \tabularnewline"
            for row in df.astype(str).values.tolist()]
    return "\n".join([
        r"\begin{table}[htbp]", r"\centering", r"\footnotesize", r"\setlength{\tabcolsep}{3pt}",
        rf"\caption{{{latex_escape(caption)}}}", rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{''.join(kinds)}}}", r"\toprule", head + r" \tabularnewline",
        r"\midrule", *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def text(df: pd.DataFrame, title: str) -> str:
    """What the terminal shows: a title and aligned columns."""
    return f"{title}\n{EMPTY if df.empty else df.to_string(index=False)}\n"
