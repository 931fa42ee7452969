"""Fractional factorial designs and their analysis: the generator table, effects against an independent
least-squares fit (statsmodels), recovery of known effects, missing runs, and the report on a fake store."""
import itertools
import shutil

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param

from lstm_mnist.builtin import config
from lstm_mnist.analysis import effects, fractional
from lstm_mnist.grids import planned
from lstm_mnist.tracking import artifacts
from lstm_mnist.report import compare, factorial, gather, render
from lstm_mnist.builtin.config import FLAGS, ConfigError

from .conftest import assert_latex_fits, run_cli

SEVEN = ("bidirectional", "dropout", "early_stopping", "width", "adamw", "augmentation", "readout")
# factorial.md's table: design -> (resolution, contains baseline), and the 2FI chains it lists.
TABLE = {(6, 1): (6, True), (6, 2): (4, True), (6, 3): (3, False), (7, 3): (4, True)}
CHAINS = {(6, 2): "AB=CE AC=BE AD=EF AE=BC=DF AF=DE BD=CF BF=CD",
          (7, 3): "AB=CE=FG AC=BE=DG AD=CG=EF AE=BC=DF AF=BG=DE AG=BF=CD BD=CF=EG"}


def _chains(d: fractional.Design) -> set[frozenset]:
    return {frozenset(fractional.spell(w) for w in c) for c in d.interaction_chains()}


@pytest.mark.parametrize("k,p", sorted(fractional.GENERATORS))
def test_every_generator_gives_its_resolution_and_a_proper_fraction(k, p):
    d = fractional.Design(tuple(fractional.LETTERS[:k]), fractional.GENERATORS[(k, p)])
    m = np.array(d.matrix)
    assert m.shape == (2 ** (k - p), k) and len({tuple(r) for r in m}) == d.runs  # distinct runs
    assert (m.sum(axis=0) == 0).all() and (m.T @ m == d.runs * np.eye(k)).all()   # balanced, orthogonal
    for w in d.defining_relation:  # every defining word's column is constant +1 on the fraction
        assert (np.prod(m[:, [d.letters.index(ch) for ch in w]], axis=1) == 1).all()
    res = d.resolution
    # no main effect aliased with another; at resolution >= IV none with a 2FI either
    for a, b in itertools.combinations(d.letters, 2):
        assert frozenset({a, b}) not in set(d.defining_relation)
    if res >= 4:
        assert all(len(w) >= 4 for w in d.defining_relation)
        assert all(not al for _, al in d.main_effects())
    assert d.contains(frozenset(d.factors))  # positive generators: the full arm is in every fraction
    assert len(d.classes) == d.runs - 1
    if (k, p) in TABLE:
        assert (res, d.contains(frozenset())) == TABLE[(k, p)]
    if (k, p) in CHAINS:
        assert _chains(d) == {frozenset(c.split("=")) for c in CHAINS[(k, p)].split()}


def test_choose_by_resolution_runs_or_full():
    assert fractional.choose(SEVEN, resolution=4).generators == ("ABC", "BCD", "ACD")
    assert fractional.choose(SEVEN[:6], resolution=5).title == "2^(6-1)"
    assert fractional.choose(SEVEN[:6], runs=16).generators == ("ABC", "BCD")
    assert fractional.choose(SEVEN[:3]).runs == 8 and fractional.choose(SEVEN[:3]).resolution is None
    for kw, msg in [({"resolution": 3}, "no 2-factor fraction"), ({"runs": 2}, "a 2-factor design has 4 runs")]:
        with pytest.raises(ConfigError, match=msg):
            fractional.choose(SEVEN[:2], **kw)
    with pytest.raises(ConfigError, match="8 factors: a two-level design here takes 2 to 7"):
        fractional.choose(SEVEN + ("x",))


def _synthetic(d, seeds, truth, pair=None, noise=0.004, seed=0):
    """A linear model over the design (main effects `truth`, one 2FI `pair`), seed offsets, seeded noise."""
    rng = np.random.default_rng(seed)
    obs = []
    for s in seeds:
        for row in d.matrix:
            y = 0.9 + 0.002 * s + sum(t / 2 * x for t, x in zip(truth, row)) + rng.normal(0, noise)
            if pair:
                y += pair[2] / 2 * row[pair[0]] * row[pair[1]]
            obs.append((s, row, y))
    return obs


