"""Tools of the chaos suite (tests/test_chaos.py): the CLI as a live process, its process tree, signals,
the invariants read back from MLflow, and the per-scenario figures the suite prints."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import mlflow

from lstm_mnist.machine.host import descendants

from . import launcher
from .launcher import alive
from .conftest import free_port

FIGURES: list[dict] = []  # one entry per scenario, printed by conftest's terminal summary
# Where `make chaos` wants them (JSON lines), resolved now: the scenarios run in folders of their own.
REPORT = Path(os.environ["CHAOS_REPORT"]).resolve() if os.environ.get("CHAOS_REPORT") else None


def record(scenario: str, **figures) -> dict:
    entry = {"scenario": scenario, **figures}
    FIGURES.append(entry)
    if REPORT:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        with open(REPORT, "a") as f:
            f.write(json.dumps(entry) + "\n")
    return entry


def read_report(path: Path | None) -> list[dict]:
    """The entries `record` appended to the report file `path` (any process's); [] without one."""
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Cli:
    """`python -m lstm_mnist ...` started in the background; its output collected line by line."""

    def __init__(self, *args: str, cwd: Path, env: dict | None = None, prefix: tuple[str, ...] = ()):
        self.proc = launcher.popen(args, cwd, env, prefix=prefix)
        self.lines: list[str] = []
        self.err: list[str] = []
        self.seen_pids: set[int] = {self.proc.pid}
        self._readers = [threading.Thread(target=self._read, args=(s, d), daemon=True)
                         for s, d in ((self.proc.stdout, self.lines), (self.proc.stderr, self.err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(stream, into: list) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def count(self, pattern: str) -> int:
        return sum(bool(re.search(pattern, line)) for line in self.lines)

    def wait_for(self, pattern: str, n: int = 1, timeout: float = 120) -> bool:
        """Until `pattern` has appeared n times in stdout (True), or the process ended / time ran out (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.seen_pids |= set(descendants(self.pid))
            if self.count(pattern) >= n:
                return True
            if not self.running():
                time.sleep(0.2)  # the last lines may still be in the reader
                return self.count(pattern) >= n
            time.sleep(0.05)
        return False

    def workers(self) -> list[int]:
        """Its worker processes, by their names (a grid's `lstm-mnist-w0`, ..., a study's `lstm-mnist-t0`, ...;
        not the forkserver they are forked from, nor multiprocessing's resource tracker)."""
        kids = descendants(self.pid)
        self.seen_pids |= set(kids)
        return [p for p in kids if worker_name(p)]

    def kill(self) -> None:
        self.seen_pids |= set(descendants(self.pid))
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def finish(self, timeout: float = 300) -> int:
        self.proc.wait(timeout=timeout)
        for t in self._readers:
            t.join(timeout=10)
        return self.proc.returncode

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines)

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)


def worker_name(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().startswith(("lstm-mnist-w", "lstm-mnist-t"))
    except OSError:
        return False


def left_behind(pids: set[int], grace_s: float = 10.0) -> list[int]:
    """Processes of a scenario still alive after a short grace (a killed main's workers die with it)."""
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        living = [p for p in pids if alive(p)]
        if not living:
            return []
        time.sleep(0.2)
    return living


# ---------------------------------------------------------------- what the store says
def runs(uri: str, experiment: str) -> list:
    c = mlflow.MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    return c.search_runs([exp.experiment_id], max_results=1000) if exp else []


def running_tags(db: Path, key: str) -> list[str]:
    """The `key` tag of every RUNNING run in the SQLite store at `db`, read straight from its file: a poll of
    milliseconds, fast enough to catch a cell of well under a second (an MlflowClient's search takes longer than
    that on a loaded machine). [] while the store is being created or written."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5) as con:
            rows = con.execute("SELECT t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
                               "WHERE r.status = 'RUNNING' AND t.key = ?", (key,)).fetchall()
        return [v for (v,) in rows]
    except sqlite3.Error:
        return []


def training(folder: Path, experiment: str, n: int, timeout: float = 180, alive=lambda: True,
             role: str | None = None) -> list:
    """Until `n` runs of the experiment (of this `lstm_mnist.role`, e.g. "trial"; any child run when None) are
    RUNNING with an epoch logged, i.e. mid-training: their runs; [] when time ran out or `alive()` turned
    False."""
    uri, deadline = f"sqlite:///{folder}/mlruns/mlflow.db", time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            mid = [r for r in runs(uri, experiment) if r.info.status == "RUNNING" and "val_loss" in r.data.metrics
                   and r.data.tags.get("lstm_mnist.role") == role]
        except Exception:  # the store is being created
            mid = []
        if len(mid) >= n:
            return mid
        time.sleep(0.1)
    return []


def cell_figures(all_runs: list, expected_hashes: set[str]) -> dict:
    """FINISHED, duplicates (hashes with more than one FINISHED run, or trained by two invocations), lost
    (expected hashes without a FINISHED run) and runs left RUNNING, over a grid's child runs."""
    children = [r for r in all_runs if r.data.tags.get("lstm_mnist.role") not in ("grid", "study")]
    finished = Counter(r.data.tags["config_hash"] for r in children if r.info.status == "FINISHED")
    return {"expected": len(expected_hashes), "finished": sum(finished.values()),
            "duplicates": sum(n - 1 for n in finished.values() if n > 1),
            "lost": len(expected_hashes - set(finished)),
            "left_running": sum(r.info.status == "RUNNING" for r in all_runs),
            "parents": sum(r.data.tags.get("lstm_mnist.role") == "grid" for r in all_runs)}


class Server:
    """`mlflow server` on loopback over a SQLite file, with artifacts served through it; kill and restart."""

    def __init__(self, folder: Path, app_name: str | None = None, env: dict | None = None):
        self.folder, self.port, self.proc = folder, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"
        self.app_name, self.env = app_name, env or {}

    def start(self, timeout: float = 90) -> None:
        app = ["--app-name", self.app_name] if self.app_name else []
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", *app, "--backend-store-uri",
             f"sqlite:///{self.folder}/server.db", "--artifacts-destination", str(self.folder / "server-artifacts"),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            cwd=self.folder, stdout=subprocess.DEVNULL, stderr=open(self.folder / "server.log", "ab"),
            start_new_session=True,  # as `lstm_mnist ui` starts it
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                import urllib.request

                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("mlflow server did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its worker processes, at once
            self.proc.wait(timeout=30)
