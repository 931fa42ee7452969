"""Ray as the engine (`ablate --ray`): the data shipped through the object store and checked on arrival, and the
real CLI on a real multi-node Ray cluster on this machine (ray.cluster_utils.Cluster: each node its own raylet
and worker processes, never a mock): every cell once, spread over the nodes; a task's worker process killed,
a node removed, and the driver killed then rerun, with the chaos suite's invariant table."""
from __future__ import annotations

import json
import os
import re
import signal
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from lstm_mnist.machine.host import cmdline
from lstm_mnist.builtin import data

from .chaos_tools import Cli, descendants, left_behind, record, running_tags, runs, training
from .conftest import REPO, TINY_BUDGET, cli

ray = pytest.importorskip("ray", reason="Ray is not installed (the ray extra: make install)")

# The tests on a cluster come in two groups (`--dist loadgroup`): each group's tests run in one pytest process,
# on that process's one cluster (the module's fixture), and the two groups at once, on two clusters; each test
# counts the processes of its own cluster only.
# Each is a scenario: `make scenarios` runs them, `make test` leaves them out.
# How long a test waits for a cell to start, train or end: a timeout is only a hang detector, and CI's scenarios
# (4 pytest processes on 2 cores, two Ray clusters and the gpu-accept runs among them) once saw a 2-epoch grid of 8
# tiny cells take past 300 s, and a cell's first epoch past 180 s; 157 s and 80 s were seen here under that load.
LOADED_S = 600


def GROUP_A(test):
    return pytest.mark.scenario(pytest.mark.xdist_group("ray-a")(test))


def GROUP_B(test):
    return pytest.mark.scenario(pytest.mark.xdist_group("ray-b")(test))


# ---------------------------------------------------------------- the data, shipped (no cluster)
def test_the_data_arrives_as_bytes_and_is_fingerprinted_on_arrival(tiny_data, tmp_path):
    raws = data.raw_files(tiny_data)
    fp = data.fingerprint(tiny_data)
    nowhere = tmp_path / "no-files-here"
    data.provide(str(nowhere), raws, fp)
    arrays, got = data._read_all(str(nowhere))  # no file is read: a node without MNIST trains all the same
    assert got == fp and arrays["train_images"].shape == data._read_all(tiny_data)[0]["train_images"].shape
    broken = {**raws, "test_labels": raws["test_labels"][:-1] + bytes([(raws["test_labels"][-1] + 1) % 10])}
    with pytest.raises(data.DataError, match="corrupted on the way"):
        data.provide(str(tmp_path / "other"), broken, fp)


