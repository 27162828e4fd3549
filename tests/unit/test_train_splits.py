"""Splits: the paper's intra-scan split and its gaps (property-based), subject splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bids_neurobolt.errors import ConfigError, DataError
from bids_neurobolt.train.splits import (
    check_disjoint,
    gap_for_tr,
    intra_scan_split,
    kfold_subject_splits,
    subject_split,
)
from bids_neurobolt.train.windows import make_windows, markers_to_rate

VU = Path(__file__).resolve().parents[3] / "shared" / "data" / "neurobolt-vu-fmri"


def test_paper_split_of_567_windows():
    split = intra_scan_split(567, gap=gap_for_tr(2.1))
    assert gap_for_tr(2.1) == 10
    assert split.sizes() == {"train": 453, "val": 46, "test": 48}
    assert (split.train[0], split.train[-1]) == (0, 452)
    assert (split.val[0], split.val[-1]) == (463, 508)
    assert (split.test[0], split.test[-1]) == (519, 566)


@settings(max_examples=200, deadline=None)
@given(st.integers(20, 3000), st.integers(0, 15))
def test_intra_scan_split_keeps_its_gaps(n, gap):
    try:
        split = intra_scan_split(n, gap=gap)
    except DataError:
        assert int(0.1 * n) <= gap or n - int(0.8 * n) - int(0.1 * n) <= gap
        return
    check_disjoint(split, n)
    for part in (split.train, split.val, split.test):
        assert part.size and np.all(np.diff(part) == 1)  # contiguous, chronological
    assert split.val[0] - split.train[-1] == gap + 1  # exactly `gap` windows skipped
    assert split.test[0] - split.val[-1] == gap + 1
    assert split.test[-1] == n - 1
    assert split.train.size == int(0.8 * n)
    labels = split.labels(n)
    assert (labels == "unused").sum() == 2 * gap


def test_real_vu_scan_gives_the_paper_split():
    tables = sorted(VU.glob("*_timeseries.tsv"))
    if not tables:
        pytest.skip(f"real data not found at {VU}")
    n_volumes = sum(1 for _ in tables[0].open(encoding="utf-8")) - 1
    assert n_volumes == 575
    markers = markers_to_rate(np.arange(n_volumes) * 2.1 * 250.0, 250.0)
    eeg = np.zeros((1, round(n_volumes * 2.1 * 200)), dtype=np.float32)
    windows = make_windows(eeg, markers, ch_names=["Cz"])
    split = intra_scan_split(len(windows), gap=gap_for_tr(2.1))
    assert split.sizes() == {"train": 453, "val": 46, "test": 48}


def test_too_short_runs_and_bad_fractions():
    with pytest.raises(DataError, match="too few"):
        intra_scan_split(60, gap=10)
    with pytest.raises(ConfigError):
        intra_scan_split(500, train=0.95, val=0.1)


def test_subject_split_by_lists():
    subjects = np.array(["01"] * 3 + ["sub-02"] * 2 + ["03"] * 4 + ["04"])
    split = subject_split(subjects, train=["sub-01", "03"], val=["02"], test=["04"])
    np.testing.assert_array_equal(split.train, [0, 1, 2, 5, 6, 7, 8])
    np.testing.assert_array_equal(split.val, [3, 4])
    np.testing.assert_array_equal(split.test, [9])
    with pytest.raises(ConfigError, match="both"):
        subject_split(subjects, train=["01"], val=["01"], test=["04"])
    with pytest.raises(ConfigError, match="test set has no windows"):
        subject_split(subjects, train=["01"], val=[], test=["99"])


def test_kfold_rotates_whole_subjects():
    subjects = np.repeat([f"{i:02d}" for i in range(1, 8)], 5)
    splits, folds = kfold_subject_splits(subjects, 3, seed=1)
    assert sorted(s for fold in folds for s in fold) == sorted(set(subjects))
    tested = []
    for i, split in enumerate(splits):
        check_disjoint(split, subjects.size)
        assert split.sizes()["train"] + split.sizes()["val"] + split.sizes()["test"] == 35
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            assert not set(subjects[split[a]]) & set(subjects[split[b]])
        assert set(subjects[split.test]) == set(folds[i])
        tested += folds[i]
    assert sorted(tested) == sorted(set(subjects))
    with pytest.raises(ConfigError):
        kfold_subject_splits(subjects, 2)


def test_blocked_cv_predicts_every_window_once_with_gaps():
    from bids_neurobolt.train.splits import blocked_cv_splits

    n, gap = 143, 10
    splits = blocked_cv_splits(n, k=5, gap=gap, val_fraction=0.1)
    assert len(splits) == 5
    tested = np.concatenate([s.test for s in splits])
    assert np.array_equal(np.sort(tested), np.arange(n))
    for s in splits:
        check_disjoint(s, n)
        assert np.all(np.diff(s.test) == 1) and np.all(np.diff(s.val) == 1)
        assert s.val.size == 15
        for other in (s.train, s.val):
            distance = np.abs(other[:, None] - s.test[None, :]).min()
            assert distance > gap
        distance = np.abs(s.train[:, None] - s.val[None, :]).min()
        assert distance > gap
        # every window not tested, validated or in a gap trains
        assert s.train.size + s.val.size + s.test.size + 3 * gap >= n - gap
    # the last block validates on the windows before its leading gap
    assert splits[-1].val.max() < splits[-1].test.min() - gap


def test_blocked_cv_without_validation_and_bad_settings():
    from bids_neurobolt.train.splits import blocked_cv_splits

    splits = blocked_cv_splits(50, k=5, gap=2, val_fraction=0.0)
    assert all(s.val.size == 0 for s in splits)
    assert splits[2].train.size == 50 - 10 - 4
    with pytest.raises(ConfigError):
        blocked_cv_splits(50, k=1)
    with pytest.raises(DataError, match="too few"):
        blocked_cv_splits(30, k=5, gap=10, val_fraction=0.1)
