"""The levers between the harness and the bf16 floor on a CPU, each measured as a ratio in one process (docs/gpu.md,
"What else stands between the harness and the floor"). A measurement, not part of the harness:

    LSTM_MNIST_DATA=../shared/mnist .venv/bin/python docs/levers.py [--seconds 3] [--threads 1]

Every figure is samples/s of one training step (forward, backward, optimizer) of the built-in task's model, batch 64,
on pre-normalized in-memory data (the bare loop of `make bench`), best of `--repeats` windows of `--seconds` each,
the variants of a lever interleaved so drift hits both alike:
  oneDNN        torch.backends.mkldnn on (the default: oneDNN's RNN kernels) against off (ATen's LSTM cell loop)
  compile       torch.compile of the whole model (the LSTM breaks the graph) against eager
  validation    a forward-only pass (the validation split at eval_batch_size) at bf16 against fp32
  threads       the same step at 2 threads against 1 (a worker of --workers 2 on 2 cores has 1)
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from lstm_mnist.builtin import config, data, model
from lstm_mnist.training import devices

SHAPES = {"full (2x128, both ways)": {"width": True, "bidirectional": True},
          "1x100 one way": {"width": False, "bidirectional": False}}


def rate(step, batch: int, seconds: float, repeats: int) -> float:
    """Samples/s of `step()`, best of `repeats` windows (after a warm-up window)."""
    best = 0.0
    for r in range(repeats + 1):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            step()
            n += 1
        if r:  # the first window warms up (oneDNN primitives, allocator)
            best = max(best, n * batch / (time.perf_counter() - t0))
    return best


def train_step(cfg, x, y, compiled: bool = False):
    torch.manual_seed(0)
    net = model.build(cfg).train()
    fwd = torch.compile(net) if compiled else net
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)

    def step():
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=g)
        with devices.autocast(cfg.precision, torch.device("cpu")):
            logits = fwd(x[idx])
        loss = F.cross_entropy(logits.float(), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def eval_pass(cfg, x):
    net = model.build(cfg).eval()
    batch = x[: cfg.eval_batch_size]

    def step():
        with torch.no_grad(), devices.autocast(cfg.precision, torch.device("cpu")):
            net(batch).float()
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="reports/levers.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    base = config.load("experiments/full.toml", ["batch_size=64", "eval_batch_size=2000"])
    ds = data.load(base, "cpu")
    x = data.prepare(base, ds.train_x[:8192], False, None)  # (N, 28 rows, 28 px), normalized
    y = ds.train_y[:8192]
    out = {"threads": a.threads, "cpu": devices.device_name(torch.device("cpu")), "levers": []}

    def lever(name, shape, variants, batch):
        figures = {v: [] for v in variants}
        for _ in range(a.repeats):  # interleaved
            for v, make in variants.items():
                figures[v].append(rate(make(), batch, a.seconds, 1))
        best = {v: max(f) for v, f in figures.items()}
        first, second = list(best)
        row = {"lever": name, "shape": shape, **best, "ratio": best[second] / best[first],
               "ratio_is": f"{second} / {first}"}
        out["levers"].append(row)
        print(f"{name:<11} {shape:<24} {first} {best[first]:8,.0f}  {second} {best[second]:8,.0f}  "
              f"ratio {row['ratio']:.2f}", flush=True)

    for shape, flags in SHAPES.items():
        for prec in ("32", "bf16-mixed"):
            cfg = config.rebuilt(base, precision=prec, **flags)
            tag = f"{shape}, {prec}"

            def mkldnn(on, cfg=cfg):
                def make():
                    torch.backends.mkldnn.enabled = on
                    return train_step(cfg, x, y)
                return make

            lever("oneDNN", tag, {"off": mkldnn(False), "on": mkldnn(True)}, 64)
            torch.backends.mkldnn.enabled = True
            lever("compile", tag, {"eager": lambda cfg=cfg: train_step(cfg, x, y),
                                   "compiled": lambda cfg=cfg: train_step(cfg, x, y, compiled=True)}, 64)
        lever("validation", shape, {"32": lambda f=flags: eval_pass(config.rebuilt(base, **f), x),
                                    "bf16-mixed": lambda f=flags: eval_pass(config.rebuilt(base, precision="bf16-mixed",
                                                                                            **f), x)}, 2000)
    for shape, flags in SHAPES.items():
        cfg = config.rebuilt(base, precision="bf16-mixed", **flags)

        def at(n, cfg=cfg):
            def make():
                torch.set_num_threads(n)
                return train_step(cfg, x, y)
            return make

        lever("threads", f"{shape}, bf16-mixed", {"1": at(1), "2": at(2)}, 64)
    torch.set_num_threads(a.threads)
    from pathlib import Path

    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
