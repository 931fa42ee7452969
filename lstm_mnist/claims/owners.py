"""Who holds a trial: each process records itself (host:pid:start) on the trials it runs, so a later start
can tell a trial whose process died (on this host) from one still alive."""
from __future__ import annotations

import os
import socket
from datetime import datetime

import optuna

from ..machine import host




STALE_NO_PID_S = 120  # a RUNNING trial that never recorded its process is stale after this long


# ---------------------------------------------------------------- trials' owners
def stamp_trial(storage, trial_id: int) -> None:
    """Record this process on a trial it runs, so a later start can tell when the process is gone."""
    storage.set_trial_user_attr(trial_id, "process", host.process_stamp(os.getpid()))


def is_stale(t: optuna.trial.FrozenTrial) -> bool:
    """A RUNNING trial whose process on this host is gone (another host's is Optuna's heartbeat's to judge)."""
    stamp = t.user_attrs.get("process")
    if stamp is None:  # died between taking the trial and recording its process
        return (datetime.now() - t.datetime_start).total_seconds() > STALE_NO_PID_S
    name, pid, _ = stamp.split(":")
    return name == socket.gethostname() and host.process_stamp(int(pid)) != stamp


def holder(t: optuna.trial.FrozenTrial) -> str:
    name, _, rest = str(t.user_attrs.get("process", "?:?:?")).partition(":")
    return f"process {rest.partition(':')[0]} on {name}"
