"""`bench` runs all three pipelines and writes its figures (speed targets are checked by `make bench`)."""
import pytest
import json

from .conftest import run_cli


@pytest.mark.subprocess
def test_bench_smoke_writes_json(project):
    proc = run_cli("bench", "--batches", "3", "--warmup", "1", "--rounds", "1", "--out", "b.json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads((project / "b.json").read_text())
    assert set(figures["samples_per_s"]) == {"harness", "dataloader", "bare"}
    assert all(v > 0 for v in figures["samples_per_s"].values())
    assert figures["harness_over_bare"] == figures["samples_per_s"]["harness"] / figures["samples_per_s"]["bare"]
    assert "a/b =" in proc.stdout and "a/c =" in proc.stdout
