"""Every experiment file in experiments/ and every study in studies/ trains for one short epoch, so no config rots.

Grid files (those with `designs`) are expanded in full, and one of their cells trains for one short epoch.
"""
import optuna
import pytest

from lstm_mnist.builtin import config
from lstm_mnist.grids import grid
from lstm_mnist.training import train
from lstm_mnist.tuning import search
from lstm_mnist.tuning import file as study_file

from .conftest import REPO, cpu_precisions

FILES = sorted((REPO / "experiments").glob("*.toml"))
RUN_FILES = [p for p in FILES if "designs" not in config.read_toml(p)]
GRID_FILES = [p for p in FILES if "designs" in config.read_toml(p)]
SHORT = {"max_epochs": 1, "train_samples": 64, "num_threads": 1}


@pytest.mark.parametrize("path", RUN_FILES, ids=lambda p: p.name)
def test_experiment_file_runs_one_short_epoch(path, tiny_data):
    cfg = config.load(path, {"max_epochs": 1, "train_samples": 64, "data_dir": str(tiny_data), "num_threads": 1})
    result = train.fit(cfg)
    assert result.epochs_trained == 1 and 0.0 <= result.test["test_f1"] <= 1.0


@pytest.mark.parametrize("path", GRID_FILES, ids=lambda p: p.name)
def test_grid_file_expands_and_a_cell_runs_one_short_epoch(path, tiny_data):
    study = grid.load(path)
    if study.budget.get("precision", "32") not in cpu_precisions():
        pytest.skip(f"{path.name} trains at precision {study.budget['precision']}, which this CPU refuses")
    # A tuned grid without `fixed` knows no cell before its searches: its arms at the grid's values stand in.
    cells = grid.expand(study) or [a.cell(study.seeds[0]) for a in grid.unique_arms(study)]
    configs = [config.TASK.build(grid.values(study, c)) for c in cells]  # every cell is a valid config
    assert len({c.identity("data") for c in configs}) == len(cells)
    cell = max(cells, key=lambda c: len(c.on))  # the heaviest arm (full where there is one): most code paths
    cfg = config.TASK.build({**grid.values(study, cell), **SHORT, "data_dir": str(tiny_data)})
    assert train.fit(cfg).epochs_trained == 1


STUDY_FILES = sorted((REPO / "studies").glob("*.toml"))


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.name)
def test_study_file_loads_and_one_trial_runs_one_short_epoch(path, tiny_data):
    study = study_file.load_study_file(path)
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    cfg = search.trial_config(study, search.suggest(trial, study))
    cfg = config.TASK.build({**cfg.to_dict(), "max_epochs": 1, "train_samples": 64, "data_dir": str(tiny_data),
                        "num_threads": 1})
    result = train.fit(cfg)
    assert result.epochs_trained == 1 and 0.0 <= result.test["test_f1"] <= 1.0


def _identities(path) -> dict:
    s = grid.load(path)
    return {c.name: config.TASK.build(grid.values(s, c)).identity(PINNED_DATA) for c in grid.expand(s)}


PINNED_DATA = "pinned-fingerprint"  # a data fingerprint stands in: the identity of a cell is config + data + protocol
IDENTITIES = REPO / "tests" / "cell_identities.json"


def test_every_cell_of_the_shipped_grids_keeps_its_identity():
    """A store users already have resumes without retraining only while a cell's config_hash stays: the identity
    of every cell of every grid file, pinned (tests/cell_identities.json). A change that alters what a run
    computes bumps config.PROTOCOL_VERSION and regenerates the file on purpose; any other change keeps it."""
    import json

    pinned = json.loads(IDENTITIES.read_text())
    now = {p.name: _identities(p) for p in GRID_FILES}
    assert set(now) == set(pinned), "a grid file was added or removed: add its cells to " + str(IDENTITIES)
    for name, cells in pinned.items():
        changed = {c: (h, now[name].get(c)) for c, h in cells.items() if now[name].get(c) != h}
        assert not changed and set(now[name]) == set(cells), (name, changed)
