"""Budget curves (expected best of k trials) against brute force over every k-tuple, and their bootstrap band."""
import itertools
import math

import numpy as np
import pytest

from lstm_mnist.analysis import budget
from lstm_mnist.analysis.budget import curve, expected_best, order_settles

SETS = [
    [0.7],
    [0.3, 0.3],
    [-1.0, 2.0],
    [0.5, -0.25, 0.5],
    [0.1, 0.2, 0.3, 0.99],
    [-3.0, 1.5, 1.5, 0.0, -3.0],
    [2.0, -0.5, 7.25, 7.25, 1.0],
]


def brute(values, k, maximize):
    """Average best over all N^k equally likely ordered k-tuples of draws."""
    best = max if maximize else min
    tuples = list(itertools.product(values, repeat=k))
    return sum(best(t) for t in tuples) / len(tuples)


@pytest.mark.parametrize("maximize", [True, False])
@pytest.mark.parametrize("values", SETS)
def test_expected_best_equals_brute_force_over_all_tuples(values, maximize):
    ks = [1, 2, 3, 4]
    got = expected_best(values, ks, maximize)
    assert got.shape == (4,)
    for k, e in zip(ks, got):
        assert abs(e - brute(values, k, maximize)) <= 1e-12


def test_by_hand():
    # sorted 0.1, 0.2, 0.3, 0.99; at k = 2 the weights are (1, 3, 5, 7)/16
    assert expected_best([0.99, 0.1, 0.3, 0.2], 2)[0] == pytest.approx((0.1 + 0.6 + 1.5 + 6.93) / 16, abs=1e-15)
    # the minimum mirrors: weights (7, 5, 3, 1)/16 from the smallest up
    assert expected_best([0.99, 0.1, 0.3, 0.2], 2, maximize=False)[0] == pytest.approx(
        (0.7 + 1.0 + 0.9 + 0.99) / 16, abs=1e-15)


@pytest.mark.parametrize("values", SETS)
def test_k1_is_the_mean_and_large_k_the_extreme(values):
    for maximize in (True, False):
        assert expected_best(values, 1, maximize)[0] == pytest.approx(np.mean(values), abs=1e-12)
    assert expected_best(values, 5000)[0] == pytest.approx(max(values), abs=1e-9)
    assert expected_best(values, 5000, maximize=False)[0] == pytest.approx(min(values), abs=1e-9)


def test_monotone_in_k():
    v = np.random.default_rng(3).normal(size=12)
    ks = np.arange(1, 60)
    up, down = expected_best(v, ks), expected_best(v, ks, maximize=False)
    assert (np.diff(up) >= -1e-15).all() and (np.diff(down) <= 1e-15).all()
    assert up[-1] > up[0] and down[-1] < down[0]  # strict somewhere: the values differ


@pytest.mark.parametrize("bad_values, bad_ks", [
    ([], 1), ([0.1, float("nan")], 1), ([[0.1, 0.2]], 1),
    ([0.1], 0), ([0.1], [1, 2, -1]), ([0.1], []), ([0.1], 1.5), ([0.1], "2"),
])
def test_expected_best_rejects(bad_values, bad_ks):
    with pytest.raises(ValueError):
        expected_best(bad_values, bad_ks)


def test_curve_band_holds_the_mean():
    rng = np.random.default_rng(0)
    for values in (*SETS, rng.normal(0.98, 0.01, 20), rng.exponential(size=15), np.round(rng.normal(size=9))):
        for maximize in (True, False):
            c = curve(values, maximize=maximize, n_boot=400)
            assert c.n == len(values)
            np.testing.assert_array_equal(c.ks, np.arange(1, len(values) + 1))
            np.testing.assert_allclose(c.mean, expected_best(values, c.ks, maximize), rtol=0, atol=1e-15)
            assert (c.lo <= c.mean + 1e-12).all() and (c.mean <= c.hi + 1e-12).all()
            assert c.lo[0] <= np.mean(values) <= c.hi[0]  # k = 1: the band around the sample mean


def test_k1_band_is_roughly_the_normal_interval_for_the_mean():
    v = np.random.default_rng(1).normal(0.0, 1.0, 200)
    c = curve(v, ks=[1], n_boot=2000)
    half = 1.96 * np.std(v) / math.sqrt(len(v))
    assert c.lo[0] == pytest.approx(np.mean(v) - half, abs=0.1 * half)
    assert c.hi[0] == pytest.approx(np.mean(v) + half, abs=0.1 * half)
    wide = curve(v, ks=[1], n_boot=2000, level=0.99)
    assert wide.lo[0] < c.lo[0] and wide.hi[0] > c.hi[0]


