"""MNIST IDX files -> uint8 tensors on the training device -> shuffled, augmented, normalized batches.

The whole dataset (55 MB as uint8) lives on the device, so a batch is an index, one per-sample affine
warp (augmentation on) and one fused normalize: no worker processes, no PIL, no host->device copies.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import UserError
from .config import Config
from ..task import Splits
from ..training import batches

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPE = {0x08: 1}  # unsigned byte is the only type MNIST uses


class DataError(UserError):
    """The data could not be found or read; the message says where and what to do (one line)."""


# ---------------------------------------------------------------- reading IDX files
def read_idx(path: Path) -> tuple[torch.Tensor, bytes]:
    """Parse one IDX file (gzipped or not) into a uint8 tensor; also return its raw bytes for hashing."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: unreadable or truncated gzip ({e}); replace the file") from None
    return parse_idx(raw, path), raw


def parse_idx(raw: bytes, path) -> torch.Tensor:
    """An IDX file's uncompressed bytes as a uint8 tensor (`path`: where they came from, for the message)."""
    if len(raw) < 4:
        raise DataError(f"{path}: corrupt IDX file ({len(raw)} bytes, no header); replace the file")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype not in _IDX_DTYPE or ndim not in (1, 3):
        raise DataError(f"{path}: not an MNIST IDX file (bad magic number); replace the file")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: corrupt IDX file (header cut short); replace the file")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise DataError(f"{path}: truncated or corrupt IDX file ({len(raw)} bytes, header says {expected}); "
                        "replace the file")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(dims)


def _find(data_dir: Path) -> dict[str, Path] | None:
    """The four files directly in data_dir or in torchvision's MNIST/raw layout, gzipped or not."""
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        found = {}
        for key, name in FILES.items():
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FILES):
            return found
    return None


def _download(data_dir: Path) -> None:
    """torchvision's downloader (for users with internet); writes data_dir/MNIST/raw/."""
    from torchvision.datasets import MNIST

    data_dir.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        MNIST(root=str(data_dir), train=train, download=True)


def locate(data_dir: str | Path, download: bool = True) -> dict[str, Path]:
    """The four files; downloads them when missing unless LSTM_MNIST_OFFLINE=1."""
    data_dir = Path(data_dir)
    found = _find(data_dir)
    if found is None and download and os.environ.get("LSTM_MNIST_OFFLINE", "") in ("", "0"):
        try:
            _download(data_dir)
        except Exception as e:  # noqa: BLE001 - any download failure gets the same actionable message
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            found = None
            download_note = f"; download failed ({reason})"
        else:
            found = _find(data_dir)
            download_note = ""
    else:
        download_note = ""
    if found is None:
        names = ", ".join(f"{n}[.gz]" for n in FILES.values())
        raise DataError(f"MNIST not found in {data_dir.resolve()} or {(data_dir / 'MNIST' / 'raw').resolve()}"
                        f"{download_note}: put {names} there, or set LSTM_MNIST_DATA / data_dir=PATH")
    return found


# ---------------------------------------------------------------- the dataset, split and fingerprinted
@dataclass
class MNIST(Splits):
    """The splits: x (N, 28, 28) uint8 and y (N,) int64, on the device; the fingerprint is the sha256 of the four
    files' uncompressed bytes (part of every run's identity)."""


_CACHE: dict = {}
_GIVEN: dict = {}  # data_dir -> (arrays, fingerprint) handed to this process (a Ray task), not read from files


def _read_all(data_dir: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The four arrays and their fingerprint, checked for consistency; cached per process."""
    if str(data_dir) in _GIVEN:
        return _GIVEN[str(data_dir)]
    paths = locate(data_dir)
    key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths.values())
    if key not in _CACHE:
        raws = {}
        for name, path in paths.items():
            _, raws[name] = read_idx(path)
        _CACHE.clear()
        _CACHE[key] = _checked(raws, paths)
    return _CACHE[key]


def _checked(raws: dict[str, bytes], where: dict) -> tuple[dict[str, torch.Tensor], str]:
    """The arrays of the four files' bytes, and their fingerprint (the hash of each file's bytes, in FILES order)."""
    digest = hashlib.sha256()
    arrays = {}
    for name in FILES:
        arrays[name] = parse_idx(raws[name], where[name])
        digest.update(hashlib.sha256(raws[name]).digest())
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.dim() != 3 or y.dim() != 1 or len(x) != len(y):
            raise DataError(f"{where[f'{split}_images']}: {tuple(x.shape)} images but {tuple(y.shape)} labels; "
                            "the files do not belong together")
        if int(y.max()) > 9:
            raise DataError(f"{where[f'{split}_labels']}: label {int(y.max())} outside 0-9; replace the file")
    return arrays, digest.hexdigest()[:16]


def raw_files(data_dir: str | Path) -> dict[str, bytes]:
    """The four files' uncompressed bytes: what the fingerprint hashes, and what a Ray driver ships (~55 MB)."""
    return {name: read_idx(path)[1] for name, path in locate(data_dir).items()}


