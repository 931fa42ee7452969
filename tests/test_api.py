"""The Python API as a notebook uses it (only `lstm_mnist.api` and the errors it raises): a grid file and its
dry-run plan, the grid run and resumed, its runs and the report's tables as DataFrames, no file written."""
import pytest

from lstm_mnist import api
from lstm_mnist.config import UserError

from .conftest import TINY_BUDGET

GRID = f"""experiment = "api-test"
designs = ["add_one_in"]
flags = ["adamw", "dropout"]
seeds = [0, 1]
[budget]
max_epochs = 2
{TINY_BUDGET}"""


@pytest.fixture
def grid_file(project):
    path = project / "experiments" / "api-grid.toml"
    path.write_text(GRID)
    return str(path)


def test_a_grid_planned_run_resumed_and_reported_from_python(project, grid_file, capsys):
    spec = api.load_grid(grid_file)
    assert spec.flags == ("adamw", "dropout") and spec.seeds == (0, 1)
    before = api.plan(grid_file)
    assert len(before) == 6 and set(before["state"]) == {"todo"}  # baseline and two add-one-in arms, two seeds
    assert set(before["arm"]) == {"baseline", "baseline+adamw", "baseline+dropout"}
    assert before["config_hash"].is_unique

    assert api.ablate(grid_file, workers=1, quiet=True) == 0
    assert capsys.readouterr().out == ""  # quiet: no progress lines
    after = api.plan(grid_file)
    assert set(after["state"]) == {"done"} and list(after["config_hash"]) == list(before["config_hash"])
    assert api.ablate(grid_file, quiet=True) == 0  # a rerun: nothing left to train
    assert len(api.runs("api-grid")) == 6

    runs = api.runs(grid_file)  # a path works as well as the stem
    assert set(runs["config_hash"]) == set(before["config_hash"])
    assert {"arm", "seed", "test_f1", "data_fingerprint", "protocol_version"} <= set(runs.columns)
    tables = api.report("api-grid")
    assert {"runs", "arms", "comparisons", "worth"} <= set(tables)
    assert set(tables["arms"]["arm"]) == set(before["arm"])
    assert set(tables["comparisons"]["flag"]) == {"adamw", "dropout"}
    assert not (project / "reports").exists()  # tables only: no file written


def test_mistakes_raise_the_one_line_the_cli_prints(project, grid_file):
    with pytest.raises(UserError, match="config file not found"):
        api.load_grid(str(project / "experiments" / "nope.toml"))
    with pytest.raises(UserError, match="workers=0: give at least 1"):
        api.ablate(grid_file, workers=0)
    with pytest.raises(UserError, match="max_seeds and block go with until_decided=True"):
        api.ablate(grid_file, max_seeds=4)
    with pytest.raises(UserError) as e:
        api.report("api-grid")  # nothing run yet
    assert "\n" not in str(e.value)


def test_ablate_from_a_script_a_worker_imports_again_is_one_line(grid_file):
    """multiprocessing runs a script's top level again in each worker it starts (as `__mp_main__`): there a
    call to ablate says what to do instead of starting a grid inside a worker."""
    with pytest.raises(UserError, match='put the script\'s calls under `if __name__ == "__main__":`'):
        exec("api.ablate(path)", {"__name__": "__mp_main__", "api": api, "path": grid_file})
