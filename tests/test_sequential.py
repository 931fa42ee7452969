"""Adaptive replication (`ablate --until-decided`): the looks and their α (analysis/sequential.py), proved by
simulation through the runner's own decision code (wrong verdicts at or below α under optional stopping, fewer
seeds than the fixed design with the same power), the factorial path of the same code, the looks a report
recomputes (report/looks.py), and the real CLI on tiny data: a grid run until decided, a rerun that replays
it, a SIGKILL mid-block then a rerun, and each bad input answered in one line."""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lstm_mnist.analysis import effects, fractional, power, sequential

from .chaos_tools import Cli, left_behind, record, runs
from .conftest import TINY_BUDGET, cli

REPS = 4000


def _mc(p: float, reps: int = REPS) -> float:
    """Four Monte Carlo standard errors of a rate p over reps replications."""
    return 4 * math.sqrt(max(p, 0.01) * (1 - p) / reps)


# ---------------------------------------------------------------- the looks
def test_the_looks_are_fixed_by_first_block_and_most_and_spend_alpha_in_proportion_to_seeds():
    lk = sequential.Looks(2, 2, 8)
    assert lk.seeds == [2, 4, 6, 8] and lk.k == 4
    assert lk.alphas == pytest.approx([0.005, 0.01, 0.015, 0.02]) and sum(lk.alphas) == pytest.approx(0.05)
    assert sequential.Looks(3, 2, 6).seeds == [3, 5, 6]  # the last block is cut to the most
    assert sequential.Looks(2, 1, 2).seeds == [2] and sequential.Looks(2, 1, 2).alphas == [0.05]
    assert sequential.Looks.from_record(lk.record()) == lk
    with pytest.raises(ValueError):
        lk.alpha_at(3)
    for bad in ((1, 1, 4), (4, 1, 3), (2, 0, 4)):
        with pytest.raises(ValueError):
            sequential.Looks(*bad)


def test_an_effect_keeps_its_first_decisive_verdict():
    u, e, n = power.UNDECIDED, power.EFFECT, power.NO_EFFECT
    assert sequential.settle([u, u]) == u
    assert sequential.settle([u, e, u]) == e
    assert sequential.settle([n, e]) == n


def test_a_verdict_names_the_look_that_reached_it_not_the_last_looks_interval():
    """The case of docs/results/until-decided-cpu: "effect" at the look on 6 seeds, kept at 8 seeds where the
    CI holds 0. The verdict names 6 seeds and that look's 1 − α_k interval, which excludes 0."""
    from lstm_mnist.report.factorial import said

    design, order = sequential.Looks(4, 2, 8), list(range(8))
    at = {4: (-0.002, 0.0012), 6: (-0.0035, 0.0008), 8: (-0.0019, 0.0009)}  # (estimate, se) per look
    decided = sequential.decide(design, order, "test_f1", 0.002, set(order),
                                lambda seeds: [("dropout", *at[len(seeds)], len(seeds) - 1),
                                               ("width", 0.0, 1e-4, len(seeds) - 1)])
    assert decided.verdicts() == {"dropout": power.EFFECT, "width": power.NO_EFFECT}
    assert decided.frame[decided.frame["effect"] == "dropout"]["look_verdict"].tolist() == [
        power.UNDECIDED, power.EFFECT, power.UNDECIDED]
    got = decided.reached()
    lo, hi = power.interval(-0.0035, 0.0008, 5, 1 - design.alpha_at(6))
    assert got["dropout"] == {"verdict": power.EFFECT, "verdict_seeds": 6, "verdict_level": 1 - design.alpha_at(6),
                              "verdict_ci_lo": pytest.approx(lo), "verdict_ci_hi": pytest.approx(hi)} and hi < 0
    assert (got["width"]["verdict_seeds"] == 4
            and got["width"]["verdict_level"] == pytest.approx(1 - 2 * design.alpha_at(4)))
    import pandas as pd

    text = said(pd.DataFrame([got["dropout"], got["width"], {"verdict": power.UNDECIDED, "verdict_seeds": 8,
                                                             "verdict_level": 0.95, "verdict_ci_lo": float("nan"),
                                                             "verdict_ci_hi": float("nan")}]))
    assert text[0] == f"effect at 6 seeds, {100 * (1 - design.alpha_at(6)):.3g}% CI [{lo:+.4f}, {hi:+.4f}]"
    assert (text[0] == "effect at 6 seeds, 98.3% CI [-0.0063, -0.0007]"
            and text[1].startswith("no effect ≥ δ at 4 seeds, 97.8% CI"))
    assert text[2] == "undecided at 8 seeds"


