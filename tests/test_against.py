"""`report --against`: two grids of one design compared effect by effect (analysis/against.py, pure; report/against.py
on fake stores): paired by cell, Holm within each family, TOST at δ; what differs and what is paired said in words;
grids of another design or task, or without δ, refused in one line."""
import math
import shutil
import types
import zlib

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param

from lstm_mnist.analysis import against, effects, fractional
from lstm_mnist.builtin import config
from lstm_mnist.builtin.config import FLAGS
from lstm_mnist.grids import planned
from lstm_mnist.tracking import artifacts
from lstm_mnist.report import compare, gather, make

from .conftest import assert_latex_fits, cli

EXP = "lstm-mnist-factorial"
TRUTH = [0.004, 0.0, 0.002, 0.0, -0.001, 0.03]  # main effects of the six flags (adamw last: the big one)


def _grid(project, name, shift=(), precision=None, seeds=(0, 1), runs=16, delta=0.002, noise=0.0005, wall=600.0):
    """A fake factorial grid (no training): the 2^(6-2) fraction (or `runs` per seed) with the runner's tags, the
    response TRUTH + `shift` (flag index -> a change of its effect) + the same per-cell noise in every grid (the
    cells are the same runs but one setting), and `precision` logged as a param (None: a run from before it)."""
    d = fractional.choose(tuple(FLAGS), runs=runs)
    c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    exp = c.get_experiment_by_name(EXP)
    exp = exp.experiment_id if exp else c.create_experiment(
        EXP, artifact_location=(project / "mlruns" / "artifacts").as_uri())
    tags = {"lstm_mnist.role": "grid", "grid_name": name, "grid_file": f"experiments/{name}.toml",
            "command": f"python -m lstm_mnist ablate experiments/{name}.toml --workers 2"}
    parent = c.create_run(exp, tags=tags, run_name=name).info.run_id
    c.log_metric(parent, "wall_time_s", wall)
    c.set_terminated(parent, "FINISHED")
    rng = np.random.default_rng(0)                       # the noise the two runs of a cell share ...
    own = np.random.default_rng(zlib.crc32(name.encode()))  # ... and each grid's own (another arithmetic)
    truth = [t + dict(shift).get(i, 0.0) for i, t in enumerate(TRUTH)]
    cells = []
    for s in seeds:
        for row in d.matrix:
            y = (0.97 + 0.002 * s + sum(t / 2 * x for t, x in zip(truth, row)) + rng.normal(0, noise)
                 + own.normal(0, noise / 5))
            on = [f for f, x in zip(d.factors, row) if x > 0]
            arm = "full" if len(on) == 6 else "+".join(["baseline", *on])
            h = f"{arm}-{s}-{precision}"
            cells.append(planned.PlannedCell(f"{arm}-s{s}", arm, s, h, (("factorial", "", arm),)))
            rt = {"arm": arm, "design": "factorial", "designs": "factorial", "seed": str(s), "grid_name": name,
                  "config_hash": h, "mlflow.parentRunId": parent}
            rid = c.create_run(exp, tags=rt, run_name=f"{arm}-s{s}").info.run_id
            params = [Param(f, str(f in on)) for f in FLAGS] + [Param("seed", str(s))]
            c.log_batch(rid, metrics=[Metric("test_f1", y, 0, 0), Metric("test_acc", y, 0, 0),
                                      Metric("test_loss", 1 - y, 0, 0), Metric("epoch_time_s", wall / 100, 0, 0)],
                        params=params + ([Param("precision", precision)] if precision else []))
            c.set_terminated(rid, "FINISHED")
    plan = planned.Plan(tuple(cells), config.PROTOCOL_VERSION, factorial=planned.Fraction(d.factors, d.generators),
                        effect_of_interest=delta)
    c.log_dict(parent, plan.to_dict(), artifacts.PLAN)
    return d


