"""Statistics for correlations of autocorrelated series: n_eff, block bootstrap, surrogates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal
from scipy import stats as sp_stats

from bids_neurobolt.train import stats


def ar1(rng: np.random.Generator, phi: float, n: int, k: int, burn: int = 300) -> np.ndarray:
    """k independent AR(1) series of length n (columns), past their transient."""
    noise = rng.standard_normal((n + burn, k))
    return signal.lfilter([1.0], [1.0, -phi], noise, axis=0)[burn:]


def bivariate_ar1(rng, phi, n, k, rho):
    """Pairs of AR(1) series with the same coefficient whose correlation is exactly rho."""
    e1 = rng.standard_normal((n + 300, k))
    e2 = rho * e1 + math.sqrt(1.0 - rho**2) * rng.standard_normal((n + 300, k))
    return (signal.lfilter([1.0], [1.0, -phi], e, axis=0)[300:] for e in (e1, e2))


def naive_pearson_p(y, p):
    """One-sided Pearson t-test p for r > 0 that takes every sample as independent."""
    n = y.shape[0]
    r = np.array([np.corrcoef(y[:, j], p[:, j])[0, 1] for j in range(y.shape[1])])
    return sp_stats.t.sf(r * np.sqrt((n - 2) / (1 - r**2)), n - 2)


# ----------------------------------------------------------- effective sample size


def test_n_eff_is_about_n_for_white_noise_and_far_below_for_smooth_series():
    rng = np.random.default_rng(0)
    n = 500
    white = stats.effective_sample_sizes(rng.standard_normal((n, 20)), rng.standard_normal((n, 20)))
    assert np.all(white >= 0.8 * n) and np.all(white <= n)
    smooth = stats.effective_sample_sizes(ar1(rng, 0.95, n, 20), ar1(rng, 0.95, n, 20))
    # Theory: n (1 - phi^2) / (1 + phi^2) = 0.05 n.
    assert np.median(smooth) < 0.15 * n and np.all(smooth < 0.3 * n)
    assert np.all(smooth >= 2)


def test_bartlett_formula_against_a_hand_computation():
    x = [1, 2, 3, 4, 5, 6]  # centred: -2.5 -1.5 -0.5 0.5 1.5 2.5, sum of squares 17.5
    y = [2, 1, 4, 3, 6, 5]  # centred: -1.5 -2.5 0.5 -0.5 2.5 1.5, sum of squares 17.5
    # Biased autocorrelations: rho_x(1) = 8.75 / 17.5 = 1/2, rho_x(2) = 1 / 17.5 = 2/35,
    # rho_y(1) = 4.75 / 17.5 = 19/70, rho_y(2) = 1 / 17.5 = 2/35.
    denom_2 = 1 + 2 * ((1 - 1 / 6) * (1 / 2) * (19 / 70) + (1 - 2 / 6) * (2 / 35) ** 2)
    assert stats.effective_sample_size(x, y, max_lag=2) == pytest.approx(6 / denom_2, rel=1e-12)
    assert 6 / denom_2 == pytest.approx(88200 / 18089)
    # Default lag cut-off n // 5 = 1: n_eff = 6 / (1 + 19/84) = 504/103.
    assert stats.effective_sample_size(x, y) == pytest.approx(504 / 103, rel=1e-12)
    assert stats.default_max_lag(6) == 1 and stats.default_max_lag(500) == 100


def test_n_eff_clipping_and_degenerate_series():
    t = np.arange(40.0)
    # Alternating series: rho(k) = (-1)^k (1 - k/n), so with all lags
    # n / (1 + 2 sum_k (1 - k/n)^3) = 2 n^2 / (n^2 + 1) < 2, clipped to 2.
    alternating = (-1.0) ** t
    assert stats.effective_sample_size(alternating, alternating, max_lag=39) == 2.0
    # Opposite autocorrelations (alternating vs trend) give a denominator below 1: n_eff = n.
    assert stats.effective_sample_size(alternating, t) == 40.0
    assert math.isnan(stats.effective_sample_size([1.0, 2.0], [3.0, 1.0]))
    assert math.isnan(stats.effective_sample_size(np.ones(20), t[:20]))
    both = np.column_stack([t, np.ones(40), np.where(t == 3, np.nan, t)])
    n_eff = stats.effective_sample_sizes(both, np.column_stack([np.sin(t)] * 3))
    assert np.isfinite(n_eff[0]) and np.isnan(n_eff[1:]).all()
    # The 1-D and column-wise versions agree.
    assert stats.effective_sample_size(t, np.sin(t)) == pytest.approx(n_eff[0])


def test_block_length_rule():
    assert stats.block_length(500, 500.0) == 1  # white noise: ordinary bootstrap
    # tau = 10: ceil((3/8)^(1/3) * (10 - 0.1)^(2/3) * 500^(1/3)) = ceil(26.39...) = 27.
    assert stats.block_length(500, 50.0) == 27
    assert stats.block_length(20, 2.0) == 10  # bounded by n // 2
    assert stats.block_length(100, math.nan) == 50
    assert stats.block_length(1, 1.0) == 1
    lengths = [stats.block_length(300, n_eff) for n_eff in (300, 150, 60, 20, 5)]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]


# ------------------------------------------------------------------ bootstrap CI


def test_block_bootstrap_ci_covers_true_correlation_of_bivariate_ar1():
    rng = np.random.default_rng(1)
    rho = 0.5
    y, p = bivariate_ar1(rng, 0.8, 300, 200, rho)
    low, high = stats.block_bootstrap_ci(y, p, n_boot=500)
    coverage = np.mean((low <= rho) & (rho <= high))
    assert coverage >= 0.85
    # Resampling single windows (the iid bootstrap) ignores the autocorrelation.
    low1, high1 = stats.block_bootstrap_ci(y, p, n_boot=500, block=1)
    assert np.mean((low1 <= rho) & (rho <= high1)) < 0.8
    assert np.all(low < high) and np.all((low >= -1) & (high <= 1))


def test_block_bootstrap_ci_one_d_matches_column_and_handles_degenerate_columns():
    rng = np.random.default_rng(2)
    y, p = (a[:, 0] for a in bivariate_ar1(rng, 0.7, 120, 1, 0.6))
    low, high = stats.block_bootstrap_ci(y, p, n_boot=300, seed=4)
    assert isinstance(low, float) and low < np.corrcoef(y, p)[0, 1] < high
    two_d = stats.block_bootstrap_ci(
        np.column_stack([y, y]), np.column_stack([p, 0 * p]), n_boot=300, seed=4
    )
    assert two_d[0][0] == low and two_d[1][0] == high
    assert np.isnan(two_d[0][1]) and np.isnan(two_d[1][1])  # constant prediction
    with pytest.raises(ValueError, match="shapes differ"):
        stats.block_bootstrap_ci(y, p[:-1])
    with pytest.raises(ValueError, match="block"):
        stats.block_bootstrap_ci(y, p, block=0)


# ----------------------------------------------------------- phase randomisation


def test_phase_randomised_p_is_calibrated_where_naive_pearson_p_is_not():
    rng = np.random.default_rng(3)
    n, reps = 150, 300
    y, p = ar1(rng, 0.9, n, reps), ar1(rng, 0.9, n, reps)
    p_phase = stats.phase_randomised_p(y, p, n_surrogates=500)
    rate = np.mean(p_phase < 0.05)
    naive_rate = np.mean(naive_pearson_p(y, p) < 0.05)
    assert 0.02 <= rate <= 0.09, rate
    assert naive_rate > 0.2, naive_rate  # about 0.3: six times the nominal rate
    assert np.all((p_phase >= 1 / 501) & (p_phase <= 1))


def test_phase_randomised_p_detects_a_real_correlation():
    rng = np.random.default_rng(4)
    y = ar1(rng, 0.9, 300, 10)
    p = y + ar1(rng, 0.9, 300, 10)
    p_values = stats.phase_randomised_p(y, p, n_surrogates=200)
    assert np.all(p_values == 1 / 201)
    assert np.all(stats.phase_randomised_p(y, -p, n_surrogates=200) > 0.9)


@pytest.mark.parametrize("n", [64, 65])
def test_surrogates_keep_the_spectrum_and_give_the_null_correlations(n):
    rng = np.random.default_rng(5)
    y, p = ar1(rng, 0.8, n, 1)[:, 0], rng.standard_normal(n)
    surrogates = stats.phase_randomised_surrogates(y, n_surrogates=50, seed=7)
    assert surrogates.shape == (50, n)
    np.testing.assert_allclose(surrogates.mean(axis=1), y.mean())
    np.testing.assert_allclose(
        np.abs(np.fft.rfft(surrogates - y.mean(), axis=1)),
        np.broadcast_to(np.abs(np.fft.rfft(y - y.mean())), (50, n // 2 + 1)),
        atol=1e-9,
    )
    assert not np.allclose(surrogates[0], y)
    # The p-value's spectral shortcut equals correlating the surrogates in time.
    r_time = np.array([np.corrcoef(s, p)[0, 1] for s in surrogates])
    ((r_obs, r_null),) = stats._phase_null_r(y[:, None], [p[:, None]], 50, 7)
    np.testing.assert_allclose(r_null[:, 0], r_time, atol=1e-12)
    assert r_obs[0] == pytest.approx(np.corrcoef(y, p)[0, 1])
    expected = (1 + np.sum(r_time >= r_obs[0])) / 51
    assert stats.phase_randomised_p(y, p, n_surrogates=50, seed=7) == pytest.approx(expected)


# ------------------------------------------------------------------- paired test


def test_paired_difference_p_small_for_a_better_prediction():
    rng = np.random.default_rng(6)
    y = ar1(rng, 0.9, 200, 5)
    better = y + 0.3 * ar1(rng, 0.9, 200, 5)
    unrelated = ar1(rng, 0.9, 200, 5)
    p_values = stats.paired_difference_p(y, better, unrelated, n_boot=500)
    assert np.all(p_values < 0.01)
    assert np.all(stats.paired_difference_p(y, unrelated, better, n_boot=500) > 0.5)


def test_paired_difference_p_is_not_small_for_equally_good_predictions():
    rng = np.random.default_rng(7)
    y = ar1(rng, 0.9, 200, 200)
    a = y + ar1(rng, 0.9, 200, 200)
    b = y + ar1(rng, 0.9, 200, 200)
    p_values = stats.paired_difference_p(y, a, b, n_boot=500)
    assert 0.35 <= np.mean(p_values) <= 0.65
    assert np.mean(p_values < 0.05) <= 0.15  # measured 0.095: somewhat liberal (docstring)
    assert np.isnan(stats.paired_difference_p(y[:, 0], a[:, 0], np.ones(200)))


# ------------------------------------------------------------------------- FDR


def test_benjamini_hochberg_against_hand_computation():
    # Sorted 0.005 0.01 0.03 0.04, m = 4: m p / i = 0.02 0.02 0.04 0.04.
    np.testing.assert_allclose(
        stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.005]), [0.02, 0.04, 0.04, 0.02]
    )
    # m p / i = 0.04 0.022 0.667 0.9: the step-up minimum lowers the first to 0.022.
    q = stats.benjamini_hochberg([0.01, 0.011, 0.5, 0.9])
    np.testing.assert_allclose(q, [0.022, 0.022, 2 / 3, 0.9])


def test_benjamini_hochberg_ignores_nan_and_is_monotone():
    q = stats.benjamini_hochberg([0.01, np.nan, 0.011, 0.5, 0.9])
    assert np.isnan(q[1])
    np.testing.assert_allclose(q[[0, 2, 3, 4]], [0.022, 0.022, 2 / 3, 0.9])
    rng = np.random.default_rng(8)
    p = rng.uniform(size=50)
    q = stats.benjamini_hochberg(p)
    order = np.argsort(p)
    assert np.all(np.diff(q[order]) >= 0) and np.all(q >= p) and np.all(q <= 1)
    assert np.isnan(stats.benjamini_hochberg([np.nan, np.nan])).all()
    assert stats.benjamini_hochberg(np.array([[0.02, 0.01]])).shape == (1, 2)


# ----------------------------------------------------------------------- table


def _table_data(seed=9, n=200, k=4):
    rng = np.random.default_rng(seed)
    y = ar1(rng, 0.8, n, k)
    pred = y + ar1(rng, 0.8, n, k)
    base = 0.3 * y + ar1(rng, 0.8, n, k)
    return y, pred, base


BASE_COLUMNS = [
    "roi",
    "n",
    "n_eff",
    "pearson_r",
    "pearson_r_ci_low",
    "pearson_r_ci_high",
    "p_value",
]
BASELINE_COLUMNS = [
    "baseline_r",
    "baseline_r_ci_low",
    "baseline_r_ci_high",
    "baseline_p_value",
    "p_value_vs_baseline",
]


def test_correlation_table_columns_and_agreement_with_the_functions():
    y, pred, base = _table_data()
    names = ["A", "B", "C", "D"]
    kwargs = {"n_boot": 300, "n_surrogates": 200, "seed": 3}
    table = stats.correlation_table(y, pred, roi_names=names, **kwargs)
    assert list(table.columns) == [*BASE_COLUMNS, "q_value"]
    assert list(table["roi"]) == names and (table["n"] == 200).all()
    np.testing.assert_allclose(table["n_eff"], stats.effective_sample_sizes(y, pred))
    np.testing.assert_allclose(
        table["pearson_r"], [np.corrcoef(y[:, j], pred[:, j])[0, 1] for j in range(4)]
    )
    np.testing.assert_array_equal(
        table["p_value"], stats.phase_randomised_p(y, pred, n_surrogates=200, seed=3)
    )
    low, high = stats.block_bootstrap_ci(y, pred, n_boot=300, seed=3)
    np.testing.assert_allclose(table["pearson_r_ci_low"], low, rtol=1e-12)
    np.testing.assert_allclose(table["pearson_r_ci_high"], high, rtol=1e-12)
    np.testing.assert_array_equal(table["q_value"], stats.benjamini_hochberg(table["p_value"]))

    with_base = stats.correlation_table(y, pred, base, roi_names=names, **kwargs)
    assert list(with_base.columns) == [*BASE_COLUMNS, *BASELINE_COLUMNS, "q_value"]
    np.testing.assert_array_equal(with_base["p_value"], table["p_value"])
    np.testing.assert_array_equal(
        with_base["baseline_p_value"], stats.phase_randomised_p(y, base, n_surrogates=200, seed=3)
    )
    np.testing.assert_array_equal(
        with_base["p_value_vs_baseline"],
        stats.paired_difference_p(y, pred, base, n_boot=300, seed=3),
    )
    blocks = [
        stats.block_length(200, v)
        for v in np.minimum(
            stats.effective_sample_sizes(y, pred), stats.effective_sample_sizes(y, base)
        )
    ]
    low_b, high_b = stats.block_bootstrap_ci(y, base, n_boot=300, block=blocks, seed=3)
    np.testing.assert_allclose(with_base["baseline_r_ci_low"], low_b, rtol=1e-12)
    np.testing.assert_allclose(with_base["baseline_r_ci_high"], high_b, rtol=1e-12)
    assert (with_base["pearson_r"] > with_base["baseline_r"]).all()
    assert (with_base["p_value_vs_baseline"] < 0.05).all()
    assert set(stats.METHODS) == set(with_base.columns)
    assert all(isinstance(v, str) and v for v in stats.METHODS.values())


def test_correlation_table_leaves_out_rois_with_too_few_effective_samples():
    rng = np.random.default_rng(10)
    n = 40
    white_y = rng.standard_normal(n)
    white_p = white_y + rng.standard_normal(n)
    t = np.arange(n)  # one slow cycle: about 4 effective samples
    smooth_y = np.sin(2 * np.pi * t / n) + 0.1 * rng.standard_normal(n)
    smooth_p = np.sin(2 * np.pi * t / n + 0.5) + 0.1 * rng.standard_normal(n)
    y = np.column_stack([white_y, smooth_y, np.ones(n)])
    pred = np.column_stack([white_p, smooth_p, white_p])
    base = np.column_stack([white_p[::-1], smooth_y, white_y])
    table = stats.correlation_table(
        y, pred, base, roi_names=["w", "s", "c"], n_boot=200, n_surrogates=100
    )
    assert table.loc[0, "n_eff"] >= stats.MIN_N_EFF
    assert table.loc[1, "n_eff"] < stats.MIN_N_EFF
    assert np.isnan(table.loc[2, "n_eff"])  # constant measured series
    assert (table["n"] == n).all()
    stat_columns = [c for c in table.columns if c not in ("roi", "n", "n_eff")]
    assert table.loc[0, stat_columns].notna().all()
    assert table.loc[1:, stat_columns].isna().all().all()
    assert table.loc[0, "q_value"] == table.loc[0, "p_value"]  # m = 1
    # A lower threshold evaluates the smooth ROI.
    lenient = stats.correlation_table(
        y, pred, roi_names=["w", "s", "c"], min_n_eff=2, n_boot=200, n_surrogates=100
    )
    assert np.isfinite(lenient.loc[1, "pearson_r"]) and np.isnan(lenient.loc[2, "pearson_r"])
    with pytest.raises(ValueError, match="roi_names"):
        stats.correlation_table(y, pred, roi_names=["w"])


def test_same_seed_same_results_other_seed_other_results():
    y, pred, base = _table_data(seed=11)
    kwargs = {"n_boot": 200, "n_surrogates": 100, "roi_names": list("ABCD")}
    first = stats.correlation_table(y, pred, base, seed=5, **kwargs)
    again = stats.correlation_table(y, pred, base, seed=5, **kwargs)
    other = stats.correlation_table(y, pred, base, seed=6, **kwargs)
    assert first.equals(again)
    assert not np.array_equal(first["pearson_r_ci_low"], other["pearson_r_ci_low"])
    np.testing.assert_array_equal(first["pearson_r"], other["pearson_r"])
    low = stats.block_bootstrap_ci(y, pred, n_boot=200, seed=1)[0]
    assert np.array_equal(low, stats.block_bootstrap_ci(y, pred, n_boot=200, seed=1)[0])
    p1 = stats.phase_randomised_p(y, pred, n_surrogates=100, seed=1)
    assert np.array_equal(p1, stats.phase_randomised_p(y, pred, n_surrogates=100, seed=1))
    # A column's result does not depend on the other columns.
    p_last = stats.phase_randomised_p(y[:, 3], pred[:, 3], n_surrogates=100, seed=1)
    assert p_last == p1[3]


# ------------------------------------------------------------------- group level


def test_mean_r_ci_fisher_t_interval():
    r = np.array([0.2, 0.4, 0.5, np.nan, 0.3])
    mean, low, high = stats.mean_r_ci(r)
    assert mean == pytest.approx(0.35)
    z = np.arctanh([0.2, 0.4, 0.5, 0.3])
    half = sp_stats.t.ppf(0.975, 3) * z.std(ddof=1) / 2
    assert (low, high) == pytest.approx((np.tanh(z.mean() - half), np.tanh(z.mean() + half)))
    assert low < mean < high
    mean2, low2, high2 = stats.mean_r_ci([0.2, 0.4])
    assert mean2 == pytest.approx(0.3) and math.isnan(low2) and math.isnan(high2)
    assert all(math.isnan(v) for v in stats.mean_r_ci([np.nan]))
    narrow = stats.mean_r_ci(r, level=0.5)
    assert low < narrow[1] < narrow[2] < high
    assert np.isfinite(stats.mean_r_ci([1.0, 0.9, 0.95])).all()


def test_paired_sign_flip_p_exact_and_random():
    assert stats.paired_sign_flip_p([0.5, 0.6, 0.4], [0.3, 0.2, 0.1]) == 1 / 8
    assert stats.paired_sign_flip_p([0.3, 0.2, 0.1], [0.5, 0.6, 0.4]) == 1.0
    # Differences 1, 2, -3, 4 (mean 1): of the 16 sign patterns, those with a mean >= 1
    # are the data itself and the flips of the third (mean 2.5), second and third (1.5),
    # first and third (2), first, second and third (1): 5.
    d = np.array([1.0, 2.0, -3.0, 4.0])
    assert stats.paired_sign_flip_p(d, np.zeros(4)) == 5 / 16
    assert stats.paired_sign_flip_p([0.5, np.nan, 0.6, 0.4], [0.3, 0.1, 0.2, np.nan]) == 1 / 4
    assert math.isnan(stats.paired_sign_flip_p([np.nan], [1.0]))
    assert stats.paired_sign_flip_p(np.zeros(3), np.zeros(3)) == 1.0
    rng = np.random.default_rng(12)
    a, b = rng.normal(0.5, 0.1, 20), rng.normal(0.3, 0.1, 20)
    p = stats.paired_sign_flip_p(a, b, seed=1)
    assert p == stats.paired_sign_flip_p(a, b, seed=1) and 1e-4 <= p < 0.001
    d = rng.normal(0, 0.1, 10)
    assert 0.4 <= stats.paired_sign_flip_p(b + np.r_[d, -d], b, seed=1) <= 1  # mean 0
    with pytest.raises(ValueError, match="same length"):
        stats.paired_sign_flip_p([1.0, 2.0], [1.0])
