"""Power, MDE, seeds needed and the three verdicts (analysis/power.py), checked against simulation."""
import math

import numpy as np
import pytest

from lstm_mnist.analysis import power as pw

SIMS = 40_000


def _simulated(mu: float, sigma: float, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """SIMS replications of a paired comparison with n seeds: (mean difference, its se) each."""
    d = rng.normal(mu, sigma, size=(SIMS, n))
    return d.mean(axis=1), d.std(axis=1, ddof=1) / math.sqrt(n)


def _mc(p: float) -> float:
    """Four Monte Carlo standard errors of a rate p over SIMS replications."""
    return 4 * math.sqrt(p * (1 - p) / SIMS)


def test_power_is_alpha_at_zero_and_target_at_the_mde():
    for se, df in ((0.001, 1), (0.002, 3), (1.0, 10), (0.5, 60)):
        assert pw.power(0.0, se, df) == pytest.approx(0.05, abs=1e-9)
        m = pw.mde(se, df)
        assert pw.power(m, se, df) == pytest.approx(0.8, abs=1e-6)
        assert pw.power(-m, se, df) == pytest.approx(0.8, abs=1e-6)  # two-sided: symmetric
    assert pw.mde(1.0, 3) > pw.mde(1.0, 30) > pw.mde(0.5, 30)  # more df or a smaller se: smaller effects seen
    assert pw.mde(1.0, 3, alpha=0.05 / 6) > pw.mde(1.0, 3)    # a Holm-planned (smaller) alpha needs more


def test_the_power_formula_matches_a_simulated_paired_t_test():
    rng = np.random.default_rng(0)
    sigma, n = 0.002, 4
    se, df = sigma / math.sqrt(n), n - 1
    m = pw.mde(se, df)
    for mu, expected in ((0.0, 0.05), (m, 0.8), (m / 2, pw.power(m / 2, se, df))):
        est, se_hat = _simulated(mu, sigma, n, rng)
        rejected = np.mean(np.abs(est / se_hat) > pw.sps.t.ppf(0.975, df))
        assert rejected == pytest.approx(expected, abs=_mc(expected)), (mu, rejected, expected)


def test_seeds_needed_is_the_first_count_with_enough_power():
    se, n = 0.001, 2  # two seeds so far: se of the mean difference 0.001, so one seed's sd is 0.001·√2
    k = pw.seeds_needed(0.002, se, n, df_at=lambda s: s - 1)
    sd = se * math.sqrt(n)
    assert pw.power(0.002, sd / math.sqrt(k), k - 1) >= 0.8 > pw.power(0.002, sd / math.sqrt(k - 1), k - 2)
    assert pw.seeds_needed(0.004, se, n, lambda s: s - 1) < k  # a larger effect needs fewer
    assert pw.seeds_needed(0.0, se, n, lambda s: s - 1) is None
    assert pw.seeds_needed(1e-9, se, n, lambda s: s - 1, most=50) is None


@pytest.mark.parametrize("n", [3, 5, 8])
def test_wrong_verdicts_stay_at_or_below_alpha(n):
    """Under no effect, "effect" is said at most α of the time; with an effect of exactly δ, "no effect ≥ δ"
    is said at most α of the time (TOST is conservative at the boundary)."""
    rng = np.random.default_rng(n)
    sigma, delta = 0.002, 0.002
    for mu, wrong in ((0.0, pw.EFFECT), (delta, pw.NO_EFFECT), (-delta, pw.NO_EFFECT)):
        est, se = _simulated(mu, sigma, n, rng)
        said = [pw.verdict(e, s, n - 1, delta) for e, s in zip(est[:6000], se[:6000])]
        rate = said.count(wrong) / len(said)
        assert rate <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / len(said)), (mu, wrong, rate)


def test_verdicts_on_clear_cases():
    assert pw.verdict(0.01, 0.001, 5, delta=0.002) == pw.EFFECT
    assert pw.verdict(0.0001, 0.0002, 10, delta=0.002) == pw.NO_EFFECT
    assert pw.verdict(0.001, 0.001, 2, delta=0.002) == pw.UNDECIDED
    assert pw.verdict(0.001, float("nan"), 2, delta=0.002) == pw.UNDECIDED  # no se: nothing decided


def test_a_report_rows_power_columns():
    no_delta = pw.columns(0.001, 0.0005, 3, 4, None)
    assert no_delta["verdict"] == "" and math.isnan(no_delta["seeds_for_delta"])
    assert no_delta["mde80"] == pytest.approx(pw.mde(0.0005, 3))
    row = pw.columns(0.0001, 0.0005, 3, 4, 0.002)  # 90% CI 0.0001 ± 2.35 · 0.0005: inside ±0.002
    assert (row["verdict"] == pw.NO_EFFECT
            and row["seeds_for_delta"] == pw.seeds_needed(0.002, 0.0005, 4, lambda k: k - 1))
    assert pw.columns(0.001, 0.001, 3, 4, 0.002)["verdict"] == pw.UNDECIDED
    assert math.isnan(pw.columns(0.001, float("nan"), float("nan"), 1, 0.002)["mde80"])  # one seed: nothing to say
    assert math.isnan(no_delta["verdict_seeds"]) and math.isnan(no_delta["verdict_ci_lo"])


def test_a_fixed_n_verdict_names_its_seeds_and_the_interval_it_read():
    effect = pw.columns(0.01, 0.001, 5, 6, 0.002)  # the 95% CI excludes 0
    assert (effect["verdict"], effect["verdict_seeds"], effect["verdict_level"]) == (pw.EFFECT, 6, pytest.approx(0.95))
    assert (effect["verdict_ci_lo"], effect["verdict_ci_hi"]) == pytest.approx(pw.interval(0.01, 0.001, 5, 0.95))
    none = pw.columns(0.0001, 0.0005, 3, 4, 0.002)  # "no effect ≥ δ" reads the 90% CI (TOST at α = 0.05)
    assert none["verdict_level"] == pytest.approx(0.90)
    assert -0.002 < none["verdict_ci_lo"] < none["verdict_ci_hi"] < 0.002
    assert (none["verdict_ci_lo"], none["verdict_ci_hi"]) == pytest.approx(pw.interval(0.0001, 0.0005, 3, 0.90))