# ---------------------------------------------------------------- the proof by simulation
SIGMA = DELTA = 1.0  # one seed's paired difference has the spread of the effect that matters
LOOKS = sequential.Looks(2, 2, 16)


@pytest.mark.parametrize("theta, wrong", [(0.0, power.EFFECT), (DELTA, power.NO_EFFECT), (-DELTA, power.NO_EFFECT),
                                          (1.5 * DELTA, power.NO_EFFECT)])
def test_wrong_verdicts_stay_at_or_below_alpha_under_optional_stopping(theta, wrong):
    rng = np.random.default_rng(int(10 * abs(theta)) + (7 if theta >= 0 else 70))
    sim = sequential.simulate_adaptive(theta, SIGMA, DELTA, LOOKS, REPS, rng)
    rate = sim.rate(wrong)
    record(f"adaptive, effect {theta:g}σ (δ = σ), wrong {wrong!r}", rate=rate,
           mean_seeds=round(float(sim.seeds.mean()), 2))
    assert rate <= 0.05 + _mc(0.05), (theta, wrong, rate)


def test_looking_at_every_block_with_a_fixed_n_test_would_not_stay_at_alpha():
    """The control: the same looks at α = 0.05 each (no spending) say "effect" under no effect too often."""
    d = np.random.default_rng(3).normal(0.0, SIGMA, size=(REPS, LOOKS.most))
    said = 0
    for x in d:
        said += any(power.verdict(float(x[:n].mean()), float(x[:n].std(ddof=1) / math.sqrt(n)), n - 1, DELTA)
                    == power.EFFECT for n in LOOKS.seeds)
    assert said / REPS > 0.05 + _mc(0.05), said / REPS


def _fixed_with_power(theta: float, right: str, target: float, rng) -> int:
    """The fewest seeds at which the fixed design (one look at α = 0.05) says `right` at least as often."""
    for n in range(2, 60):
        if sequential.simulate_fixed(theta, SIGMA, DELTA, n, REPS, rng).rate(right) >= target:
            return n
    raise AssertionError("no fixed design reaches the adaptive rule's power")


@pytest.mark.parametrize("theta", [1.25, 1.5, 2.0])
def test_the_adaptive_rule_needs_fewer_seeds_than_the_fixed_design_with_the_same_power(theta):
    """Effects the design is powered for (power ≥ 0.95 at most seeds): the fixed design that says "effect" as
    often (within 0.005) needs more seeds than the adaptive rule uses on average. (For effects of 2.5σ and
    more a fixed 5–6 seeds do as well: the first looks, on 2–4 seeds, have too few degrees of freedom.)"""
    rng = np.random.default_rng(int(4 * theta))
    sim = sequential.simulate_adaptive(theta, SIGMA, DELTA, LOOKS, REPS, rng)
    assert sim.rate(power.EFFECT) >= 0.95
    fixed = _fixed_with_power(theta, power.EFFECT, sim.rate(power.EFFECT) - 0.005, rng)
    record(f"adaptive vs fixed, effect {theta:g}σ (δ = σ)", power=round(sim.rate(power.EFFECT), 4),
           mean_seeds=round(float(sim.seeds.mean()), 2), fixed_seeds_same_power=fixed)
    assert sim.seeds.mean() < fixed, (sim.seeds.mean(), fixed)


