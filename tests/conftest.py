"""Shared fixtures: a tiny synthetic MNIST the tests make themselves, and one MLflow store per session.

The synthetic digits are learnable on purpose (class c lights rows 2c..2c+3 with noise), so a short
run reaches a clearly non-random F1 in a second or two on the CPU.
"""
from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("LSTM_MNIST_DATA", REPO.parent / "shared" / "mnist"))
NAMES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (magic 0x08 = unsigned byte, then the dimensions)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c + 2: 2 * c + 6, 6:22] = rng.integers(180, 256, (4, 16))
    return images, labels


def write_mnist(folder: Path, n_train: int = 600, n_test: int = 200, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tx, ty = synthetic_digits(n_train, 0)
    sx, sy = synthetic_digits(n_test, 1)
    for key, arr in (("train_images", tx), ("train_labels", ty), ("test_images", sx), ("test_labels", sy)):
        raw = idx_bytes(arr)
        if gz:
            (folder / f"{NAMES[key]}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / NAMES[key]).write_bytes(raw)
    return folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def _store_template(tmp_path_factory) -> Path:
    """Create (migrate) one MLflow SQLite store per session; tests get copies (migrations cost ~2 s)."""
    folder = tmp_path_factory.mktemp("store")
    db = folder / "mlflow.db"
    code = f"import mlflow; mlflow.MlflowClient('sqlite:///{db}').search_experiments()"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return db


@pytest.fixture
def project(tmp_path, monkeypatch, tiny_data, _store_template) -> Path:
    """A working directory laid out like the repo's root, on tiny data, with a fresh default store."""
    (tmp_path / "mlruns").mkdir()
    shutil.copy(_store_template, tmp_path / "mlruns" / "mlflow.db")
    # experiments/stores/ holds a long grid's store between sittings (experiments/sitting.sh): not a test's
    shutil.copytree(REPO / "experiments", tmp_path / "experiments", ignore=shutil.ignore_patterns("stores"))
    if (REPO / "studies").is_dir():
        shutil.copytree(REPO / "studies", tmp_path / "studies", ignore=shutil.ignore_patterns("*.db", "*.log"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("LSTM_MNIST_DATA", str(tiny_data))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("LSTM_MNIST_LEASE_DIR", str(tmp_path / "lease"))  # this test's invocations divide the cores
    return tmp_path


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """The CLI as a user runs it: a process of its own (forked by tests/launcher.py with the heavy libraries
    imported already; `fresh=True`: a cold interpreter)."""
    from . import launcher

    return launcher.run(args, cwd, env, timeout=timeout, fresh=fresh)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI's own entry point in this process: (exit code, stdout, stderr). For a test's second and later
    commands on one behaviour, where a fresh process (about 7 s of imports) would add nothing."""
    from lstm_mnist import cli as entry

    capsys.readouterr()
    code = entry.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def free_port() -> int:
    """A TCP port free on loopback now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A grid [budget] that trains a tiny LSTM in a second or two per cell on the tiny data.
TINY_BUDGET = """batch_size = 32
eval_batch_size = 256
hidden_on = 16
hidden_off = 16
layers_on = 1
num_threads = 1
"""

# Small, fast budget for runs on the tiny data.
QUICK = ["max_epochs=2", "batch_size=32", "eval_batch_size=256", "num_threads=1"]


GROUP_LOST: set[str] = set()  # tests whose xdist_group this pytest ignores (below)


def pytest_itemcollected(item) -> None:
    """A fault scenario (`chaos`) is a scenario: `make scenarios` runs it and `make test` leaves it out (marked
    as it is collected, before `-m` picks the tests)."""
    if item.get_closest_marker("chaos") and not item.get_closest_marker("scenario"):
        item.add_marker(pytest.mark.scenario)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items) -> None:
    """`--dist loadgroup` keeps an xdist_group's tests in one pytest process (test_ray's one Ray cluster) by a
    suffix pytest-xdist adds to their node ids. A pytest that drops the suffix (9.2, pytest-xdist#1386) spreads
    them over the workers without a word; two clusters then load the machine and count each other's tasks.
    Those tests fail at once instead (`_groups_hold`), naming the fix. The tests marked `long` go first (xdist
    hands out the groups, then single tests in this order), so no worker starts one as the others finish."""
    items.sort(key=lambda i: not i.get_closest_marker("long"))  # stable: the long ones first, each in its order
    if hasattr(config, "workerinput") and getattr(config.option, "loadgroup", False):  # an xdist worker
        GROUP_LOST.update(i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid)


@pytest.fixture(autouse=True)
def _groups_hold(request):
    if request.node.nodeid in GROUP_LOST:
        pytest.fail(f"this pytest ({pytest.__version__}) ignores --dist loadgroup (pytest-xdist#1386), so this test's "
                    "xdist_group would not run in one process: install the test extra's pinned pytest "
                    "(make install)", pytrace=False)


def pytest_terminal_summary(terminalreporter) -> None:
    """What the suite left out and what would run it (PostgreSQL, pdflatex, Ray...), then the chaos suite's
    figures, one line per scenario, when any scenario ran."""
    from collections import Counter

    from .chaos_tools import FIGURES, REPORT, read_report

    skipped = Counter(r.longrepr[2].removeprefix("Skipped: ") for r in terminalreporter.stats.get("skipped", [])
                      if isinstance(r.longrepr, tuple))
    if skipped:
        terminalreporter.section("tests left out here, and what runs them")
        for why, n in sorted(skipped.items()):
            terminalreporter.write_line(f"{n:>3} skipped: {why}")

    # Counted where this process deselected them; under xdist its workers do, and the mark expression says so.
    left = sum(1 for i in terminalreporter.stats.get("deselected", []) if getattr(i, "get_closest_marker", None)
               and i.get_closest_marker("scenario"))
    if left or "not scenario" in (terminalreporter.config.getoption("markexpr", "") or ""):
        terminalreporter.section("scenarios left out, and what runs them")
        terminalreporter.write_line(f"{f'{left:>3} ' if left else ''}scenarios (faults, Ray clusters, basic-auth, "
                                    "gpu-accept's CPU mode): make scenarios (CI runs it after make test)")

    # Under xdist the scenarios ran in the workers: their figures are in the report file they appended to
    # (make scenarios empties it first).
    figures = FIGURES or read_report(REPORT)
    if figures:
        terminalreporter.section("chaos figures")
        for entry in figures:
            terminalreporter.write_line(" ".join(f"{k}={v}" for k, v in entry.items()))


@pytest.fixture(autouse=True)
def _the_subprocess_marker_is_true(request, monkeypatch):
    """`make test-fast` leaves out the tests marked `subprocess`, so the mark must be true: a test without it
    that starts a process (the CLI, a worker, a server) fails here, naming the command. git (read for the
    runs' provenance) does not count, nor do the probes MLflow and torch make when first imported (`uname -p`,
    `ldconfig -p`), so a test module passes alone as in the suite."""
    if request.node.get_closest_marker("subprocess"):
        return
    import multiprocessing.process

    real_popen = subprocess.Popen.__init__

    def popen(self, args, *a, **kw):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        if Path(str(argv[0])).name not in ("git", "uname", "ldconfig"):
            pytest.fail(f"{request.node.nodeid} starts a process ({' '.join(map(str, argv))[:120]}): mark it "
                        "@pytest.mark.subprocess", pytrace=False)
        real_popen(self, args, *a, **kw)

    def start(self):
        pytest.fail(f"{request.node.nodeid} starts a worker process: mark it @pytest.mark.subprocess", pytrace=False)

    def launched(self, args, *a, **kw):
        pytest.fail(f"{request.node.nodeid} starts a process (python -m lstm_mnist {' '.join(map(str, args))[:100]}): "
                    "mark it @pytest.mark.subprocess", pytrace=False)

    from . import launcher

    monkeypatch.setattr(subprocess.Popen, "__init__", popen)
    monkeypatch.setattr(launcher.Launched, "__init__", launched)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start)


def assert_latex_fits(body: str, folder: Path, packages: tuple = ("booktabs",)) -> str:
    """`body` (tables, a report.tex, \\input of files in `folder`) compiles in a minimal article with `packages`,
    and no box is wider than the text (pdflatex says "Overfull \\hbox" when one is); the log."""
    uses = "".join(f"\\usepackage{{{p}}}\n" for p in packages)
    doc = "\\documentclass{article}\n" + uses + "\\begin{document}\n" + body + "\\end{document}\n"
    (folder / "t.tex").write_text(doc)
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=folder,
                          capture_output=True, text=True, timeout=120)
    log = (folder / "t.log").read_text(errors="replace")
    assert proc.returncode == 0, log[-2000:]
    assert "Overfull \\hbox" not in log, [line for line in log.splitlines() if "Overfull" in line]
    return log


def cpu_precisions() -> tuple:
    """The precisions this machine's CPU trains at (32, and bf16-mixed where oneDNN has bfloat16: AVX-512)."""
    import torch

    from lstm_mnist.training import devices

    return devices.precisions_of(torch.device("cpu"))


# bf16 on a CPU needs AVX-512 (oneDNN's bfloat16 LSTM): an AVX2-only CPU (an AMD EPYC seen here) refuses it.
needs_bf16_cpu = pytest.mark.skipif("bf16-mixed" not in cpu_precisions(), reason="this CPU has no AVX-512, so "
                                    "oneDNN has no bfloat16: bf16-mixed is refused here (tests check the refusal)")


def cpu_refusal(precision: str) -> str:
    """The one line a CPU precision it cannot train at gets (devices.check_precision)."""
    can = cpu_precisions()
    where = "a CPU" if precision == "16-mixed" else "this CPU (without AVX-512, oneDNN has no bfloat16)"
    return f"precision={precision}: {where} cannot train at it; it can at precision={' or precision='.join(can)}"
