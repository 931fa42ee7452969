"""MNIST as a Lightning user loads it: torchvision datasets and transforms, a fixed train/validation split of the
official training set, augmentation (RandomRotation then RandomAffine) on the training split only. `mirror`: a
folder holding the four official .gz files (a machine without internet: LSTM_MNIST_DATA), extracted into
data_dir/MNIST/raw, where torchvision finds them instead of downloading."""
import gzip
import hashlib
import os
import shutil
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T
from torchvision.datasets import MNIST

NORMALIZE = T.Compose([T.ToTensor(), T.Normalize((0.1307,), (0.3081,))])
AUGMENT = T.Compose([T.RandomRotation(5), T.RandomAffine(5, translate=(0.1, 0.1)), *NORMALIZE.transforms])


class MNISTDataModule(L.LightningDataModule):
    def __init__(self, data_dir: str = "data", mirror: str = os.environ.get("LSTM_MNIST_DATA", ""),
                 batch_size: int = 64, eval_batch_size: int = 1000, augment: bool = False, train_samples: int = 0,
                 val_fraction: float = 0.2, split_seed: int = 20240611, num_workers: int = 0):
        super().__init__()
        self.save_hyperparameters()

    def prepare_data(self):
        raw = Path(self.hparams.data_dir) / "MNIST" / "raw"
        if self.hparams.mirror:
            raw.mkdir(parents=True, exist_ok=True)
        for f in Path(self.hparams.mirror).glob("*-ubyte.gz") if self.hparams.mirror else ():
            if not (raw / f.stem).exists():  # torchvision reads them uncompressed
                tmp = raw / f"{f.stem}.{os.getpid()}.tmp"  # two cells may prepare at once: each file appears whole
                with gzip.open(f) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(tmp, raw / f.stem)
        MNIST(self.hparams.data_dir, train=True, download=True)
        MNIST(self.hparams.data_dir, train=False, download=True)

    def setup(self, stage):
        h = self.hparams
        train = MNIST(h.data_dir, train=True, transform=AUGMENT if h.augment else NORMALIZE)
        val = MNIST(h.data_dir, train=True, transform=NORMALIZE)  # the validation split: never augmented
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(h.split_seed))
        n_val = int(len(train) * h.val_fraction)
        train_idx = order[n_val:][:h.train_samples or None]
        self.train_set, self.val_set = Subset(train, train_idx.tolist()), Subset(val, order[:n_val].tolist())
        self.test_set = MNIST(h.data_dir, train=False, transform=NORMALIZE)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True,
                          num_workers=self.hparams.num_workers)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.hparams.eval_batch_size, num_workers=self.hparams.num_workers)

    def test_dataloader(self):
        return DataLoader(self.test_set, batch_size=self.hparams.eval_batch_size, num_workers=self.hparams.num_workers)


def fingerprint(cfg) -> str:
    """The data's identity without reading it: the official files, named by the md5s torchvision downloads them by."""
    return hashlib.sha256(repr(MNIST.resources).encode()).hexdigest()[:16]