@pytest.mark.parametrize("args, message", [
    (["--cpus-per-cell", "2"], "--cpus-per-cell and --gpus-per-cell go with --ray"),
    (["--ray", "--gpus-per-cell", "1.5"], "--gpus-per-cell 1.5: give a fraction of one GPU"),
    (["--ray", "--cpus-per-cell", "0"], "--cpus-per-cell 0.0: give the CPUs each cell takes"),
    (["--ray", "--shard", "1/2"], "--shard does not go with --ray"),
])
def test_a_bad_ray_option_is_one_line_naming_the_fix(project, capsys, args, message):
    path = _grid(project)
    code, out, err = cli(capsys, "ablate", str(path), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


# ---------------------------------------------------------------- a real cluster of three nodes
GRID = """experiment = "onray"
designs = ["add_one_in"]
flags = ["adamw", "dropout", "bidirectional"]
seeds = [0, 1]
[budget]
max_epochs = {epochs}
{budget}"""


def _grid(folder: Path, epochs: int = 2) -> Path:
    path = folder / "experiments" / "onray.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(GRID.format(epochs=epochs, budget=TINY_BUDGET))
    return path


@pytest.fixture(scope="module")
def cluster():
    """A head and a worker node of one CPU each: two raylets, two sets of worker processes (a third joins and
    is removed in the node test)."""
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [c.add_node(num_cpus=1)]
    c.wait_for_nodes()
    yield c, workers
    c.shutdown()


def _a_ray_worker(project: Path, alive, timeout: float = LOADED_S) -> str:
    """"ray:HOST:PID" of a task that has begun to train (its first report named its process); "" when none did in
    time or `alive()` turned False. Read from the store's file every 20 ms: CI saw every cell end between two
    MLflow searches."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        workers = [w for w in running_tags(project / "mlruns" / "mlflow.db", "worker") if w.startswith("ray:")]
        if workers:
            return workers[0]
        time.sleep(0.02)
    return ""


def _runs(project: Path, experiment: str = "onray") -> list:
    return runs(f"sqlite:///{project}/mlruns/mlflow.db", experiment)


def _invariants(project: Path, experiment: str = "onray") -> dict:
    all_runs = _runs(project, experiment)
    cells = [r for r in all_runs if r.data.tags.get("lstm_mnist.role") != "grid"]
    finished = Counter(r.data.tags["config_hash"] for r in cells if r.info.status == "FINISHED")
    return {"cells_finished": len(finished), "cells_lost": 8 - len(finished),
            "cells_trained_twice": sum(n > 1 for n in finished.values()),
            "runs_failed": sum(r.info.status == "FAILED" for r in cells),
            "left_running": sum(r.info.status == "RUNNING" for r in all_runs),
            "nodes": len({r.data.tags.get("ray_node_id") for r in cells if r.info.status == "FINISHED"}),
            "retried": sum("retried" in r.data.tags for r in cells),
            "resumed": sum("resumed_from" in r.data.tags for r in cells)}


def _epochs_once(project: Path, run) -> list[int]:
    """The steps of a run's val_loss history: each epoch once, none missing, is range(epochs_trained)."""
    import mlflow

    c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    return sorted(m.step for m in c.get_metric_history(run.info.run_id, "val_loss"))


def _cell_tasks(c, grace_s: float = 0.0) -> list[int]:
    """This cluster's worker processes training a cell (Ray names them after the task; a raylet starts its
    node's workers), once `grace_s` has let the cluster end a finished or dead driver's workers (it notices a
    driver's death by its heartbeat)."""
    raylets = [n.all_processes["raylet"][0].process.pid for n in (c.head_node, *c.worker_nodes)]
    deadline = time.monotonic() + grace_s
    while True:
        tasks = [p for r in raylets for p in descendants(r) if "ray::_train_cell" in cmdline(p)]
        if not tasks or time.monotonic() >= deadline:
            return tasks
        time.sleep(0.5)


@GROUP_A
@pytest.mark.subprocess
def test_a_grid_on_a_two_node_cluster_trains_every_cell_once_across_the_nodes(project, cluster):
    c, _ = cluster
    run = Cli("ablate", str(_grid(project)), "--ray", c.address, cwd=project)
    assert run.finish(timeout=2 * LOADED_S) == 0, run.stderr[-3000:] + run.stdout[-2000:]
    assert "Traceback" not in run.stderr + run.stdout
    figures = _invariants(project)
    assert "Ray: 2 nodes, 2 CPUs" in run.stdout, run.stdout[:2000]
    assert figures["cells_finished"] == 8 and figures["cells_trained_twice"] == 0 and figures["left_running"] == 0
    assert figures["nodes"] == 2, figures  # two cells at a time on two one-CPU nodes
    again = Cli("ablate", str(_grid(project)), "--ray", c.address, cwd=project)
    assert again.finish(timeout=2 * LOADED_S) == 0 and "nothing to train" in again.stdout


@GROUP_A
@pytest.mark.subprocess
def test_cells_the_cluster_cannot_hold_are_a_one_line_error(project, cluster):
    c, _ = cluster
    run = Cli("ablate", str(_grid(project)), "--ray", c.address, "--cpus-per-cell", "2", cwd=project)
    assert run.finish() == 2, run.stdout + run.stderr  # 2 CPUs in all, but one per node: no node holds a cell
    assert "holds a cell, which asks for 2 CPUs and 0 GPUs: lower --cpus-per-cell" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


@GROUP_A
@pytest.mark.subprocess
@pytest.mark.chaos
def test_a_cell_whose_ray_worker_is_killed_goes_on_from_its_checkpoint_in_its_run(project, cluster):
    c, _ = cluster
    # Cells long enough to be caught mid-training on a fast machine (CI's finished all eight at 4 epochs between
    # two polls of 20 ms), as in the node test.
    run = Cli("ablate", str(_grid(project, epochs=20)), "--ray", c.address, cwd=project)
    assert run.wait_for(r"^start ", 1, timeout=LOADED_S), run.stdout
    worker = _a_ray_worker(project, run.running)
    deadline = time.monotonic() + LOADED_S  # once every running cell's checkpoint holds an epoch: the retry goes on
    while worker and run.running() and time.monotonic() < deadline and not (  # from it, whichever cell it is
            (sides := list((project / "mlruns" / "checkpoints").glob("*.json")))
            and all(json.loads(f.read_text())["epoch"] >= 0 for f in sides) and len(sides) >= 2):
        time.sleep(0.02)
    if worker:
        os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
    killed = int(bool(worker))
    assert run.finish(timeout=2 * LOADED_S) == 0, run.stderr[-3000:] + run.stdout[-2000:]
    figures = _invariants(project)
    record("Ray: a task's worker process SIGKILLed", kills=killed, cells_expected=8, **figures)
    assert killed == 1 and figures["cells_finished"] == 8 and figures["cells_trained_twice"] == 0, figures
    assert figures["runs_failed"] == 0 and figures["retried"] == figures["resumed"] == 1, figures
    assert figures["left_running"] == 0 and "goes on from its checkpoint" in run.stdout, figures
    (retried,) = [r for r in _runs(project) if "retried" in r.data.tags]
    assert int(retried.data.tags["resumed_from"]) >= 1, retried.data.tags  # after an epoch its checkpoint held
    assert _epochs_once(project, retried) == list(range(int(retried.data.metrics["epochs_trained"])))
    assert not list((project / "mlruns" / "checkpoints").glob("*.ckpt"))


@GROUP_B
@pytest.mark.subprocess
@pytest.mark.chaos
def test_a_node_removed_mid_grid_has_its_cells_trained_on_the_others(project, cluster):
    c, _ = cluster
    extra = c.add_node(num_cpus=1)
    c.wait_for_nodes()
    # Cells long enough that the removed node's worker notices its raylet is gone before its cell ends.
    run = Cli("ablate", str(_grid(project, epochs=20)), "--ray", c.address, cwd=project)
    deadline = time.monotonic() + LOADED_S
    while (time.monotonic() < deadline and run.running()  # until a cell trains on the extra node
           and extra.node_id not in running_tags(project / "mlruns" / "mlflow.db", "ray_node_id")):
        time.sleep(0.05)
    c.remove_node(extra, allow_graceful=False)
    assert run.finish(timeout=2 * LOADED_S) == 0, run.stderr[-3000:] + run.stdout[-2000:]
    figures = _invariants(project)
    record("Ray: a node removed mid-grid", kills=1, cells_expected=8, **figures)
    assert figures["cells_finished"] == 8 and figures["cells_trained_twice"] == 0, figures
    assert figures["runs_failed"] == 0 and figures["retried"] >= 1 and figures["left_running"] == 0, figures


@GROUP_B
@pytest.mark.subprocess
@pytest.mark.chaos
def test_the_driver_killed_then_a_rerun_resumes(project, cluster):
    c, _ = cluster
    path = _grid(project, epochs=4)
    first = Cli("ablate", str(path), "--ray", c.address, cwd=project)
    assert first.wait_for(r"^\[\d+/8\]", 1, timeout=LOADED_S), first.stdout
    delivered = first.running()
    first.kill()
    orphans = _cell_tasks(c, grace_s=30)  # Ray ends a dead driver's tasks once it notices (its heartbeat)
    rerun = Cli("ablate", str(path), "--ray", c.address, cwd=project)
    assert rerun.finish(timeout=2 * LOADED_S) == 0, rerun.stderr[-3000:] + rerun.stdout[-2000:]
    figures = _invariants(project)
    # a SIGKILLed driver's children notice it by themselves: on a loaded machine that can take past 10 s
    left = left_behind(first.seen_pids | rerun.seen_pids, grace_s=30)
    figures["processes_left"] = len(left) + len(_cell_tasks(c, grace_s=30))
    record("Ray: the driver SIGKILLed, then a rerun", kills=int(delivered), cells_expected=8,
           tasks_left_after_the_kill=len(orphans), **figures)
    assert delivered and figures["cells_finished"] == 8 and figures["cells_trained_twice"] == 0, figures
    assert figures["left_running"] == 0 and figures["processes_left"] == 0, figures


# ---------------------------------------------------------------- a study on Ray
@GROUP_A
@pytest.mark.subprocess
def test_a_study_on_ray_runs_exactly_its_trials_and_mlflow_agrees_with_optuna(project, cluster):
    from .conftest import run_cli
    from .test_tune import LR, _assert_shared_study, trials_of, write_study

    c, _ = cluster
    path = write_study(project, "onray", LR)
    proc = run_cli("tune", str(path), "--trials", "4", "--ray", c.address, cwd=project, timeout=2 * LOADED_S)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Ray: 2 nodes" in proc.stdout, proc.stdout[-2000:]
    trials = trials_of(project, "onray")
    _assert_shared_study(project, proc, "onray", 4, trials, local=False)
    nodes = {r.data.tags.get("ray_node_id") for r in _runs(project, "lstm-mnist-tune")
             if r.data.tags.get("lstm_mnist.role") == "trial"}
    record("Ray: a study of 4 trials", trials_counted=sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials),
           trials_in_optuna=len(trials), nodes=len(nodes))


