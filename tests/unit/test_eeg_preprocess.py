"""Tests of filtering, resampling and channel names (bids_neurobolt.eeg.preprocess)."""

from __future__ import annotations

import numpy as np
import pytest

from bids_neurobolt.eeg.preprocess import (
    filter_data,
    map_channels,
    resample,
    response,
    standard_name,
)


def _tone(freq, sfreq, seconds=10.0, phase=0.3):
    t = np.arange(int(seconds * sfreq)) / sfreq
    return np.sin(2 * np.pi * freq * t + phase)


@pytest.mark.parametrize(("sfreq", "new"), [(5000.0, 200.0), (5000.0, 500.0), (2048.0, 500.0)])
def test_resample_keeps_the_band_and_timing(sfreq, new):
    x = _tone(10.0, sfreq) + _tone(0.9 * sfreq / 2, sfreq)  # in-band + far above the new rate
    y = resample(x[None], sfreq, new)[0]
    assert y.shape == (int(np.ceil(x.size * new / sfreq)),)
    expected = _tone(10.0, new, seconds=y.size / new)
    inner = slice(int(0.5 * new), -int(0.5 * new))
    assert np.max(np.abs(y[inner] - expected[inner])) < 2e-3


def test_downsampling_does_not_alias():
    x = _tone(150.0, 5000.0)  # would alias to 50 Hz at 200 Hz
    y = resample(x[None], 5000.0, 200.0)[0]
    assert np.std(y[100:-100]) < 1e-3


def test_low_pass_and_high_pass():
    sfreq = 1000.0
    slow, mid, fast = _tone(0.05, sfreq, 40), _tone(10.0, sfreq, 40), _tone(90.0, sfreq, 40)
    y = filter_data((slow + mid + fast)[None], sfreq, l_freq=1.0, h_freq=40.0)[0]
    inner = slice(5000, -5000)
    assert np.max(np.abs(y[inner] - mid[inner])) < 1e-2  # 0.05 Hz is in the 0-1 Hz transition


def test_response_shape():
    f = np.array([0.0, 0.2, 0.5, 1.0, 10.0, 75.0, 85.0, 95.0, 100.0])
    g = response(f, 100.0, 0.5, 75.0, True)
    assert g[0] == 0.0 and g[3] == 1.0 and g[4] == 1.0 and g[5] == 1.0
    assert 0.0 < g[6] < 1.0 and g[-2] == 0.0 and g[-1] == 0.0
    assert np.all(response(np.linspace(0, 79, 50), 100.0, None, None, True) == 1.0)


def test_short_signals_and_odd_lengths():
    y = resample(np.random.default_rng(0).standard_normal((2, 1001)), 1000.0, 200.0)
    assert y.shape == (2, 201) and np.isfinite(y).all()
    assert resample(np.ones((1, 3)), 1000.0, 200.0).shape == (1, 1)


@pytest.mark.parametrize(
    ("given", "label"),
    [
        ("FP1", "Fp1"), ("fpz", "Fpz"), ("Cz", "Cz"), ("T3", "T7"), ("t4", "T8"), ("T5", "P7"),
        ("T6", "P8"), ("EEG C3-REF", "C3"), ("O1-A1", "O1"), ("TP10", "TP10"), ("ECG", None),
        ("X1", None), ("Fp1-F7", None),
    ],
)  # fmt: skip
def test_standard_names(given, label):
    assert standard_name(given) == label


def test_map_channels():
    names = ["FP1", "T3", "ECG", "X1", "EOG1", "Cz", "O2"]
    types = ["EEG", "eeg", "ecg", "eeg", "eog", "eeg", "eeg"]
    mapped = map_channels(names, types, bad=["O2"])
    assert mapped.names == ("Fp1", "T7", "ECG", "X1", "EOG1", "Cz", "O2")
    assert mapped.types == ("eeg", "eeg", "ecg", "eeg", "eog", "eeg", "eeg")
    assert mapped.renamed == {"FP1": "Fp1", "T3": "T7"}
    assert mapped.model == (0, 1, 5)
    assert mapped.unlabelled == ("X1",)


def test_colliding_labels_keep_their_names():
    mapped = map_channels(["T3", "T7", "Cz"], ["eeg"] * 3)
    assert mapped.names == ("T3", "T7", "Cz")
    assert mapped.model == (1, 2)
