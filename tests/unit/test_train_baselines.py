"""Ridge baseline on HRF-convolved band power: HRF, features, ridge, planted coupling."""

from __future__ import annotations

import numpy as np

from bids_neurobolt.train.baselines import (
    band_power_features,
    canonical_hrf,
    fit_ridge,
    hrf_weights,
    ridge_baseline,
)
from bids_neurobolt.train.splits import intra_scan_split
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
    loo = fit_ridge(x[:150], y[:150])
    for model in (with_val, loo):
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
