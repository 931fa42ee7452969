"""Cells as Ray tasks (`ablate FILE --ray [ADDRESS]`): Ray places them on a cluster's nodes and GPUs; this
process stays the grid's one MLflow writer.

Each cell is a streaming-generator task: it reports where it runs, then each epoch, then its result, and
this process records them exactly as it records a local worker's (writer.py): the same claims, runs, tags
and resume, so a run trained on Ray differs only in its `machine` and `worker` tags, which name the Ray node.
Why the driver writes, not the tasks: the tracking store and the claims stay where they are (a SQLite file
works for a whole cluster), tasks need no credentials for either, and every invariant of the local pool
holds unchanged. The cost is one small message per epoch.

The data travels once: this process puts the four MNIST files' bytes (~55 MB) into Ray's object store,
and each task parses and fingerprints them on arrival (the built-in task's receive hook: builtin/data.provide),
so nodes need no files and
a run's identity is unchanged. Faults: Ray's own task retries are off; a cell whose task died with its
worker process or its node is trained again once, in the same run, from its last epoch's checkpoint (where
$LSTM_MNIST_CHECKPOINTS is a folder every node sees; else from epoch 0 on another node), on whatever node Ray
picks; its run records the retry and where it resumed. If this process dies, Ray ends its tasks with it, and a rerun's
stale rule trains their cells again. If the node this process runs on dies (the only node of the local
cluster `--ray` started, say), Ray would end this process seconds later, when it next reaches that node's
object store: it stops first, with one line (ClusterGone) and its runs in flight ended KILLED; so it does
when no node has been alive for GONE_S.
"""
from __future__ import annotations

import math
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass

from .. import config
from .. import task as task_protocol
from ..config import ConfigError, UserError
from ..machine import host
from .jobs import Job
from .writer import Writer

RETRIES = 1        # a cell whose task died (worker process or node lost) is trained again this many times
WAIT_S = 1.0       # the longest a turn waits for a report
GONE_S = 20.0      # no node alive (or none the cluster can name) this long: the cluster is gone


class ClusterGone(UserError):
    """The Ray cluster a command trains on went away; one line says so and how to go on."""


@dataclass(frozen=True)
class RayOptions:
    address: str = "auto"        # "auto": RAY_ADDRESS, else the cluster `ray start` made here, else a local one
    cpus_per_cell: float = 1.0   # torch's threads follow it
    gpus_per_cell: float = 0.0   # fractional: 0.25 puts four cells on a GPU


def check(opts: RayOptions) -> None:
    if not (opts.cpus_per_cell > 0 and math.isfinite(opts.cpus_per_cell)):
        raise ConfigError(f"--cpus-per-cell {opts.cpus_per_cell}: give the CPUs each cell takes, e.g. 1 or 2")
    if not (0 <= opts.gpus_per_cell <= 1 or (opts.gpus_per_cell > 1 and float(opts.gpus_per_cell).is_integer())):
        raise ConfigError(f"--gpus-per-cell {opts.gpus_per_cell}: give a fraction of one GPU (0.25: four cells "
                          "share one) or a whole number")


def connect(opts: RayOptions, worker_output: bool = False):
    """Join the cluster (or start a local one); the `ray` module. No dashboard; the tasks' own output shown
    here only when they print the progress (a study's workers), not for a grid's cells (they report)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs the ray package: `make install` installs the pinned version") from None
    if not ray.is_initialized():
        address = None if opts.address == "auto" else opts.address
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=worker_output, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as e:  # nothing there, no port, another Ray version
            raise ConfigError(f"--ray {opts.address}: cannot join a Ray cluster there "
                              f"({str(e).splitlines()[0][:200]}); "
                              "give HOST:PORT of a cluster started with `ray start --head` (the same Ray version), "
                              "or --ray with no address for a local one") from None
    return ray


def alive(ray) -> list[dict]:
    """The cluster's live nodes; none when it cannot say (its control store is gone too)."""
    try:
        return [n for n in ray.nodes() if n.get("Alive")]
    except Exception:  # noqa: BLE001 - a dead GCS raises whatever its client raises: no node is known alive
        return []


