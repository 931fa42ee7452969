"""The loaders' cost against the in-memory path (docs/your-model.md): the assignment's full arm as the built-in
task (in-memory tensors, batched augmentation) and as this example (torchvision datasets, per-image transforms,
DataLoader), the same shape and budget, alternated; training samples/s per epoch, epoch and fit times.
    LSTM_MNIST_DATA=../shared/mnist OMP_NUM_THREADS=1 .venv/bin/python -m examples.assignment.loaders_cost
Run it alone on the cores: the ratios are of figures measured in one run."""
import json
import os
import statistics
import time

from lstm_mnist.builtin import config as builtin
from lstm_mnist.grids import grid
from lstm_mnist.training import train

spec = grid.load("examples/assignment/ablation.toml")
lit_cell = [c for c in grid.expand(spec) if c.arm == "full" and c.seed == 0][0]
lit = spec.task.build({**grid.values(spec, lit_cell), "max_epochs": 2, "num_threads": 1, "device": "cpu",
                       "data_dir": "data"})
ref = builtin.TASK.build({"bidirectional": True, "dropout": True, "width": True, "early_stopping": True,
                          "augmentation": True, "adamw": True, "max_epochs": 2, "train_samples": 4000,
                          "num_threads": 1, "device": "cpu", "data_dir": os.environ.get("LSTM_MNIST_DATA", "data")})
out = {"in-memory": [], "loaders": []}
for rnd in range(2):
    for name, cfg in (("in-memory", ref), ("loaders", lit)):
        t0 = time.perf_counter()
        r = train.fit(cfg)
        out[name].append({"samples_per_s": [h["train_samples_per_s"] for h in r.history],
                          "epoch_s": [h["epoch_time_s"] for h in r.history], "wall_s": time.perf_counter() - t0})
        print(name, rnd, out[name][-1], flush=True)
med = {k: statistics.median(s for x in v for s in x["samples_per_s"]) for k, v in out.items()}
print(json.dumps({"median_train_samples_per_s": med, "loaders_over_in_memory": med["loaders"] / med["in-memory"],
                  "runs": out}))
