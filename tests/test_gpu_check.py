"""gpu-check: its CPU smoke run end to end on tiny data (every step, marked as not a GPU figure), the knee
rule, the grid projections, and that it loads neither MLflow nor Optuna."""
import json
import os
import subprocess
import sys

import pytest
import torch

from lstm_mnist.gpu import check as gpu_check
from lstm_mnist.config import ConfigError

from .conftest import REPO
from .test_mps import calls, standin

cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU smoke mode")


@pytest.mark.subprocess
@cpu_only
def test_cpu_smoke_run_end_to_end(project, capsys):
    figures = gpu_check.main(out="reports/g.json", workers=(1, 2, 4, 8), seconds=1.0)
    printed = capsys.readouterr().out
    assert json.loads((project / "reports" / "g.json").read_text()) == figures
    assert figures["cpu_smoke"] is True and figures["note"] == gpu_check.SMOKE
    assert printed.splitlines()[0].endswith(f"[{gpu_check.SMOKE}]") and printed.count(gpu_check.SMOKE) >= 3
    gpu = figures["gpu"]
    assert gpu["name"] is None and gpu["count"] == 0 and set(gpu) >= {"driver", "cuda", "cudnn", "mps_available"}
    full = figures["full_model"]
    assert full["train_s"] == pytest.approx(full["step_s"] * 750) and full["epoch_s"] > full["train_s"] > 0
    assert full["val_s"] > 0 and full["val_images_timed"] == 120  # tiny data: 120 images timed, scaled to 12,000
    t = figures["throughput"]
    assert t["harness_over_bare"] == pytest.approx(t["harness_samples_per_s"] / t["bare_samples_per_s"])
    points = figures["grid"]["curves"]["plain"]
    assert [p["workers"] for p in points] == [1, 2]  # a CPU smoke run measures 1 and 2 workers only
    assert all(p["steps"] > 0 and p["steps_per_s"] > 0 for p in points), points
    two = points[1]["per_worker"]
    assert [w["cell"] for w in two] == ["full-s0", "full-s1"]  # one arm, worker i on seed i
    assert two[0]["cores"] != two[1]["cores"] or len(os.sched_getaffinity(0)) == 1
    assert two[0]["steps_per_s"] + two[1]["steps_per_s"] == pytest.approx(points[1]["steps_per_s"])
    rec = figures["recommended"]["plain"]
    assert rec["workers"] in (1, 2) and rec["rule"] == gpu_check.RULE
    ablation = figures["projections"]["plain"]["experiments/ablation.toml"]
    assert ablation["cells"] == 42 and ablation["steps"] == 42 * 35 * 750 and "upper bound" in ablation["bound"]
    assert figures["projections"]["plain"]["experiments/factorial.toml"]["cells"] == 48
    assert "recommended WORKERS=" in printed and "wrote reports/g.json" in printed


@pytest.mark.subprocess
@cpu_only
def test_cpu_smoke_run_under_mps(project, monkeypatch):
    log = standin(project, monkeypatch)
    figures = gpu_check.main(out="g.json", mps=True, workers=(1,), seconds=0.5)
    assert set(figures["grid"]["curves"]) == {"plain", "mps"} and set(figures["projections"]) == {"plain", "mps"}
    assert figures["grid"]["curves"]["mps"][0]["steps"] > 0
    # The workers are forked from one forkserver, started before the daemon: each must still see its pipe folder.
    (plain,), (under,) = (figures["grid"]["curves"][k][0]["per_worker"] for k in ("plain", "mps"))
    assert plain["mps_pipe"] is None and under["mps_pipe"] and under["mps_pipe"].endswith("pipe"), (plain, under)
    assert [c["argv"] for c in calls(log)] == [["-d"], []]  # started once, told to quit once


def test_mps_without_the_binary_fails_before_measuring(project, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="nvidia-cuda-mps-control not found"):
        gpu_check.main(out="g.json", mps=True)
    assert not (project / "g.json").exists()


def test_knee_is_the_fewest_workers_within_90_percent_of_the_best():
    points = [{"workers": 1, "steps_per_s": 50.0}, {"workers": 2, "steps_per_s": 95.0},
              {"workers": 4, "steps_per_s": 180.0}, {"workers": 8, "steps_per_s": 190.0},
              {"workers": 16, "error": "worker 3 failed: OutOfMemoryError"}]
    rec = gpu_check.recommend(points)
    assert rec == {"workers": 4, "steps_per_s": 180.0, "best_steps_per_s": 190.0, "rule": gpu_check.RULE,
                   "measure_more": []}
    assert gpu_check.recommend([{"workers": 1, "error": "x"}]) is None


