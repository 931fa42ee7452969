"""The report's statistics against values worked out by hand and against scipy directly."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from lstm_mnist.analysis import stats


def test_mean_std_ci_by_hand():
    x = [1.0, 2.0, 3.0, 4.0]
    assert stats.mean(x) == 2.5
    assert stats.std(x) == pytest.approx(math.sqrt(5 / 3))  # squared deviations 2.25+0.25+0.25+2.25 over n-1=3
    lo, hi = stats.ci95(x)
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2  # t(0.975, 3) from a table
    assert (lo, hi) == pytest.approx((2.5 - half, 2.5 + half))


def test_ci_matches_scipy_interval():
    x = [0.991, 0.9902, 0.9921, 0.9897, 0.9915]
    expected = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert stats.ci95(x) == pytest.approx(expected)


def test_one_value_has_no_spread_or_interval():
    assert stats.mean([0.5]) == 0.5
    assert math.isnan(stats.std([0.5])) and all(map(math.isnan, stats.ci95([0.5])))
    assert math.isnan(stats.mean([]))


def test_paired_by_seed_by_hand():
    treated = {1: 0.99, 2: 0.98, 3: 0.97}
    control = {1: 0.97, 2: 0.97, 3: 0.96, 4: 0.50}  # seed 4 has no partner: it drops out
    r = stats.paired(treated, control)
    assert r.n == 3 and r.reason == ""
    assert r.mean_diff == pytest.approx(0.04 / 3)       # diffs 0.02, 0.01, 0.01
    # sd(diffs) = 0.01/sqrt(3), so t = (0.04/3) / (0.01/3) = 4 and d_z = t/sqrt(n) = 4/sqrt(3)
    assert r.d_z == pytest.approx(4 / math.sqrt(3))
    assert r.p == pytest.approx(1 - 4 / math.sqrt(18))  # t on 2 df: two-sided p = 1 - t/sqrt(t^2 + 2)
    half = sps.t.ppf(0.975, 2) * (0.01 / math.sqrt(3)) / math.sqrt(3)
    assert (r.ci_lo, r.ci_hi) == pytest.approx((0.04 / 3 - half, 0.04 / 3 + half))


def test_paired_p_matches_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.99, 0.002, 6), rng.normal(0.988, 0.002, 6)
    r = stats.paired(dict(enumerate(a)), dict(enumerate(b)))
    assert r.p == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert r.d_z == pytest.approx(np.mean(a - b) / np.std(a - b, ddof=1))


def test_paired_with_too_few_seeds_or_no_spread_gives_a_reason():
    one = stats.paired({1: 0.9, 2: 0.8}, {1: 0.85, 3: 0.7})
    assert one.n == 1 and one.reason == stats.TOO_FEW and one.mean_diff == pytest.approx(0.05)
    assert all(math.isnan(v) for v in (one.p, one.d_z, one.ci_lo, one.ci_hi))
    flat = stats.paired({1: 1.0, 2: 2.0}, {1: 0.5, 2: 1.5})
    assert flat.reason == stats.NO_SPREAD and math.isnan(flat.d_z)
    assert flat.mean_diff == 0.5 and (flat.ci_lo, flat.ci_hi) == (0.5, 0.5)
    # identical non-zero differences: the strongest evidence, p = 0; identical zeros: no evidence, p = 1
    assert flat.p == 0.0 and stats.paired({1: 1.0, 2: 2.0}, {1: 1.0, 2: 2.0}).p == 1.0


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> kept monotone at 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_holm_leaves_nan_out_of_the_family():
    out = stats.holm([0.01, float("nan"), 0.04])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert stats.holm([]) == []


@pytest.mark.parametrize("diffs", [
    [[0.01, 0.012, 0.009], [0.002, -0.001, 0.003], [-0.004, 0.001, 0.0], [0.003, 0.006, 0.0]],   # no ties
    [[0.01, 0.012, 0.009], [0.002, 0.002, 0.002], [-0.004, 0.001, 0.0], [0.0, 0.0, 0.0]],       # zero spread
    [[0.002, 0.002, 0.002], [0.005, 0.005, 0.005], [0.0, 0.0, 0.0]],                             # only zero spread
])
def test_holm_of_paired_comparisons_matches_statsmodels_with_zero_spread_rows_in_the_family(diffs):
    from statsmodels.stats.multitest import multipletests

    ps = [stats.paired(dict(enumerate(d)), {i: 0.0 for i in range(len(d))}).p for d in diffs]
    assert not any(math.isnan(p) for p in ps)  # every comparison counts in the family
    assert stats.holm(ps) == pytest.approx(multipletests(ps, method="holm")[1].tolist(), abs=1e-12)
