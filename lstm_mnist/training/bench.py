"""`make bench`: training throughput of three pipelines for the same model (all six flags on, batch 64).

  (a) harness    this project's loop: Lightning Trainer over device-resident uint8 batches,
                 batched per-sample augmentation on the device
  (b) dataloader what the original assignment did: torchvision MNIST-style Dataset with PIL
                 RandomRotation + RandomAffine, DataLoader with 2 worker processes, a plain torch loop
  (c) bare       the floor: a plain torch loop over pre-normalized in-memory tensors, no augmentation

Each pipeline runs `warmup` untimed batches, then `batches` timed ones; samples/s is steady state.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from . import data, model, train
from .. import config


class _Clock(L.Callback):
    """Timestamps the end of every training batch (synchronized on GPU)."""

    def __init__(self, device):
        self.device, self.stamps = device, []

    def on_train_batch_end(self, *args):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stamps.append(time.perf_counter())


def _rate(stamps: list[float], warmup: int, batch_size: int) -> float:
    timed = stamps[warmup - 1:]  # the interval from the end of the last warm-up batch
    return (len(timed) - 1) * batch_size / (timed[-1] - timed[0])


class _NoEpochEnd(train.LitClassifier):
    """The plateau scheduler steps once per epoch on val_loss; a throughput run has no val pass."""

    def configure_optimizers(self):
        return super().configure_optimizers()["optimizer"]


def harness(cfg, ds, device, warmup, batches) -> float:
    torch.manual_seed(0)
    lit = _NoEpochEnd(cfg, model.build(cfg))
    loader = data.Batches(ds.train_x, ds.train_y, cfg, cfg.batch_size, shuffle=True, augment=True, seed=0)
    clock = _Clock(device)
    trainer = train.make_trainer(cfg, device, [clock], max_epochs=1, limit_train_batches=warmup + batches,
                                 limit_val_batches=0)
    trainer.fit(lit, train_dataloaders=loader)
    return _rate(clock.stamps, warmup, cfg.batch_size)


def _plain_loop(cfg, batch_iter, device, warmup, batches) -> float:
    torch.manual_seed(0)
    net = model.build(cfg).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.adamw_lr, weight_decay=cfg.weight_decay)
    stamps = []
    for i, (x, y) in enumerate(batch_iter):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(net(x.reshape(-1, 28, 28)), y)  # (B, 1, 28, 28) -> (B, 28 rows, 28 px)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        if i + 1 == warmup + batches:
            break
    return _rate(stamps, warmup, cfg.batch_size)


class _PILDataset(torch.utils.data.Dataset):
    """torchvision.datasets.MNIST's __getitem__: uint8 array -> PIL image -> transform."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images.numpy(), labels.numpy(), transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def dataloader(cfg, ds, device, warmup, batches) -> float:
    from torchvision import transforms as T

    tf = T.Compose([T.RandomRotation(cfg.rotation_deg), T.RandomAffine(cfg.affine_deg, (cfg.translate,) * 2),
                    T.ToTensor(), T.Normalize((cfg.norm_mean,), (cfg.norm_std,))])
    dset = _PILDataset(ds.train_x.cpu(), ds.train_y.cpu(), tf)
    loader = torch.utils.data.DataLoader(dset, batch_size=cfg.batch_size, shuffle=True, num_workers=2,
                                         pin_memory=device.type == "cuda", drop_last=True)
    return _plain_loop(cfg, loader, device, warmup, batches)


def bare(cfg, ds, device, warmup, batches) -> float:
    x = (ds.train_x.float() / 255 - cfg.norm_mean) / cfg.norm_std  # pre-normalized, in memory
    g = torch.Generator().manual_seed(0)

    def batch_iter():
        while True:
            idx = torch.randperm(len(x), generator=g)[: cfg.batch_size].to(x.device)
            yield x[idx], ds.train_y[idx]

    return _plain_loop(cfg, batch_iter(), device, warmup, batches)


def main(batches: int = 60, warmup: int = 10, rounds: int = 3, out: str = "reports/bench.json",
         data_dir: str | None = None) -> dict:
    """Interleave the pipelines for `rounds` rounds and keep each one's median (this machine is noisy)."""
    values = {**config.read_toml("experiments/full.toml"), "batch_size": 64, **{f: True for f in config.FLAGS}}
    cfg = config.build({**values, **({"data_dir": data_dir} if data_dir else {})})
    train.quiet_lightning()
    device = train.resolve_device(cfg)
    ds = data.load(cfg, device)
    print(f"bench on {train.device_name(device)} (torch threads {torch.get_num_threads()}): full model, batch "
          f"{cfg.batch_size}; {rounds} rounds of {warmup} warm-up + {batches} timed batches each", flush=True)
    pipelines = {"harness": harness, "dataloader": dataloader, "bare": bare}
    samples = {name: [] for name in pipelines}
    for r in range(rounds):
        for name, fn in pipelines.items():
            samples[name].append(fn(cfg, ds, device, warmup, batches))
        print(f"  round {r + 1}: " + "  ".join(f"{n} {v[-1]:.0f}" for n, v in samples.items()), flush=True)
    rates = {name: statistics.median(v) for name, v in samples.items()}
    result = {"device": train.device_name(device), "batch_size": cfg.batch_size, "batches": batches,
              "rounds": rounds, "samples_per_s": rates, "samples_per_s_each_round": samples,
              "harness_over_dataloader": rates["harness"] / rates["dataloader"],
              "harness_over_bare": rates["harness"] / rates["bare"]}
    target_c = 0.8 if device.type == "cuda" else 0.9
    print(f"median samples/s: (a) harness {rates['harness']:.0f}   (b) dataloader {rates['dataloader']:.0f}   "
          f"(c) bare {rates['bare']:.0f}")
    print(f"a/b = {result['harness_over_dataloader']:.2f} (target >= 1.5 on CPU)   "
          f"a/c = {result['harness_over_bare']:.2f} (target >= {target_c})")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result