def provide(data_dir: str, raws: dict[str, bytes], expected: str) -> None:
    """Use these bytes as data_dir's files in this process (a Ray task: the driver's copy, from the object
    store, so nodes need no MNIST files); parsed and fingerprinted on arrival, so a run's identity holds."""
    arrays, fp = _checked(raws, {name: f"{data_dir} ({name}, from the driver)" for name in FILES})
    if fp != expected:
        raise DataError(f"the data that arrived from the driver has fingerprint {fp}, not {expected}: it was "
                        "corrupted on the way; rerun")
    _GIVEN[str(data_dir)] = (arrays, fp)


def fingerprint(data_dir: str | Path) -> str:
    return _read_all(data_dir)[1]


def fingerprint_of(cfg: Config) -> str:
    """The task's fingerprint hook: that of the config's data folder (read once per process)."""
    return fingerprint(cfg.data_dir)


def ship(cfg: Config) -> dict[str, bytes]:
    """The task's ship hook: the files' bytes a Ray driver puts in the object store."""
    return raw_files(cfg.data_dir)


def receive(cfg: Config, raws: dict[str, bytes], expected: str) -> None:
    """The task's receive hook: a Ray node takes the driver's bytes as the config's data folder (provide)."""
    provide(cfg.data_dir, raws, expected)


def datasets(cfg: Config) -> list[dict]:
    """The task's datasets hook: the three splits as MLflow dataset inputs (the UI's Datasets column)."""
    source = {"uri": str(Path(cfg.data_dir).resolve())}
    schema = {"images": "uint8 (28, 28), one row per time step", "labels": "int64 0-9"}
    return [{"split": split, "rows": n, "name": f"mnist-{split}-{n}", "source": source, "schema": schema,
             "profile": {"num_rows": n, "split_seed": cfg.split_seed, "val_fraction": cfg.val_fraction,
                         "source_split": "t10k" if split == "test" else "train"}}
            for split, n in split_sizes(cfg).items()]


def split_sizes(cfg: Config) -> dict[str, int]:
    """How many images each split of this config holds (train after the `train_samples` cap)."""
    arrays, _ = _read_all(cfg.data_dir)
    n = len(arrays["train_images"])
    n_val = round(n * cfg.val_fraction)
    n_train = min(n - n_val, cfg.train_samples) if cfg.train_samples else n - n_val
    return {"train": n_train, "validation": n_val, "test": len(arrays["test_images"])}


def load(cfg: Config, device: torch.device | str = "cpu") -> MNIST:
    """Split the official training set into train/val with the fixed split seed; cap train if asked."""
    arrays, fp = _read_all(cfg.data_dir)
    x, y = arrays["train_images"], arrays["train_labels"].long()
    n_val = round(len(x) * cfg.val_fraction)
    if n_val < 1 or n_val >= len(x):
        raise DataError(f"val_fraction={cfg.val_fraction} leaves no train or no validation images out of {len(x)}")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.split_seed))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if cfg.train_samples:
        train_idx = train_idx[: cfg.train_samples]
    dev = torch.device(device)
    return MNIST(x[train_idx].to(dev), y[train_idx].to(dev), x[val_idx].to(dev), y[val_idx].to(dev),
                 arrays["test_images"].to(dev), arrays["test_labels"].long().to(dev), fp)