def test_curve_band_collapses_without_spread():
    for values in ([0.42], [0.42] * 6):
        for maximize in (True, False):
            c = curve(values, maximize=maximize, ks=[1, 3, 10])
            np.testing.assert_allclose(c.lo, 0.42, rtol=0, atol=1e-12)
            np.testing.assert_allclose(c.hi, 0.42, rtol=0, atol=1e-12)
            np.testing.assert_allclose(c.mean, 0.42, rtol=0, atol=1e-12)


def test_curve_is_deterministic_per_seed():
    v = np.random.default_rng(2).normal(size=10)
    a, b, other = curve(v, seed=5), curve(v, seed=5), curve(v, seed=6)
    for field in ("ks", "mean", "lo", "hi"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not (np.array_equal(a.lo, other.lo) and np.array_equal(a.hi, other.hi))
    np.testing.assert_array_equal(a.mean, other.mean)  # the curve itself does not depend on the seed


def test_curve_rejects():
    for kwargs in ({"n_boot": 0}, {"level": 1.0}, {"level": 0.0}, {"ks": [0]}):
        with pytest.raises(ValueError):
            curve([0.1, 0.2], **kwargs)
    with pytest.raises(ValueError):
        curve([])


def test_order_settles_when_the_curves_cross():
    a, b = [0.5, 0.5, 0.5, 0.5], [0.1, 0.2, 0.3, 0.99]
    order = [np.sign(brute(a, k, True) - brute(b, k, True)) for k in range(1, 5)]
    assert order == [1, -1, -1, -1]  # b is worse for one trial (mean 0.3975), better from two (0.570625)
    assert order_settles(a, b) == 2
    assert order_settles(b, a) == 2  # the sign rule is symmetric
    # minimizing, b is lower from k = 1 on: never crosses
    assert order_settles(a, b, maximize=False) == 1
    # minimizing, a spread arm above a flat one at k = 1 (0.6025) dips below from k = 2 (6.87/16)
    c = [0.01, 0.7, 0.8, 0.9]
    assert [np.sign(brute(a, k, False) - brute(c, k, False)) for k in range(1, 5)] == [-1, 1, 1, 1]
    assert order_settles(a, c, maximize=False) == 2


def test_order_settles_late_and_never():
    flat, spiky = [0.5] * 8, [0.1] * 7 + [0.99]
    # E_spiky(k) = 0.1 + 0.89 (1 - (7/8)^k) passes 0.5 where (7/8)^k < 0.39/0.89: k = 5
    assert order_settles(flat, spiky) == 5
    assert order_settles([0.9, 0.95, 0.99], [0.1, 0.2, 0.3]) == 1
    assert order_settles([0.2, 0.4], [0.4, 0.2]) == 1  # a tie at every k is one unchanging order


def test_order_settles_uses_the_shorter_arm():
    # with K = 8 the crossing would be at k = 5; K = min(4, 8) = 4 stops before it, so the order never changes
    assert order_settles([0.5] * 4, [0.1] * 7 + [0.99]) == 1
    assert order_settles([0.5] * 8, [0.1] * 7 + [0.99]) == 5


def test_order_settles_rejects():
    for a, b in (([], [0.1]), ([0.1], []), ([0.1, float("nan")], [0.2, 0.3])):
        with pytest.raises(ValueError):
            order_settles(a, b)


def test_tie_tolerance_is_absolute():
    assert budget.TIE == 1e-12
    # k = 1: the means differ by 5e-13, a tie; k = 2: a is ahead by 0.05. A tie then an order is a change
    assert order_settles([0.6, 0.4 + 1e-12], [0.5, 0.5]) == 2
    assert order_settles([0.6, 0.4 + 1e-10], [0.5, 0.5]) == 1  # 5e-11 is past the tolerance: a leads throughout


def test_budget_png_writes_a_png(tmp_path):
    from lstm_mnist.analysis.figures import budget_png

    curves = {"flat": curve([0.5] * 4, n_boot=50), "spiky": curve([0.1, 0.2, 0.3, 0.99], n_boot=50)}
    out = budget_png(curves, "val_f1", tmp_path / "budget.png")
    assert out == tmp_path / "budget.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_budget_curves_zoom_on_the_second_half_where_the_arms_differ():
    import numpy as np

    from lstm_mnist.analysis.budget import Curve
    from lstm_mnist.analysis.figures import budget_zoom

    ks = np.arange(1, 9)
    rising = Curve(ks, np.array([0.40, 0.90, 0.95, 0.970, 0.975, 0.978, 0.979, 0.980]), ks * 0, ks * 0, 8)
    flat = Curve(ks, np.array([0.96, 0.97, 0.975, 0.980, 0.982, 0.984, 0.985, 0.985]), ks * 0, ks * 0, 8)
    lo, hi = budget_zoom({"a": rising, "b": flat})
    assert lo == pytest.approx(0.970 - 0.0015) and hi == pytest.approx(0.985 + 0.0015)  # k = 4..8, padded a tenth
    assert budget_zoom({}) is None
