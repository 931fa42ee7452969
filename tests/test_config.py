"""Config: defaults agree with design.md, later keys win, every bad input is a one-line error."""
import pytest

from lstm_mnist import cli
from lstm_mnist import config as harness_config
from lstm_mnist.builtin import config
from lstm_mnist.builtin.config import Config, ConfigError

from .conftest import REPO


def test_defaults_are_the_course_baseline_and_flags_resolve_per_design_table():
    base = Config()
    assert all(getattr(base, f) is False for f in config.FLAGS)
    assert (base.hidden_size, base.num_layers, base.effective_dropout) == (100, 1, 0.0)
    assert (base.batch_size, base.max_epochs, base.norm_mean, base.norm_std) == (64, 35, 0.1307, 0.3081)
    full = config.load(REPO / "experiments/full.toml")
    assert all(getattr(full, f) is True for f in config.FLAGS)
    assert (full.hidden_size, full.num_layers, full.effective_dropout, full.patience) == (128, 2, 0.2, 10)
    assert (full.adamw_lr, full.weight_decay, full.plateau_factor, full.plateau_patience) == (1e-3, 1e-5, 0.1, 5)
    assert config.load(REPO / "experiments/baseline.toml") == Config()


def test_later_keys_win(tmp_path):
    f = tmp_path / "e.toml"
    f.write_text("max_epochs = 7\nbidirectional = true\nsgd_lr = 1\n")
    cfg = config.load(f, ["max_epochs=3", "bidirectional=false", "seed=4"])
    assert (cfg.max_epochs, cfg.bidirectional, cfg.seed, cfg.sgd_lr) == (3, False, 4, 1.0)


def test_identity_covers_results_not_locations():
    a = Config(data_dir="x", experiment="one")
    assert a.identity("fp") == Config(data_dir="y", experiment="two", device="cpu").identity("fp")
    assert a.identity("fp") != Config(seed=1).identity("fp")
    assert a.identity("fp") != a.identity("other-data")
    assert a.identity("fp") != Config(dropout_rate=0.3).identity("fp")


def test_resolved_config_round_trips_through_toml(tmp_path):
    cfg = Config(bidirectional=True, readout="final_states", sgd_lr=0.05, seed=3)
    (tmp_path / "c.toml").write_text(cfg.to_toml())
    assert config.load(tmp_path / "c.toml") == cfg


@pytest.mark.parametrize("override, expected", [
    ("dropout_rate=1.5", "dropout_rate=1.5: out of range, allowed 0.0 <= dropout_rate < 1.0"),
    ("max_epochs=0", "max_epochs=0: out of range, allowed 1 <= max_epochs <= 10000"),
    ("bidirectional=maybe", "bidirectional=maybe: expected true or false"),
    ("batch_size=abc", "batch_size=abc: expected an integer"),
    ("readout=first", "readout='first': allowed values are last, final_states"),
    ("hiden_size=3", "unknown config key 'hiden_size'"),
    ("max_epochs", "override 'max_epochs': write it as key=value"),
])
def test_bad_overrides_are_one_line_errors(override, expected):
    with pytest.raises(ConfigError) as e:
        config.load(None, [override])
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text, expected", [
    ("max_epochs = \"3\"\n", "max_epochs='3': expected an integer"),
    ("bidirectional = 1\n", "bidirectional=1: expected true or false"),
    ("colour = 1\n", "unknown config key 'colour'"),
    ("max_epochs = = 3\n", "TOML syntax error"),
    ("[model]\nhidden = 3\n", "[model]: tables are not config keys"),
])
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, text, expected):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        config.load(f)
    assert expected in str(e.value) and str(f) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("argv, expected", [
    (["run", "experiments/nope.toml"], "config file not found: experiments/nope.toml"),
    (["run", "experiments/full.toml", "dropout_rate=1.5"], "dropout_rate=1.5: out of range"),
    (["run", "max_epochs=0"], "max_epochs=0: out of range"),
    (["run", "experiments/full.toml", "bidirectional=maybe"], "bidirectional=maybe: expected true or false"),
])
def test_cli_prints_one_line_and_exits_2(capsys, argv, expected):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1


def test_the_identity_of_a_known_config_is_pinned(monkeypatch):
    """A change here must be deliberate: bump config.PROTOCOL_VERSION when what a run computes changes."""
    cfg = Config(bidirectional=True, dropout=True, seed=3, max_epochs=5)
    assert config.PROTOCOL_VERSION == 1
    assert cfg.identity("0123456789abcdef") == "51595cc6d95edc3c"
    assert cfg.settings_key("0123456789abcdef") == "4638771a585d74fa"  # the config_hash runs had before version 1
    assert cfg.identity("fp", protocol=2) != cfg.identity("fp")
    # thread count and device change the last digits, not the protocol: outside the identity
    assert cfg.identity("fp") == Config(**{**cfg.to_dict(), "num_threads": 7, "device": "cpu"}).identity("fp")
    monkeypatch.setattr(harness_config, "PROTOCOL_VERSION", 2)  # a new protocol: a new identity, the same settings
    assert cfg.identity("0123456789abcdef") != "51595cc6d95edc3c"
    assert cfg.settings_key("0123456789abcdef") == "4638771a585d74fa"


def test_protocol_keys_are_never_searched():
    for key in ("val_fraction", "split_seed", "norm_mean", "norm_std", "data_dir", "train_samples", "readout",
                "seed", *config.FLAGS):
        assert config.TASK.why_never_searched(key), key
