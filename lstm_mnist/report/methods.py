"""The methods text of a report (methods.md, methods.tex): what was done, in the words a reviewer reads, every
number from the store (the grid's plan, its runs' settings and tags), none typed by hand: the protocol, the
design, the budget, the seeds, the tuning, the tests, the software and the data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..analysis import effects
from ..analysis.tables import latex_escape
from .compare import Report

CITATION = Path(__file__).resolve().parents[2] / "CITATION.cff"  # a source checkout's; absent from a wheel
DESIGNS = {"leave_one_out": "leave-one-out (the model with every flag on against the same model with one flag "
                            "off, for each flag)",
           "add_one_in": "add-one-in (the baseline with every flag off against the baseline with one flag on, "
                         "for each flag)"}


def settings(r: Report) -> dict:
    """The grid's common settings (its runs' config keys other than the factors and the seed), or {}."""
    runs = r.grid.runs
    return json.loads(runs["settings"].iloc[0]) if "settings" in runs and len(runs) else {}


def _values(r: Report, column: str) -> list[str]:
    runs = r.grid.runs
    return sorted({str(v) for v in runs[column] if str(v) not in ("", "nan")}) if column in runs else []


def _join(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def protocol(r: Report) -> str:
    task, s = r.grid.task, settings(r)
    fixed = [f"{k} = {s[k]}" for k in sorted(task.never_searched)
             if s.get(k) is not None and k not in {f.name for f in task.flags}]
    version = s.get("protocol_version", "")
    return (f"Each run trained task {task.name} (version {task.version}) on its training split and, after every "
            "epoch, scored its weights on the whole validation split, which is never augmented; the weights with the "
            "lowest validation loss were kept, and the test split was scored once per run, on those weights. The "
            "test split chose nothing: no weights, no epoch, no hyperparameter"
            + (f". Fixed for every run by the protocol: {_join(fixed)}" if fixed else "")
            + (f" (protocol version {version})" if version else "") + ".")


def budget(r: Report) -> str:
    s, runs = settings(r), r.grid.runs
    stops = s.get("patience") and "early_stopping" in {f.name for f in r.grid.task.flags}
    parts = [f"at most {s['max_epochs']} epochs" if s.get("max_epochs") else "",
             f"early stopping (where the arm has the flag) after {s['patience']} epochs without a lower validation "
             "loss" if stops else "",
             f"batches of {s['batch_size']}" if s.get("batch_size") else "",
             f"precision {s.get('precision') or '32'}"]
    text = "Budget: " + _join([p for p in parts if p]) + "."
    e = runs["epochs_trained"].astype(float).dropna() if "epochs_trained" in runs else []
    if len(e):
        text += (f" Runs trained {int(e.min())} to {int(e.max())} epochs (median {np.median(e):g}); "
                 f"{len(runs)} runs in all.")
    return text


def design(r: Report) -> str:
    g = r.grid
    designs = sorted({d for ds in g.runs.get("designs", []) for d in str(ds).split(",") if d in DESIGNS})
    studied = set(r.worth["flag"]) if "flag" in r.worth else set()
    flags = [f for f in g.task.flag_names if f in studied]  # in the task's order
    parts = [DESIGNS[d] for d in designs]
    if r.factorial:
        d = r.factorial.design
        alias = ("; each main effect is aliased with two-factor interactions (a screening design)"
                 if d.resolution is not None and d.resolution < 4 else
                 "; no main effect is aliased with a two-factor interaction, and the two-factor interactions are "
                 "estimated as alias chains" if d.p else "")
        kind = d.resolution_text if d.p else "full"
        parts.append(f"a {d.title} {kind} factorial of {d.runs} runs per seed over "
                     + _join([f"{ch} = {x}" for ch, x in zip(d.letters, d.factors)])
                     + (f", generators {_join(d.generator_text())}" if d.p else "") + alias)
    return (f"Design: {_join(parts)}; {len(r.arms)} arms" + (f", flags {_join(flags)}" if flags else "") + ".")


def seeds(r: Report) -> str:
    g = r.grid
    text = (f"Seeds: {len(g.seeds)} ({', '.join(map(str, g.seeds))}), each trained by every arm, so that each "
            "comparison is paired by seed (a seed fixes the initialization, the batch order and the augmentation).")
    if r.looks is not None:
        d = r.looks.design
        text += (f" Seeds were added until every effect was decided: in blocks of {d.block}, from {d.first} to at "
                 f"most {d.most}, looking after each block; {r.looks.seeds_used} were used. "
                 + d.guarantee(r.looks.delta) + ".")
    return text


def tuning(r: Report) -> str:
    t = r.grid.tune
    if not t:
        return ""
    st = t.search or {}
    how = (f"sampler {st['sampler']} (seed {st.get('sampler_seed', 0)}, {st.get('sampler_startup_trials', 0)} random "
           f"startup trials), pruner {st.get('pruner', '')}" if st.get("sampler") else
           "the sampler and pruner of its grid file (not recorded by this plan)")
    repeats = (f"; each arm was tuned by {t.repeats} independent studies, each replicate seed trained at one "
               "study's values" if t.repeats > 1 else "")
    return (f"Tuning: every arm searched the keys of {_join(sorted(t.space))} that its config reads, with the same "
            f"budget of {t.trials} trials (complete or pruned), {how}, each trial trained at seed {t.tune_seed} "
            f"(never a replicate seed) and scored on the validation split by {t.objective}{repeats}; each arm's "
            "replicates then trained at its best trial's values.")


def tests(r: Report) -> str:
    g = r.grid
    parts = []
    if len(r.comparisons):
        parts.append("each effect of a one-flag design is the mean over seeds of the paired difference (with minus "
                     "without the flag); its 95% confidence interval is a t-interval over seeds and its p-value a "
                     "two-sided paired t-test, Holm-adjusted within each design")
    if r.factorial:
        a = r.factorial.analysis
        parts.append(f"the factorial effects (mean where the factor is on minus where it is off) come from an "
                     f"ordinary least-squares fit with the seed as a block ({a.df:g} residual degrees of freedom), "
                     "with two-sided t-tests Holm-adjusted within the main effects and separately within the "
                     "interaction chains" if a.method == effects.OLS else
                     "the factorial effects' standard errors are Lenth's pseudo standard error (one seed: no "
                     "residual degrees of freedom)")
    text = "Tests: " + "; ".join(parts)
    if g.delta and r.looks is None:
        text += (f". A verdict names an effect when its 95% interval excludes 0, and no effect of at least "
                 f"delta = {g.delta:g} (the smallest effect of interest, set before the grid ran) when its 90% "
                 "interval lies inside (-delta, delta), two one-sided tests at 0.05 each; otherwise undecided")
    elif g.delta:
        text += (f". Verdicts (delta = {g.delta:g}, set before the grid ran) are those of the looks, at the error "
                 "rates above")
    return text + "."


def software(r: Report) -> str:
    versions = [f"{name} {_join(_values(r, f'{name.lower()}_version'))}" for name in ("torch", "Lightning", "MLflow")
                if _values(r, f"{name.lower()}_version")]
    commits = [c[:10] for c in _values(r, "git_commit")]
    data = _values(r, "data_fingerprint")
    cite = citation()
    used = versions + ([f"lstm-mnist at commit {_join(commits)}"] if commits else [])
    return ("Software and data: " + (f"runs trained with {_join(used)}" if used else "versions not recorded")
            + (f"; data fingerprint {_join(data)}" if data else "") + ". Every run is recorded in MLflow (experiment "
            f"{r.grid.experiment}, grid {r.grid.name})" + (f"; cite the harness as {cite}" if cite else "") + ".")


def citation() -> str:
    """'the lstm-mnist authors, "title", version 0.1.0' from CITATION.cff, or '' where there is none."""
    if not CITATION.is_file():
        return ""
    import yaml

    c = yaml.safe_load(CITATION.read_text())
    authors = _join([a.get("name") or f"{a.get('given-names', '')} {a.get('family-names', '')}".strip()
                     for a in c.get("authors", [])])
    return f"{authors}, \"{c.get('title', '')}\", version {c.get('version', '')}"


SECTIONS = (("Protocol", protocol), ("Budget", budget), ("Design", design), ("Seeds", seeds), ("Tuning", tuning),
            ("Tests", tests), ("Software and data", software))


def paragraphs(r: Report) -> list[tuple[str, str]]:
    """(heading, text) of every section the grid has (a grid without tuning has no tuning section)."""
    return [(h, text) for h, f in SECTIONS if (text := f(r))]


def _body(heading: str, text: str) -> str:
    """A section's text without its "Heading: " (the heading is set apart), as a sentence."""
    body = text.split(": ", 1)[1] if text.startswith(heading + ":") else text
    return body[:1].upper() + body[1:]


def markdown(r: Report) -> str:
    return "\n".join([f"# Methods: grid {r.grid.name}\n"] + [f"**{h}.** {_body(h, t)}\n" for h, t in paragraphs(r)])


def latex(r: Report) -> str:
    """\\paragraph per section, escaped, set sloppy (hashes and names do not hyphenate): \\input it where the
    paper's methods go."""
    head = [f"% The methods of grid {latex_escape(r.grid.name)}, generated by `make report` from MLflow.", ""]
    return "\n".join(head + [f"\\begin{{sloppypar}}\\paragraph{{{h}.}} {latex_escape(_body(h, t))}\\end{{sloppypar}}\n"
                              for h, t in paragraphs(r)])
