"""The host-wide core lease: invocations on one host divide its cores (machine/lease.py)."""
import json
import os

import mlflow
import pytest

from lstm_mnist.machine import cores, host, lease

from .conftest import run_cli
from .test_grid import TINY_GRID
from .test_workers_pin import cores as fake_cores  # noqa: F401  (the fixture)


def _hold(folder, pid: int, workers: int, stamp: str | None = None) -> None:
    """A lease file as another process would write it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{pid}.json").write_text(json.dumps({"stamp": stamp or host.process_stamp(pid), "workers": workers}))


def test_live_holders_split_the_cores_oldest_first_and_a_dead_one_is_forgotten(tmp_path, monkeypatch,
                                                                                fake_cores):  # noqa: F811
    fake_cores(range(4))
    monkeypatch.setenv(lease.ENV, str(tmp_path / "lease"))
    _hold(tmp_path / "lease", os.getppid(), 1)                       # started before this process: first
    _hold(tmp_path / "lease", 999_999_999, 3, "myhost:999999999:1")  # a holder that died: ignored, file removed
    with lease.Lease(2) as mine:
        assert [mine.share(0), mine.share(1)] == [[1], [2, 3]]  # 3 workers in all: [0] | [1] | [2, 3]
        assert lease.share(0, os.getppid()) == [0]
    assert not (tmp_path / "lease" / "999999999.json").exists()
    assert lease.share(0) == [0, 1, 2, 3]  # no lease held: every visible core


def test_alone_an_invocation_has_every_core_and_releases_them_when_done(tmp_path, monkeypatch, fake_cores):  # noqa: F811
    fake_cores(range(2))
    monkeypatch.setenv(lease.ENV, str(tmp_path / "lease"))
    with lease.Lease(2) as mine:
        assert [mine.share(0), mine.share(1)] == [[0], [1]]
        assert len(lease.holders()) == 1
    assert lease.holders() == []


@pytest.mark.subprocess
def test_a_grid_started_beside_another_invocation_trains_on_its_half_of_the_cores(project):
    """This test process holds a lease for one worker (as another `ablate` would): the grid's cells run on the
    other half, and the runs' tags say so."""
    visible = cores.affinity() or list(range(os.cpu_count()))
    if len(visible) < 2:
        pytest.skip("one core: nothing to divide")
    (project / "experiments" / "tiny-grid.toml").write_text(TINY_GRID)
    with lease.Lease(1):
        proc = run_cli("ablate", "experiments/tiny-grid.toml", cwd=project)
    assert proc.returncode == 0, proc.stderr
    c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    runs = c.search_runs([c.get_experiment_by_name("grid-test").experiment_id])
    tags = {r.data.tags.get("cpu_affinity") for r in runs if r.data.tags.get("lstm_mnist.role") != "grid"}
    assert tags == {cores.share_text(visible[len(visible) // 2:])}