@GROUP_A
@pytest.mark.subprocess
@pytest.mark.chaos
def test_a_ray_driver_and_a_plain_ablate_share_one_grid(project, cluster):
    """Claims are the engine's too: a plain `ablate` and a `--ray` one at once train every cell once."""
    c, _ = cluster
    path = _grid(project, epochs=3)
    on_ray = Cli("ablate", str(path), "--ray", c.address, cwd=project)
    plain = Cli("ablate", str(path), cwd=project)
    codes = on_ray.finish(timeout=2 * LOADED_S), plain.finish(timeout=2 * LOADED_S)
    assert codes == (0, 0), on_ray.stderr[-2000:] + plain.stderr[-2000:]
    figures = _invariants(project)
    trained = [int(m.group(1)) if (m := re.search(r"\((\d+) trained now", x.stdout)) else 0 for x in (on_ray, plain)]
    record("Ray and a plain ablate on one grid at once", cells_expected=8, trained_by_each=trained, **figures)
    assert figures["cells_finished"] == 8 and figures["cells_trained_twice"] == 0, figures
    assert figures["left_running"] == 0 and sum(trained) == 8, (trained, figures)


@GROUP_B
@pytest.mark.subprocess
@pytest.mark.chaos
def test_a_study_task_killed_has_its_trial_failed_and_queued_again(project, cluster):
    """The driver hears its trial's task die: it fails the trial at once and queues it again, whichever node
    it ran on."""
    from optuna.trial import TrialState

    from .test_tune import LR, mlflow_runs, trials_of, write_study

    c, _ = cluster
    path = write_study(project, "killray", LR, epochs=8, pruner="none")
    proc = Cli("tune", str(path), "--trials", "4", "--workers", "1", "--ray", c.address, cwd=project)
    worker = _a_ray_worker(project, proc.running)
    delivered = worker.count(":") == 2
    if delivered:
        os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
    assert proc.finish(timeout=2 * LOADED_S) == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    trials = {t.number: t for t in trials_of(project, "killray")}
    lost = [n for n, t in trials.items() if t.user_attrs.get("lost")]  # the trial the kill landed in
    killed = lost[0] if len(lost) == 1 else None
    counted = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials.values())
    retried = [t for t in trials.values() if t.user_attrs.get("retry_of") == killed]
    left = sum(r.info.status == "RUNNING" for r in mlflow_runs(project) if r.data.tags.get("study_name") == "killray")
    record("Ray: a study's task SIGKILLed", kills=int(delivered), lost=len(lost), trials_counted=counted,
           killed_trial_state=trials[killed].state.name if killed is not None else "", retries=len(retried),
           left_running=left)
    assert delivered and killed is not None and trials[killed].state == TrialState.FAIL, trials
    assert counted == 4 and len(retried) == 1 and retried[0].params == trials[killed].params and left == 0


