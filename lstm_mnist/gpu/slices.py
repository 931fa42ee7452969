"""gpu-check's grid throughput: N pinned worker processes on one device, each training a real grid cell,
all timed over the same wall-clock slice; the figure is optimizer steps per second over all of them.

Each worker starts, loads the data and trains `warmup` steps (cuDNN picks its kernels, the caches warm
up), then reports ready and waits; the parent starts every worker's clock at once, so start-up costs
stay out of the figure and the slices overlap. No MLflow, no Optuna: a slice records nothing.
"""
from __future__ import annotations

import os
import queue
import time
import warnings

import lightning as L
import torch

from .. import task as task_protocol
from ..machine import cores, host
from ..training import batches, bench, devices, train, trainers

READY_TIMEOUT_S = 300.0  # starting, loading the data and warming up; 8 workers on a busy box


class _SliceModule(train.LitClassifier):
    """The cell's model, loss and optimizer; no scheduler (it steps on val_loss, and a slice has no val pass)."""

    def configure_optimizers(self):
        return bench.first_optimizer(super().configure_optimizers())


class _Slice(L.Callback):
    """Counts optimizer steps inside the slice: after `warmup` steps it reports ready and waits for `go`,
    then stops training once `seconds` have passed (synchronized, so every counted step has finished)."""

    def __init__(self, device, warmup: int, seconds: float, ready, go):
        self.device, self.warmup, self.seconds, self.ready, self.go = device, warmup, seconds, ready, go
        self.steps, self.t0, self.t_end = 0, None, None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_batch_end(self, trainer, *args):
        self.steps += 1
        if self.t0 is None:
            if self.steps >= self.warmup:
                self._now()
                self.ready()
                if not self.go.wait(READY_TIMEOUT_S):
                    raise RuntimeError("the parent never started the slice")
                self.steps, self.t0 = 0, self._now()
            return
        if time.perf_counter() - self.t0 >= self.seconds:
            self.t_end = self._now()
            trainer.should_stop = True


def quiet() -> None:
    """Lightning's notes that do not apply to a throughput run (no validation loop, on purpose)."""
    trainers.quiet_lightning()
    warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")


def _worker(index: int, n_workers: int, cfg, cell: str, seconds: float, warmup: int, go, results,
            env: dict, cwd: str) -> None:
    """One worker process: pin, load, train the cell until the slice ends, report its steps."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; it kills us
    host.name_process(f"lstm-mnist-g{index}")
    host.die_with_parent()
    os.environ.clear()  # the point's environment (MPS's pipe folder under --mps), not the forkserver's older one,
    os.environ.update(env)  # before CUDA starts and reads it
    os.chdir(cwd)
    share = cores.pin(index, n_workers)
    try:
        quiet()
        task = task_protocol.of(cfg)  # the cell's config, pickled: its task's module imports here
        device = devices.resolve_device(cfg)
        ds = task.load_data(cfg, device)
        torch.manual_seed(cfg.seed)
        loader = batches.of_task(task, ds, cfg)[0]  # the training batches, as fit makes them
        clock = _Slice(device, warmup, seconds, lambda: results.put(("ready", index)), go)
        trainer = trainers.make_trainer(cfg, device, [clock], max_epochs=1_000_000, limit_val_batches=0)
        trainer.fit(_SliceModule(cfg, task.hook("model")(cfg), task), train_dataloaders=loader)
        if clock.t_end is None:
            raise RuntimeError("training ended before the slice did")
    except Exception as e:  # noqa: BLE001 - any failure is this point's result, reported in one line
        results.put(("failed", index, f"{type(e).__name__}: {e}"))
        return
    elapsed = clock.t_end - clock.t0
    results.put(("done", index, {"worker": index, "cell": cell, "cores": cores.share_text(share),
                                 "mps_pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY"),
                                 "steps": clock.steps, "seconds": elapsed, "steps_per_s": clock.steps / elapsed,
                                 **_memory(device)}))


def _memory(device) -> dict:
    """torch's GPU memory of this worker, MiB: its peak allocation and what its caching allocator reserved
    (the CUDA context, a few hundred MiB more, is not counted by torch). Nothing on a CPU."""
    if device.type != "cuda":
        return {}
    return {"gpu_peak_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20,
            "gpu_reserved_mib": torch.cuda.memory_reserved(device) / 2**20}


def point(cells: list[tuple[str, object]], n_workers: int, seconds: float, warmup: int) -> dict:
    """Throughput of `n_workers` workers at once; worker i trains cells[i mod len(cells)] (name, config).
    A point that fails (a worker crashes, runs out of memory) says so instead of a number."""
    # Forked from a forkserver that never touched CUDA (this process did: the full-model timing), so no CUDA
    # state is copied; each worker takes this point's environment before CUDA starts, so MPS applies.
    ctx = host.worker_context([__name__])
    go, results = ctx.Event(), ctx.Queue()
    procs, env = [], dict(os.environ)
    for i in range(n_workers):
        name, cfg = cells[i % len(cells)]
        procs.append(ctx.Process(target=_worker, args=(i, n_workers, cfg, name, seconds, warmup, go, results,
                                                       env, os.getcwd()),
                                 daemon=True, name=f"lstm-mnist-gpu-check-{i}"))
        procs[-1].start()
    try:
        _collect(procs, results, "ready", READY_TIMEOUT_S)
        go.set()
        done = _collect(procs, results, "done", seconds + READY_TIMEOUT_S)
    except RuntimeError as e:
        return {"workers": n_workers, "error": str(e)}
    finally:
        _kill(procs, results)
    per_worker = sorted(done.values(), key=lambda d: d["worker"])
    return {"workers": n_workers, "steps_per_s": sum(d["steps_per_s"] for d in per_worker),
            "steps": sum(d["steps"] for d in per_worker), "per_worker": per_worker}


def _collect(procs: list, results, kind: str, timeout_s: float) -> dict:
    """Wait until every worker sent `kind`; a failure, a dead worker or the timeout is a RuntimeError."""
    got, deadline = {}, time.monotonic() + timeout_s
    while len(got) < len(procs):
        try:
            message = results.get(timeout=1.0)
        except queue.Empty:
            dead = [i for i, p in enumerate(procs) if p.exitcode is not None and i not in got]
            if dead:
                raise RuntimeError(f"worker {dead[0]} died (exit code {procs[dead[0]].exitcode})") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not {kind} after {timeout_s:.0f} s") from None
            continue
        if message[0] == "failed":
            raise RuntimeError(f"worker {message[1]} failed: {message[2]}")
        if message[0] == kind:
            got[message[1]] = message[2] if len(message) > 2 else None
    return got


def _kill(procs: list, results) -> None:
    """The end of every point: a finished worker has nothing left to do, an unfinished one is not waited for."""
    for p in procs:
        if p.is_alive():
            p.kill()
    for p in procs:
        p.join(timeout=10)
    results.cancel_join_thread()
    results.close()
