"""Speed probes: what one optimizer step of the full model costs, four ways, so the numbers decide what the
training path builds next. Prototypes in the benchmark code, not the training path.

  (a) harness   the Lightning loop every cell trains with (bench.harness: device batches, augmentation)
  (b) bare      a plain eager torch loop on pre-normalized device tensors
  (c) graph     the whole step (forward, backward, AdamW) captured in one CUDA graph and replayed: AdamW
                capturable, static batch buffers the next batch is copied into (CUDA only)
  (d) fused     M models of one shape as one (tools/fused.py: per-time-step batched matmuls over [M·D, B, 4H]),
                eager and, on CUDA, graphed; against M worker processes under MPS (gpu-check's slices)

Steps/s are per model and in total (M models x steps/s). Imports neither MLflow nor Optuna.
The probes are the built-in task's (an LSTM: fused stacks, CUDA graphs of its batch shape).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import config
from .. import task as task_protocol
from ..training import bench, devices, trainers
from . import fused as fused_mod

GPU_BUDGET = {"warmup": 20, "steps": 200, "models": (8, 32), "slice_s": 10.0}
CPU_BUDGET = {"warmup": 1, "steps": 3, "models": (2,), "slice_s": 0.0}
NEEDS_CUDA = "skipped: needs CUDA"
PROBED_PRECISIONS = ("bf16-mixed",)  # beside 32 (a GradScaler step, 16-mixed's, is not captured in a graph here)


def main(out: str = "reports/gpu-probes.json", mps: bool = False, data_dir: str | None = None) -> dict:
    """`gpu-probes`: M worker processes under MPS first (this process has no CUDA context yet), then every
    probe in this process; the figures printed and written as JSON to `out`."""
    from ..gpu import check, slices
    from ..gpu import mps as mps_daemon

    extra = {"data_dir": data_dir} if data_dir else {}
    cfg = check.full_config(extra)
    on_gpu = torch.cuda.device_count() > 0
    budget = GPU_BUDGET if on_gpu else CPU_BUDGET
    processes = {}
    if on_gpu and mps:
        mps_daemon.require()
        cells = check.arm_cells(extra, "cuda:0")
        slices.quiet()
        with mps_daemon.daemon(True):
            for m in budget["models"]:
                point = slices.point(cells, m, budget["slice_s"], 10)
                processes[m] = point.get("steps_per_s", f"failed: {point.get('error')}")
    device = devices.resolve_device(cfg)
    figures = measure(cfg, device, budget, processes.get if processes else None)
    figures["note"] = "GPU figures" if on_gpu else "CPU smoke run: not a GPU figure"
    print("\n".join(summary(figures)))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(figures, indent=2))
    print(f"wrote {out}")
    return figures


def measure(cfg, device: torch.device, budget: dict | None = None, processes=None) -> dict:
    """Every probe on `device` for `cfg` (the full model); `processes(M)` measures M worker processes under
    MPS (steps/s in total) where the caller can, else that column says why not."""
    budget = budget or (GPU_BUDGET if device.type == "cuda" else CPU_BUDGET)
    warmup, steps = budget["warmup"], budget["steps"]
    ds = task_protocol.of(cfg).load_data(cfg, device)
    trainers.quiet_lightning()
    cuda = device.type == "cuda"
    rates = {"harness": _tried(lambda: bench.harness(cfg, ds, device, warmup, steps) / cfg.batch_size),
             "bare": _tried(lambda: step_rate(cfg, ds, device, warmup, steps, models=None, graph=False))}
    rates["graph"] = _tried(lambda: step_rate(cfg, ds, device, warmup, steps, models=None, graph=True)) \
        if cuda else NEEDS_CUDA
    for p in PROBED_PRECISIONS:  # (a), (b), (c) again under autocast: "harness bf16-mixed", ...
        at = config.rebuilt(cfg, precision=p)
        can = p in devices.precisions_of(device)
        rates[f"harness {p}"] = _tried(lambda: bench.harness(at, ds, device, warmup, steps) / at.batch_size) \
            if can else f"skipped: {device.type} cannot train at {p}"
        rates[f"bare {p}"] = _tried(lambda: step_rate(at, ds, device, warmup, steps, models=None, graph=False)) \
            if can else rates[f"harness {p}"]
        rates[f"graph {p}"] = _tried(lambda: step_rate(at, ds, device, warmup, steps, models=None, graph=True)) \
            if cuda and can else NEEDS_CUDA if can else rates[f"harness {p}"]
    fused = {}
    for m in budget["models"]:
        eager = _tried(lambda: step_rate(cfg, ds, device, warmup, steps, models=m, graph=False))
        graphed = _tried(lambda: step_rate(cfg, ds, device, warmup, steps, models=m, graph=True)) \
            if cuda else NEEDS_CUDA
        fused[str(m)] = {"eager": _both(eager, m), "graph": _both(graphed, m),
                         "processes_mps": processes(m) if processes else "skipped: needs CUDA and MPS"}
    return {"device": devices.device_name(device), "batch_size": cfg.batch_size, "warmup": warmup, "steps": steps,
            "steps_per_s": rates, "fused": fused, "compare": COMPARE}


# What each figure is, so the comparison is read right.
COMPARE = ("(a) trains with augmentation through Lightning; (b), (c) and (d) are bare loops without augmentation, "
           "so (d) is to be read against M x (b), and (c) against (b). The M processes under MPS are gpu-check's "
           "slices (Lightning, augmentation, the ablation grid's `full` arm): read them against M x (a). Beyond one "
           "process per CPU core, the processes are CPU-bound.")


def _tried(probe):
    """A probe's steps/s, or what went wrong with it: one probe failing (a capture the GPU refuses) leaves
    the others' figures standing."""
    try:
        return probe()
    except Exception as e:  # noqa: BLE001 - any failure is this probe's result, in one line
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return f"failed: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def _both(per_model, m: int):
    return {"per_model": per_model, "total": per_model * m} if isinstance(per_model, float) else per_model


