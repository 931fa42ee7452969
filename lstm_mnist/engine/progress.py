"""A grid's progress: a live bar over the cells on a terminal, plain lines otherwise, and an estimate of the
whole grid after the first cell."""
from __future__ import annotations

from .jobs import Job




QUICK_FILE = "experiments/ablation-quick.toml"


def say(text: str) -> None:
    print(text, flush=True)  # live even when stdout is a pipe or a log file


# ---------------------------------------------------------------- progress
class Progress:
    """A live bar over the cells when stdout is a terminal, plain lines otherwise; one line per cell."""

    def __init__(self, total: int, n_workers: int, out=say, what: str = "cells"):
        import sys

        self.total, self.n_workers, self.out, self.done, self.failures = total, n_workers, out, 0, 0
        self.what = what  # what the bar counts: "cells", or "trials and cells" in a tuned grid
        self.estimated, self.bar = False, None
        if sys.stdout.isatty() and out is say:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[fail]}"),
                           TimeRemainingColumn())
            self.task = self.bar.add_task("grid", total=total, fail="")

    def __enter__(self):
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.stop()

    def grow(self, n: int) -> None:
        """More (or, negative, fewer) jobs than first counted: a tuned grid learns its tuned cells as it goes."""
        self.total += n
        if self.bar:
            self.bar.update(self.task, total=self.total)

    def line(self, text: str) -> None:
        if self.bar:
            self.bar.console.print(text, markup=False, highlight=False)  # reasons may hold [brackets]
        else:
            self.out(text)

    def started(self, job: Job) -> None:
        if not self.bar:
            self.out(f"start {job.cell.name} ({job.cell.design}, config_hash {job.config_hash})")

    def epoch(self, job: Job, epoch: int, record: dict) -> None:
        """A job's epoch ended (a grid shows cells, not epochs: `run` shows them)."""

    def finished(self, job: Job, result, seconds: float) -> None:
        """A cell FINISHED with its training's result (its test metrics, the device it trained on)."""
        self._advance()
        self.line(f"[{self.done}/{self.total}] {_arm(job):<28} seed {job.cell.seed}  test_f1 "
                  f"{result.test.get('test_f1', float('nan')):.4f}  {seconds:.0f}s")
        self._estimate(seconds, result.device_name)

    def trial(self, job: Job, outcome: str, seconds: float) -> None:
        """A tuning trial ended (`outcome`: its state and value, as its search words it)."""
        self._advance()
        self.line(f"[{self.done}/{self.total}] {job.cell.arm:<28} trial {job.cell.trial} {outcome}  {seconds:.0f}s")
        self._estimate(seconds, "")

    def failed(self, job: Job, reason: str, seconds: float) -> None:
        self.failures += 1
        self._advance()
        self.line(f"[{self.done}/{self.total}] {_arm(job):<28} seed {job.cell.seed}  FAILED after {seconds:.0f}s: "
                  f"{reason}")

    def _advance(self) -> None:
        self.done += 1
        if self.bar:
            self.bar.update(self.task, advance=1, fail=f"{self.failures} failed" if self.failures else "")

    def _estimate(self, seconds: float, device: str) -> None:
        """After the first cell: how long the whole grid will take, and the quick file if that is hours on a CPU."""
        if self.estimated:
            return
        self.estimated = True
        total = seconds * self.total / self.n_workers
        msg = (f"estimate: about {_duration(total)} for the {self.total} {self.what} to train "
               f"(first cell {seconds:.0f} s)")
        if device.startswith("cpu") and total > 3600:  # "cpu (model, N threads)"
            msg += f"; on this CPU try {QUICK_FILE} (same designs, small budget)"
        self.line(msg)


def _arm(job: Job) -> str:
    return f"{job.cell.arm} (tuned)" if job.cell.variant == "tuned" else job.cell.arm


def _duration(seconds: float) -> str:
    return (f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90
            else f"{seconds:.0f} s")
