"""gpu-accept: its CPU mode end to end on tiny data (every step, as the next person with a GPU runs it), resumed
without running again what passed; no GPU and no CPU mode is one line; the fused-model probe is exact."""
import json

import pytest
import torch
import torch.nn.functional as F

from lstm_mnist.tools.fused import FusedLSTMClassifier, loss
from lstm_mnist.builtin.model import LSTMClassifier

from .conftest import run_cli

cpu_only = pytest.mark.skipif(torch.cuda.is_available(),
                              reason="checks the CPU mode, on a machine without a GPU (make gpu-accept checks a GPU)")
STEPS = ["environment", "gpu-check", "grid", "report", "kill-rerun", "tune", "evaluate", "ray", "probes"]
ANSWER = ["environment", "gpu-check", "grid", "report"]
CHECKS = ["environment", "kill-rerun", "tune", "evaluate", "ray", "probes"]


# The two parts run as two tests (two pytest processes at once): each is a minute or more of CPU-mode commands.
@pytest.mark.scenario
@pytest.mark.subprocess
@pytest.mark.long
@cpu_only
def test_cpu_mode_part_answer_runs_its_steps_and_a_rerun_keeps_what_passed(project):
    first = run_cli("gpu-accept", "--cpu", "--out", "acc", "--part", "answer", cwd=project, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    state = json.loads((project / "acc" / "steps.json").read_text())
    assert list(state) == ANSWER and all(state[n]["status"] == "pass" for n in ANSWER), \
        {n: (v["status"], v["line"]) for n, v in state.items()}
    summary = (project / "acc" / "summary.txt").read_text().splitlines()
    assert summary[0].endswith("(CPU mode: tiny budgets, not GPU figures)")
    assert [line.split()[:2] for line in summary[1:10]] == [["PASS" if n in ANSWER else "....", n] for n in STEPS]
    grid = state["grid"]["figures"]
    assert grid["cells"] == 16 and grid["finished"] == 16 and grid["duplicates"] == grid["left_running"] == 0
    assert (project / "acc" / "report" / "main_effects.csv").exists()
    # The figures the CPU mode wrote stay in its folder: `--workers auto` there reads its own gpu-check.
    assert (project / "acc" / "reports" / "gpu-check.json").exists() and not (project / "reports").exists()
    again = run_cli("gpu-accept", "--cpu", "--out", "acc", "--part", "answer", cwd=project, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("passed earlier") == 3, again.stdout  # every step but the environment
    bad = run_cli("gpu-accept", "--cpu", "--out", "acc", "--skip", "rays", cwd=project)
    assert bad.returncode == 2 and "--skip rays: not a step that can be left out" in bad.stderr


@pytest.mark.scenario
@pytest.mark.subprocess
@pytest.mark.long
@cpu_only
def test_cpu_mode_part_checks_runs_its_steps_and_a_rerun_keeps_what_passed(project):
    # Ray left out: a Ray instance of its own beside tests/test_ray.py's clusters upsets their process counts
    # (the step itself is `ablate --ray local`, which test_ray covers, and ran in CPU mode by hand)
    first = run_cli("gpu-accept", "--cpu", "--out", "acc", "--part", "checks", "--skip", "ray", cwd=project,
                    timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    state = json.loads((project / "acc" / "steps.json").read_text())
    ran = [n for n in CHECKS if n != "ray"]
    assert list(state) == CHECKS and all(state[n]["status"] == "pass" for n in ran), \
        {n: (v["status"], v["line"]) for n, v in state.items()}
    assert state["ray"]["status"] == "skip" and state["ray"]["line"] == "left out (--skip)"
    kill = state["kill-rerun"]["figures"]
    assert kill["finished"] == kill["cells"] == 8 and kill["left_running"] == kill["duplicates"] == 0
    # Whether the kill lands mid-cell is timing on tiny CPU cells (the store lags a loaded machine's workers):
    # the step says where it landed; when mid-cell, the rerun trained what the kill cost.
    assert not kill["kill_failed_a_cell"] or kill["retrained_by_rerun"] >= 1
    tune = state["tune"]["figures"]
    assert len(tune["optuna"]) == len(tune["mlflow"]) >= 2
    assert "agree" in state["evaluate"]["line"] or "same" in state["evaluate"]["line"], state["evaluate"]["line"]
    probes = state["probes"]["figures"]
    assert probes["steps_per_s"]["graph"] == "skipped: needs CUDA" and probes["steps_per_s"]["bare"] > 0
    assert probes["fused"]["2"]["eager"]["total"] == pytest.approx(2 * probes["fused"]["2"]["eager"]["per_model"])
    again = run_cli("gpu-accept", "--cpu", "--out", "acc", "--part", "checks", "--skip", "ray", cwd=project,
                    timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("passed earlier") == 4, again.stdout  # every check but the environment (and Ray)


@pytest.mark.subprocess
@cpu_only
def test_without_a_gpu_it_runs_only_when_asked_for_its_cpu_mode(project):
    proc = run_cli("gpu-accept", "--out", "acc", cwd=project)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "no CUDA GPU is visible here" in proc.stderr and "CPU=1" in proc.stderr
    assert not (project / "acc").exists()


@pytest.mark.parametrize("bidirectional,layers,readout", [(True, 2, "final_states"), (False, 1, "last"),
                                                          (True, 1, "last"), (False, 2, "final_states")])
def test_fused_models_compute_what_each_model_computes_alone(bidirectional, layers, readout):
    torch.manual_seed(0)
    nets = [LSTMClassifier(16, layers, bidirectional, 0.2, readout).eval() for _ in range(3)]
    fused = FusedLSTMClassifier(3, 16, layers, bidirectional, 0.2, readout).load(nets).eval()
    x, y = torch.randn(3, 5, 28, 28), torch.randint(0, 10, (3, 5))  # (M, B, 28 rows, 28 px)
    out = fused(x)
    torch.testing.assert_close(out, torch.stack([n(x[i]) for i, n in enumerate(nets)]), atol=1e-5, rtol=1e-5)
    loss(out, y).backward()  # the summed loss: each model's own gradient
    for i, n in enumerate(nets):
        F.cross_entropy(n(x[i]), y[i]).backward()
        torch.testing.assert_close(fused.w_hh[0].grad[i], n.lstm.weight_hh_l0.grad.T, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(fused.head_w.grad[i], n.head.weight.grad.T, atol=1e-6, rtol=1e-5)
    if bidirectional:  # the backward direction sits after the M forward ones
        torch.testing.assert_close(fused.w_ih[0].grad[3 + 1], nets[1].lstm.weight_ih_l0_reverse.grad.T,
                                   atol=1e-6, rtol=1e-5)


def _steps(outcomes: dict, calls: list):
    """Stand-in steps named as gpu-accept's: each records its call and ends as `outcomes` says."""
    from lstm_mnist.tools.accept import harness as s

    def make(name):
        def step(ctx):
            calls.append(name)
            what = outcomes.get(name, "pass")
            if what == "out of time":
                raise s.OutOfTime("not started")
            if what == "fail":
                raise s.Failed(f"{name} broke")
            return s.Step(name, "pass", f"{name} ok")
        step.__name__ = name.replace("-", "_")
        return step
    return {n: make(n) for n in ("environment", "grid", "report", "kill-rerun", "evaluate")}


def test_a_step_waits_for_what_it_reads_and_reruns_when_that_ran_again(tmp_path, monkeypatch):
    from lstm_mnist.tools.accept import run

    calls = []
    f = _steps({"grid": "fail"}, calls)
    monkeypatch.setattr(run, "PARTS", {"answer": (f["environment"], f["grid"], f["report"]), "all": ()})
    assert run.main(out=str(tmp_path / "acc"), part="answer", cpu=True) == 1
    state = json.loads((tmp_path / "acc" / "steps.json").read_text())
    assert calls == ["environment", "grid"] and state["report"]["status"] == "skip"
    assert state["report"]["line"] == "not run: grid has not passed"

    calls.clear()
    f = _steps({}, calls)
    monkeypatch.setattr(run, "PARTS", {"answer": (f["environment"], f["grid"], f["report"]), "all": ()})
    assert run.main(out=str(tmp_path / "acc"), part="answer", cpu=True) == 0
    assert calls == ["environment", "grid", "report"]
    calls.clear()
    assert run.main(out=str(tmp_path / "acc"), part="answer", cpu=True) == 0
    assert calls == ["environment"]  # both passed earlier
    calls.clear()
    assert run.main(out=str(tmp_path / "acc"), part="answer", cpu=True, again=True) == 0
    assert calls == ["environment", "grid", "report"]


def test_a_spent_budget_leaves_the_rest_for_the_next_call(tmp_path, monkeypatch):
    from lstm_mnist.tools.accept import run

    calls = []
    f = _steps({"evaluate": "out of time"}, calls)
    monkeypatch.setattr(run, "PARTS", {"checks": (f["environment"], f["kill-rerun"], f["evaluate"]), "all": ()})
    assert run.main(out=str(tmp_path / "acc"), part="checks", cpu=True, budget=600) == 0
    state = json.loads((tmp_path / "acc" / "steps.json").read_text())
    assert calls == ["environment", "kill-rerun", "evaluate"] and "evaluate" not in state
    summary = (tmp_path / "acc" / "summary.txt").read_text()
    assert "0 failed" in summary


def test_a_commands_time_limit_is_what_is_left_of_the_budget(tmp_path):
    import time

    from lstm_mnist.tools.accept import harness as s

    ctx = s.Context(tmp_path, False, {}, deadline=time.monotonic() + 100)
    assert 100 - s.RESERVE_S - 1 < ctx.limit(300) <= 100 - s.RESERVE_S and ctx.limit(10) == 10
    ctx.deadline = time.monotonic() + s.RESERVE_S + s.MIN_START_S - 1
    with pytest.raises(s.OutOfTime, match="of this call's budget left; rerun to continue"):
        ctx.limit(300)
    assert s.Context(tmp_path, False, {}).limit(300) == 300
    # CPU mode: a command's own limit only catches a hang on a loaded machine, CPU_SLACK times longer; the
    # call's budget still bounds it
    assert s.Context(tmp_path, True, {}).limit(300) == 300 * s.CPU_SLACK
    cpu = s.Context(tmp_path, True, {}, deadline=time.monotonic() + 100)
    assert cpu.limit(10) == 10 * s.CPU_SLACK and cpu.limit(300) <= 100 - s.RESERVE_S