def test_a_curve_still_rising_at_its_largest_count_asks_for_larger_counts():
    """The H200's MPS curve of this project (2026-11-29): 1,2,4,8 rose all the way (knee 8 = the edge), and
    8,12,16 then found the knee at 12. A flat last step, or a knee inside the range, asks for nothing."""
    def curve(*pairs):
        return [{"workers": w, "steps_per_s": s} for w, s in pairs]

    rising = gpu_check.recommend(curve((1, 151.7), (2, 362.2), (4, 599.4), (8, 1149.9)))
    assert rising["workers"] == 8 and rising["measure_more"] == [8, 12, 16]
    assert gpu_check.recommend(curve((8, 1301.9), (12, 1757.1), (16, 1696.9)))["measure_more"] == []
    assert gpu_check.recommend(curve((8, 700.7), (12, 703.0), (16, 700.6)))["measure_more"] == []
    flat_edge = gpu_check.recommend(curve((1, 100.0), (2, 95.0), (4, 100.0)))  # knee 1: inside
    assert flat_edge["workers"] == 1 and flat_edge["measure_more"] == []
    assert gpu_check.recommend(curve((4, 100.0)))["measure_more"] == []  # one point: nothing to say


def test_the_published_h200_figures_read_back_with_their_advice():
    """docs/results/gpu-check-h200: the summary of the first run's figures now says that both curves were
    still rising at 8 workers and which counts to measure; the second run's figures need no more."""
    first, second = (json.loads((REPO / "docs/results/gpu-check-h200" / f"workers-{w}.json").read_text())
                     for w in ("1-2-4-8", "8-12-16"))
    for r in (first, second):
        r["recommended"] = {name: gpu_check.recommend(points) for name, points in r["grid"]["curves"].items()}
    text = gpu_check.summary(first)
    assert "still rising at 8 workers" in text and "`gpu-check --workers 8,12,16`" in text
    assert "`gpu-check --mps --workers 8,12,16`" in text
    assert "still rising" not in gpu_check.summary(second)
    assert second["recommended"]["mps"]["workers"] == 12 and second["recommended"]["plain"]["workers"] == 8


def test_projection_is_an_upper_bound_in_steps(project):
    p = gpu_check.project("experiments/ablation-quick.toml", steps_per_s=10.0, val_ratio=0.5)
    quick = gpu_check.grid.load("experiments/ablation-quick.toml")
    budget = quick.budget
    per_cell = budget["max_epochs"] * -(-budget["train_samples"] // 64)
    assert p["cells"] == 28 and p["steps"] == 28 * per_cell
    assert p["train_h"] == pytest.approx(p["steps"] / 10 / 3600)
    assert p["with_val_h"] == pytest.approx(1.5 * p["train_h"])


def test_worker_counts_argument():
    assert gpu_check.parse_worker_counts("8,1, 2,4") == (1, 2, 4, 8)
    for bad in ("", "0", "1,x", "2;4"):
        with pytest.raises(ConfigError, match="--workers"):
            gpu_check.parse_worker_counts(bad)


@pytest.mark.subprocess
def test_imports_neither_mlflow_nor_optuna():
    code = ("import sys, lstm_mnist.gpu.check; "
            "assert 'mlflow' not in sys.modules and 'optuna' not in sys.modules, "
            "[m for m in sys.modules if m.startswith(('mlflow', 'optuna'))]")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_no_plain_measures_under_mps_only(project, monkeypatch):
    import contextlib

    curves = []
    monkeypatch.setattr(gpu_check.mps_daemon, "require", lambda: "nvidia-cuda-mps-control")
    monkeypatch.setattr(gpu_check.mps_daemon, "daemon", lambda enabled: contextlib.nullcontext())
    monkeypatch.setattr(gpu_check, "_curve", lambda cells, counts, s, w: curves.append(counts) or
                        [{"workers": n, "steps_per_s": 10.0 * n} for n in counts])
    monkeypatch.setattr(gpu_check, "single_process", lambda *a, **kw: {
        "full_model": {"step_s": 0.01, "train_s": 7.5, "val_s": 0.5, "epoch_s": 8.0},
        "throughput": {"harness_samples_per_s": 1.0, "bare_samples_per_s": 1.0, "harness_over_bare": 1.0}})
    figures = gpu_check.main(out="g.json", mps=True, plain=False, workers=(1, 2))
    assert len(curves) == 1 and set(figures["grid"]["curves"]) == set(figures["recommended"]) == {"mps"}
    assert figures["recommended"]["mps"]["workers"] == 2 and "projections" in figures


def test_no_plain_without_mps_is_one_line(project):
    with pytest.raises(ConfigError, match="--no-plain goes with --mps"):
        gpu_check.main(out="g.json", plain=False)