# ---------------------------------------------------------------- batched per-sample augmentation
def affine_warp(images: torch.Tensor, angle_deg: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Rotate (clockwise, about the centre) then translate each image, nearest, fill 0.

    Matches torchvision.transforms.functional.affine(img, angle, [tx, ty], scale=1, shear=0, NEAREST)
    per sample: the same inverse matrix and the same pixel-centre grid (align_corners=False).
    images: (B, H, W) float; angle_deg, tx, ty: (B,).
    """
    b, h, w = images.shape
    rot = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(rot), torch.sin(rot)
    # Inverse of T(t) R(angle): rotate back by -angle after undoing the translation.
    theta = torch.stack([
        torch.stack([cos, sin, cos * -tx + sin * -ty], dim=1),
        torch.stack([-sin, cos, -sin * -tx + cos * -ty], dim=1),
    ], dim=1)  # (B, 2, 3), pixel units about the image centre
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, device=images.device)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, device=images.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).reshape(1, h * w, 3)  # (1, HW, 3)
    scale = torch.tensor([0.5 * w, 0.5 * h], device=images.device)
    grid = base.expand(b, -1, -1).bmm(theta.transpose(1, 2)) / scale  # (B, HW, 2), normalized coords
    out = F.grid_sample(images.unsqueeze(1), grid.reshape(b, h, w, 2), mode="nearest",
                        padding_mode="zeros", align_corners=False)  # (B, 1, H, W)
    return out.squeeze(1)  # (B, 1, H, W) -> (B, H, W)


def random_affine_params(n: int, cfg: Config, size: int, generator: torch.Generator, device) -> tuple:
    """RandomRotation(rotation_deg) then RandomAffine(affine_deg, translate): per-sample parameters.

    Both rotations are about the same centre, so the pair is one rotation by their sum followed by the
    affine's integer translation (torchvision rounds it): one resampling instead of two.
    """
    u = torch.rand(n, 4, generator=generator, device=device) * 2 - 1  # U(-1, 1)
    angle = u[:, 0] * cfg.rotation_deg + u[:, 1] * cfg.affine_deg
    max_shift = cfg.translate * size
    tx, ty = torch.round(u[:, 2] * max_shift), torch.round(u[:, 3] * max_shift)
    return angle, tx, ty


# ---------------------------------------------------------------- batches
def prepare(cfg: Config, x: torch.Tensor, train: bool, generator: torch.Generator) -> torch.Tensor:
    """The task's prepare hook: a batch of uint8 images -> floats, warped per sample when it is a training batch
    and augmentation is on, then normalized in one fused step ((x / 255 - mean) / std == x * a + b). x is then
    (B, 28 rows, 28 px): each image a sequence of 28 time steps of 28 pixels."""
    x = x.float()  # (B, 28, 28) uint8 -> float in [0, 255]
    if train and cfg.augmentation:
        x = affine_warp(x, *random_affine_params(len(x), cfg, x.shape[-1], generator, x.device))
    return x.mul_(1.0 / (255.0 * cfg.norm_std)).add_(-cfg.norm_mean / cfg.norm_std)


class Batches(batches.Batches):
    """MNIST batches as the built-in task makes them (`augment`: a training batch, warped when the config's
    augmentation is on)."""

    def __init__(self, images, labels, cfg: Config, batch_size: int, shuffle: bool = False,
                 augment: bool = False, seed: int = 0):
        super().__init__(images, labels, cfg, batch_size, shuffle=shuffle, train=augment, seed=seed, prepare=prepare)


# ---------------------------------------------------------------- the assignment's pipeline (bench's reference)
class _PILDataset(torch.utils.data.Dataset):
    """torchvision.datasets.MNIST's __getitem__: uint8 array -> PIL image -> transform."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images.numpy(), labels.numpy(), transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def assignment_loader(cfg: Config, ds: MNIST, device: torch.device):
    """The loader hook: the training split as the original assignment fed it (torchvision's PIL RandomRotation and
    RandomAffine, then ToTensor and Normalize, in a DataLoader with 2 worker processes), each (1, 28, 28) image
    read as 28 rows of 28 pixels."""
    from torchvision import transforms as T

    tf = T.Compose([T.RandomRotation(cfg.rotation_deg), T.RandomAffine(cfg.affine_deg, (cfg.translate,) * 2),
                    T.ToTensor(), T.Normalize((cfg.norm_mean,), (cfg.norm_std,))])
    loader = torch.utils.data.DataLoader(_PILDataset(ds.train_x.cpu(), ds.train_y.cpu(), tf), batch_size=cfg.batch_size,
                                         shuffle=True, num_workers=2, pin_memory=device.type == "cuda", drop_last=True)
    return ((x.reshape(-1, 28, 28), y) for x, y in loader)