# ---------------------------------------------------------------- the pure part
def test_tost_and_two_sided_p_agree_with_their_definitions():
    # estimate 0.001 ± 0.0005 on 15 df, δ = 0.002: the upper one-sided test decides, at t = (0.001 − 0.002)/0.0005
    assert against.tost_p(0.001, 0.0005, 15, 0.002) == pytest.approx(float(__import__("scipy").stats.t.cdf(-2, 15)))
    assert against.tost_p(0.0, 0.0005, 15, 0.002) < 0.001 and against.tost_p(0.003, 0.0005, 15, 0.002) > 0.9
    assert against.t_p(0.001, 0.0005, 15) == pytest.approx(2 * float(__import__("scipy").stats.t.sf(2, 15)))
    assert math.isnan(against.tost_p(0.001, float("nan"), 15, 0.002)) and math.isnan(against.t_p(0.001, 0.1, 0))
    # every paired difference the same (se = 0): the limit, as stats.paired gives it
    assert (against.tost_p(0.001, 0.0, 1, 0.002), against.tost_p(0.003, 0.0, 1, 0.002)) == (0.0, 1.0)
    assert (against.t_p(0.001, 0.0, 1), against.t_p(0.0, 0.0, 1)) == (0.0, 1.0)
    assert against.welch_df(1.0, 10, 1.0, 10) == pytest.approx(20.0)


def test_holm_within_each_family_and_the_verdict_rule():
    rows = [against.Difference("main", "a", 0, 0, 0.0001, 0.0003, 15, True, 32),   # tight around 0: same
            against.Difference("main", "b", 0, 0, 0.010, 0.0003, 15, True, 32),    # far from 0: differs
            against.Difference("main", "c", 0, 0, 0.0015, 0.002, 15, True, 32),    # wide: undecided
            against.Difference("2fi", "a:b", 0, 0, 0.0001, 0.0003, 15, True, 32)]
    out = against.judge(rows, 0.002)
    assert [r.verdict for r in out] == [against.SAME, against.DIFFERS, against.UNDECIDED, against.SAME]
    main = [r for r in out if r.family == "main"]
    from lstm_mnist.analysis import stats

    assert [r.p_holm for r in main] == pytest.approx(stats.holm([r.p for r in main]))  # a family of three
    assert out[3].p_same_holm == pytest.approx(out[3].p_same)                          # its own family of one


def test_a_paired_factorial_difference_is_the_effect_of_the_per_cell_differences():
    d = fractional.choose(tuple(FLAGS), runs=16)
    rng = np.random.default_rng(1)
    this, other = {}, {}
    for s in (0, 1, 2):
        for row in d.matrix:
            base = 0.97 + 0.03 / 2 * row[5] + rng.normal(0, 0.002)  # noise shared by the pair: cancels
            this[(s, row)] = base + 0.004 / 2 * row[0] + rng.normal(0, 0.0002)  # bidirectional worth 0.004 more
            other[(s, row)] = base + rng.normal(0, 0.0002)
    fit = {k: effects.analyze(d, [(s, lv, y) for (s, lv), y in v.items()]) for k, v in (("a", this), ("b", other))}
    rows = against.factorial(d, this, other, fit["a"], fit["b"])
    main = {r.term: r for r in rows if r.family == "main"}
    assert main["bidirectional"].diff == pytest.approx(main["bidirectional"].this - main["bidirectional"].other)
    assert main["bidirectional"].diff == pytest.approx(0.004, abs=0.0004) and main["bidirectional"].paired
    # pairing removes the shared noise: the difference's se is far below √(se₁² + se₂²) of the two fits
    e = fit["a"].effects[0]
    assert main["bidirectional"].se < 0.3 * math.hypot(e.se, fit["b"].effects[0].se)
    verdicts = {r.term: r.verdict for r in against.judge(rows, 0.002) if r.family == "main"}
    assert verdicts["bidirectional"] == against.DIFFERS
    assert {v for t, v in verdicts.items() if t != "bidirectional"} == {against.SAME}


def test_grids_without_a_cell_in_common_are_compared_as_independent():
    d = fractional.choose(tuple(FLAGS), runs=16)
    obs = {s: {(s, row): 0.97 + 0.01 * row[0] + 0.001 * ((hash((s, row)) % 7) - 3) for row in d.matrix}
           for s in range(4)}
    this, other = {**obs[0], **obs[1]}, {**obs[2], **obs[3]}
    fit = [effects.analyze(d, [(s, lv, y) for (s, lv), y in v.items()]) for v in (this, other)]
    r = against.factorial(d, this, other, *fit)[0]
    assert not r.paired and r.n == 64
    assert r.se == pytest.approx(math.hypot(fit[0].effects[0].se, fit[1].effects[0].se))


