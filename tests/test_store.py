"""Opening one fresh SQLite store from several processes at the same instant: serialized, never a traceback."""
import sqlite3
import time

import pytest

from lstm_mnist.tracking import store

from . import launcher

OPEN = """
import sys, time
from lstm_mnist.tracking import store
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # every process starts at the same instant
c = store.client()
store.experiment_id(c, "race")
print(len(c.search_experiments()))
"""


@pytest.mark.subprocess
def test_many_processes_open_a_fresh_store_at_once(tmp_path):
    db = tmp_path / "fresh" / "mlflow.db"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{db}"}
    start = time.time() + 4  # enough for every process to import the harness first
    procs = [launcher.popen([str(start)], tmp_path, env, code=OPEN) for _ in range(5)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and "Traceback" not in err, err[-2000:]
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
        versions = con.execute("select version_num from alembic_version").fetchall()
        experiments = con.execute("select name from experiments where name = 'race'").fetchall()
    assert not [t for t in tables if t.startswith("_alembic_tmp")] and len(versions) == 1
    assert len(experiments) == 1  # one experiment, whoever created it


def test_the_newest_grid_is_found_among_more_parents_than_one_search_page(project, monkeypatch):
    """A store with more grid parents than one search returns (PAGE, 1,000 in MLflow): every page is read."""
    import mlflow

    from lstm_mnist.tracking import query

    monkeypatch.setattr(query, "PAGE", 4)  # 11 parents over 3 pages, as 2,750 would be over 1,000
    c = mlflow.MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    exp = c.create_experiment("many")
    for i in range(11):
        tags = {"lstm_mnist.role": "grid", "grid_name": f"g{i}", "last_invoked_ms": str(2_000_000_000_000 + i)}
        c.create_run(exp, start_time=1_700_000_000_000 - i, tags=tags)  # the newest invocation started first
    assert query.latest_parent(("grid",)).tags["grid_name"] == "g10"
    assert len(query.search("many")) == 11


def test_a_reopened_parent_gets_the_provenance_of_the_latest_invocation(project, monkeypatch):
    from lstm_mnist.tracking import groups, store

    parent = groups.parent_run("exp", "grid", "g", {"command": "first"})
    first = store.client().get_run(parent).data.tags["git_commit"]
    monkeypatch.setattr(groups, "provenance", lambda: {"git_commit": "later-commit", "machine": "another machine"})
    groups.reopen(parent, {"command": "second"})
    tags = store.client().get_run(parent).data.tags
    assert first != "later-commit" and tags["git_commit"] == "later-commit" and tags["machine"] == "another machine"
    assert tags["command"] == "second"


def test_switching_to_wal_is_retried_while_another_process_holds_the_file(tmp_path, monkeypatch):
    """Two invocations started together both switch the store to WAL; SQLite may answer "database is
    locked" at once instead of waiting. The switch is retried; past 30 s it is one line, not a traceback."""
    db = tmp_path / "mlflow.db"
    sqlite3.connect(db).close()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    real, calls = sqlite3.connect, []

    def busy_twice(*args, **kwargs):
        calls.append(args)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", busy_twice)
    store.share_sqlite_store()
    assert len(calls) == 3
    with real(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def always_busy(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(sqlite3, "connect", always_busy)
    monkeypatch.setattr(store.time, "monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(store.time, "sleep", lambda s: None)
    with pytest.raises(store.TrackingError, match="stayed locked by another process for 30 s; rerun") as err:
        store.share_sqlite_store()
    assert "\n" not in str(err.value)


def test_ctrl_c_while_a_connection_returns_to_its_pool_logs_no_traceback(caplog):
    """Measured in the suite: Ctrl-C of `ablate` printed SQLAlchemy's "Exception during reset or similar" with
    the KeyboardInterrupt's traceback. That record is dropped; another exception there is still logged."""
    import logging

    import lstm_mnist.tracking.store  # noqa: F401  (installs the filter)

    for name in ("sqlalchemy.pool.impl.QueuePool", "sqlalchemy.pool.impl.NullPool"):
        log = logging.getLogger(name)
        for exc in (KeyboardInterrupt(), ValueError("a real fault")):
            try:
                raise exc
            except BaseException:
                log.error("Exception during reset or similar", exc_info=True)
        assert [r.exc_info[0] for r in caplog.records if r.name == name] == [ValueError], name


def test_a_locked_database_that_is_waited_out_logs_no_traceback(caplog):
    """Measured in CI: a grid's store locked for a second printed MLflow's "SQLAlchemy database error" with its
    traceback, then the retry's own line. The waited-out error's record is dropped; another one is logged."""
    import logging
    import sqlite3

    import sqlalchemy.exc

    import lstm_mnist.tracking.store  # noqa: F401  (installs the filter)

    log = logging.getLogger("mlflow.store.db.utils")
    for text in ("database is locked", "no such table: runs"):
        try:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError(text))
        except sqlalchemy.exc.OperationalError as e:
            log.exception("SQLAlchemy database error. The following exception is caught.\n%s", e)
    kept = [str(r.exc_info[1]) for r in caplog.records if r.name == "mlflow.store.db.utils"]
    assert len(kept) == 1 and "no such table" in kept[0], kept