@pytest.mark.subprocess
@pytest.mark.chaos
def test_the_local_cluster_dying_mid_grid_is_one_line_and_a_rerun_resumes(project):
    """`ablate --ray local` starts its own cluster; its dashboard agent SIGKILLed mid-cell makes Ray end the
    node: the command says so in one line (exit 2), nothing is left RUNNING, and a rerun trains the rest."""
    path = _grid(project, epochs=20)
    run = Cli("ablate", str(path), "--ray", "local", cwd=project)
    # 480 s: a fresh local cluster starts its worker processes slowly on a loaded machine (240 s ran out here)
    assert training(project, "onray", 1, timeout=480, alive=run.running), run.stdout[-2000:] + run.stderr[-2000:]
    agents = [p for p in descendants(run.pid) if any(n in cmdline(p) for n in ("dashboard/agent.py", "DashboardAgent"))]
    assert agents, [cmdline(p) for p in descendants(run.pid)]
    os.kill(agents[0], signal.SIGKILL)
    code = run.finish(timeout=240)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    before = _invariants(project)
    rerun = Cli("ablate", str(path), cwd=project)
    assert rerun.finish(timeout=2 * LOADED_S) == 0, rerun.stderr[-2000:]
    after = _invariants(project)
    record("Ray: the local cluster's node dies mid-grid, then a rerun without Ray", kills=1, exit_code=code,
           error_lines=len(errors), left_running_after_the_exit=before["left_running"], **after)
    assert code == 2 and len(errors) == 1 and "the Ray cluster is gone" in errors[0], run.stderr[-3000:]
    assert "Traceback" not in run.stderr and before["left_running"] == 0, before
    assert after["cells_finished"] == 8 and after["cells_trained_twice"] == 0 and after["left_running"] == 0, after