def step_rate(cfg, ds, device: torch.device, warmup: int, steps: int, models: int | None, graph: bool) -> float:
    """Optimizer steps per second (per model) of one model (models=None) or M fused, eager or graphed."""
    torch.manual_seed(0)
    m = models or 1
    net = (fused_mod.build(cfg, m) if models else task_protocol.of(cfg).hook("model")(cfg)).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.adamw_lr, weight_decay=cfg.weight_decay, capturable=graph)
    x_all = ((ds.train_x.float() / 255 - cfg.norm_mean) / cfg.norm_std)  # (N, 28, 28) pre-normalized, on device
    shape = (m, cfg.batch_size) if models else (cfg.batch_size,)
    static_x = torch.empty(*shape, 28, 28, device=device)  # (B, 28 rows, 28 px), or (M, B, 28, 28) fused
    static_y = torch.empty(*shape, dtype=torch.long, device=device)

    def next_batch():
        idx = torch.randint(0, len(x_all), shape, device=device)
        static_x.copy_(x_all[idx])
        static_y.copy_(ds.train_y[idx])

    def step():
        with devices.autocast(cfg.precision, device, cache=not graph):  # a captured graph replays no cast cache
            logits = net(static_x).float()
        loss = fused_mod.loss(logits, static_y) if models else F.cross_entropy(logits, static_y)
        loss.backward()
        opt.step()

    run = _eager(step, opt) if not graph else _graphed(step, opt, next_batch)
    for _ in range(warmup):
        next_batch()
        run()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        next_batch()
        run()
    _sync(device)
    return steps / (time.perf_counter() - t0)


def _eager(step, opt):
    def run():
        opt.zero_grad(set_to_none=True)
        step()
    return run


def _graphed(step, opt, next_batch):
    """PyTorch's whole-network capture recipe: warm up on a side stream, then capture one step; a replay
    reruns forward, backward and AdamW on whatever the static batch buffers hold. The warm-up also makes
    cuDNN's dropout state and AdamW's capturable state before capture (both would sync the host inside it):
    no manual_seed may come between the two."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            next_batch()
            opt.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(g):
        step()
    return g.replay


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _shown(v) -> str:
    return f"{v:.0f}" if isinstance(v, float) else str(v)


def summary(p: dict) -> list[str]:
    r = p["steps_per_s"]
    lines = [f"probes on {p['device']}, full model, batch {p['batch_size']} ({p['steps']} timed steps each), "
             f"optimizer steps/s: (a) harness {_shown(r['harness'])}  (b) bare {_shown(r['bare'])}  "
             f"(c) CUDA graph {_shown(r['graph'])}"]
    for prec in PROBED_PRECISIONS:
        if f"harness {prec}" in r:
            lines.append(f"  at {prec}: (a) harness {_shown(r[f'harness {prec}'])}  "
                         f"(b) bare {_shown(r[f'bare {prec}'])}"
                         f"  (c) CUDA graph {_shown(r[f'graph {prec}'])}")
    for m, f in p["fused"].items():
        cells = [f"{kind} {v['per_model']:.0f}/model = {v['total']:.0f} total" if isinstance(v, dict) else f"{kind} {v}"
                 for kind, v in (("eager", f["eager"]), ("graphed", f["graph"]))]
        mps = f["processes_mps"]
        cells.append(f"{m} processes under MPS {mps:.0f} total" if isinstance(mps, float) else f"processes: {mps}")
        lines.append(f"  (d) {m} fused models: " + "; ".join(cells))
    return lines
