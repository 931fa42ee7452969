"""Every experiment file in experiments/ trains for one short epoch, so no config rots."""
import pytest

from lstm_mnist import config, train

from .conftest import REPO

RUN_FILES = sorted(p for p in (REPO / "experiments").glob("*.toml") if "designs" not in config.read_toml(p))


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: p.name)
def test_experiment_file_runs_one_short_epoch(path, tiny_data):
    cfg = config.load(path, {"max_epochs": 1, "train_samples": 64, "data_dir": str(tiny_data), "num_threads": 1})
    result = train.fit(cfg)
    assert result.epochs_trained == 1 and 0.0 <= result.test["test_f1"] <= 1.0
