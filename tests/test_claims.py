"""Claims (lstm_mnist/claims.py): one winner per key across processes; store outages (outages.WaitingClient)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from mlflow.exceptions import MlflowException

from lstm_mnist import claims
from lstm_mnist.tracking import outages

from . import launcher
from .test_tune import postgres  # noqa: F401 (the fixture)

RACE = """
import json, sys, time, uuid
from datetime import datetime
from pathlib import Path
from lstm_mnist import claims
where, start, keys, planned = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
storage = claims.open_storage(where if "://" in where else None, Path(where))
c = claims.Claims(storage, "race", since=datetime.fromtimestamp(planned))
while time.time() < start:
    time.sleep(0.001)
parent, made = claims.once(c, "parent", lambda: uuid.uuid4().hex)
won = []
for k in range(keys):
    got = c.take(f"cell-{k}")
    if isinstance(got, claims.Claim):
        won.append(k)
        c.release(got, done=True)
print(json.dumps({"won": won, "parent": parent, "made": made}))
"""


def _race(where: str, n: int = 6, keys: int = 40) -> None:
    """n processes start at one instant and take the same keys: each key is won exactly once, and the parent
    value is made by one of them and seen by all."""
    planned = time.time()  # every process read the record (found nothing done) before any started
    start = planned + 4
    procs = [launcher.popen([where, str(start), str(keys), str(planned)], os.getcwd(), code=RACE) for _ in range(n)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    won = sorted(k for r in results for k in r["won"])
    assert won == list(range(keys))  # every key once: none twice, none lost
    assert len({r["parent"] for r in results}) == 1 and sum(r["made"] for r in results) == 1


@pytest.mark.subprocess
def test_processes_racing_for_the_same_keys_each_win_distinct_ones(tmp_path):
    _race(str(tmp_path / "c.journal"))


@pytest.mark.subprocess
def test_the_same_race_on_postgresql(postgres):  # noqa: F811
    """Several machines: the claims in an RDB (a row lock decides each WAITING -> RUNNING flip)."""
    _race(postgres, n=4, keys=20)


def _claims(tmp_path, name="g") -> claims.Claims:
    return claims.Claims(claims.open_storage(None, tmp_path / "c.journal"), name)


def test_two_offers_of_one_key_still_have_one_winner(tmp_path):
    """Two WAITING trials for one key (two processes offered it at once): only the lowest may be taken."""
    a, b = _claims(tmp_path), _claims(tmp_path)
    a.study.enqueue_trial({}, user_attrs={"claim": "k"})
    b.study.enqueue_trial({}, user_attrs={"claim": "k"})
    first = a.take("k")
    assert isinstance(first, claims.Claim) and first.number == 0
    assert b.take("k").startswith("claimed by process")
    b.release(first, done=False)  # its cell failed: the key can be taken again, by the next trial
    again = b.take("k")
    assert isinstance(again, claims.Claim) and again.number == 1


@pytest.mark.subprocess
def test_a_claim_of_a_dead_process_is_freed(tmp_path):
    a = _claims(tmp_path)
    got = a.take("k")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from lstm_mnist.machine import host

    host = host.process_stamp(os.getpid()).split(":")[0]
    a.storage.set_trial_user_attr(got.trial_id, "process", f"{host}:{dead.stdout.strip()}:1")
    b = _claims(tmp_path)
    assert b.reap() == 1
    assert isinstance(b.take("k"), claims.Claim)


def test_a_key_finished_before_this_start_is_the_mlflow_records_to_judge(tmp_path):
    """COMPLETE before this invocation planned: MLflow said the cell is not done (its run deleted, say), so it
    may be trained again; COMPLETE since: another process finished it meanwhile."""
    old = _claims(tmp_path)
    old.release(old.take("k"), done=True)
    new = _claims(tmp_path)
    assert isinstance(new.take("k"), claims.Claim)
    other = _claims(tmp_path)
    other.since = new.since
    new.release(next(iter(new.held.values())), done=True)
    assert other.take("k").startswith("finished meanwhile")


# ---------------------------------------------------------------- store outages
class Flaky:
    """A client whose calls fail `n` times the way an unreachable server does, then work."""

    def __init__(self, n: int, message: str = "API request failed: Connection refused"):
        self.n, self.calls, self.message = n, 0, message

    def log_batch(self, run_id, metrics=()):
        self.calls += 1
        if self.calls <= self.n:
            raise MlflowException(self.message)
        return "ok"

    def create_run(self, experiment_id, start_time=None, tags=None, run_name=None):
        self.calls += 1
        self.tags = tags
        raise MlflowException("Max retries exceeded")

    def search_runs(self, *args, **kwargs):
        return ["found"]  # the lost create was committed after all


class Broken:
    def log_batch(self, run_id):
        raise ValueError("bad metric")


@pytest.fixture
def patient(monkeypatch):
    """No real sleeping; a store already reached once (so the full wait applies); state restored after."""
    monkeypatch.setattr(outages.time, "sleep", lambda s: None)
    monkeypatch.setitem(outages._contact, "reached", True)
    monkeypatch.setitem(outages._contact, "down", False)
    monkeypatch.delenv("LSTM_MNIST_STORE_WAIT_S", raising=False)


def test_an_outage_is_waited_out_and_a_long_one_is_one_line(monkeypatch, capsys, patient):
    flaky = Flaky(3)
    assert outages.WaitingClient(flaky, "http://h:5000").log_batch("r") == "ok" and flaky.calls == 4
    out = capsys.readouterr().out
    assert "unreachable (Connection refused)" in out and "back after" in out

    clock = iter(range(0, 10_000, 100))
    monkeypatch.setattr(outages.time, "monotonic", lambda: next(clock))
    monkeypatch.setenv("LSTM_MNIST_STORE_WAIT_S", "250")
    with pytest.raises(outages.StoreDown, match=r"unreachable for \d+ s \(Connection refused\).*run the same command"):
        outages.WaitingClient(Flaky(99), "http://h:5000").log_batch("r")
    with pytest.raises(ValueError):  # not an outage: raised at once
        outages.WaitingClient(Broken(), "u").log_batch("r")


def test_a_retried_create_finds_the_run_the_lost_attempt_made(patient):
    flaky = Flaky(0)
    assert outages.WaitingClient(flaky, "u").create_run("1", tags={"a": "b"}) == "found"
    assert flaky.calls == 1 and "lstm_mnist.create_id" in flaky.tags


@pytest.mark.parametrize("message, reason", [
    ("(sqlite3.OperationalError) database is locked", "database is locked"),
    ("(sqlite3.OperationalError) attempt to write a readonly database", "readonly database"),
    ("API request to endpoint /api/2.0/mlflow/runs/create failed with error code 503 != 200", "error code 503"),
    # the server killed while it answered: the response cut short (seen in CI mid-grid)
    ("API request to http://127.0.0.1:48047/api/2.0/mlflow/runs/log-batch failed with exception ('Connection "
     "broken: IncompleteRead(0 bytes read, 2 more expected)', IncompleteRead(0 bytes read, 2 more expected))",
     "Connection broken"),
    ("RESOURCE_DOES_NOT_EXIST: Run 'x' not found", None),
])
def test_what_counts_as_an_outage(message, reason):
    assert outages.unreachable(MlflowException(message)) == reason


def test_a_value_made_once_is_remade_when_it_is_no_longer_valid(tmp_path):
    """The parent run recorded in the claims journal was in a store since replaced: a new one is made."""
    a = _claims(tmp_path)
    assert claims.once(a, "parent", lambda: "run-1") == ("run-1", True)
    assert claims.once(_claims(tmp_path), "parent", lambda: "never") == ("run-1", False)
    assert claims.once(_claims(tmp_path), "parent", lambda: "run-2", valid=lambda v: v != "run-1") == ("run-2", True)
    assert claims.once(_claims(tmp_path), "parent", lambda: "never") == ("run-2", False)