def _factorial_looks(beta: dict[int, float], sigma: float, delta: float, looks: sequential.Looks, rng) -> dict:
    """One replication of a 2^(3-1) factorial looked at as the runner looks: runs y = seed block + Σ β_j x_j/2 + e
    (so factor j's effect is β_j), analysed on the first n seeds by effects.analyze (the report's fit)."""
    d = fractional.Design(("a", "b", "c"), ("AB",))
    rows = d.matrix
    blocks = rng.normal(0, sigma, size=looks.most)
    obs_all = [(s, lv, float(blocks[s] + sum(beta.get(j, 0.0) * x / 2 for j, x in enumerate(lv))
                                + rng.normal(0, sigma)))
               for s in range(looks.most) for lv in rows]
    history: dict[int, list] = {}
    for n in looks.seeds:
        a = effects.analyze(d, [o for o in obs_all if o[0] < n], list(range(n)))
        for j, e in enumerate(a.family("main")):
            history.setdefault(j, []).append(sequential.look_verdict(e.estimate, e.se, a.df, delta, looks, n))
        if all(sequential.settle(h) != power.UNDECIDED for h in history.values()):
            break
    return {j: sequential.settle(h) for j, h in history.items()}


def test_the_factorial_fit_through_the_same_decision_code_keeps_wrong_verdicts_at_or_below_alpha():
    """Factor 0 has no effect, factor 1 an effect of exactly δ, factor 2 a large one; the runner stops only
    when all three are decided, so the null and boundary factors are looked at again and again."""
    rng, reps, delta, sigma = np.random.default_rng(11), 1000, 1.0, 1.0
    looks = sequential.Looks(2, 1, 6)
    verdicts = [_factorial_looks({1: delta, 2: 4 * delta}, sigma, delta, looks, rng) for _ in range(reps)]
    wrong_effect = sum(v[0] == power.EFFECT for v in verdicts) / reps
    wrong_none = sum(v[1] == power.NO_EFFECT for v in verdicts) / reps
    found = sum(v[2] == power.EFFECT for v in verdicts) / reps
    record("factorial looks, 2^(3-1), δ = σ", wrong_effect_at_0=wrong_effect, wrong_no_effect_at_delta=wrong_none,
           power_at_4delta=found)
    assert wrong_effect <= 0.05 + _mc(0.05, reps) and wrong_none <= 0.05 + _mc(0.05, reps)
    assert found > 0.9


# ---------------------------------------------------------------- the real CLI on tiny data
GRID = """experiment = "until"
designs = ["factorial"]
flags = ["adamw", "early_stopping"]
factorial = ["adamw", "early_stopping"]
seeds = [0, 1]
effect_of_interest = {delta}
[budget]
max_epochs = 2
{budget}"""


def grid_file(folder: Path, delta: float = 0.5, name: str = "until", extra: str = "") -> Path:
    """Early stopping cannot act within 2 epochs (patience 10): its effect is exactly 0 on every seed."""
    path = folder / "experiments" / f"{name}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(extra + GRID.format(delta=delta, budget=TINY_BUDGET))
    return path


@pytest.mark.parametrize("args, message", [
    (["--until-decided", "--force"], "--force does not go with --until-decided"),
    (["--until-decided", "--shard", "1/2"], "--shard does not go with --until-decided"),
    (["--max-seeds", "4"], "--max-seeds and --block go with --until-decided"),
    (["--until-decided", "--max-seeds", "1"], "--max-seeds 1 is below the 2 seeds"),
    (["--until-decided", "--block", "0"], "--block 0: give the seeds added per look"),
])
def test_a_bad_until_decided_is_one_line_naming_the_fix(tmp_path, capsys, args, message):
    code, out, err = cli(capsys, "ablate", str(grid_file(tmp_path)), *args, "--dry-run")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("old, new, message", [
    ("effect_of_interest = 0.5\n", "", "--until-decided needs the smallest effect that matters"),
    ("seeds = [0, 1]", "seeds = [0]", "needs at least 2 seeds to start from"),
])
def test_a_grid_that_cannot_be_run_until_decided_says_why(tmp_path, capsys, old, new, message):
    path = grid_file(tmp_path)
    path.write_text(path.read_text().replace(old, new))
    code, out, err = cli(capsys, "ablate", str(path), "--until-decided", "--dry-run")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_the_dry_run_lists_the_looks_and_their_alpha(project, capsys):
    code, out, err = cli(capsys, "ablate", str(grid_file(project)), "--until-decided", "--max-seeds", "5",
                         "--block", "2", "--dry-run")
    assert code == 0, err
    assert "3 looks, the seeds added in the order 0, 1, 2, 3, 4" in out
    assert "look 1 at 2 seeds (seeds 0, 1): α_k = 0.0091" in out and "look 3 at 5 seeds" in out
    assert "8 cells: 0 done" in out  # the first look's cells: 4 runs per seed x 2 seeds


