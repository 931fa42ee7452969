"""Optuna storages (a journal file, or an RDB such as PostgreSQL) and atomic claims over them.

A claim makes one process, among any number started on the same store, do a piece of work: train a grid
cell (key: its config_hash) or create a grid's or a study's parent run (key: "parent"). MLflow's API has no
atomic operation a claim could rest on (two processes that each create a run and then search can each see
only their own). Optuna's storages have one: a WAITING trial turns RUNNING for exactly one caller of
`set_trial_state_values` (the journal file decides by the order of its file-locked log, an RDB by a row
lock). So a key is offered as a WAITING trial of a claims study (user attr `claim` = the key) and taken by
turning that trial RUNNING.

Two processes may offer the same key at once (two WAITING trials). The rule that keeps one winner: a
process may take only the lowest-numbered unfinished trial of a key. When it takes trial T, every lower
trial of the key was finished (COMPLETE or FAIL, states that never run again) when it read them, and the
only racer for T itself loses the WAITING -> RUNNING flip; a higher trial is never taken while T is
unfinished. A trial whose process died is failed (`reap`: a dead pid on this host, or no heartbeat for two
periods from another host: owners.py), so its key can be offered and taken again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import optuna
from optuna.trial import TrialState

from .owners import beat, heartbeat_s, holder, is_stale, stamp_trial
from .storage import ClaimError


ONCE_WAIT_S = 120.0   # how long a process waits for another to create a parent run


# ---------------------------------------------------------------- claims
@dataclass(frozen=True)
class Claim:
    key: str
    trial_id: int
    number: int


class Claims:
    """The claims of one grid (or one study's parent run): a study in an Optuna storage."""

    def __init__(self, storage: optuna.storages.BaseStorage, name: str, since: datetime | None = None):
        """`since`: when the caller read the record (MLflow) to plan its work. A key COMPLETE before then was
        judged by that read (its run may since have been deleted: trained again); one COMPLETE after it was
        finished meanwhile by another process (skipped)."""
        self.storage, self.name = storage, name
        self.study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True)
        self.study_id = storage.get_study_id_from_name(name)
        self.since = since or datetime.now()
        self.held: dict[str, Claim] = {}  # key -> this process's claim on it

    def trials(self, key: str) -> list[optuna.trial.FrozenTrial]:
        return sorted((t for t in self.storage.get_all_trials(self.study_id, deepcopy=False)
                       if t.user_attrs.get("claim") == key), key=lambda t: t.number)

    def take(self, key: str) -> Claim | str:
        """The claim on `key`, or one line saying who has it (held by another process, or done since start)."""
        for _ in range(10):  # each turn either offers, takes, or saw another process win a flip
            trials = self.trials(key)
            retired = self.retired()
            done = [t for t in trials if t.state == TrialState.COMPLETE and t.datetime_complete >= self.since
                    and t.number not in retired]
            if done:
                return f"finished meanwhile by {holder(done[0])}"
            live = [t for t in trials if not t.state.is_finished()]
            if not live:
                self.study.enqueue_trial({}, user_attrs={"claim": key})
                continue
            t = live[0]
            if t.state == TrialState.RUNNING:
                if not is_stale(t):
                    return f"claimed by {holder(t)}"
                self._fail(t)
                continue
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
            try:
                # Stamped before the flip too: a process killed between the flip and its stamp below would
                # otherwise leave a RUNNING claim with no owner, judged stale only after STALE_NO_PID_S.
                stamp_trial(self.storage, trial_id)
                won = self.storage.set_trial_state_values(trial_id, TrialState.RUNNING)
            except optuna.exceptions.UpdateFinishedTrialError:  # taken and finished by another since we read it
                continue
            if won:
                stamp_trial(self.storage, trial_id)
                claim = self.held[key] = Claim(key, trial_id, t.number)
                return claim
        return "claimed by another process (it won every race for it)"

    def release(self, claim: Claim, done: bool, **attrs) -> None:
        """Done: the key's work is recorded (COMPLETE). Not done: FAIL, so the key can be taken again."""
        self.held.pop(claim.key, None)
        try:
            for k, v in attrs.items():
                self.storage.set_trial_user_attr(claim.trial_id, k, v)
            state = TrialState.COMPLETE if done else TrialState.FAIL
            self.storage.set_trial_state_values(claim.trial_id, state, [0.0] if done else None)
        except optuna.exceptions.UpdateFinishedTrialError:  # judged dead (a heartbeat missed) and failed already
            pass

    def settle(self, key: str, done: bool, **attrs) -> None:
        """Release this process's claim on `key`, if it holds one (see `release`)."""
        claim = self.held.get(key)
        if claim is not None:
            self.release(claim, done, **attrs)

    def release_all(self) -> None:
        """Every claim still held (Ctrl-C, a store outage): FAIL, so the next start takes those keys again."""
        for claim in list(self.held.values()):
            try:
                self.release(claim, done=False)
            except Exception:  # the storage itself is failing: the dead-process rule frees them later
                pass

    def _fail(self, t: optuna.trial.FrozenTrial) -> None:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
        try:
            self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:  # another process failed or finished it first
            pass

    def reap(self) -> int:
        """Fail the claims left RUNNING by dead processes (this host's, or silent ones of other hosts); returns
        how many."""
        stale = [t for t in self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.RUNNING,))
                 if is_stale(t)]
        for t in stale:
            self._fail(t)
        return len(stale)

    def retired(self) -> set[int]:
        return {int(k.split()[1]) for k in self.storage.get_study_user_attrs(self.study_id) if k.startswith("retired ")}

    def take_any_age(self, key: str) -> Claim | str:
        since, self.since = self.since, datetime.min  # a value is made once, ever: any COMPLETE counts
        try:
            return self.take(key)
        finally:
            self.since = since


