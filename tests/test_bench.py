"""`bench` runs all three pipelines and writes its figures (speed targets are checked by `make bench`)."""
import json
import re

import pytest

from .conftest import run_cli


@pytest.mark.subprocess
def test_bench_smoke_writes_json(project):
    proc = run_cli("bench", "--batches", "3", "--warmup", "1", "--rounds", "1", "--out", "b.json", cwd=project)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads((project / "b.json").read_text())
    assert set(figures["samples_per_s"]) == {"harness", "dataloader", "bare"}
    assert all(v > 0 for v in figures["samples_per_s"].values())
    printed = dict(re.findall(r"(a/[bc]) = (\d+\.\d\d)", proc.stdout))  # the line a user reads agrees with the file
    assert printed == {"a/b": f"{figures['harness_over_dataloader']:.2f}", "a/c": f"{figures['harness_over_bare']:.2f}"}
