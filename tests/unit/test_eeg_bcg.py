"""Tests of R-peak detection and BCG removal (bids_neurobolt.eeg.bcg).

Ground truth: a simulated run (60 s, no gradient artifact needed) with known R-peaks and a
known BCG, analysed at the 500 Hz working rate of the pipeline.
"""

from __future__ import annotations

import numpy as np
import pytest

from bids_neurobolt.eeg import bcg as B
from bids_neurobolt.eeg.preprocess import resample
from bids_neurobolt.eeg.quality import beat_locked_rms, compare_to_truth
from bids_neurobolt.simulate import load_ground_truth, simulate_dataset

RATE = 500.0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eeg-bcg") / "sim"
    simulate_dataset(
        root, n_subjects=1, duration=60.0, sfreq=1000.0, n_channels=12, seed=21, resolution=6.0
    )
    truth = load_ground_truth(root, "01")
    clean = resample(truth.clean_eeg, truth.sfreq, RATE)
    artifact = resample(truth.bcg_artifact(), truth.sfreq, RATE)
    peaks = truth.r_peaks * RATE / truth.sfreq
    return clean, artifact, peaks


def _matched(found, true, tolerance):
    """Share of true peaks with a detection within ``tolerance`` samples, and extras."""
    distance = np.abs(found[:, None] - true[None])
    hits = np.count_nonzero(distance.min(axis=0) <= tolerance)
    extra = np.count_nonzero(distance.min(axis=1) > tolerance)
    return hits / true.size, extra


def test_r_peaks_found_precisely(run):
    clean, _, true = run
    beats = B.detect_r_peaks(clean[-1], RATE)
    assert beats is not None and beats.source == "ecg" and beats.polarity == 1
    share, extra = _matched(beats.samples, true, 1.0)  # 2 ms at 500 Hz
    assert share == 1.0 and extra == 0
    assert beats.heart_rate == pytest.approx(60 / np.median(np.diff(true) / RATE), abs=1)


def test_inverted_ecg(run):
    clean, _, true = run
    beats = B.detect_r_peaks(-clean[-1], RATE)
    assert beats.polarity == -1
    assert _matched(beats.samples, true, 1.0) == (1.0, 0)


def test_missed_and_spurious_beats_are_repaired(run):
    clean, _, true = run
    ecg = clean[-1].copy()
    victim = round(true[20])
    ecg[victim - 40 : victim + 40] = np.median(ecg)  # a lost beat
    spike = round(true[30] + 0.5 * (true[31] - true[30]))
    ecg[spike - 3 : spike + 3] += 3.0 * np.ptp(ecg)  # a spurious spike mid-RR
    beats = B.detect_r_peaks(ecg, RATE)
    share, extra = _matched(beats.samples, true, 0.05 * RATE)  # within 50 ms
    assert share == 1.0 and extra == 0
    assert beats.n_inserted + beats.n_removed >= 1


def test_residual_gradient_is_ignored(run):
    clean, _, true = run
    t = np.arange(clean.shape[1]) / RATE
    slice_rate = 16.5
    hum = sum(np.sin(2 * np.pi * k * slice_rate * t) for k in range(1, 6))
    ecg = clean[-1] + 0.3 * np.ptp(clean[-1]) * hum
    notch = slice_rate * np.arange(1, 15)
    beats = B.detect_r_peaks(ecg, RATE, notch_freqs=notch)
    assert _matched(beats.samples, true, 2.0) == (1.0, 0)


def test_unusable_ecg_gives_none(run):
    clean, _, _ = run
    assert B.detect_r_peaks(np.zeros(clean.shape[1]), RATE) is None
    noise = np.random.default_rng(0).standard_normal(clean.shape[1])
    assert B.detect_r_peaks(noise, RATE) is None


def test_eeg_cardiac_reference(run):
    clean, artifact, true = run
    beats = B.eeg_cardiac_reference(clean[:-1] + artifact[:-1], RATE)
    assert beats is not None and beats.source == "eeg"
    assert abs(beats.samples.size - true.size) <= 2
    rr_true = np.median(np.diff(true)) / RATE
    assert np.median(beats.rr) == pytest.approx(rr_true, rel=0.05)
    assert B.eeg_cardiac_reference(clean[:-1], RATE) is None  # no BCG, no rhythm


