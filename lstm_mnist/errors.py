"""The errors a user can fix: the bottom of the package (every module's user-facing error derives from these)."""
from __future__ import annotations


def one_line(e: BaseException) -> str:
    """An exception as one line: its type and its message's first line ("ValueError: bad value")."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else 'no message'}"


class UserError(RuntimeError):
    """A mistake the user can fix (a bad file, missing data, an unusable store): the CLI prints its message
    as one line and exits 2. Every module's user-facing error derives from it, so this is the bottom."""


class ConfigError(UserError, ValueError):
    """A user mistake in a config file or override; its message is the whole story (one line)."""


class Preempted(BaseException):
    """A scheduler asked this process to stop (SIGTERM, or the requeue signal: engine/drive.preemptible): not an
    error of anything it ran, so no `except Exception` takes it. Every cell keeps its last epoch's checkpoint and
    its run, KILLED, is resumed by the next start; the command exits 128 + the signal's number."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum
