"""Synchronisation: finding volume markers and checking them against the BOLD run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bids_neurobolt.bids.eeg_io import EEGHeader, Markers
from bids_neurobolt.bids.fmri_io import BoldInfo
from bids_neurobolt.bids.sync import marker_matches, synchronise
from bids_neurobolt.config import SyncConfig
from bids_neurobolt.errors import ExitCode, NeuroboltWarning, SyncError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "eeg-fmri-timing"
REAL_VMRK = sorted((SHARED / "eeg_rest_fmri" / "derivatives").glob("sub-*/eeg/*.vmrk"))


def make_header(
    descriptions, samples, *, sfreq=500.0, n_samples=None, source="raw file", extra_sources=()
):
    samples = np.asarray(samples, dtype=np.int64)
    n = int(
        n_samples
        if n_samples is not None
        else (samples.max() + 10 * sfreq if len(samples) else 1000)
    )
    markers = Markers(np.array(list(descriptions), dtype=object), samples, source)
    return EEGHeader(
        path=Path("/data/sub-01/eeg/sub-01_task-rest_eeg.vhdr"),
        sfreq=sfreq,
        n_samples=n,
        ch_names=("Cz",),
        ch_types=("eeg",),
        markers=(*extra_sources, markers),
    )


def make_bold(n_volumes, tr=2.0, slice_timing=()):
    return BoldInfo(
        path=Path("/data/sub-01/func/sub-01_task-rest_bold.nii.gz"),
        n_volumes=n_volumes,
        repetition_time=tr,
        slice_timing=tuple(slice_timing),
        shape=(4, 4, 4),
        zooms=(4.0, 4.0, 4.0),
        xform_code=4,
    )


def regular(n, *, tr=2.0, sfreq=500.0, start=1.0):
    return np.round((start + np.arange(n) * tr) * sfreq).astype(np.int64)


@pytest.mark.parametrize(
    ("description", "name", "expected"),
    [
        ("Response/R128", "R128", True),
        ("Response/R128", "Response/R128", True),
        ("Response/R 128", "r128", True),
        ("Stimulus/S128", "S128", True),
        ("Scanner/Scan Start", "Scanner/Scan Start", True),
        ("Scanner/Scanner Start", "Scanner/Scan Start", False),
        ("Scanner/s ", "Scanner/s", True),
        ("Comment/Slice", "Slice", True),
        ("Response/R128", "Stimulus/R128", False),
        ("Response/R 12", "R128", False),
        ("TR", "TR", True),
    ],
)
def test_marker_matches(description, name, expected):
    assert marker_matches(description, name) is expected


def test_regular_markers_give_one_row_per_volume():
    samples = regular(20)
    header = make_header(["Response/R128"] * 20, samples)
    result = synchronise(header, make_bold(20), SyncConfig())
    assert result is not None
    np.testing.assert_array_equal(result.volume_samples, samples)
    assert result.marker == "Response/R128"
    assert result.measured_tr == pytest.approx(2.0)
    events = result.to_events()
    assert list(events.columns) == ["onset", "duration", "sample", "trial_type", "volume", "slice"]
    np.testing.assert_allclose(events["onset"], samples / 500.0)
    assert events["volume"].tolist() == list(range(20))


def test_slice_markers_are_attached_to_their_volumes():
    sfreq, tr, n_vol, n_slices = 1000.0, 2.0, 6, 10
    vols = regular(n_vol, tr=tr, sfreq=sfreq)
    slices = (vols[:, None] + np.arange(n_slices)[None, :] * 200).ravel()
    desc = ["Response/R128"] * n_vol + ["Comment/Slice"] * len(slices)
    header = make_header(desc, np.r_[vols, slices], sfreq=sfreq)
    result = synchronise(header, make_bold(n_vol, tr), SyncConfig())
    assert result.slices_per_volume == n_slices
    events = result.to_events()
    slice_rows = events[events.trial_type == "slice"]
    assert len(slice_rows) == n_vol * n_slices
    assert slice_rows["slice"].tolist() == list(range(n_slices)) * n_vol
    assert slice_rows["volume"].tolist() == np.repeat(np.arange(n_vol), n_slices).tolist()
    # each volume row precedes its first slice row at the same sample
    first = events.drop_duplicates("sample")
    assert set(first.trial_type) == {"volume", "slice"} or len(first) == len(events)


def test_events_tsv_markers_are_preferred_over_the_raw_file():
    tsv = Markers(np.array(["Response/R128"] * 5, dtype=object), regular(5), "events.tsv")
    header = make_header(["Response/R128"] * 7, regular(7), extra_sources=(tsv,))
    result = synchronise(header, make_bold(5), SyncConfig())
    assert result.marker_source == "events.tsv"


def test_raw_file_markers_used_when_events_tsv_lacks_them():
    tsv = Markers(np.array(["rest"], dtype=object), np.array([0]), "events.tsv")
    header = make_header(["Response/R128"] * 5, regular(5), extra_sources=(tsv,))
    result = synchronise(header, make_bold(5), SyncConfig())
    assert result.marker_source == "raw file"


def test_no_volume_marker_lists_what_is_there():
    header = make_header(["Stimulus/S  1"] * 3 + ["SyncStatus/Sync On"], [10, 20, 30, 40])
    with pytest.raises(SyncError) as info:
        synchronise(header, make_bold(3), SyncConfig())
    msg = str(info.value)
    assert "sub-01_task-rest_eeg.vhdr" in msg
    assert "'Stimulus/S  1' x3" in msg and "--volume-marker" in msg
    assert info.value.exit_code == ExitCode.DATAERR


def test_eeg_only_without_markers_is_not_an_error():
    header = make_header(["Stimulus/S  1"], [10])
    assert synchronise(header, None, SyncConfig()) is None


def test_eeg_only_with_markers_measures_its_own_tr():
    header = make_header(["Response/R128"] * 10, regular(10, tr=2.16, sfreq=5000.0), sfreq=5000.0)
    with pytest.warns(NeuroboltWarning, match="10 scanner volume markers .* but no BOLD run"):
        result = synchronise(header, None, SyncConfig())
    assert result.measured_tr == pytest.approx(2.16, abs=1e-3)
    assert result.repetition_time is None


def test_more_markers_than_volumes_suggests_skip_markers():
    header = make_header(["Response/R128"] * 23, regular(23))
    with pytest.raises(SyncError, match=r"23 'Response/R128' markers.*20 volumes") as info:
        synchronise(header, make_bold(20), SyncConfig())
    assert "--skip-markers 3" in str(info.value)
    # and the suggested fix works
    result = synchronise(header, make_bold(20), SyncConfig(skip_markers=3))
    assert result.n_volumes == 20 and result.n_skipped == 3
    np.testing.assert_array_equal(result.volume_samples, regular(23)[3:])


def test_fewer_markers_than_volumes_says_the_eeg_is_short():
    header = make_header(["Response/R128"] * 15, regular(15))
    with pytest.raises(SyncError, match=r"15 'Response/R128' markers.*20 volumes") as info:
        synchronise(header, make_bold(20), SyncConfig())
    assert "EEG covers 30.0 s of a 40.0 s scan" in str(info.value)


def test_missing_marker_is_located():
    samples = np.delete(regular(21), 7)
    header = make_header(["Response/R128"] * 20, samples)
    with pytest.raises(SyncError, match=r"1 missing marker\(s\) after marker 7"):
        synchronise(header, make_bold(21), SyncConfig())


def test_duplicate_marker_is_located():
    samples = np.sort(np.r_[regular(20), regular(20)[4]])
    header = make_header(["Response/R128"] * 21, samples)
    with pytest.raises(SyncError, match=r"duplicate marker after marker 5"):
        synchronise(header, make_bold(20), SyncConfig())


def test_irregular_gap_is_reported():
    samples = regular(20)
    samples[10:] += 100  # 0.2 s late from volume 10 on
    header = make_header(["Response/R128"] * 20, samples)
    with pytest.raises(SyncError, match=r"gap of 2.2000 s after marker 10"):
        synchronise(header, make_bold(20), SyncConfig())


def test_repetition_time_disagreeing_with_markers():
    header = make_header(["Response/R128"] * 20, regular(20, tr=2.16))
    with pytest.raises(SyncError, match=r"2.1600 s apart.*RepetitionTime 2.0 s"):
        synchronise(header, make_bold(20, tr=2.0), SyncConfig())


def test_ambiguous_marker_names_resolved_by_count_or_reported():
    vols = regular(10)
    desc = ["Response/R128"] * 10 + ["Comment/TR"] * 5
    header = make_header(desc, np.r_[vols, vols[:5] + 1])
    result = synchronise(header, make_bold(10), SyncConfig())
    assert result.marker == "Response/R128"
    with pytest.raises(SyncError, match="several markers could be the volume marker"):
        synchronise(header, None, SyncConfig())


def test_explicit_marker_name_overrides_defaults():
    header = make_header(["Stimulus/S 99"] * 10, regular(10))
    result = synchronise(header, make_bold(10), SyncConfig(volume_markers=("S 99",)))
    assert result.marker == "Stimulus/S 99"


@pytest.mark.skipif(not REAL_VMRK, reason="../shared/data/eeg-fmri-timing is not available")
@pytest.mark.parametrize("vmrk", REAL_VMRK, ids=lambda p: p.parts[-3])
def test_real_brainvision_analyzer_markers(vmrk):
    """300 'Scanner/Scan Start' volume markers 2.16 s apart and 30 slice markers each."""
    import mne

    sfreq = 250.0
    annotations = mne.read_annotations(vmrk, sfreq=sfreq)
    samples = np.round(annotations.onset * sfreq).astype(np.int64)
    header = make_header([str(d) for d in annotations.description], samples, sfreq=sfreq)
    slice_timing = np.arange(30) * 0.072
    result = synchronise(header, make_bold(300, tr=2.16, slice_timing=slice_timing), SyncConfig())
    assert result.marker == "Scanner/Scan Start"
    assert result.n_volumes == 300
    assert result.measured_tr == pytest.approx(2.16, abs=1 / sfreq)
    assert result.slice_marker == "Scanner/s "
    assert result.slices_per_volume == 30
    assert len(result.slice_samples) == 9000


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=400),
    tr=st.floats(min_value=0.5, max_value=3.5),
    sfreq=st.sampled_from([250.0, 500.0, 1000.0, 2048.0, 5000.0]),
    start=st.floats(min_value=0.0, max_value=30.0),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_property_regular_trains_align_exactly(n, tr, sfreq, start, seed):
    rng = np.random.default_rng(seed)
    exact = (start + np.arange(n) * tr) * sfreq
    samples = np.floor(exact + rng.uniform(0, 1, n)).astype(np.int64)  # one-sample jitter
    header = make_header(["Response/R128"] * n, samples, sfreq=sfreq)
    result = synchronise(header, make_bold(n, tr=tr), SyncConfig())
    np.testing.assert_array_equal(result.volume_samples, samples)
    assert result.to_events()["volume"].tolist() == list(range(n))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=4, max_value=300),
    tr=st.floats(min_value=0.5, max_value=3.5),
    sfreq=st.sampled_from([250.0, 1000.0, 5000.0]),
    data=st.data(),
)
def test_property_one_lost_marker_is_always_caught(n, tr, sfreq, data):
    drop = data.draw(st.integers(min_value=1, max_value=n - 2))
    samples = np.delete(regular(n, tr=tr, sfreq=sfreq), drop)
    header = make_header(["Response/R128"] * (n - 1), samples, sfreq=sfreq)
    with pytest.raises(SyncError, match=rf"missing marker\(s\) after marker {drop}\b"):
        synchronise(header, make_bold(n, tr=tr), SyncConfig())
