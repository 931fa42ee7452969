"""Who holds a trial (a claim, or a study's trial) and whether that process is still alive.

Each process records itself (host:pid:start) on the trials it holds and, while it holds them, a heartbeat
(`heartbeat`: the time, every HEARTBEAT_S / 2). A RUNNING trial is stale when its process on this host is
gone, or when its process on another host has sent no heartbeat for two HEARTBEAT_S. The heartbeat lives in
the trial's user attrs, so the rule is the same on a journal file (a shared file system) and an RDB, and a
stale trial is failed and queued again by this project's one rule (claims, `lost`, `retry_of`), which
Optuna's own RDB-only heartbeat callback would not keep. Hosts are assumed to agree on the time to well
within HEARTBEAT_S (NTP).
"""
from __future__ import annotations

import os
import time
from datetime import datetime

import optuna

from ..machine import host


STALE_NO_PID_S = 120  # a RUNNING trial that never recorded its process is stale after this long


def heartbeat_s() -> float:
    """Seconds between two heartbeats (LSTM_MNIST_HEARTBEAT_S, default 60): another host's trial is stale after
    two of them without one."""
    try:
        return max(0.2, float(os.environ.get("LSTM_MNIST_HEARTBEAT_S", "60")))
    except ValueError:
        return 60.0


# ---------------------------------------------------------------- trials' owners
def stamp(set_user_attr) -> None:
    """Record this process (and a first heartbeat) on a trial it holds, through the trial's `set_user_attr`
    (an optuna.Trial's, or a storage's bound to one trial id), so any later start can tell when it is gone."""
    set_user_attr("process", host.process_stamp(os.getpid()))
    set_user_attr("heartbeat", time.time())


def stamp_trial(storage, trial_id: int) -> None:
    stamp(lambda k, v: storage.set_trial_user_attr(trial_id, k, v))


def beat(storage, trial_id: int) -> None:
    storage.set_trial_user_attr(trial_id, "heartbeat", time.time())


def is_stale(t: optuna.trial.FrozenTrial) -> bool:
    """A RUNNING trial whose process is gone: dead on this host, or silent for two heartbeats on another."""
    stamped = t.user_attrs.get("process")
    if stamped is None:  # died between taking the trial and recording its process
        return (datetime.now() - t.datetime_start).total_seconds() > STALE_NO_PID_S
    name, pid, _ = stamped.split(":")
    if name == host.name():
        return host.process_stamp(int(pid)) != stamped
    last = t.user_attrs.get("heartbeat")
    if not isinstance(last, (int, float)):  # stamped by a version without heartbeats: its host must judge it
        return False
    return time.time() - last > 2 * heartbeat_s()


def holder(t: optuna.trial.FrozenTrial) -> str:
    name, _, rest = str(t.user_attrs.get("process", "?:?:?")).partition(":")
    return f"process {rest.partition(':')[0]} on {name}"