def test_bcg_removed(run):
    clean, artifact, true = run
    data = (clean[:-1] + artifact[:-1]).astype(np.float32)
    beats = B.detect_r_peaks(clean[-1], RATE)
    fitted, info = B.remove_bcg(data, RATE, beats)
    corr, _ = compare_to_truth(data, clean[:-1], RATE)
    corr_raw, _ = compare_to_truth(clean[:-1] + artifact[:-1], clean[:-1], RATE)
    assert np.median(corr) >= 0.95 and np.median(corr) > np.median(corr_raw) + 0.2
    before = beat_locked_rms(clean[:-1] + artifact[:-1], RATE, true)
    after = beat_locked_rms(data, RATE, true)
    assert np.median(20 * np.log10(after / before)) <= -15.0
    np.testing.assert_allclose(fitted, clean[:-1] + artifact[:-1] - data, atol=1e-3)
    assert info["bcg_corrected"] is True


def test_clean_eeg_is_left_nearly_alone(run):
    clean, _, _ = run
    data = clean[:-1].astype(np.float32)
    beats = B.detect_r_peaks(clean[-1], RATE)
    B.remove_bcg(data, RATE, beats)
    corr, _ = compare_to_truth(data, clean[:-1], RATE)
    assert np.median(corr) >= 0.98


def test_fixed_components_remove_more_eeg_than_auto(run):
    clean, artifact, _ = run
    beats = B.detect_r_peaks(clean[-1], RATE)
    scores = {}
    for auto in (True, False):
        data = (clean[:-1] + artifact[:-1]).astype(np.float32)
        params = B.BCGParams(auto_components=auto, shrink=auto)
        B.remove_bcg(data, RATE, beats, params)
        scores[auto] = np.median(compare_to_truth(data, clean[:-1], RATE)[0])
    assert scores[True] > scores[False]


def test_few_beats_leave_data_alone(run):
    clean, artifact, _ = run
    data = (clean[:-1] + artifact[:-1]).astype(np.float32)
    before = data.copy()
    beats = B.HeartBeats(np.array([100.0, 600.0]), RATE, "ecg")
    fitted, info = B.remove_bcg(data, RATE, beats)
    assert info["bcg_corrected"] is False and not fitted.any()
    np.testing.assert_array_equal(data, before)


def test_params_are_checked():
    with pytest.raises(ValueError, match="n_components"):
        B.BCGParams(n_components=-1)
    with pytest.raises(ValueError, match="after"):
        B.BCGParams(after=0)


def test_channel_blocks_give_the_same_result_as_all_channels_at_once(monkeypatch):
    """Every step of the BCG fit is per channel: blocks of channels change nothing."""
    from bids_neurobolt.eeg import bcg as bcg_module

    rng = np.random.default_rng(4)
    sfreq, n = 250.0, 250 * 60
    peaks = np.arange(100, n - 200, 210) + rng.integers(-15, 15, size=(n - 300) // 210)
    shape = np.exp(-0.5 * ((np.arange(-50, 150) - 60) / 12.0) ** 2)
    data = rng.normal(0, 2, size=(11, n)).astype(np.float32)
    for k, p in enumerate(peaks):
        data[:, p - 50 : p + 150] += (20 + k % 3) * shape * np.linspace(0.5, 1.5, 11)[:, None]
    beats = bcg_module.HeartBeats(samples=peaks.astype(np.float64), sfreq=sfreq, source="ecg")
    whole, blocked = data.copy(), data.copy()
    monkeypatch.setattr(bcg_module, "CHANNELS_PER_BLOCK", 100)
    fitted_whole, info_whole = bcg_module.remove_bcg(whole, sfreq, beats)
    monkeypatch.setattr(bcg_module, "CHANNELS_PER_BLOCK", 4)
    fitted_blocked, info_blocked = bcg_module.remove_bcg(blocked, sfreq, beats)
    np.testing.assert_allclose(fitted_blocked, fitted_whole, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(blocked, whole, rtol=1e-4, atol=1e-3)
    assert info_blocked["bcg_components"] == info_whole["bcg_components"]
    assert len(info_blocked["bcg_components"]) == 11