def _statsmodels(d, obs):
    smf = pytest.importorskip("statsmodels.formula.api")
    ts = effects.terms(d)
    rows = [{"seed": s, "y": y, **{f"t{j}": float(np.prod([lv[c] for c in t.columns])) for j, t in enumerate(ts)}}
            for s, lv, y in obs]
    return smf.ols("y ~ C(seed) + " + " + ".join(f"t{j}" for j in range(len(ts))), pd.DataFrame(rows)).fit()


@pytest.mark.parametrize("runs,seeds,drop", [(16, (0, 1, 2), 0), (32, (3, 7), 0), (16, (0, 1, 2), 3)])
def test_blocked_fit_agrees_with_statsmodels(runs, seeds, drop):
    d = fractional.choose(SEVEN, runs=runs)
    obs = _synthetic(d, seeds, [0.02, 0.001, 0, 0.01, 0.05, -0.003, 0.0], pair=(0, 6, 0.004))
    obs = obs[drop:]  # missing runs: least squares on what is there
    a = effects.analyze(d, obs, seeds)
    fit = _statsmodels(d, obs)
    assert a.method == effects.OLS and a.df == fit.df_resid
    if not drop:
        assert a.df == (d.runs - 1) * (len(seeds) - 1)
    for j, e in enumerate(a.effects):
        assert e.estimate == pytest.approx(2 * fit.params[f"t{j}"], abs=1e-9)
        assert e.se == pytest.approx(2 * fit.bse[f"t{j}"], abs=1e-9)
        assert e.p == pytest.approx(fit.pvalues[f"t{j}"], abs=1e-9)
        assert e.affected == bool(drop)
    assert len(a.missing) == drop


def test_known_effects_are_recovered_within_their_cis():
    d = fractional.choose(SEVEN, resolution=4)
    truth = [0.02, 0.0, 0.0, 0.01, 0.05, -0.004, 0.0]
    a = effects.analyze(d, _synthetic(d, (0, 1, 2), truth, pair=(0, 6, 0.012)), (0, 1, 2))
    for e, t in zip(a.family("main"), truth):
        assert e.ci_lo <= t <= e.ci_hi, e.term.name
    active = {e.term.name for e in a.family("main") if e.p_holm < 0.05}
    assert active == {"bidirectional", "width", "adamw", "augmentation"}
    chain = next(e for e in a.family("2fi") if e.term.name.startswith("bidirectional:readout"))
    assert chain.term.name == "bidirectional:readout = dropout:augmentation = early_stopping:width"
    assert chain.ci_lo <= 0.012 <= chain.ci_hi and chain.p_holm < 0.05


def test_one_seed_uses_lenth():
    d = fractional.choose(SEVEN, resolution=4)
    a = effects.analyze(d, _synthetic(d, (0,), [0.05, 0, 0, 0.03, 0, 0, 0], noise=0.002), (0,))
    assert a.method == effects.LENTH and a.df == pytest.approx(5.0)
    c = np.array([e.estimate for e in a.effects])
    s0 = 1.5 * np.median(np.abs(c))
    pse = 1.5 * np.median(np.abs(c)[np.abs(c) < 2.5 * s0])
    assert a.sigma == pytest.approx(pse) and all(e.se == pytest.approx(pse) for e in a.effects)
    assert effects.lenth_multipliers(7) == pytest.approx((3.76, 9.01), abs=0.005)
    assert effects.lenth_multipliers(15) == pytest.approx((2.57, 5.22), abs=0.005)
    assert effects.lenth_multipliers(31) == pytest.approx((2.22, 4.22), abs=0.005)
    big = {e.term.name for e in a.family("main") if e.p_holm < 0.05}
    assert big == {"bidirectional", "width"}


