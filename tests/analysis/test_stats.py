import numpy as np
import pytest

from pointalign.analysis.stats import (
    PairedResult,
    bootstrap_ci,
    direction,
    format_p,
    paired_bootstrap,
    pooled_paired,
    sign_flip_p,
    verdict,
)

N_BOOT = 2000  # enough for the checks below, fast


def test_constant_values_collapse_the_interval():
    assert bootstrap_ci([0.1] * 50, n_boot=N_BOOT) == pytest.approx((0.1, 0.1, 0.1))
    mean, low, high = bootstrap_ci([3.0], n_boot=N_BOOT)
    assert (mean, low, high) == (3.0, 3.0, 3.0)
    r = paired_bootstrap([1.0] * 30, [1.5] * 30, n_boot=N_BOOT)  # every object differs by exactly 0.5
    assert (r.delta, r.low, r.high, r.n) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5), 30)
    assert r.p_value < 0.001  # only the two all-same sign patterns reach |sum| = 15: p = 1 / (1 + N_BOOT)
    same = paired_bootstrap([2.0, 5.0, 7.0], [2.0, 5.0, 7.0], n_boot=N_BOOT)
    assert (same.delta, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_bootstrap_ci_of_a_bernoulli_mean_matches_the_normal_interval():
    values = np.array([1.0] * 60 + [0.0] * 140)  # 30 % of 200 objects right
    mean, low, high = bootstrap_ci(values, n_boot=N_BOOT)
    half = 1.96 * np.sqrt(0.3 * 0.7 / 200)  # the textbook interval, +-0.0635
    assert mean == pytest.approx(0.3)
    assert low == pytest.approx(0.3 - half, abs=0.01) and high == pytest.approx(0.3 + half, abs=0.01)


def test_exact_sign_flip_p_by_hand():
    rng = np.random.default_rng(0)
    # d = (1, 1, 1): of the 8 sign patterns, |sum| >= 3 only for (+,+,+) and (-,-,-): p = 2 / 8
    assert sign_flip_p(np.array([1.0, 1.0, 1.0]), 10_000, rng) == 0.25
    # d = (3, -1): |sum| = 2; patterns give 2, 4, -4, -2: all four reach 2
    assert sign_flip_p(np.array([3.0, -1.0]), 10_000, rng) == 1.0
    # d = (2, 1, 1): sums 4, 2, 2, 0, 0, -2, -2, -4: |sum| >= 4 twice of 8
    assert sign_flip_p(np.array([2.0, 1.0, 1.0]), 10_000, rng) == 0.25
    r = paired_bootstrap([0, 0, 0], [1, 1, 1])
    assert r.p_value == 0.25 and direction(r) == "indistinguishable"  # three objects cannot show anything


def test_a_clear_effect_is_significant():
    rng = np.random.default_rng(1)
    a = rng.normal(size=200)
    b = a + 1.0 + rng.normal(scale=0.1, size=200)
    r = paired_bootstrap(a, b)
    assert r.delta == pytest.approx(1.0, abs=0.03)
    assert r.p_value < 0.001 and r.low > 0.9 and r.high < 1.1
    assert direction(r) == "higher"
    assert verdict(r).startswith("PointAlign is higher than the baseline by 0.99")
    assert "95 % CI [" in verdict(r) and "p < 0.001" in verdict(r)
    assert direction(paired_bootstrap(b, a)) == "lower"


def test_no_effect_is_not_significant():
    rng = np.random.default_rng(2)
    a = rng.normal(size=200)
    b = a + rng.normal(scale=0.1, size=200)  # noise around the same values: the true difference is 0
    r = paired_bootstrap(a, b)
    assert r.p_value > 0.05 and r.low < 0 < r.high
    assert direction(r) == "indistinguishable"
    assert "is indistinguishable from zero (95 % CI [" in verdict(r)
    # right/wrong scores: two models as often right on different objects (30 vs 30 discordant objects)
    x = np.array([1] * 30 + [0] * 30 + [1] * 70 + [0] * 70, dtype=float)
    y = np.array([0] * 30 + [1] * 30 + [1] * 70 + [0] * 70, dtype=float)
    r = paired_bootstrap(x, y)
    assert r.delta == 0.0 and r.p_value == 1.0 and r.low < 0 < r.high


def test_p_is_uniform_under_the_null():
    rng = np.random.default_rng(3)
    ps = []
    for i in range(300):
        a = rng.normal(size=30)
        b = rng.normal(size=30)  # same distribution
        ps.append(paired_bootstrap(a, b, n_boot=400, seed=i).p_value)
    ps = np.array(ps)
    assert 0.02 <= np.mean(ps < 0.05) <= 0.09  # ~5 % false positives (binomial sd 1.3 %)
    assert 0.15 <= np.mean(ps < 0.25) <= 0.35
    assert 0.4 <= np.mean(ps) <= 0.6


def test_results_are_reproducible_by_seed():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=40), rng.normal(size=40)
    assert bootstrap_ci(a, seed=7) == bootstrap_ci(a, seed=7)
    assert bootstrap_ci(a, seed=7) != bootstrap_ci(a, seed=8)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7) != paired_bootstrap(a, b, seed=8)


