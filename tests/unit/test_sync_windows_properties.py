"""Property-based tests (Hypothesis) of the synchronisation and of the window indexing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bids_neurobolt.bids.sync import synchronise
from bids_neurobolt.config import SyncConfig
from bids_neurobolt.errors import DataError, SyncError
from bids_neurobolt.train.windows import make_windows, markers_to_rate

from .test_sync import make_bold, make_header


@st.composite
def jittered_trains(draw: st.DrawFn) -> tuple[np.ndarray, float, float, int]:
    """A volume-marker train whose every gap is within the default tolerance of TR."""
    n = draw(st.integers(min_value=2, max_value=300))
    tr = draw(st.floats(min_value=0.5, max_value=3.5))
    sfreq = draw(st.sampled_from([250.0, 500.0, 1000.0, 2048.0, 5000.0]))
    start = draw(st.floats(min_value=0.0, max_value=20.0))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    config = SyncConfig()
    tolerance = max(config.tolerance_samples, config.tolerance_fraction * tr * sfreq)
    # rounding moves a gap by < 1 sample; jitter by at most half of what is left on each side
    half = max(0, int(np.floor((tolerance - 1) / 2)))
    rng = np.random.default_rng(seed)
    exact = np.round((start + np.arange(n) * tr) * sfreq)
    samples = (exact + rng.integers(-half, half + 1, n)).astype(np.int64)
    samples -= min(0, int(samples.min()))
    return samples, tr, sfreq, n


@settings(max_examples=80, deadline=None)
@given(jittered_trains())
def test_jitter_within_tolerance_always_aligns(train: tuple[np.ndarray, float, float, int]) -> None:
    samples, tr, sfreq, n = train
    order = np.random.default_rng(n).permutation(n)  # marker files need not be sorted
    header = make_header(["Response/R128"] * n, samples[order], sfreq=sfreq)

    result = synchronise(header, make_bold(n, tr=tr), SyncConfig())

    np.testing.assert_array_equal(result.volume_samples, samples)
    assert np.all(np.diff(result.volume_samples) > 0), "volume samples strictly increasing"
    volumes = result.to_events().query("trial_type == 'volume'")["volume"].to_numpy()
    np.testing.assert_array_equal(volumes, np.arange(n))
    assert abs(result.measured_tr - tr) <= result.tolerance


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=3, max_value=300),
    tr=st.floats(min_value=0.5, max_value=3.5),
    sfreq=st.sampled_from([250.0, 1000.0, 5000.0]),
    data=st.data(),
)
def test_a_duplicated_marker_is_always_caught_and_located(
    n: int, tr: float, sfreq: float, data: st.DataObject
) -> None:
    k = data.draw(st.integers(min_value=0, max_value=n - 1))
    regular = np.round((1.0 + np.arange(n) * tr) * sfreq).astype(np.int64)
    samples = np.sort(np.concatenate([regular, regular[k : k + 1]]))
    header = make_header(["Response/R128"] * (n + 1), samples, sfreq=sfreq)

    with pytest.raises(SyncError, match=rf"duplicate marker after marker {k + 1}\b") as info:
        synchronise(header, make_bold(n, tr=tr), SyncConfig())
    assert "sub-01_task-rest_eeg.vhdr" in str(info.value)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=200),
    extra=st.integers(min_value=1, max_value=5),
    tr=st.floats(min_value=0.5, max_value=3.0),
    sfreq=st.sampled_from([250.0, 1000.0]),
)
def test_leading_dummy_markers_are_skipped_exactly(
    n: int, extra: int, tr: float, sfreq: float
) -> None:
    samples = np.round((1.0 + np.arange(n + extra) * tr) * sfreq).astype(np.int64)
    header = make_header(["Response/R128"] * (n + extra), samples, sfreq=sfreq)
    with pytest.raises(SyncError, match=rf"--skip-markers {extra}\b"):
        synchronise(header, make_bold(n, tr=tr), SyncConfig())
    result = synchronise(header, make_bold(n, tr=tr), SyncConfig(skip_markers=extra))
    np.testing.assert_array_equal(result.volume_samples, samples[extra:])


@st.composite
def scans(draw: st.DrawFn) -> tuple[int, float, float, float, float]:
    n_volumes = draw(st.integers(min_value=1, max_value=60))
    tr = draw(st.floats(min_value=0.5, max_value=3.0))
    native = draw(st.sampled_from([250.0, 500.0, 1000.0, 5000.0]))
    lead = draw(st.floats(min_value=0.0, max_value=30.0))  # EEG before the first volume
    tail = draw(st.floats(min_value=-2.0, max_value=5.0))  # EEG after the last marker
    return n_volumes, tr, native, lead, tail


@settings(max_examples=80, deadline=None)
@given(scans(), st.sampled_from([0.5, 1.0, 2.0]))
def test_windows_end_exactly_at_their_markers(
    scan: tuple[int, float, float, float, float], window: float
) -> None:
    """A sawtooth EEG (sample index modulo 997) shows where each window starts and ends."""
    n_volumes, tr, native, lead, tail = scan
    native_markers = np.round((lead + np.arange(n_volumes) * tr) * native).astype(np.int64)
    markers = markers_to_rate(native_markers, native)
    n_samples = max(1, round((lead + (n_volumes - 1) * tr + tail) * 200.0))
    saw = (np.arange(n_samples) % 997).astype(np.float64)
    eeg = np.vstack([saw, -saw])
    n_times = round(window * 200.0)
    full = (markers >= n_times) & (markers <= n_samples)

    if not full.any():
        with pytest.raises(DataError, match="no volume"):
            make_windows(eeg, markers, ch_names=["A", "B"], window=window, scale=1.0)
        return
    w = make_windows(eeg, markers, ch_names=["A", "B"], window=window, scale=1.0)

    # excluded volumes are exactly those without a full window, kept ones in volume order
    np.testing.assert_array_equal(w.excluded, np.flatnonzero(~full))
    np.testing.assert_array_equal(w.volumes, np.flatnonzero(full))
    assert np.all(np.diff(w.volumes) > 0)
    assert set(w.volumes.tolist()) | set(w.excluded.tolist()) == set(range(n_volumes))
    # excluded volumes are a prefix (before the EEG has a full window) and a suffix (past its end)
    kept = np.flatnonzero(full)
    np.testing.assert_array_equal(kept, np.arange(kept[0], kept[-1] + 1))
    # every window holds samples [marker - n_times, marker): it ends exactly at its marker
    for i, volume in enumerate(w.volumes):
        m = int(markers[volume])
        assert w.ends[i] == m
        segment = (np.arange(m - n_times, m) % 997).astype(np.float64)
        np.testing.assert_allclose(w.data[i, 0], segment - segment.mean(), atol=2e-3)
        np.testing.assert_allclose(w.data[i, 1], segment.mean() - segment, atol=2e-3)