def _looks_of(project: Path, name: str = "until") -> tuple[dict, dict, list]:
    all_runs = runs(f"sqlite:///{project}/mlruns/mlflow.db", "until")
    (parent,) = [r for r in all_runs if r.data.tags.get("lstm_mnist.role") == "grid"]
    art = Path(parent.info.artifact_uri.removeprefix("file://"))
    return json.loads((art / "looks.json").read_text()), json.loads((art / "plan.json").read_text()), all_runs


@pytest.mark.subprocess
def test_a_grid_until_decided_end_to_end_then_a_rerun_and_its_report(project):
    path = grid_file(project, delta=0.03)
    run = Cli("ablate", str(path), "--until-decided", "--max-seeds", "4", "--workers", "2", cwd=project)
    assert run.finish() == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr + run.stdout
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("look ")]
    looks, plan, all_runs = _looks_of(project)
    n = looks["looks"][-1]["seeds"]
    assert [x["seeds"] for x in looks["looks"]] == list(range(2, n + 1)) and len(lines) == n - 1, run.stdout
    decided = all(v != power.UNDECIDED for v in looks["looks"][-1]["verdicts"].values())
    assert (f"every effect decided at {n} seeds" in run.stdout) if decided else n == 4, run.stdout[-2000:]
    assert looks["looks"][-1]["verdicts"]["factorial: early_stopping"] != power.EFFECT  # exactly 0 on every seed
    assert plan["sequential"]["looks"] == [2, 3, 4] and {c["seed"] for c in plan["cells"]} == set(range(n))
    cells = Counter(r.data.tags["config_hash"] for r in all_runs if r.data.tags.get("lstm_mnist.role") != "grid")
    assert len(cells) == 4 * n and max(cells.values()) == 1

    again = Cli("ablate", str(path), "--until-decided", "--max-seeds", "4", cwd=project)
    assert again.finish() == 0, again.stderr[-2000:]
    assert [ln for ln in again.stdout.splitlines() if ln.startswith("look ")] == lines  # replayed, same verdicts
    assert "start " not in again.stdout and again.stdout.count("nothing to train") == n - 1

    other = Cli("ablate", str(path), "--until-decided", "--max-seeds", "6", cwd=project)
    assert other.finish() == 2 and "the looks are fixed before the first one" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1, other.stderr
    plain = Cli("ablate", str(path), cwd=project)  # a plain run in between: its plan has no looks ...
    assert plain.finish() == 0, plain.stderr[-2000:]
    other = Cli("ablate", str(path), "--until-decided", "--max-seeds", "6", cwd=project)
    assert other.finish() == 2 and "the looks are fixed before the first one" in other.stderr  # ... looks.json does
    again = Cli("ablate", str(path), "--until-decided", "--max-seeds", "4", cwd=project)
    assert again.finish() == 0 and [ln for ln in again.stdout.splitlines() if ln.startswith("look ")] == lines
    text = path.read_text()  # another budget after the looks: one line, nothing trained
    path.write_text(text.replace("max_epochs = ", "max_epochs = 1", 1))
    other = Cli("ablate", str(path), "--until-decided", "--max-seeds", "4", cwd=project)
    assert other.finish() == 2 and "was run --until-decided under another [budget] (max_epochs = " in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1 and "start " not in other.stdout, other.stderr
    path.write_text(text)

    rep = Cli("report", "--grid", "until", "--experiment", "until", "--out", "rep", cwd=project)
    assert rep.finish() == 0, rep.stderr[-2000:]
    text = (project / "rep" / "report.md").read_text()
    assert "Adaptive replication" in text and sequential.METHOD in text and "looks_test_f1.png" in text
    methods = (project / "rep" / "methods.md").read_text()
    assert "Seeds were added until every effect was decided: in blocks of" in methods and sequential.METHOD in methods
    main = (project / "rep" / "main_effects.csv").read_text()
    assert "no effect ≥ δ" in main
    assert re.search(r"\| no effect ≥ δ at [2-4] seeds, 9\d(\.\d)?% CI \[[-+]", text), text  # where it was reached
    assert "verdict_seeds" in main.splitlines()[0]


