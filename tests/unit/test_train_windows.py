"""EEG windows: alignment with volume markers (property-based), scaling, cache."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bids_neurobolt.errors import DataError
from bids_neurobolt.train.windows import (
    WindowCache,
    WindowStack,
    array_digest,
    cache_key,
    concatenate,
    make_windows,
    markers_to_rate,
    regular_markers,
    take_windows,
)


@st.composite
def recordings(draw):
    n_ch = draw(st.integers(1, 3))
    n_samples = draw(st.integers(40, 400))
    window = draw(st.sampled_from([0.05, 0.1, 0.2]))  # 10, 20, 40 samples at 200 Hz
    markers = draw(st.lists(st.integers(-20, n_samples + 20), min_size=1, max_size=30))
    seed = draw(st.integers(0, 2**16))
    return n_ch, n_samples, window, np.array(markers), seed


@settings(max_examples=60, deadline=None)
@given(recordings())
def test_windows_end_at_their_markers(recording):
    n_ch, n_samples, window, markers, seed = recording
    n_times = round(window * 200)
    eeg = np.random.default_rng(seed).normal(0, 30, size=(n_ch, n_samples)).astype(np.float32)
    names = ["Cz", "Pz", "Oz"][:n_ch]
    full = (markers >= n_times) & (markers <= n_samples)
    if not full.any():
        with pytest.raises(DataError, match="no volume"):
            make_windows(eeg, markers, ch_names=names, window=window)
        return
    w = make_windows(eeg, markers, ch_names=names, window=window)
    np.testing.assert_array_equal(w.volumes, np.flatnonzero(full))
    np.testing.assert_array_equal(w.excluded, np.flatnonzero(~full))
    np.testing.assert_array_equal(w.ends, markers[full])
    assert w.data.shape == (full.sum(), n_ch, n_times) and w.data.dtype == np.float32
    for i, volume in enumerate(w.volumes):
        m = markers[volume]
        segment = eeg[:, m - n_times : m].astype(np.float64)  # ends just before the marker
        expected = (segment - segment.mean(axis=1, keepdims=True)) / 100.0
        np.testing.assert_allclose(w.data[i], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w.data.mean(axis=2), 0.0, atol=1e-5)


def test_paper_run_keeps_567_of_575_volumes():
    """TR 2.1 s, EEG cropped to the scan: the first 8 volumes lack 16 s of EEG."""
    sfreq, tr, n_vol = 200.0, 2.1, 575
    markers_native = np.round(np.arange(n_vol) * tr * 250.0)  # markers at 250 Hz
    markers = markers_to_rate(markers_native, 250.0, sfreq)
    n_samples = round(n_vol * tr * sfreq)
    eeg = np.zeros((2, n_samples), dtype=np.float32)
    w = make_windows(eeg, markers, ch_names=["Cz", "Pz"])
    assert len(w) == 567
    np.testing.assert_array_equal(w.excluded, np.arange(8))
    assert w.n_times == 3200


def test_markers_to_rate_and_regular_grid():
    np.testing.assert_array_equal(markers_to_rate([0, 25, 5000, 5012], 5000.0), [0, 1, 200, 200])
    ends = regular_markers(n_samples=200 * 30, sfreq=200.0, tr=2.0)
    np.testing.assert_array_equal(ends, np.arange(16, 31, 2) * 200)
    with pytest.raises(DataError):
        regular_markers(100, 200.0, 0.0)


def test_shape_mismatch_is_a_data_error():
    with pytest.raises(DataError, match="channel names"):
        make_windows(np.zeros((3, 5000)), [4000], ch_names=["Cz", "Pz"])


def test_cache_round_trip_is_memory_mapped_and_reused(tmp_path):
    rng = np.random.default_rng(0)
    eeg = rng.normal(size=(2, 8000)).astype(np.float32)
    calls = []

    def build():
        calls.append(1)
        return make_windows(eeg, [3200, 4000, 8000, 9000], ch_names=["Cz", "Pz"])

    cache = WindowCache(tmp_path / "windows")
    key = cache_key(run="sub-01_task-rest", eeg=array_digest(eeg), window=16.0)
    first = cache.get_or_make(key, build)
    second = WindowCache(tmp_path / "windows").get_or_make(key, build)
    assert len(calls) == 1
    assert isinstance(second.data, np.memmap) and not second.data.flags.writeable
    np.testing.assert_array_equal(second.data, build().data)
    np.testing.assert_array_equal(second.volumes, [0, 1, 2])
    np.testing.assert_array_equal(second.excluded, [3])
    assert second.ch_names == ("Cz", "Pz") and first.sfreq == 200.0
    assert cache.get(cache_key(run="other")) is None
    assert sorted(p.name for p in (tmp_path / "windows").iterdir()) == [
        f"{key}.windows.json", f"{key}.windows.npy"
    ]  # fmt: skip
    assert array_digest(eeg) != array_digest(eeg[:, :-1])


def test_window_stack_takes_across_runs_without_copying_them():
    a = np.arange(2 * 1 * 4, dtype=np.float32).reshape(2, 1, 4)
    b = 100 + np.arange(3 * 1 * 4, dtype=np.float32).reshape(3, 1, 4)
    stack = WindowStack([a, b])
    assert len(stack) == 5 and stack.shape == (5, 1, 4)
    full = np.concatenate([a, b])
    idx = np.array([4, 0, 2, 1, 3])
    np.testing.assert_array_equal(stack.take(idx), full[idx])
    np.testing.assert_array_equal(take_windows(stack, idx), take_windows(full, idx))
    np.testing.assert_array_equal(np.asarray(stack), full)
    with pytest.raises(IndexError):
        stack.take([5])


def test_concatenate_refuses_other_montages():
    eeg = np.zeros((2, 4000), dtype=np.float32)
    w1 = make_windows(eeg, [3200, 3600], ch_names=["Cz", "Pz"])
    w2 = make_windows(eeg, [3300], ch_names=["Cz", "Pz"])
    stack, run = concatenate([w1, w2])
    np.testing.assert_array_equal(run, [0, 0, 1])
    assert len(stack) == 3
    w3 = make_windows(eeg, [3300], ch_names=["Cz", "Oz"])
    with pytest.raises(DataError, match="same montage"):
        concatenate([w1, w3])
