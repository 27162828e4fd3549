"""Linear baselines: HRF, features (HRF and FIR), blocked-CV ridge, planted couplings."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from bids_neurobolt.train.baselines import (
    ALPHAS,
    BANDS,
    band_power_features,
    baseline_features,
    baseline_predictions,
    blocked_folds,
    canonical_hrf,
    fir_ridge_baseline,
    fit_ridge,
    hrf_weights,
    ridge_baseline,
)
from bids_neurobolt.train.metrics import pearson_r
from bids_neurobolt.train.splits import Split, intra_scan_split
from bids_neurobolt.train.windows import make_windows


def test_canonical_hrf_shape():
    t = np.arange(0, 32, 0.1)
    h = canonical_hrf(t)
    assert 4.5 < t[np.argmax(h)] < 5.5  # peak about 5 s
    assert h[np.argmin(np.abs(t - 15))] < 0  # undershoot
    assert canonical_hrf([-1.0, 0.0])[0] == 0.0
    w = hrf_weights(16, 1.0)
    assert w.shape == (2, 16)
    assert np.argmax(w[0]) in (10, 11)  # bins centred 5.5 and 4.5 s before the volume


def test_features_follow_planted_band_power():
    rng = np.random.default_rng(0)
    n, t = 30, np.arange(3200) / 200.0
    alpha = rng.uniform(0.5, 2.0, size=n)
    x = 0.05 * rng.normal(size=(n, 2, 3200))
    x[:, 0] += alpha[:, None] * np.sin(2 * np.pi * 10 * t)
    feats = band_power_features(x).reshape(n, 2, 5, 2)  # channel, band, (hrf, derivative)
    r_alpha = np.corrcoef(np.log(alpha), feats[:, 0, 2, 0])[0, 1]
    r_beta = np.corrcoef(np.log(alpha), feats[:, 0, 3, 0])[0, 1]
    assert r_alpha > 0.99
    assert abs(r_beta) < 0.5


def test_ridge_recovers_a_linear_map_with_and_without_validation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 10))
    beta = rng.normal(size=(10, 2))
    y = x @ beta + 0.1 * rng.normal(size=(200, 2))
    with_val = fit_ridge(x[:150], y[:150], x[150:], y[150:])
    blocked = fit_ridge(x[:150], y[:150])
    for model in (with_val, blocked):
        pred = model.predict(x[150:])
        for j in range(2):
            assert np.corrcoef(pred[:, j], y[150:, j])[0, 1] > 0.99
        assert np.all(model.alpha <= 150 * 1.0)  # small penalties win on clean data
    noise_only = fit_ridge(x[:150], rng.normal(size=(150, 1)))
    assert noise_only.alpha[0] >= 150 * 10.0  # pure noise: strong shrinkage


def test_baseline_beats_chance_on_planted_coupling():
    """EEG alpha power drives the BOLD target through the HRF; the baseline must find it."""
    rng = np.random.default_rng(1)
    sfreq, tr, n_vol = 200.0, 2.0, 260
    n = round((n_vol * tr + 2) * sfreq)
    t = np.arange(n) / sfreq
    slow = np.convolve(rng.normal(size=n // 200 + 40), np.ones(8) / 8, "same")[: n // 200 + 1]
    envelope = np.exp(0.6 * np.repeat(slow, 200)[:n])
    eeg = 5 * rng.normal(size=(2, n)) + 20 * envelope * np.sin(2 * np.pi * 10 * t)
    markers = np.round(np.arange(n_vol) * tr * sfreq).astype(int)
    power = np.repeat(np.log(envelope.reshape(-1, 200).mean(axis=1)), 1)
    bold = np.convolve(power, canonical_hrf(np.arange(32.0)))[: power.size]
    target = bold[(markers / sfreq).astype(int)]
    target = (target - target.mean()) / target.std() + 0.3 * rng.normal(size=n_vol)
    windows = make_windows(eeg, markers, ch_names=["O1", "O2"])
    y = target[windows.volumes, None]
    split = intra_scan_split(len(windows), gap=3)
    result = ridge_baseline(windows.data, y, split, roi_names=["Cuneus"])
    test_r = result.metrics.query("split == 'test'")["baseline_pearson_r"].iloc[0]
    assert test_r > 0.7
    assert result.predictions.shape == (len(windows), 1)


def _noise_run(seed, *, n_vol=308, n_ch=26, tr=2.0, sfreq=200.0, shared_gain=True):
    """Continuous noise EEG cut into overlapping windows, and BOLD-like targets independent of it.

    With ``shared_gain`` the EEG amplitude of all channels follows one slow random gain, as
    real EEG power co-varies across channels.
    """
    rng = np.random.default_rng(seed)
    n_sec = int(n_vol * tr + 2)
    eeg = rng.normal(size=(n_ch, n_sec * 200))
    if shared_gain:
        gain = np.exp(0.5 * np.convolve(rng.normal(size=n_sec + 20), np.ones(4) / 2, "same"))
        eeg *= np.repeat(gain[:n_sec], 200)
    markers = np.round(np.arange(n_vol) * tr * sfreq).astype(int)
    windows = make_windows(eeg, markers, ch_names=[f"E{i}" for i in range(n_ch)])
    hrf = canonical_hrf(np.arange(0, 32, tr))
    bold = np.stack([np.convolve(rng.normal(size=n_vol + 16), hrf)[16:] for _ in range(3)], 1)
    y = bold[windows.volumes]
    return windows, (y - y.mean(axis=0)) / y.std(axis=0)


def test_noise_targets_are_not_fitted():
    """300 overlapping windows, 260 features, targets independent of the EEG.

    Leave-one-out on the old grid (the former rule, emulated as 300 folds without gap) picks
    almost no shrinkage and fits the training targets (r ~0.98); blocked cross-validation
    shrinks everything. (Any ridge's training r stays at least that of the most-shrunk fit,
    ``corr(y, Z Z'y)``: about 0.8 for independent white-noise channels, 0.1-0.2 here.)
    """
    windows, y = _noise_run(0)
    assert len(windows) == 300
    split = Split(np.arange(300), np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    result = ridge_baseline(windows.data, y, split)
    assert result.model.coef.shape == (26 * 5 * 2, 3)
    train_r = result.metrics["baseline_pearson_r"].to_numpy()
    r2 = 1 - ((y - result.predictions) ** 2).mean(axis=0) / y.var(axis=0)
    assert np.all(train_r < 0.5)
    assert np.all(r2 < 0.05)
    assert np.all(result.model.alpha >= 1e3 * result.model.penalties[0] / ALPHAS[0])

    features = band_power_features(windows.data)
    loo = fit_ridge(features, y, alphas=np.logspace(-3, 4, 15), n_folds=300, gap=0, rule="min")
    assert np.all(pearson_r(y, loo.predict(features)) > 0.9)


def test_noise_targets_white_eeg_shrink_to_the_limit():
    windows, y = _noise_run(1, shared_gain=False)
    features = band_power_features(windows.data)
    model = fit_ridge(features, y)
    pred = model.predict(features)
    assert np.all(1 - ((y - pred) ** 2).mean(axis=0) / y.var(axis=0) < 0.05)
    z = (features - features.mean(axis=0)) / features.std(axis=0)
    limit = pearson_r(y, z @ (z.T @ y))
    np.testing.assert_allclose(pearson_r(y, pred), limit, atol=0.02)


def test_penalty_large_on_noise_small_on_a_clean_linear_target():
    rng = np.random.default_rng(2)
    x = lfilter([1.0], [1.0, -0.8], rng.normal(size=(300, 100)), axis=0)  # autocorrelated rows
    unit_alphas = np.asarray(ALPHAS)
    noise = fit_ridge(x, rng.normal(size=(300, 2)))
    relative = noise.alpha / noise.penalties[0] * unit_alphas[0]
    assert np.all(relative >= 1e3)
    beta = rng.normal(size=(100, 2))
    clean = fit_ridge(x[:240], x[:240] @ beta + 0.01 * rng.normal(size=(240, 2)))
    relative = clean.alpha / clean.penalties[0] * unit_alphas[0]
    assert np.all(relative <= 0.1)
    pred = clean.predict(x[240:])
    assert np.all(pearson_r(x[240:] @ beta, pred) > 0.95)


def test_baseline_keeps_a_true_linear_coupling_on_noise_eeg():
    """Targets that are a linear function of the HRF features: the test r stays high."""
    windows, _ = _noise_run(3)
    features = band_power_features(windows.data)
    rng = np.random.default_rng(3)
    z = (features - features.mean(axis=0)) / features.std(axis=0)
    signal = z @ rng.normal(size=(z.shape[1], 2))
    y = signal / signal.std(axis=0) + 0.5 * rng.normal(size=signal.shape)
    split = intra_scan_split(len(windows), gap=8)
    result = ridge_baseline(windows.data, y, split)
    test = result.metrics.query("split == 'test'")["baseline_pearson_r"].to_numpy()
    assert np.all(test > 0.7)


def test_blocked_folds_are_contiguous_with_gaps():
    folds = list(blocked_folds(100, 5, 8))
    assert len(folds) == 5
    held = np.concatenate([h for _, h in folds])
    np.testing.assert_array_equal(held, np.arange(100))
    for fit_rows, held_rows in folds:
        assert np.all(np.diff(held_rows) == 1)
        distance = np.abs(fit_rows[:, None] - held_rows[None, :]).min(axis=1)
        assert distance.min() == 9  # 8 rows left out on each side
        assert (
            fit_rows.size
            + held_rows.size
            + np.sum((np.arange(100) < held_rows[0]) & (np.arange(100) >= held_rows[0] - 8))
            + np.sum((np.arange(100) > held_rows[-1]) & (np.arange(100) <= held_rows[-1] + 8))
            == 100
        )
    # few rows: the gap shrinks so that each fit keeps half the rows outside its block
    small = list(blocked_folds(10, 5, 8))
    assert all(fit_rows.size >= 4 for fit_rows, _ in small)
    assert len(list(blocked_folds(3, 5, 8))) == 3


def test_fir_and_hrf_features_shapes_and_consistency():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 3, 3200))
    hrf = baseline_features(x, kind="hrf")
    fir = baseline_features(x, kind="fir")
    assert hrf.shape == (7, 3 * len(BANDS) * 2)
    assert fir.shape == (7, 3 * len(BANDS) * 16)
    np.testing.assert_allclose(hrf, band_power_features(x))
    # the HRF regressors are the FIR ones (log band power per bin) weighted by the HRF
    per_bin = fir.reshape(7, 3, len(BANDS), 16)
    expected = np.einsum("wcfb,hb->wcfh", per_bin, hrf_weights(16, 1.0)).reshape(7, -1)
    np.testing.assert_allclose(hrf, expected, rtol=1e-10, atol=1e-10)
    # FIR bin k is the log band power of second k of the window
    seg = x[2, 1, 5 * 200 : 6 * 200]
    seg = (seg - seg.mean()) * np.hanning(200)
    power = np.abs(np.fft.rfft(seg)) ** 2
    freqs = np.fft.rfftfreq(200, 1 / 200)
    alpha = power[(freqs >= 8) & (freqs < 13)].mean()
    assert per_bin[2, 1, 2, 5] == pytest.approx(np.log(alpha + 1e-12))
    with pytest.raises(ValueError, match="'kind' must be one of"):
        baseline_features(x, kind="boxcar")


def _lagged_alpha_run(seed, *, lag=10, n_vol=600, n_ch=2, tr=2.0, sfreq=200.0):
    """Channel 0's alpha amplitude changes every second; the target is its log alpha power
    ``lag`` seconds before each volume (a delay the canonical HRF does not assume)."""
    rng = np.random.default_rng(seed)
    n_sec = int(n_vol * tr + 2)
    t = np.arange(n_sec * 200) / sfreq
    log_amp = 0.7 * rng.normal(size=n_sec)
    eeg = rng.normal(size=(n_ch, t.size))
    eeg[0] += 4 * np.repeat(np.exp(log_amp), 200) * np.sin(2 * np.pi * 10 * t)
    markers = np.round(np.arange(n_vol) * tr * sfreq).astype(int)
    windows = make_windows(eeg, markers, ch_names=[f"E{i}" for i in range(n_ch)])
    second = markers[windows.volumes] // 200
    y = log_amp[second - lag] + 0.3 * rng.normal(size=second.size)
    return windows, ((y - y.mean()) / y.std())[:, None]


def test_fir_recovers_band_power_at_a_10_s_lag():
    windows, y = _lagged_alpha_run(5)
    split = intra_scan_split(len(windows), gap=8)
    fir = fir_ridge_baseline(windows.data, y, split, roi_names=["V1"])
    hrf = ridge_baseline(windows.data, y, split, roi_names=["V1"])
    fir_r = fir.metrics.query("split == 'test'")["fir_pearson_r"].iloc[0]
    hrf_r = hrf.metrics.query("split == 'test'")["baseline_pearson_r"].iloc[0]
    assert fir_r > 0.8
    assert hrf_r < fir_r - 0.3
    # the FIR weights peak on channel 0, alpha, the bin 10 s before the volume
    weights = np.abs(fir.model.coef[:, 0]).reshape(2, len(BANDS), 16)
    assert np.unravel_index(np.argmax(weights), weights.shape) == (0, 2, 16 - 10)
    merged = fir.metrics.merge(hrf.metrics, on=["roi", "split", "n"])
    assert {"fir_pearson_r", "fir_mse", "baseline_pearson_r", "baseline_mse"} <= set(merged)
    renamed = ridge_baseline(windows.data, y, split, roi_names=["V1"], prefix="hrf_")
    assert "hrf_pearson_r" in renamed.metrics.columns


def test_baseline_predictions_reuse_features_across_folds():
    windows, y = _lagged_alpha_run(6, n_vol=200)
    split = intra_scan_split(len(windows), gap=8)
    features = baseline_features(windows.data, kind="fir")
    pred = baseline_predictions(features, y, split.train, split.val)
    direct = fir_ridge_baseline(windows.data, y, split)
    np.testing.assert_allclose(pred, direct.predictions, rtol=1e-5, atol=1e-6)
    assert pred.shape == (len(windows), 1) and pred.dtype == np.float32
    # an out-of-sample fold: train on the windows 8 away from a middle test block
    test = np.arange(50, 70)
    train = np.setdiff1d(np.arange(len(windows)), np.arange(42, 78))
    fold = baseline_predictions(features, y, train)
    assert pearson_r(y[test], fold[test])[0] > 0.7


def test_fit_ridge_rejects_bad_options():
    x, y = np.zeros((10, 2)), np.zeros(10)
    with pytest.raises(ValueError, match="'rule'"):
        fit_ridge(x, y, rule="best")
    with pytest.raises(ValueError, match="'n_folds'"):
        fit_ridge(x, y, n_folds=1)
    with pytest.raises(ValueError, match="'alphas'"):
        fit_ridge(x, y, alphas=[0.0, 1.0])