@pytest.mark.subprocess
@pytest.mark.chaos
def test_the_main_process_killed_mid_block_then_a_rerun(project):
    """δ tiny: early stopping's exact 0 is never decided, so the grid runs to its most seeds (3)."""
    path = grid_file(project, delta=1e-6)
    first = Cli("ablate", str(path), "--until-decided", "--max-seeds", "3", "--workers", "2", cwd=project)
    assert first.wait_for(r"^look 1/2", 1, timeout=240), first.stdout + first.stderr
    assert first.wait_for(r"start \S+-s2 ", 1, timeout=120), first.stdout
    delivered = first.running()
    first.kill()
    rerun = Cli("ablate", str(path), "--until-decided", "--max-seeds", "3", "--workers", "2", cwd=project)
    assert rerun.finish() == 0, rerun.stderr[-3000:]
    assert "Traceback" not in first.stderr + rerun.stderr + rerun.stdout
    looks, plan, all_runs = _looks_of(project)
    cells = [r for r in all_runs if r.data.tags.get("lstm_mnist.role") != "grid"]
    finished = Counter(r.data.tags["config_hash"] for r in cells if r.info.status == "FINISHED")
    figures = {"cells_finished": len(finished), "cells_trained_twice": sum(n > 1 for n in finished.values()),
               "left_running": sum(r.info.status == "RUNNING" for r in all_runs),
               "looks": [x["seeds"] for x in looks["looks"]],
               "processes_left": len(left_behind(first.seen_pids | rerun.seen_pids))}
    record("--until-decided, main SIGKILLed mid-block, then a rerun", kills=int(delivered), **figures)
    assert delivered and figures["looks"] == [2, 3], figures
    assert figures["cells_finished"] == 12 and figures["cells_trained_twice"] == 0, figures
    assert figures["left_running"] == 0 and figures["processes_left"] == 0, figures
    assert re.search(r"^until: \d+ effects still undecided at 3 seeds, the most planned \([^)]*factorial: "
                     r"early_stopping", rerun.stdout, re.M), rerun.stdout[-2000:]
    assert looks["looks"][-1]["verdicts"]["factorial: early_stopping"] == power.UNDECIDED
    assert re.search(r"look 1/2 at 2 seeds", rerun.stdout)


def test_the_looks_plot_is_on_the_scale_of_delta_and_of_each_effects_last_look():
    from lstm_mnist.analysis.figures import looks_scale

    # seeds, estimate, 1 - alpha_k interval, 1 - 2 alpha_k interval: at 2 seeds on 1 df the first is +-0.2 wide
    series = {"a": ([2, 4], [0.001, 0.003], [-0.2, 0.001], [0.2, 0.005], [-0.1, 0.0015], [0.1, 0.0045]),
              "b": ([2, 4], [0.0, -0.0005], [-0.3, -0.0012], [0.3, 0.0009], [-0.15, -0.001], [0.15, 0.0007])}
    lo, hi = looks_scale(series, 0.002)
    span = 0.005 - (-0.002)  # from -delta to the last look's highest end
    assert lo == pytest.approx(-0.002 - 0.2 * span) and hi == pytest.approx(0.005 + 0.2 * span)