def once(claims: Claims, key: str, make: Callable[[], str], valid: Callable[[str], bool] = lambda v: True,
         wait_s: float = ONCE_WAIT_S) -> tuple[str, bool]:
    """`make()` run by exactly one process for this key; every caller gets its value. Returns (value, made
    here). A value made by an earlier invocation (its trial COMPLETE) is returned as it is while `valid`
    (e.g. the parent run still exists: a store replaced beside its claims journal needs a new one)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        retired = claims.retired()
        done = [t for t in claims.trials(key) if t.state == TrialState.COMPLETE and "value" in t.user_attrs
                and t.number not in retired]
        if done and valid(done[-1].user_attrs["value"]):
            return done[-1].user_attrs["value"], False
        if done:  # retire it (a finished trial cannot change: the study records it); then make a new one
            claims.storage.set_study_user_attr(claims.study_id, f"retired {done[-1].number}", True)
            continue
        got = claims.take_any_age(key)
        if isinstance(got, Claim):
            try:
                value = make()
            except BaseException:
                claims.release(got, done=False)
                raise
            claims.release(got, done=True, value=value)
            return value, True
        time.sleep(0.2)  # another process is making it
    raise ClaimError(f"{claims.name}: another process has been creating {key!r} for {wait_s:.0f} s without "
                     "finishing; if it is stuck, stop it and run this command again")


class Heartbeat:
    """A thread that records a heartbeat (owners.py) on every trial this process holds: its claims, and the
    study trials `more()` names (storage, trial id) while they run, so a process on another host can tell
    they are alive. Started and stopped by the engine around its loop."""

    def __init__(self, claims: Claims | None, more: Callable[[], list] = list):
        self.claims, self.more, self._stop = claims, more, None

    def held(self) -> list[tuple]:
        mine = [(self.claims.storage, c.trial_id) for c in list(self.claims.held.values())] if self.claims else []
        return mine + list(self.more())

    def start(self) -> None:
        if self._stop:
            return
        stop = threading.Event()

        def run():
            while not stop.wait(heartbeat_s() / 2):
                for storage, trial_id in self.held():
                    try:
                        beat(storage, trial_id)
                    except Exception:  # the storage is away or the trial ended meanwhile: two periods of grace
                        pass

        threading.Thread(target=run, name="claims-heartbeat", daemon=True).start()
        self._stop = stop

    def stop(self) -> None:
        if self._stop:
            self._stop.set()
            self._stop = None