def test_half_normal_points_are_sorted_quantiles():
    d = fractional.choose(SEVEN, resolution=4)
    a = effects.analyze(d, _synthetic(d, (0, 1), [0.05, 0, 0, 0.03, 0, 0, 0]), (0, 1))
    pts = effects.half_normal(a.effects)
    assert len(pts) == 15 and [p[2] for p in pts] == sorted(p[2] for p in pts)
    assert pts[0][1] == pytest.approx(0.0418, abs=1e-3) and pts[-1][0] == "A"


# ---------------------------------------------------------------- the report on a fake factorial grid
EXP, GRID = "lstm-mnist-factorial", "factorial-test"


def _fake_factorial(project, seeds=(0, 1), skip=(), settings: dict | None = None,
                    run_tags: dict | None = None):
    """The 2^(6-2) fraction's runs with the runner's tags and a known linear response (no training); `settings`
    and `run_tags` logged on every run too."""
    d = fractional.choose(tuple(FLAGS), runs=16)
    c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    exp = c.create_experiment(EXP, artifact_location=(project / "mlruns" / "artifacts").as_uri())
    tags = {"lstm_mnist.role": "grid", "grid_name": GRID, "grid_file": f"experiments/{GRID}.toml",
            "command": f"python -m lstm_mnist ablate experiments/{GRID}.toml --workers 2", "git_commit": "abc1234567",
            "git_dirty": "false", "machine": "Linux x86_64, 2 CPU cores (test), no GPU"}
    parent = c.create_run(exp, tags=tags, run_name=GRID).info.run_id
    c.log_metric(parent, "wall_time_s", 600.0)
    c.set_terminated(parent, "FINISHED")
    obs = _synthetic(d, seeds, [0.004, 0.0, 0.002, 0.0, -0.001, 0.03], noise=0.0005)
    cells = []
    for s, row, y in obs:
        on = [f for f, x in zip(d.factors, row) if x > 0]
        arm = "full" if len(on) == 6 else "+".join(["baseline", *on])
        cells.append(planned.PlannedCell(f"{arm}-s{s}", arm, s, f"{arm}-{s}", (("factorial", "", arm),)))
        if (arm, s) in skip:
            continue
        rt = {"arm": arm, "design": "factorial", "designs": "factorial", "seed": str(s), "grid_name": GRID,
              "config_hash": f"{arm}-{s}", "mlflow.parentRunId": parent, **(run_tags or {})}
        rid = c.create_run(exp, tags=rt, run_name=f"{arm}-s{s}").info.run_id
        c.log_batch(rid, metrics=[Metric("test_f1", y, 0, 0), Metric("test_acc", y, 0, 0),
                                  Metric("test_loss", 1 - y, 0, 0), Metric("val_f1", y, 0, 0)],
                    params=[Param(f, str(f in on)) for f in FLAGS] + [Param("seed", str(s))]
                    + [Param(k, str(v)) for k, v in (settings or {}).items()])
        c.set_terminated(rid, "FINISHED")
    plan = planned.Plan(tuple(cells), config.PROTOCOL_VERSION, factorial=planned.Fraction(d.factors, d.generators))
    c.log_dict(parent, plan.to_dict(), artifacts.PLAN)
    return d, obs


@pytest.mark.subprocess
def test_report_of_a_factorial_grid(project):
    d, obs = _fake_factorial(project)
    proc = run_cli("report", "--experiment", EXP, cwd=project)
    assert proc.returncode == 0, proc.stderr
    out = project / "reports" / GRID
    main = pd.read_csv(out / "main_effects.csv").set_index("term")
    expect = effects.analyze(d, obs, (0, 1))
    for e in expect.family("main"):
        assert main.loc[e.term.name, "estimate"] == pytest.approx(e.estimate, abs=1e-12)
        assert main.loc[e.term.name, "p_holm"] == pytest.approx(e.p_holm, abs=1e-12)
    assert main.loc["adamw", "df"] == 15 and main.loc["adamw", "method"] == effects.OLS
    inter = pd.read_csv(out / "interactions.csv")
    assert len(inter) == 7  # AE = BC = DF, named in letter order:
    assert "bidirectional:augmentation = dropout:width = early_stopping:adamw" in set(inter["term"])
    md = (out / "report.md").read_text()
    assert md.splitlines()[2].startswith("Trained by `python -m lstm_mnist ablate experiments/factorial-test.toml "
                                         "--workers 2` (the last invocation) at commit `abc1234567` on Linux x86_64, "
                                         "2 CPU cores (test), no GPU, grid wall time 10.0 min.")
    assert "## Factorial main effects (test_f1, 2^(6-2) resolution IV)" in md and "Paired comparisons" not in md
    assert "residual degrees of freedom" in md and (out / "half_normal_test_f1.png").stat().st_size > 0