@GROUP_A
@pytest.mark.subprocess
def test_a_task_of_ones_own_trains_on_the_cluster_its_nodes_import_it_from_the_drivers_folder(project, cluster):
    """No data shipped (the task has no ship hook): each node builds the task's splits itself, from the config it
    is handed by pickle, whose module (in the driver's folder, not installed) the node imports by name."""
    from .test_your_task import GRID, TASK

    c, _ = cluster
    (project / "rows_task.py").write_text(TASK)
    (project / "rows.toml").write_text(GRID)
    run = Cli("ablate", "rows.toml", "--ray", c.address, cwd=project, env={"PYTHONPATH": f"{project}:{REPO}"})
    assert run.finish(timeout=2 * LOADED_S) == 0, run.stderr[-3000:] + run.stdout[-2000:]
    assert "8/8 cells FINISHED" in run.stdout and "Traceback" not in run.stderr + run.stdout, run.stdout[-2000:]
    cells = [r.data.tags for r in _runs(project, "rows-ablation") if r.data.tags.get("lstm_mnist.role") != "grid"]
    assert len(cells) == 8 and {t["task"] for t in cells} == {"rows"}


# ---------------------------------------------------------------- a Lightning task on Ray
@GROUP_B
@pytest.mark.subprocess
def test_a_lightning_task_trains_on_the_cluster_as_anywhere(project, cluster):
    """A LightningModule and its loaders (tests/test_lightning_task.py's) as Ray tasks: no data shipped, each node
    builds its loaders; every cell once, the same results as the same grid trained by local workers."""
    import shutil

    from .test_lightning_task import GRID, MODULE

    c, _ = cluster
    (project / "mymodel.py").write_text(textwrap.dedent(MODULE))
    (project / "experiments" / "lit.toml").write_text(GRID)
    env = {"PYTHONPATH": f"{project}:{REPO}"}
    on_ray = Cli("ablate", "experiments/lit.toml", "--ray", c.address, cwd=project, env=env)
    assert on_ray.finish(timeout=2 * LOADED_S) == 0, on_ray.stderr[-3000:] + on_ray.stdout[-2000:]
    local = project.parent / f"{project.name}-local"
    shutil.copytree(project, local, ignore=shutil.ignore_patterns("mlruns"))
    (local / "mlruns").mkdir()
    here = Cli("ablate", "experiments/lit.toml", "--workers", "2", cwd=local, env={"PYTHONPATH": f"{local}:{REPO}"})
    assert here.finish(timeout=2 * LOADED_S) == 0, here.stderr[-3000:]
    got = {tuple(r.data.tags[k] for k in ("arm", "seed")): r.data.metrics["test_f1"] for r in _runs(project, "lit")
           if r.info.status == "FINISHED" and "arm" in r.data.tags}
    want = {tuple(r.data.tags[k] for k in ("arm", "seed")): r.data.metrics["test_f1"] for r in _runs(local, "lit")
            if r.info.status == "FINISHED" and "arm" in r.data.tags}
    assert len(got) == 8 and got == want
    assert {r.data.tags.get("ray_node_id") for r in _runs(project, "lit") if "arm" in r.data.tags} - {None}
