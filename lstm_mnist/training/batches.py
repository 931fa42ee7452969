"""A task's split as batches: shuffled with the run's seed (training), in order (validation, test), each batch
indexed on the device and handed to the task's `prepare` (augmentation, normalization) with `train` saying which
split it is from: the harness passes train=False for validation and test, so those are never augmented."""
from __future__ import annotations

import math

import torch


def _as_is(cfg, x, train, generator):
    return x.float()


class Batches:
    """Iterable of (x, y) batches over device tensors; reshuffled (and re-prepared) every pass."""

    def __init__(self, inputs, labels, cfg, batch_size: int, shuffle: bool = False, train: bool = False,
                 seed: int = 0, prepare=None):
        self.images, self.labels, self.cfg = inputs, labels, cfg
        self.batch_size, self.shuffle, self.train = batch_size, shuffle, train
        self.prepare = prepare or _as_is
        self.generator = torch.Generator(device=inputs.device).manual_seed(seed)  # the task's randomness (prepare)
        self._cpu_generator = torch.Generator().manual_seed(seed)                 # the order
    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self._cpu_generator).to(self.images.device)
        else:
            order = torch.arange(n, device=self.images.device)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.prepare(self.cfg, self.images[idx], self.train, self.generator), self.labels[idx]


def of_task(task, splits, cfg) -> tuple[Batches, Batches, Batches]:
    """The train, validation and test batches of a run: train shuffled with the run's seed and prepared with
    train=True; validation and test in order, at the evaluation batch size, prepared with train=False."""
    prepare = task.hook("prepare")
    return (Batches(splits.train_x, splits.train_y, cfg, cfg.batch_size, shuffle=True, train=True, seed=cfg.seed,
                    prepare=prepare),
            Batches(splits.val_x, splits.val_y, cfg, cfg.eval_batch_size, prepare=prepare),
            Batches(splits.test_x, splits.test_y, cfg, cfg.eval_batch_size, prepare=prepare))
