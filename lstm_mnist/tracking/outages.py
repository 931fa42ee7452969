"""Tracking-store outages: a client whose calls wait them out, within a limit, and say so in one line.

A server that restarts, a SQLite store that another process holds locked or that turned read-only: the
write is retried with a bounded exponential backoff, and nothing is dropped because the caller blocks
meanwhile. Past the limit (`--store-wait`, per outage) the command stops with one line (StoreDown); what
was recorded is kept and a rerun resumes. Decides by the error's text, so it imports no MLflow itself.
"""
from __future__ import annotations

import functools
import os
import time

from ..config import UserError


class StoreDown(UserError):
    """The tracking store stayed unreachable (or locked, or read-only) past the wait limit."""


class Refused(UserError):
    """The tracking server answered, and refused this client's user or password (basic-auth): no wait helps."""


STORE_WAIT_S = 600.0   # an outage longer than this stops a grid or study (--store-wait)
FIRST_CONTACT_S = 15.0  # a store never reached by this process: a wrong URI should not wait ten minutes
# Against a server: our backoff retries (not MLflow's ~4 min hidden inside one call), and no "View run at"
# link printed for every ended run (the grid prints its own line per cell). A user's own settings win.
SERVER_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
                   "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
# What a store that is down, restarting, locked or read-only says (MLflow wraps them in MlflowException).
UNREACHABLE = ("Connection refused", "Max retries exceeded", "Failed to establish a new connection",
               "Connection aborted", "Connection reset", "Connection broken", "RemoteDisconnected",
               "IncompleteRead", "Broken pipe", "Read timed out",
               "error code 502", "error code 503", "error code 504", "database is locked",
               "readonly database", "unable to open database file", "disk I/O error")
# What a server behind MLflow's basic-auth app answers a client it will not serve, and what to do about it.
# (MLflow's REST client says "error code 401"; its artifact uploads, through requests, "401 Client Error".)
REFUSED = {
    ("error code 401", "401 Client Error"): ("refused the user and password (401): set MLFLOW_TRACKING_USERNAME "
                                             "and MLFLOW_TRACKING_PASSWORD to an account of its basic-auth app "
                                             "(ask its admin for one)"),
    ("error code 403", "403 Client Error"): ("refused this user the experiment (403): ask the server's admin for "
                                             "EDIT on it, or use an account that has it"),
}
_contact = {"reached": False, "down": False}  # this process and the store: reached once; given up on


def set_store_wait(seconds: float) -> None:
    """How long one outage may last before a command stops (in the environment: its workers inherit it)."""
    os.environ["LSTM_MNIST_STORE_WAIT_S"] = str(seconds)


def store_wait() -> float:
    return float(os.environ.get("LSTM_MNIST_STORE_WAIT_S", STORE_WAIT_S))


def refused(e: BaseException) -> str | None:
    """What to tell the user when `e` says the server refused this client's credentials; None otherwise."""
    text = f"{e}"
    return next((why for codes, why in REFUSED.items() if any(c in text for c in codes)), None)


def unreachable(e: BaseException) -> str | None:
    """The short reason when `e` says the store cannot be reached or written right now; None otherwise."""
    text = f"{e}"
    found = next((n for n in UNREACHABLE if n in text), None)
    if found is None and type(e).__module__.startswith(("requests", "urllib3")):
        found = type(e).__name__
    return found


class WaitingClient:
    """An MlflowClient (`c`) whose every call waits out a store outage: retried with a bounded exponential
    backoff (1 s, doubling to 30 s) while the error says the store is unreachable, locked or read-only, and
    StoreDown once one outage has lasted `store_wait()` seconds. Nothing is dropped meanwhile: the caller
    blocks, so a grid's epochs wait in its workers' pipes and are written when the store is back.
    Creating a run is made idempotent (a request lost after the server committed it is not a second run)."""

    def __init__(self, c, uri: str):
        self._c, self._uri = c, uri

    def __getattr__(self, name):
        attr = getattr(self._c, name)
        if not callable(attr):
            return attr
        if name == "create_run":
            return self._create_run
        return functools.partial(self._retry, attr)

    def _retry(self, fn, *args, **kwargs):
        started, delay = None, 1.0
        while True:
            try:
                out = fn(*args, **kwargs)
            except Exception as e:
                no = refused(e)
                if no is not None:  # nothing was written by the refused call: a rerun with the right account resumes
                    raise Refused(f"the tracking server {self._shown()} {no}; what was recorded is kept") from None
                reason = unreachable(e)
                if reason is None:
                    raise
                now = time.monotonic()
                limit = store_wait() if _contact["reached"] else min(store_wait(), FIRST_CONTACT_S)
                if _contact["down"]:  # already given up on: the command's last writes try once
                    limit = 0.0
                if started is None and limit > 0:
                    started = now
                    print(f"tracking store {self._shown()} unreachable ({reason}); retrying for up to {limit:.0f} s "
                          "(--store-wait)", flush=True)
                waited = now - started if started is not None else 0.0
                if started is None or waited >= limit:
                    _contact["down"] = True
                    raise StoreDown(f"the tracking store {self._shown()} has been unreachable for {waited:.0f} s "
                                    f"({reason}); what was recorded is kept: run the same command again once it is "
                                    "back (open runs are closed then by the stale-run rule)") from None
                time.sleep(min(delay, max(0.1, started + limit - now)))
                delay = min(2 * delay, 30.0)
                continue
            if started is not None:
                print(f"tracking store {self._shown()} back after {time.monotonic() - started:.0f} s", flush=True)
            _contact["reached"], _contact["down"] = True, False
            return out

    def _create_run(self, experiment_id, start_time=None, tags=None, run_name=None):
        import uuid

        key = uuid.uuid4().hex
        tags, tries = {**(tags or {}), "lstm_mnist.create_id": key}, []

        def create():
            if tries:  # a retry: the lost attempt may have been committed
                found = self._c.search_runs([experiment_id], f"tags.`lstm_mnist.create_id` = '{key}'", max_results=1)
                if found:
                    return found[0]
            tries.append(1)
            return self._c.create_run(experiment_id, start_time=start_time, tags=tags, run_name=run_name)
        return self._retry(create)

    def _shown(self) -> str:
        return self._uri.removeprefix("sqlite:///")