def test_missing_runs_are_named_and_marked(project):
    _fake_factorial(project, skip={("baseline", 1)})
    r = compare.build(gather.load(EXP, GRID), "test_f1")
    assert r.factorial.missing_arms == ["baseline (seed 1)"]
    shown = factorial.show(r.factorial, "main")
    assert shown["flag"].str.endswith("†").all()
    assert any("† missing runs" in n for n in render.notes(r))


@pytest.mark.subprocess  # pdflatex
@pytest.mark.skipif(not shutil.which("pdflatex"), reason="pdflatex not installed (Debian: texlive-latex-recommended)")
def test_latex_tables_compile_and_fit_the_page(project, tmp_path):
    """Every table of a factorial report and of a wide grid report compiles in a minimal article with booktabs
    and no box is wider than the text (pdflatex says "Overfull \\hbox" when one is)."""
    _fake_factorial(project)
    r = compare.build(gather.load(EXP, GRID), "test_f1")
    wide = pd.DataFrame({"arm": ["baseline+bidirectional+dropout+early_stopping+adamw†"] * 3,
                         "design": ["factorial"] * 3,
                         "flags on": ["all but width, augmentation + final_states readout"] * 3,
                         **{f"column {i} mean ± sd": ["0.9876 ± 0.0012"] * 3 for i in range(8)}})
    from lstm_mnist.analysis import tables

    body = render.latex_doc(r) + tables.latex(wide, "a wide table", "tab:wide")
    assert_latex_fits(body, tmp_path)
    assert "(part 1 of" in body  # the wide table was split rather than squeezed


@pytest.mark.subprocess  # pdflatex
@pytest.mark.skipif(not shutil.which("pdflatex"), reason="pdflatex not installed (Debian: texlive-latex-recommended)")
def test_a_paper_inputs_the_reports_tables_and_vector_figures_as_generated_and_compiles(project):
    """The report's folder as a paper's: methods.tex, report.tex and figures.tex \\input as they are, each figure's
    PDF (fonts embedded) with its caption, compiled by pdflatex; the SVGs carry their text as paths; the methods'
    numbers are the store's."""
    from lstm_mnist.report import make

    _fake_factorial(project, settings={"max_epochs": 35, "patience": 10, "batch_size": 64, "val_fraction": 0.2},
                    run_tags={"torch_version": "2.14.1", "data_fingerprint": "0123456789abcdef"})
    out = project / "paper"
    paths = make.write(make.compute(EXP, GRID), out)
    figures_tex = (out / "figures.tex").read_text()
    pdfs = [p for p in paths if p.suffix == ".pdf"]
    assert pdfs and all(f"\\includegraphics[width=\\linewidth]{{{p.name}}}" in figures_tex for p in pdfs)
    assert "Half-normal plot of the factorial effects on test\\_f1" in figures_tex
    for pdf in pdfs:
        data = pdf.read_bytes()
        assert b"/FontFile2" in data and b"/CreationDate" not in data, pdf.name  # TrueType embedded, no date
    for svg in (p for p in paths if p.suffix == ".svg"):
        assert "<text" not in svg.read_text(), svg.name  # glyphs as paths: no font needed to show it
    log = assert_latex_fits("\\input{methods.tex}\n\\input{report.tex}\n\\input{figures.tex}\n", out,
                            ("booktabs", "graphicx"))
    assert "half_normal_test_f1.pdf" in log  # the vector figure was read into the document
    methods = (out / "methods.md").read_text()  # every number from the store:
    for traced in ("At most 35 epochs",                                   # the runs' max_epochs
                   "after 10 epochs without a lower validation loss",     # their patience
                   "val_fraction = 0.2",                                  # a protocol key the runs recorded
                   "A 2^(6-2) resolution IV factorial of 16 runs per seed",  # the plan's fraction
                   "generators E = ABC and F = BCD",
                   "(15 residual degrees of freedom)",                    # the fit: main_effects.csv's df
                   "2 (0, 1), each trained by every arm",                 # the seeds
                   "torch 2.14.1", "data fingerprint 0123456789abcdef"):  # the runs' tags
        assert traced in methods, (traced, methods)
    assert "**Tuning.**" not in methods  # a grid without tuning has no tuning section
    assert "\\paragraph{Design.} A 2\\textasciicircum{}(6-2) resolution IV" in (out / "methods.tex").read_text()
    md = (out / "report.md").read_text()
    assert "*Half-normal plot" in md and "([PDF](half_normal_test_f1.pdf), [SVG](half_normal_test_f1.svg))" in md


