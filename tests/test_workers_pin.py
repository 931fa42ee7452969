"""Worker pinning: each worker's own share of the cores, the run tag's text, and `--workers auto`."""
import json
import os

import pytest
import torch

from lstm_mnist.machine import cores as machine_cores
from lstm_mnist.config import ConfigError


@pytest.fixture
def cores(monkeypatch):
    """Pretend this process may run on the given cores; record what pin() asks of the OS and of torch."""
    calls = {"affinity": [], "threads": []}

    def use(visible):
        monkeypatch.setattr(machine_cores, "_unpinned", None)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(visible), raising=False)
        monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: calls["affinity"].append(sorted(cpus)),
                            raising=False)
        monkeypatch.setattr(torch, "set_num_threads", lambda n: calls["threads"].append(n))
        return calls

    return use


def test_shares_are_contiguous_disjoint_and_cover_every_core(cores):
    cores(range(8))
    assert [machine_cores.cpu_share(i, 4) for i in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert [machine_cores.cpu_share(i, 3) for i in range(3)] == [[0, 1], [2, 3, 4], [5, 6, 7]]
    assert machine_cores.cpu_share(0, 1) == list(range(8))


def test_shares_follow_the_visible_cores_not_their_numbers(cores):
    cores([2, 3, 6, 7])
    assert [machine_cores.cpu_share(i, 2) for i in range(2)] == [[2, 3], [6, 7]]


def test_more_workers_than_cores_share_them_round_robin(cores):
    cores(range(2))
    assert [machine_cores.cpu_share(i, 5) for i in range(5)] == [[0], [1], [0], [1], [0]]


def test_worker_index_outside_the_pool_is_refused(cores):
    cores(range(4))
    with pytest.raises(ValueError):
        machine_cores.cpu_share(4, 4)


def test_pin_sets_affinity_and_threads_and_keeps_the_shares_stable(cores, monkeypatch):
    calls = cores(range(8))
    assert machine_cores.pin(1, 4) == [2, 3]
    assert calls == {"affinity": [[2, 3]], "threads": [2]}
    # the OS now reports only the pinned cores; shares are still computed from the cores before pinning
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {2, 3})
    assert machine_cores.cpu_share(3, 4) == [6, 7]
    assert machine_cores.settings(1, 4)["num_threads"] == 2


def test_settings_threads_equal_the_share_size(cores):
    cores(range(5))
    assert [machine_cores.settings(i, 2)["num_threads"] for i in range(2)] == [2, 3]
    assert machine_cores.settings(0, 8)["num_threads"] == 1


def test_pin_is_a_no_op_where_the_os_cannot_pin(cores, monkeypatch):
    calls = cores(range(4))
    monkeypatch.delattr(os, "sched_setaffinity")
    assert machine_cores.pin(0, 2) == []
    assert calls["threads"] == []


def test_pin_refused_by_the_os_leaves_the_process_as_it_was(cores, monkeypatch):
    calls = cores(range(4))

    def refuse(pid, cpus):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    assert machine_cores.pin(0, 2) == []
    assert calls["threads"] == [] and machine_cores._unpinned is None


def test_pin_really_pins_this_process(monkeypatch):
    """On Linux, for real: the OS then reports exactly the share, and torch uses as many threads."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no sched_setaffinity here")
    before, threads = os.sched_getaffinity(0), torch.get_num_threads()
    monkeypatch.setattr(machine_cores, "_unpinned", None)
    n = len(before)
    try:
        share = machine_cores.pin(n - 1, n)
        assert sorted(os.sched_getaffinity(0)) == share and torch.get_num_threads() == len(share) == 1
    finally:
        os.sched_setaffinity(0, before)
        torch.set_num_threads(threads)


@pytest.mark.parametrize("cores_in, text", [([0, 1, 2, 3], "0-3"), ([0, 2], "0,2"), ([5], "5"),
                                            ([3, 0, 1, 7, 8, 9], "0-1,3,7-9"), ([], "unpinned")])
def test_share_text(cores_in, text):
    assert machine_cores.share_text(cores_in) == text


# ---------------------------------------------------------------- --workers auto
def _report(path, name="NVIDIA H200", workers_plain=6, workers_mps=8, smoke=False):
    figures = {"cpu_smoke": smoke, "gpu": {"name": name},
               "recommended": {"plain": {"workers": workers_plain}, "mps": {"workers": workers_mps}}}
    path.write_text(json.dumps(figures))
    return path


@pytest.fixture
def gpus(monkeypatch, cores):
    def use(n, name="NVIDIA H200", n_cores=16):
        cores(range(n_cores))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: name)

    return use


def test_auto_on_a_cpu_is_the_core_count(gpus, tmp_path):
    gpus(0, n_cores=6)
    n, why = machine_cores.auto_workers(_report(tmp_path / "g.json"))
    assert n == 6 and "CPU core" in why


def test_auto_uses_gpu_checks_figure_for_this_gpu(gpus, tmp_path):
    gpus(1)
    report = _report(tmp_path / "g.json")
    assert machine_cores.auto_workers(report)[0] == 6
    n, why = machine_cores.auto_workers(report, mps=True)
    assert n == 8 and "gpu-check" in why and "MPS" in why


def test_auto_scales_the_figure_by_the_gpus_bounded_by_the_cores(gpus, tmp_path):
    gpus(2, n_cores=16)
    assert machine_cores.auto_workers(_report(tmp_path / "g.json", workers_plain=3))[0] == 6
    gpus(4, n_cores=16)
    n, why = machine_cores.auto_workers(_report(tmp_path / "g.json", workers_plain=6))
    assert n == 16 and "16" in why


@pytest.mark.parametrize("case", ["other gpu", "smoke", "missing", "corrupt", "no figure"])
def test_auto_falls_back_to_four_per_gpu(gpus, tmp_path, case):
    gpus(2, n_cores=6)
    path = tmp_path / "g.json"
    if case == "other gpu":
        _report(path, name="NVIDIA A100-SXM4-80GB")
    elif case == "smoke":
        _report(path, smoke=True)
    elif case == "corrupt":
        path.write_text("{not json")
    elif case == "no figure":
        path.write_text(json.dumps({"gpu": {"name": "NVIDIA H200"}, "recommended": {"plain": None}}))
    n, why = machine_cores.auto_workers(path)
    assert n == 6 and "4 per GPU" in why  # 4 x 2 GPUs = 8, bounded by the 6 cores


def test_workers_argument(gpus, tmp_path):
    gpus(0, n_cores=3)
    assert machine_cores.from_arg("5") == (5, "given on the command line")
    assert machine_cores.from_arg("auto", tmp_path / "none.json")[0] == 3
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ConfigError, match="--workers"):
            machine_cores.from_arg(bad)
