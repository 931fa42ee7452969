"""Data: both layouts, gz or not, corrupt files are errors, the fixed split, the batched warp."""

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from lstm_mnist.builtin import data
from lstm_mnist.builtin.config import Config
from lstm_mnist.builtin.data import DataError

from .conftest import NAMES, REAL_DATA, write_mnist


def test_reads_gz_plain_and_torchvision_layout(tmp_path):
    plain = write_mnist(tmp_path / "plain", gz=False)
    write_mnist(tmp_path / "tv" / "MNIST" / "raw")
    a = data.load(Config(data_dir=str(plain)))
    b = data.load(Config(data_dir=str(tmp_path / "tv")))
    assert torch.equal(a.train_x, b.train_x) and a.fingerprint == b.fingerprint
    assert (len(a.train_y), len(a.val_y), len(a.test_y)) == (480, 120, 200)
    assert a.train_x.dtype == torch.uint8 and a.train_x.shape[1:] == (28, 28)


def test_split_is_fixed_and_independent_of_the_run_seed(tiny_data):
    a = data.load(Config(data_dir=str(tiny_data), seed=1))
    b = data.load(Config(data_dir=str(tiny_data), seed=2))
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_x, b.train_x)
    capped = data.load(Config(data_dir=str(tiny_data), train_samples=100))
    assert torch.equal(capped.train_x, a.train_x[:100]) and torch.equal(capped.val_x, a.val_x)


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-100], "truncated or corrupt IDX file"),
    (lambda raw: b"\x00\x00\x0d\x03" + raw[4:], "bad magic number"),
    (lambda raw: raw[:2], "no header"),
])
def test_corrupt_idx_is_an_error_not_fewer_samples(tmp_path, damage, message):
    folder = write_mnist(tmp_path, gz=False)
    f = folder / NAMES["train_images"]
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(DataError, match=message):
        data.load(Config(data_dir=str(folder)))


def test_truncated_gzip_is_an_error(tmp_path):
    folder = write_mnist(tmp_path)
    f = folder / f"{NAMES['train_labels']}.gz"
    f.write_bytes(f.read_bytes()[:-20])
    with pytest.raises(DataError, match="unreadable or truncated gzip"):
        data.load(Config(data_dir=str(folder)))


def test_missing_data_says_where_it_looked_and_what_it_expects(tmp_path, monkeypatch):
    def offline(folder):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(data, "_download", offline)
    with pytest.raises(DataError) as e:
        data.load(Config(data_dir=str(tmp_path / "empty")))
    msg = str(e.value)
    assert str(tmp_path / "empty") in msg and "MNIST/raw" in msg and "train-images-idx3-ubyte[.gz]" in msg
    assert "download failed" in msg and "LSTM_MNIST_DATA" in msg and "\n" not in msg


@pytest.mark.parametrize("angle, tx, ty", [(0.0, 0, 0), (4.3, 0, 0), (-7.9, 2, -3), (9.5, -1, 2), (30.0, 3, 3)])
def test_warp_matches_torchvision_affine(tiny_data, angle, tx, ty):
    imgs = data.load(Config(data_dir=str(tiny_data))).train_x[:8]  # (8, 28, 28) uint8
    ours = data.affine_warp(imgs.float(), torch.full((8,), angle), torch.full((8,), float(tx)),
                            torch.full((8,), float(ty)))
    ref = TF.affine(imgs.unsqueeze(1), angle=angle, translate=[tx, ty], scale=1.0, shear=[0.0, 0.0],
                    interpolation=InterpolationMode.NEAREST, fill=0).squeeze(1)
    assert torch.equal(ours.to(torch.uint8), ref)


def test_warp_parameters_are_per_sample(tiny_data):
    cfg = Config(data_dir=str(tiny_data))
    angle, tx, ty = data.random_affine_params(1000, cfg, 28, torch.Generator().manual_seed(0), "cpu")
    assert angle.abs().max() <= 10 and angle.std() > 2  # sum of two U(-5, 5)
    assert set(tx.tolist()) <= set(range(-3, 4)) and len(set(tx.tolist())) == 7  # round(U(-2.8, 2.8))
    assert not torch.equal(tx, ty)


def test_only_training_batches_are_augmented(tiny_data, monkeypatch):
    from lstm_mnist.training import train

    sizes = []
    real = data.affine_warp
    monkeypatch.setattr(data, "affine_warp", lambda x, *a: sizes.append(len(x)) or real(x, *a))
    cfg = Config(data_dir=str(tiny_data), augmentation=True, max_epochs=1, batch_size=32, eval_batch_size=50)
    train.fit(cfg)
    assert sum(sizes) == 480 and max(sizes) == 32  # the 480 training images once; no val/test batch of 50


def test_batches_shapes_normalization_and_reshuffling(tiny_data):
    cfg = Config(data_dir=str(tiny_data))
    ds = data.load(cfg)
    batches = data.Batches(ds.train_x, ds.train_y, cfg, 100, shuffle=True, seed=0)
    first, second = next(iter(batches)), next(iter(batches))
    assert first[0].shape == (100, 28, 28) and first[0].dtype == torch.float32 and len(batches) == 5
    assert not torch.equal(first[1], second[1])  # a new order each pass
    x = ds.train_x[:1].float()
    expected = (x / 255 - cfg.norm_mean) / cfg.norm_std
    got = next(iter(data.Batches(ds.train_x[:1], ds.train_y[:1], cfg, 1)))[0]
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.skipif(not (REAL_DATA / "train-images-idx3-ubyte.gz").exists(),
                    reason="real MNIST not found (set LSTM_MNIST_DATA to the folder of its four .gz files)")
def test_real_mnist_split_counts():
    ds = data.load(Config(data_dir=str(REAL_DATA)))
    assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (48000, 12000, 10000)
    assert torch.bincount(ds.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    all_train = torch.bincount(torch.cat([ds.train_y, ds.val_y])).tolist()
    assert all_train == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