def test_runs_outside_the_fraction_are_left_out_and_counted():
    d = fractional.choose(tuple(FLAGS), runs=16)
    obs = _synthetic(d, (0, 1), [0.01, 0, 0, 0, 0, 0.02])
    stray = (0, (1, 1, 1, 1, 1, -1), 0.5)  # a run of another fraction: not a row of this one
    assert stray[1] not in set(d.matrix)
    a, clean = effects.analyze(d, obs + [stray], (0, 1)), effects.analyze(d, obs, (0, 1))
    assert a.outside == 1 and a.df == clean.df == 15
    assert [e.estimate for e in a.effects] == [e.estimate for e in clean.effects]
    assert not any(e.affected for e in a.effects)


def test_resolution_three_main_effects_name_their_aliases():
    d = fractional.choose(tuple(FLAGS), runs=8)  # 2^(6-3): D = AB, E = AC, F = BC
    main = [t for t in effects.terms(d) if t.kind == "main"]
    assert main[0].name == "bidirectional = dropout:early_stopping = width:augmentation"
    assert main[0].letters == "A = BD = CE" and main[0].factor == "bidirectional"
    a = effects.analyze(d, _synthetic(d, (0, 1), [0.01, 0, 0, 0, 0, 0.02]), (0, 1))
    f = factorial.Factorial(d, a, [], "test_f1")
    assert f.main_effect("adamw").term.factor == "adamw"
    assert any("Resolution III" in n for n in factorial.notes(f))


@pytest.mark.subprocess
def test_wall_time_is_summed_over_invocations_and_tables_are_not_appended(project):
    _fake_factorial(project)
    c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    parent = c.search_runs([c.get_experiment_by_name(EXP).experiment_id], "tags.`lstm_mnist.role` = 'grid'")[0]
    c.log_metric(parent.info.run_id, "wall_time_s", 300.0)  # a second invocation (a resume) of the same grid
    for _ in range(2):  # reporting twice must not double the logged tables
        assert run_cli("report", cwd=project).returncode == 0
    md = (project / "reports" / GRID / "report.md").read_text()
    assert "grid wall time 15.0 min." in md
    local = c.download_artifacts(parent.info.run_id, "report/tables/main-effects_test_f1.json", str(project))
    import json

    assert len(json.loads(open(local).read())["data"]) == 6


def test_the_delta_figure_of_a_factorial_grid_draws_its_main_effects(project, monkeypatch, tmp_path):
    """A grid of the factorial design alone: the figure shows each flag's main effect with its CI, and no empty
    leave-one-out or add-one-in series."""
    _fake_factorial(project)
    r = compare.build(gather.load(EXP, GRID), "test_f1")
    from lstm_mnist.analysis import figures
    from lstm_mnist.report import plots

    drawn = {}
    monkeypatch.setattr(figures, "delta_png", lambda flags, designs, metric, path: drawn.update(designs) or path)
    plots.draw(r.grid, r.arms, r.worth, "test_f1", tmp_path)
    assert list(drawn) == ["factorial main effect (on − off)"]
    main = {e.term.factor: e for e in r.factorial.analysis.family("main")}
    for flag, (d, lo, hi) in zip(r.worth["flag"], drawn["factorial main effect (on − off)"]):
        assert (d, lo, hi) == pytest.approx((main[flag].estimate, main[flag].ci_lo, main[flag].ci_hi))