def test_by_seed_pairs_the_seeds_both_grids_hold():
    r = against.by_seed("leave_one_out", "dropout", {0: 0.003, 1: 0.005, 2: 0.004}, {0: 0.001, 1: 0.002, 2: 0.003})
    assert r.paired and r.n == 3 and r.diff == pytest.approx(0.002) and r.df == 2
    r = against.by_seed("add_one_in", "width", {0: 0.003, 1: 0.005}, {5: 0.001, 6: 0.003})
    assert not r.paired and r.diff == pytest.approx(0.002) and r.df == pytest.approx(2.0)


# ---------------------------------------------------------------- the report, on fake stores
def test_report_against_a_grid_at_another_precision(project, capsys):
    _grid(project, "fp32", wall=1200.0)                                    # runs from before precision: "32"
    _grid(project, "bf16", shift={0: 0.006}, precision="bf16-mixed", wall=500.0)  # bidirectional worth 0.006 more
    code, out, err = cli(capsys, "report", "--grid", "bf16", "--experiment", EXP, "--against", "fp32")
    assert code == 0, err
    table = pd.read_csv(project / "reports" / "bf16" / "against.csv")
    main = table[table["family"] == "main"].set_index("term")
    assert main.loc["bidirectional", "diff"] == pytest.approx(0.006, abs=0.0003)  # the shared noise cancels
    assert main.loc["bidirectional", "verdict"] == against.DIFFERS
    assert set(main.drop(index="bidirectional")["verdict"]) == {against.SAME}
    assert main["paired"].all() and (main["n"] == 32).all()
    md = (project / "reports" / "bf16" / "report.md").read_text()
    assert "## Against grid fp32 (lstm-mnist-factorial): each effect on test_f1 in both grids" in md
    assert "the two grids differ in precision = bf16-mixed here, 32 in fp32." in md
    assert "fp32/bf16 = 2.40 in training time, 2.40 in wall time." in md and "Paired: " in md
    r = make.compute(EXP, "bf16", None, "fp32")
    from lstm_mnist import api

    assert api.report("bf16", EXP, against="fp32")["against"].equals(r.against.frame)


def test_against_refuses_another_design_another_task_and_no_delta(project, capsys):
    _grid(project, "a16")
    _grid(project, "a8", runs=8, seeds=(0, 1))
    code, out, err = cli(capsys, "report", "--grid", "a16", "--experiment", EXP, "--against", "a8")
    assert code == 2 and err.count("\n") == 1 and "are of different designs" in err and "2^(6-2)" in err, err
    code, out, err = cli(capsys, "report", "--grid", "a16", "--experiment", EXP, "--against", "nosuch")
    assert code == 2 and err.count("\n") == 1 and "no grid named 'nosuch'" in err, err
    _grid(project, "nodelta", delta=None)
    _grid(project, "nodelta2", delta=None)
    code, out, err = cli(capsys, "report", "--grid", "nodelta", "--experiment", EXP, "--against", "nodelta2")
    assert code == 2 and err.count("\n") == 1 and "effect_of_interest" in err, err
    this = compare.build(gather.load(EXP, "a16"), "test_f1")
    other = compare.build(gather.load(EXP, "nodelta"), "test_f1")
    other.grid.task = types.SimpleNamespace(name="digits")
    from lstm_mnist.report import against as report_against

    with pytest.raises(report_against.AgainstError, match="study different tasks .*compare grids of one task"):
        report_against.build(this, other)
    code, out, err = cli(capsys, "report", "--grid", "a16", "--experiment", EXP, "--against", "a16")
    assert code == 2 and err.count("\n") == 1 and "that is this grid itself" in err, err


@pytest.mark.subprocess  # pdflatex
@pytest.mark.skipif(not shutil.which("pdflatex"), reason="pdflatex not installed (Debian: texlive-latex-recommended)")
def test_the_against_table_compiles_in_latex(project, tmp_path):
    """report.tex with the --against table (δ, −, its verdicts) compiles with booktabs, nothing wider than the page."""
    _grid(project, "fp32")
    _grid(project, "bf16", shift={0: 0.006}, precision="bf16-mixed")
    from lstm_mnist.report import render

    body = render.latex_doc(make.compute(EXP, "bf16", None, "fp32"))
    assert "the same within $\\delta$" in body
    assert_latex_fits(body, tmp_path)
