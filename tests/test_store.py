"""Opening one fresh SQLite store from several processes at the same instant: serialized, never a traceback."""
import sqlite3
import subprocess
import sys
import time

from .conftest import REPO

OPEN = """
import sys, time
from lstm_mnist import track
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # every process starts at the same instant
c = track.client()
track.experiment_id(c, "race")
print(len(c.search_experiments()))
"""


def test_many_processes_open_a_fresh_store_at_once(tmp_path):
    db = tmp_path / "fresh" / "mlflow.db"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{db}", "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    start = time.time() + 8  # enough for every interpreter to import mlflow first
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, str(start)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(5)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err[-2000:]
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
        versions = con.execute("select version_num from alembic_version").fetchall()
        experiments = con.execute("select name from experiments where name = 'race'").fetchall()
    assert not [t for t in tables if t.startswith("_alembic_tmp")] and len(versions) == 1
    assert len(experiments) == 1  # one experiment, whoever created it
