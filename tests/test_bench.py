"""`bench` runs every pipeline at every arm shape and precision and writes its figures (speed targets are checked
by `make bench`, not here)."""
import json
import re

import pytest

from .conftest import cpu_precisions, cpu_refusal, run_cli


@pytest.mark.subprocess
def test_bench_smoke_writes_json(project):
    proc = run_cli("bench", "--batches", "3", "--warmup", "1", "--rounds", "1", "--out", "b.json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads((project / "b.json").read_text())
    assert set(figures["samples_per_s"]) == {"harness", "dataloader", "bare"}
    assert all(v > 0 for v in figures["samples_per_s"].values())
    printed = dict(re.findall(r"(a/[bc]) = (\d+\.\d\d)", proc.stdout))  # the line a user reads agrees with the file
    assert printed == {"a/b": f"{figures['harness_over_dataloader']:.2f}", "a/c": f"{figures['harness_over_bare']:.2f}"}
    # every arm shape (the task's shape_flags on and off) at every precision a CPU trains at, ratios of this run
    rows = {(r["arm"], r["precision"]): r for r in figures["shapes"]}
    assert figures["precisions"] == list(cpu_precisions())
    assert set(rows) == {(a, p) for a in ("full", "full-bidirectional", "full-width", "full-bidirectional-width")
                         for p in cpu_precisions()}
    for (arm, p), r in rows.items():
        assert r["harness_over_bare"] == pytest.approx(r["harness_samples_per_s"] / r["bare_samples_per_s"])
        ref = rows[(arm, "32")]
        assert r["harness_over_32"] == pytest.approx(r["harness_samples_per_s"] / ref["harness_samples_per_s"])
        line = f"| {arm} | {p} | {r['harness_samples_per_s']:,.0f} | {r['bare_samples_per_s']:,.0f} |"
        assert line in proc.stdout, proc.stdout


@pytest.mark.subprocess
def test_bench_at_chosen_precisions_and_one_the_device_cannot_train_at(project):
    chosen = cpu_precisions()[-1]  # bf16-mixed where the CPU has it
    proc = run_cli("bench", "--precision", chosen, "--batches", "2", "--warmup", "1", "--rounds", "1",
                   "--threads", "1", "--out", "b.json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads((project / "b.json").read_text())
    assert figures["precisions"] == [chosen] and figures["threads"] == 1
    assert {r["precision"] for r in figures["shapes"]} == {chosen} and "harness_over_dataloader" in figures
    assert f"the full arm at precision {chosen}: a/b = " in proc.stdout
    proc = run_cli("bench", "--precision", "32,16-mixed", "--batches", "3", cwd=project)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(cpu_refusal("16-mixed")), proc.stderr