def capacity(nodes: list[dict], opts: RayOptions) -> int:
    """Cells the cluster's live `nodes` (alive()) can train at once: node by node, as Ray places a task on one
    node, its CPUs and GPUs over a cell's."""
    n = 0
    for node in nodes:
        have = node.get("Resources", {})
        fits = int(have.get("CPU", 0) // opts.cpus_per_cell)
        if opts.gpus_per_cell:
            fits = min(fits, int(have.get("GPU", 0) // opts.gpus_per_cell))
        n += fits
    return n


def room(ray, opts: RayOptions) -> int:
    """capacity(), or a one-line error when the cluster cannot hold a single cell."""
    nodes = alive(ray)
    n = capacity(nodes, opts)
    if n == 0:
        total = ray.cluster_resources()
        raise ConfigError(f"no node of the Ray cluster ({len(nodes)} nodes, {total.get('CPU', 0):g} CPUs and "
                          f"{total.get('GPU', 0):g} GPUs in all) holds a cell, which asks for {opts.cpus_per_cell:g} "
                          f"CPUs and {opts.gpus_per_cell:g} GPUs: lower --cpus-per-cell / --gpus-per-cell, or add "
                          "larger nodes")
    return n


def join(opts: RayOptions, worker_output: bool = False) -> int:
    """Check the options, join the cluster; the cells (or trials) it can run at once now."""
    check(opts)
    return room(connect(opts, worker_output), opts)


def placement(opts: RayOptions) -> dict:
    """Config overrides for what a task was given (not identity): threads = its CPUs, and CPU unless it was
    given a GPU."""
    return {"num_threads": max(1, int(opts.cpus_per_cell)), "device": "auto" if opts.gpus_per_cell else "cpu"}


def ship(ray, cfg) -> tuple:
    """What the config's task ships (the MNIST files' bytes: its `ship` hook) put into the object store once, and
    the fingerprint: a Ray task's data arguments. A task without the hook ships nothing: each node loads its data."""
    hook = task_protocol.of(cfg).hook("ship")
    return (ray.put(hook(cfg)) if hook else None), task_protocol.of(cfg).data_fingerprint(cfg)


def cell_config(job: Job, opts: RayOptions):
    """The cell's config as the Ray task trains it: placement() unless the grid's base file or [budget] sets them
    (pickled by reference: its task's module is imported on the node)."""
    return config.rebuilt(job.cfg, **{k: v for k, v in placement(opts).items() if k not in job.pinned})


# ---------------------------------------------------------------- the task (runs on a Ray worker)
def _train_cell(name: str, cfg, shipped, fingerprint: str, slot=None):
    """Yield ("start", node), ("resume", epoch, history, why) when it has a checkpoint slot, ("epoch", e, record)
    per epoch, then ("done", result, s) or ("failed", why, s)."""
    import ray

    from ..machine import host
    from ..training import train

    node = ray.get_runtime_context().get_node_id()
    yield ("start", {"node": node, "host": socket.gethostname(), "pid": os.getpid(), "machine": host.describe()})
    t0 = time.perf_counter()
    box: queue.Queue = queue.Queue()

    def fit():
        try:
            receive = task_protocol.of(cfg).hook("receive")
            if receive and shipped is not None:
                receive(cfg, shipped, fingerprint)
            result = train.fit(cfg, on_epoch=lambda e, r: box.put(("epoch", e, r)), slot=slot,
                               on_resume=lambda e, h, why: box.put(("resume", e, h, why)))
            box.put(("done", result, time.perf_counter() - t0))
        except BaseException as e:  # noqa: BLE001 - the cell fails alone, with its reason (never a silent hang)
            box.put(("failed", f"{type(e).__name__}: {e}", time.perf_counter() - t0))

    threading.Thread(target=fit, name=f"lstm-mnist-{name}", daemon=True).start()
    while True:
        message = box.get()
        yield message
        if message[0] not in ("epoch", "resume"):
            return


# ---------------------------------------------------------------- the driver
@dataclass
class RunningTask:
    """A job handed to Ray: since when, which attempt, on which node."""
    job: Job
    t0: float
    attempt: int = 1
    node: str = ""


def run(source, writer: Writer, opts: RayOptions, out=print, most: int | None = None) -> None:
    """Hand `source`'s jobs to Ray as tasks while the cluster has room (and fewer than `most` run); record
    what they report."""
    from ..tracking import store

    store.share_sqlite_store()  # WAL, as for local workers: a reader cannot block the one writer
    ray = connect(opts)
    task = ray.remote(num_cpus=opts.cpus_per_cell, num_gpus=opts.gpus_per_cell, max_retries=0)(_train_cell)
    shipped: dict[str, tuple] = {}   # data fingerprint -> (object ref of what the task ships, fingerprint)
    running: dict = {}               # generator -> RunningTask
    again: list[RunningTask] = []         # cells to train again (their task died)
    nodes = alive(ray)
    out(f"Ray: {len(nodes)} node{'s' * (len(nodes) > 1)}, {ray.cluster_resources().get('CPU', 0):g} CPUs, "
        f"{ray.cluster_resources().get('GPU', 0):g} GPUs; {opts.cpus_per_cell:g} CPU and {opts.gpus_per_cell:g} "
        "GPU per cell")

    def submit(f: RunningTask) -> None:
        d = f.job.fingerprint
        if d not in shipped:
            shipped[d] = ship(ray, f.job.cfg)
        running[task.remote(f.job.cell.name, cell_config(f.job, opts), *shipped[d], f.job.slot)] = f

    waiting, lost = False, Silence()  # said that no node can take a cell now; since when none is alive
    try:
        while source.more() or running or again:
            nodes = lost.nodes(ray)
            if not nodes:  # nothing is submitted to a cluster without a live node: Ray may end us for it
                time.sleep(WAIT_S)
                continue
            can = capacity(nodes, opts)  # nodes may come and go: asked every turn
            if can == 0 and not running and not waiting:
                out("Ray: no live node can take a cell now; waiting for the cluster (Ctrl-C stops the grid)")
            waiting = can == 0
            room = min(can, most or can) - len(running)
            while room > 0 and again:
                submit(again.pop(0))
                room -= 1
            while room > 0:
                job = source.take({"worker": "ray"})
                if job is None:
                    break
                submit(RunningTask(job, time.perf_counter()))
                room -= 1
            if not running:
                time.sleep(WAIT_S)
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S)
            for gen in ready:
                _receive(ray, gen, running, again, writer)
    finally:
        if alive(ray):  # Ctrl-C or an error here: the tasks stop with the grid (their runs end KILLED)
            for gen in running:
                ray.cancel(gen, force=True)


class Silence:
    """Since when the cluster has had no live node; ClusterGone once that lasts GONE_S, or at once when the
    raylet of the local cluster this process started has died (a thread watches its process: Ray would end
    this process seconds later, at its next call into that node's object store)."""

    def __init__(self):
        self.since: float | None = None
        self.raylet_died = threading.Event()
        raylets = [p for p in host.descendants(os.getpid()) if "/raylet/raylet " in host.cmdline(p)]
        if raylets:
            threading.Thread(target=self._watch, args=(raylets[0],), name="lstm-mnist-raylet-watch",
                             daemon=True).start()

    def _watch(self, pid: int) -> None:
        while host.process_stamp(pid) is not None:  # gone, or a zombie
            time.sleep(0.2)
        self.raylet_died.set()

    def nodes(self, ray) -> list[dict]:
        """The live nodes now, none while the cluster has none (raising ClusterGone when none has been for
        GONE_S)."""
        if self.raylet_died.is_set():
            raise ClusterGone(gone("the raylet of the local cluster this command started died"))
        nodes = alive(ray)
        if nodes:
            self.since = None
            return nodes
        self.since = self.since or time.monotonic()
        if time.monotonic() - self.since > GONE_S:
            raise ClusterGone(gone(f"no node alive for {GONE_S:.0f} s"))
        return []


def gone(why: str) -> str:
    return (f"the Ray cluster is gone ({why}; Ray's lines above say why). Every FINISHED cell is kept and the runs "
            "in flight end KILLED: start the cluster again (or drop --ray) and rerun the same command")


def _receive(ray, gen, running: dict, again: list, writer: Writer) -> None:
    f = running[gen]
    job = f.job
    try:
        message = ray.get(next(gen))
    except StopIteration:
        message = ("failed", "the task ended without a result", time.perf_counter() - f.t0)
    except ray.exceptions.RayTaskError as e:  # an error in the task's own code, e.g. its data arriving broken
        message = ("failed", str(e.cause if e.cause else e).splitlines()[0][:300], time.perf_counter() - f.t0)
    except ray.exceptions.RayError as e:      # its worker process or its node died
        del running[gen]
        why = f"Ray task died ({type(e).__name__}{' on node ' + f.node[:12] if f.node else ''})"
        seconds = time.perf_counter() - f.t0
        # This process's own node died (a local cluster's only one): Ray ends this process seconds later, when
        # it next reaches that node's object store, so it stops now, cleanly. Any other node: train it again.
        here = isinstance(e, ray.exceptions.LocalRayletDiedError) or (
            isinstance(e, ray.exceptions.NodeDiedError) and f.node == ray.get_runtime_context().get_node_id())
        if here or not alive(ray):
            writer.failed(job, why, seconds, died=True)
            raise ClusterGone(gone(f"{why}: the node this process runs on" if here else f"{why}: no node is left"))
        if job.trial is None and f.attempt <= RETRIES:  # in the same run, from the epoch its checkpoint holds
            writer.retry(job, why, seconds)
            again.append(RunningTask(job, time.perf_counter(), f.attempt + 1))
        elif job.cell.name in writer.open_runs:
            writer.failed(job, why, seconds, died=True)
        return
    kind = message[0]
    if kind == "start":
        f.node = message[1]["node"]
        writer.tag(job, {"machine": f"{message[1]['machine']} (Ray node {f.node[:12]})",
                         "worker": f"ray:{message[1]['host']}:{message[1]['pid']}", "ray_node_id": f.node})
        return
    if kind == "resume":
        if not writer.resumed(job, *message[1:]):  # a trial its pruner stops, or a fresh run that cannot be opened
            del running[gen]
            ray.cancel(gen, force=True)
        return
    if kind == "epoch":
        why = writer.epoch(job, *message[1:])
        if why:  # a trial its pruner stops
            del running[gen]
            ray.cancel(gen, force=True)
            writer.pruned(job, why, time.perf_counter() - f.t0)
        return
    del running[gen]
    (writer.finished if kind == "done" else writer.failed)(job, *message[1:])
