"""`make ui` (`python -m lstm_mnist ui`): MLflow's UI on this project's store, opened on the runs table.

MLflow 3's UI opens on its GenAI view ("Traces"), where a training run does not show; the link
`#/experiments/<id>/runs?workflowType=machine_learning` opens the "Model training" runs table instead.
So this prints that link for the experiment of the latest grid or study, tags every experiment as model
training (`mlflow.experimentKind`, read by newer UIs), and serves the store with its artifacts beside it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from . import query, store
from ..config import UserError


def runs_link(base: str, experiment_id: str) -> str:
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def latest_experiment(c, name: str | None = None) -> str | None:
    """The id of the named experiment, else of the one holding the newest grid or study parent run, else of
    the newest run."""
    if name:
        found = store.experiment_id(c, name, create=False)
        if found is None:
            raise UserError(f"--experiment {name!r}: no such experiment in {store.tracking_uri()}; "
                            f"there: {', '.join(sorted(e.name for e in c.search_experiments()))}")
        return found
    latest = query.latest_parent(c=c)
    if latest:
        return latest.experiment_id
    exps = [e.experiment_id for e in c.search_experiments()]
    runs = c.search_runs(exps, order_by=["attributes.start_time DESC"], max_results=1) if exps else []
    return runs[0].info.experiment_id if runs else None  # no grid yet: the newest run's experiment


def tag_experiments(c) -> None:
    """Experiments made before the harness tagged them: mark them model training too."""
    for e in c.search_experiments():
        if e.tags.get("mlflow.experimentKind") is None and e.lifecycle_stage == "active":
            c.set_experiment_tag(e.experiment_id, *next(iter(store.EXPERIMENT_KIND.items())))


def main(port: int = 5000, host: str = "127.0.0.1", experiment: str | None = None, open_browser: bool = False) -> int:
    uri = store.tracking_uri()
    c = store.client()
    exp = latest_experiment(c, experiment)
    if uri.startswith(("http://", "https://")):  # a tracking server is its own UI
        print(runs_link(uri, exp) if exp else uri)
        return 0
    require_full_mlflow()
    tag_experiments(c)
    base = f"http://{host}:{port}"
    link = runs_link(base, exp) if exp else base
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    root = store.artifact_root(uri)
    if root:
        cmd += ["--default-artifact-root", str(root)]
    print(f"MLflow UI for {uri}\nopen {link}\n(the runs table of the latest grid's experiment; Ctrl-C stops the UI)",
          flush=True)
    # MLflow's server-side jobs (a job runner and five huey consumers, ~25 s of CPU at every start) serve
    # GenAI features this harness does not use; off unless the user's environment says otherwise.
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    proc = subprocess.Popen(cmd, start_new_session=True, env=env)  # its own process group: stopped whole, below
    # `kill` (SIGTERM) stops the UI as Ctrl-C does: the server goes with it, not left running on the port.
    signal.signal(signal.SIGTERM, _interrupt)
    if open_browser:
        threading.Thread(target=_open_when_up, args=(base, link), daemon=True).start()
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop(proc)
        return 0


def require_full_mlflow() -> None:
    """MLflow's UI is its server (Flask) and web app, which mlflow-skinny (the slim install) leaves out."""
    import importlib.util
    from pathlib import Path

    import mlflow

    app = Path(mlflow.__file__).parent / "server" / "js" / "build"
    if importlib.util.find_spec("flask") is None or not app.is_dir():
        raise UserError("`ui` needs the full mlflow package (its server and web app); this install has "
                        "mlflow-skinny only: `pip install mlflow==3.17.2`, or on an offline machine a wheel folder "
                        "made with PROFILE=full; or run the UI where the store can be read (docs/offline.md)")


def stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Stop the UI server and the processes it started (`mlflow ui` runs uvicorn in a child): SIGTERM to its
    process group, then SIGKILL to what is left after `grace_s` (uvicorn's graceful shutdown can wait on
    open browser connections for longer than a user waits for Ctrl-C)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    try:
        proc.wait(timeout=grace_s)
        time.sleep(0.2)  # the leader is gone; what it started may still be closing
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left
        proc.wait(timeout=grace_s)
    except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
        pass


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _open_when_up(base: str, link: str, limit_s: float = 60.0) -> None:
    import webbrowser

    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        try:
            urllib.request.urlopen(base, timeout=2)
            webbrowser.open(link)
            return
        except OSError:
            time.sleep(0.5)
