"""How a grid is run, built once by whoever starts it (the CLI from its flags, the Python API from its arguments)
and read by every variant (plain, tuned, until decided): which combinations make sense is decided here, in the
caller's own words (`spelled`: how the caller names each option)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..config import ConfigError
from ..engine.progress import say


@dataclass(frozen=True)
class Options:
    workers: int = 1                      # cells trained at once (on Ray: the cluster decides)
    shard: tuple[int, int] | None = None  # (K, N): this machine's share K of N
    force: bool = False                   # train cells again even if FINISHED (or RUNNING elsewhere)
    dry_run: bool = False                 # print the cells; train nothing
    pin: bool = True                      # pin workers to their own CPU cores
    storage_url: str | None = None        # the claims' (and a tuned grid's studies') RDB; None: a journal file
    ray: object = None                    # engine/ray_tasks.RayOptions, or None: this host
    until_decided: bool = False           # add seeds in blocks until every effect is decided
    max_seeds: int | None = None          # with until_decided: the most seeds (None: the file's + 4)
    block: int = 1                        # with until_decided: seeds added per look
    judge: Callable | None = None         # with until_decided: what a look says (report/looks.judge, handed in)
    out: Callable = say                   # where progress lines go

    def check(self, tuned: bool, spelled: Callable[[str], str] = lambda name: f"--{name.replace('_', '-')}") -> None:
        """Options that do not go together, in one line naming them as the caller spells them."""
        s = spelled
        if self.until_decided:
            for name, given in (("shard", self.shard), ("force", self.force)):
                if given:
                    raise ConfigError(f"{s(name)} does not go with {s('until_decided')} (each look needs the whole "
                                      "block, trained once): drop it; several machines share a grid's looks through "
                                      f"{s('storage')}")
        elif self.max_seeds is not None or self.block != 1:
            raise ConfigError(f"{s('max_seeds')} and {s('block')} go with {s('until_decided')}: add it, or drop them")
        if self.ray is not None and self.shard:
            raise ConfigError(f"{s('shard')} does not go with {s('ray')}: Ray places the cells on the cluster's CPUs "
                              "and GPUs (--gpus-per-cell 0.25 shares a GPU four ways); drop it")
        if tuned and self.shard:
            k, n = self.shard
            raise ConfigError(f"{s('shard')} {k}/{n}: a tuned grid divides its trials through its shared studies, "
                              f"not by shards; start the same command on every machine with {s('storage')} "
                              "postgresql://... instead")