def test_pooled_paired_keeps_the_seeds_of_an_object_together():
    rng = np.random.default_rng(5)
    a0, a1 = rng.normal(size=50), rng.normal(size=50)
    b0, b1 = a0 + 0.2, a1 - 0.1
    r = pooled_paired([(a0, b0), (a1, b1)])
    assert r.n == 50 and r.delta == pytest.approx(0.05)
    assert (r.low, r.high) == (pytest.approx(0.05), pytest.approx(0.05))  # every object's mean difference is 0.05
    one = pooled_paired([(a0, b0)], seed=3)
    assert one == paired_bootstrap(a0, b0, seed=3)  # one seed: the plain paired comparison
    # seeds are averaged per object, not concatenated: the CI is that of the per-object mean difference
    d = rng.normal(size=60)
    r = pooled_paired([(np.zeros(60), d), (np.zeros(60), d)])
    assert r == paired_bootstrap(np.zeros(60), d)


def test_input_errors():
    with pytest.raises(ValueError, match="a has 3 objects and b 2"):
        paired_bootstrap([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="no values"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="b: no values"):
        paired_bootstrap([1.0], [])
    with pytest.raises(ValueError, match="NaN or infinite"):
        bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="1-D"):
        bootstrap_ci([[1.0, 2.0]])
    with pytest.raises(ValueError, match="level=1.5"):
        bootstrap_ci([1.0], level=1.5)
    with pytest.raises(ValueError, match="n_boot=0"):
        paired_bootstrap([1.0], [2.0], n_boot=0)
    with pytest.raises(ValueError, match="no \\(a, b\\) pairs"):
        pooled_paired([])
    with pytest.raises(ValueError, match="seed 1 has 2 objects, seed 0 3"):
        pooled_paired([([1, 2, 3], [1, 2, 3]), ([1, 2], [1, 2])])
    with pytest.raises(ValueError, match="seed 0 has 3 objects in a and 2 in b"):
        pooled_paired([([1, 2, 3], [1, 2])])


def test_verdict_and_p_formatting():
    r = PairedResult(delta=-2.5, low=-4.0, high=-1.0, p_value=0.0123, n=200)
    assert verdict(r) == "PointAlign is lower than the baseline by 2.50 (95 % CI [-4.00, -1.00], p = 0.012)."
    assert format_p(0.0004) == "p < 0.001"
    # the CI excludes zero but the test does not reject: indistinguishable (both must agree)
    assert direction(PairedResult(1.0, 0.1, 2.0, 0.08, 200)) == "indistinguishable"
    assert direction(PairedResult(1.0, 0.1, 2.0, 0.08, 200, level=0.9)) == "higher"
