"""Optuna storages the claims (and studies) live in: a journal file on one machine (or a shared file system),
or an RDB such as PostgreSQL for several; creating a fresh database's tables is retried when machines race."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna

from ..config import ConfigError, UserError


RETRIES = 2           # a study trial whose process died is queued again at most this often


class ClaimError(UserError):
    """A claim could not be settled; one line says why."""


# ---------------------------------------------------------------- storages
def open_storage(url: str | None, journal: Path) -> optuna.storages.BaseStorage:
    """The RDB at `url`, else a journal file (one machine, or a shared file system)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url:
        return _rdb_storage(url)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    journal.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(journal)))


def _rdb_storage(url: str, attempts: int = 6) -> optuna.storages.RDBStorage:
    """Optuna creates a fresh database's tables with no lock: machines starting together on it collide
    ("relation "studies" already exists", seen in tests/test_claims.py). The loser tries again and finds the
    tables made."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(rdb_url(url))
        except (sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.IntegrityError) as e:
            if attempt + 1 == attempts or not any(w in str(e) for w in ("already exists", "duplicate key")):
                raise ConfigError(f"--storage {hide_password(url)}: cannot create Optuna's tables "
                                  f"({str(e.orig).strip().splitlines()[0]})") from None
            time.sleep(0.5 * (attempt + 1))
        except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.OperationalError, ImportError) as e:
            reason = str(e.orig if getattr(e, "orig", None) else e).strip().splitlines()[0]
            raise ConfigError(f"--storage {hide_password(url)}: cannot open it as an Optuna RDB storage "
                              f"({reason})") from None
    raise AssertionError("unreachable")  # every attempt returns or raises


def rdb_url(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare postgresql:// as the psycopg (3) driver; this project installs psycopg2."""
    from importlib.util import find_spec

    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.drivername == "postgresql" and find_spec("psycopg") is None and find_spec("psycopg2") is not None:
        u = u.set(drivername="postgresql+psycopg2")
    return u.render_as_string(hide_password=False)


def hide_password(url: str) -> str:
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url.rpartition("@")[2]  # not a URL SQLAlchemy can read: show no credentials at all
