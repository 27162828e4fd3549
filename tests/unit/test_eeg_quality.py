"""Tests of the artifact-residual metrics (bids_neurobolt.eeg.quality)."""

from __future__ import annotations

import numpy as np
import pytest

from bids_neurobolt.eeg import quality as Q

SFREQ = 500.0


def _signals(seconds=60.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SFREQ)) / SFREQ
    noise = rng.standard_normal((3, t.size))
    tone = 4.0 * np.sin(2 * np.pi * 20.0 * t)
    return t, noise, tone


def test_welch_integrates_to_the_variance():
    _, noise, tone = _signals()
    x = noise + tone
    freqs, psd = Q.welch_psd(x, SFREQ)
    assert freqs[1] - freqs[0] == pytest.approx(0.25)
    total = psd.sum(axis=1) * 0.25
    np.testing.assert_allclose(total, x.var(axis=1), rtol=0.03)
    assert np.all(freqs[np.argmax(psd, axis=1)] == 20.0)
    _, no_overlap = Q.welch_psd(x, SFREQ, overlap=0.0, fmax=100.0)
    np.testing.assert_allclose(no_overlap.sum(axis=1), psd[:, freqs <= 100].sum(axis=1), rtol=0.05)


def test_harmonic_power_measures_the_tone():
    _, noise, tone = _signals()
    freqs, psd = Q.welch_psd(0.01 * noise + tone, SFREQ)
    harmonics, power = Q.harmonic_power(freqs, psd, 10.0, n_harmonics=5, fmax=45.0)
    np.testing.assert_allclose(harmonics, [10.0, 20.0, 30.0, 40.0])
    np.testing.assert_allclose(power[:, 1], 8.0, rtol=0.05)  # A**2 / 2
    assert np.all(power[:, [0, 2, 3]] < 0.01)


def test_band_powers():
    _, noise, tone = _signals()
    freqs, psd = Q.welch_psd(noise + tone, SFREQ)
    bands = Q.band_powers(freqs, psd, Q.ALLEN_BANDS)
    assert set(bands) == {"delta", "theta", "alpha", "beta"}
    np.testing.assert_allclose(bands["beta"], 8.0 + 12.0 * 2 / SFREQ, rtol=0.1)
    np.testing.assert_allclose(bands["theta"], 4.0 * 2 / SFREQ, rtol=0.15)


def test_beat_locked_rms():
    t, noise, _ = _signals()
    beats = np.arange(SFREQ, t.size - SFREQ, 0.9 * SFREQ)
    wave = np.zeros(t.size)
    shape = 5.0 * np.sin(2 * np.pi * 4.0 * np.arange(int(0.5 * SFREQ)) / SFREQ)
    for b in beats.astype(int):
        wave[b : b + shape.size] += shape
    locked = Q.beat_locked_rms(noise + wave, SFREQ, beats)
    expected = np.sqrt(np.mean((np.r_[shape, np.zeros(int(0.3 * SFREQ))] - shape.sum() / 400) ** 2))
    np.testing.assert_allclose(locked, expected, rtol=0.1)
    floor = Q.random_locked_rms(noise, SFREQ, beats.size)
    assert np.all(floor < 0.25) and np.all(locked > 10 * floor)
    assert np.isnan(Q.beat_locked_rms(noise, SFREQ, [10.0])).all()


def test_compare_to_truth():
    _, noise, _ = _signals()
    corr, rmse = Q.compare_to_truth(noise, noise, SFREQ)
    np.testing.assert_allclose(corr, 1.0, atol=1e-6)
    np.testing.assert_allclose(rmse, 0.0, atol=1e-5)
    other = np.random.default_rng(1).standard_normal(noise.shape)
    corr, _ = Q.compare_to_truth(noise + other, noise, SFREQ, span=(1000, 20000))
    np.testing.assert_allclose(corr, 1 / np.sqrt(2), atol=0.03)


def test_summary_and_decibels():
    assert Q.summary(np.array([1.0, np.nan, 3.0])) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert Q.summary(np.array([np.nan])) == {"median": None, "min": None, "max": None}
    np.testing.assert_allclose(Q.decibels(np.array([100.0, 0.1])), [20.0, -10.0])
