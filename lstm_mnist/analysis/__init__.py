"""Pure statistics and rendering, no torch and no MLflow: t-intervals, paired tests and Holm (stats.py),
two-level fractional designs (fractional.py) and their analysis (effects.py), Markdown/LaTeX tables
(tables.py) and figures (figures.py). Imports only `config`, numpy, scipy, pandas and matplotlib."""
