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
          "±": r"$\pm$", "Δ": r"$\Delta$", "−": "-", "–": "--", "<": r"$<$", "†": r"\textdagger{}"}


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


def latex(df: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs}); cells escaped, numbers right-aligned."""
    if df.empty:
        return f"% {latex_escape(caption)}: {EMPTY}\n"
    spec = "".join("l" if _is_text(df[c]) else "r" for c in df.columns)
    body = [" & ".join(latex_escape(v) for v in row) + r" \\" for row in df.astype(str).values.tolist()]
    return "\n".join([
        r"\begin{table}[htbp]", r"\centering", rf"\caption{{{latex_escape(caption)}}}", rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(latex_escape(c) for c in df.columns) + r" \\",
        r"\midrule", *body, r"\bottomrule", r"\end{tabular}", r"\end{table}", ""])


def text(df: pd.DataFrame, title: str) -> str:
    """What the terminal shows: a title and aligned columns."""
    return f"{title}\n{EMPTY if df.empty else df.to_string(index=False)}\n"
