"""Atomic claims over Optuna storages, so any number of processes on one store do each piece of work once:
train a grid cell, create a parent run. `Claims` (claims.py), the storages (storage.py), who holds a trial
(owners.py). Imports `config`, `machine` and optuna only."""
from .claims import Claim, Claims, Heartbeat, once
from .owners import heartbeat_s, holder, is_stale, stamp, stamp_trial
from .storage import RETRIES, ClaimError, hide_password, open_storage, rdb_url

__all__ = ["Claim", "Claims", "Heartbeat", "once", "heartbeat_s", "holder", "is_stale", "stamp", "stamp_trial",
           "RETRIES", "ClaimError", "hide_password", "open_storage", "rdb_url"]
