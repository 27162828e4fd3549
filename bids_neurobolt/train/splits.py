"""Train/validation/test splits of windows: within a scan, or across subjects.

**Intra-scan** (one model per run, as the paper's intra-subject experiments): the
windows of a run, in time order, are cut chronologically into 80 % training, 10 %
validation and 10 % test; the first ``gap`` windows of the validation and of the test
part are dropped, so that no window of one set shares BOLD autocorrelation or EEG
samples with the set before it. The paper's gap is ``ceil(20 s / TR)`` = 10 volumes at
TR 2.1 s; with 567 windows this gives 453 training, 46 validation and 48 test windows.

**Blocked cross-validation** within a run (the default for evaluation): ``k``
contiguous test blocks, each predicted by a model trained on the rest of the run less
gaps around the block, so every window is predicted once out of sample and the test
statistics rest on the whole run rather than on its last 10 %.

**Inter-subject**: whole subjects go to one set, either from explicit lists (a split
file read by the caller) or by k-fold rotation (test fold ``i``, validation fold
``i + 1``, training the rest).

References
----------
.. [1] Li Y, Lou A, Xu Z, et al. (2024). NeuroBOLT: Resting-state EEG-to-fMRI synthesis
   with multi-dimensional feature mapping. NeurIPS 2024. arXiv:2410.05341.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bids_neurobolt.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: Names of the sets, in order.
SETS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Split:
    """Indices of the windows of each set.

    Attributes
    ----------
    train, val, test : numpy.ndarray of int
        Window indices (sorted, disjoint); ``val`` or ``test`` may be empty.
    """

    train: NDArray[np.int64]
    val: NDArray[np.int64]
    test: NDArray[np.int64]

    def __getitem__(self, name: str) -> NDArray[np.int64]:
        if name not in SETS:
            raise KeyError(name)
        return getattr(self, name)

    def labels(self, n_windows: int) -> NDArray[np.str_]:
        """Return the set of every window: ``"train"``, ``"val"``, ``"test"``, or ``"unused"``."""
        out = np.full(n_windows, "unused", dtype="<U6")
        for name in SETS:
            out[self[name]] = name
        return out

    def sizes(self) -> dict[str, int]:
        """Count the windows of each set."""
        return {name: int(self[name].size) for name in SETS}


def gap_for_tr(tr: float, seconds: float = 20.0) -> int:
    """Gap in volumes covering ``seconds`` (``ceil(seconds / tr)``: 10 at TR 2.1 s).

    Parameters
    ----------
    tr : float
        Repetition time (s).
    seconds : float
        Time the gap must span.

    Returns
    -------
    int
    """
    if tr <= 0:
        raise DataError(f"the repetition time must be positive; got {tr} s.")
    return math.ceil(seconds / tr - 1e-9)


def intra_scan_split(
    n_windows: int, *, train: float = 0.8, val: float = 0.1, gap: int = 10
) -> Split:
    """Chronological 80/10/10 split of one run's windows with gaps (the paper's).

    The first ``int(train * n)`` windows train; the next ``int(val * n)`` windows,
    less their first ``gap``, validate; the rest, less their first ``gap``, test.

    Parameters
    ----------
    n_windows : int
        Windows of the run, in time order (consecutive volumes).
    train, val : float
        Fractions of the run before the validation and test parts start.
    gap : int
        Windows dropped at the start of the validation and of the test part.

    Returns
    -------
    Split

    Raises
    ------
    ConfigError
        When the fractions or the gap are invalid.
    DataError
        When the run is too short to leave windows in every set.

    References
    ----------
    .. [1] Li Y, Lou A, Xu Z, et al. (2024). NeuroBOLT. NeurIPS 2024.
    """
    if not (0 < train < 1 and 0 < val < 1 and train + val < 1) or gap < 0:
        raise ConfigError(
            f"split fractions must be in (0, 1) with train + val < 1 and gap >= 0; got "
            f"train={train}, val={val}, gap={gap}."
        )
    n_train = int(train * n_windows)
    n_val_part = int(val * n_windows)
    val_idx = np.arange(n_train + gap, n_train + n_val_part)
    test_idx = np.arange(n_train + n_val_part + gap, n_windows)
    if n_train < 1 or val_idx.size < 1 or test_idx.size < 1:
        needed = math.ceil((gap + 1) / min(val, 1 - train - val)) + 1
        raise DataError(
            f"{n_windows} windows are too few for the intra-scan split "
            f"({train:.0%}/{val:.0%}/rest with {gap}-volume gaps needs about {needed}).",
            fix="Use longer runs, or train across subjects at the group level.",
        )
    return Split(np.arange(n_train), val_idx, test_idx)


def blocked_cv_splits(
    n_windows: int, *, k: int = 5, gap: int = 10, val_fraction: float = 0.1
) -> list[Split]:
    """Blocked cross-validation within a run: k contiguous test blocks separated by gaps.

    The windows, in time order, are cut into ``k`` contiguous blocks; fold ``i`` tests
    block ``i``, so every window is predicted exactly once by a model that did not train
    on it. Around the test block ``gap`` windows on each side are left out, so that no
    training window shares EEG samples (16 s windows) or much BOLD autocorrelation with
    a test window. Validation (the epoch choice) lies inside the training part: the
    ``val_fraction * n_windows`` windows that follow the trailing gap (or precede the
    leading gap when the test block is the run's last), separated from the training
    windows by another ``gap``.

    Parameters
    ----------
    n_windows : int
        Windows of the run, in time order (consecutive volumes).
    k : int
        Folds (at least 2).
    gap : int
        Windows left out between test, validation and training windows.
    val_fraction : float
        Share of the run used for validation in each fold (0 for none).

    Returns
    -------
    list of Split
        One split per fold; the test sets partition ``range(n_windows)``.

    Raises
    ------
    ConfigError
        When ``k``, ``gap`` or ``val_fraction`` are invalid.
    DataError
        When the run is too short for a fold to keep training windows.

    References
    ----------
    .. [1] Roberts DR, Bahn V, Ciuti S, et al. (2017). Cross-validation strategies for
       data with temporal, spatial, hierarchical, or phylogenetic structure. Ecography
       40(8):913-929.
    .. [2] Bergmeir C, Benítez JM (2012). On the use of cross-validation for time series
       predictor evaluation. Information Sciences 191:192-213.
    """
    if k < 2 or gap < 0 or not 0 <= val_fraction < 1:
        raise ConfigError(
            f"blocked cross-validation needs k >= 2, gap >= 0 and 0 <= val_fraction < 1; "
            f"got k={k}, gap={gap}, val_fraction={val_fraction}."
        )
    n_val = math.ceil(val_fraction * n_windows) if val_fraction > 0 else 0
    splits = []
    for block in np.array_split(np.arange(n_windows), k):
        if block.size == 0:
            raise DataError(
                f"{n_windows} windows are too few for {k}-fold blocked cross-validation.",
                fix="Use longer runs, fewer folds, or train across subjects at the group level.",
            )
        start, stop = int(block[0]), int(block[-1]) + 1
        val = np.zeros(0, dtype=np.int64)
        excluded_low, excluded_high = start - gap, stop + gap
        if n_val:
            if excluded_high + n_val <= n_windows:
                val = np.arange(excluded_high, excluded_high + n_val)
                excluded_high += n_val + gap
            else:
                val = np.arange(max(excluded_low - n_val, 0), max(excluded_low, 0))
                excluded_low -= n_val + gap
        index = np.arange(n_windows)
        train = index[(index < excluded_low) | (index >= excluded_high)]
        if train.size < 2 or (n_val and val.size == 0):
            raise DataError(
                f"{n_windows} windows are too few for {k}-fold blocked cross-validation "
                f"with {gap}-window gaps (a fold keeps {train.size} training windows).",
                fix="Use longer runs (see docs/usage.md), --split paper, or train across "
                "subjects at the group level.",
            )
        splits.append(Split(train, val.astype(np.int64), block.astype(np.int64)))
    return splits


def subject_split(
    window_subjects: ArrayLike,
    *,
    train: Iterable[str],
    val: Iterable[str],
    test: Iterable[str],
) -> Split:
    """Split windows by subject from explicit subject lists.

    Parameters
    ----------
    window_subjects : array-like of str, shape (n_windows,)
        Subject label of every window (``sub-`` prefixes are ignored).
    train, val, test : iterable of str
        Subject labels of each set (``val`` may be empty).

    Returns
    -------
    Split
        Windows of subjects in no list are left out (and logged).

    Raises
    ------
    ConfigError
        When a subject is in two lists, or the training or test list has no windows.
    """
    labels = np.array([_bare(s) for s in np.asarray(window_subjects).reshape(-1)])
    sets = {name: [_bare(s) for s in subjects] for name, subjects in
            (("train", train), ("val", val), ("test", test))}  # fmt: skip
    seen: dict[str, str] = {}
    for name, subjects in sets.items():
        for subject in subjects:
            if subject in seen and seen[subject] != name:
                raise ConfigError(
                    f"subject {subject} is in both the {seen[subject]} and {name} sets."
                )
            seen[subject] = name
    present = set(labels.tolist())
    absent = sorted(set(seen) - present)
    if absent:
        logger.warning("split subjects without windows (ignored): %s", ", ".join(absent))
    unused = sorted(present - set(seen))
    if unused:
        logger.info("subjects in no split set (not used): %s", ", ".join(unused))
    split = Split(*(np.flatnonzero(np.isin(labels, sets[name])) for name in SETS))
    for name in ("train", "test"):
        if split[name].size == 0:
            raise ConfigError(
                f"the {name} set has no windows (its subjects: {sets[name] or 'none'}).",
                fix="List subjects that have processed runs in every set of the split file.",
            )
    return split


def kfold_subject_splits(
    window_subjects: ArrayLike, k: int, *, seed: int = 0
) -> tuple[list[Split], list[list[str]]]:
    """k-fold inter-subject splits: fold ``i`` tests, fold ``i + 1`` validates.

    Parameters
    ----------
    window_subjects : array-like of str, shape (n_windows,)
        Subject label of every window.
    k : int
        Number of folds (at least 3, at most the number of subjects).
    seed : int
        Seed of the subject shuffle.

    Returns
    -------
    splits : list of Split
        One split per fold.
    folds : list of list of str
        The subjects of each fold.

    Raises
    ------
    ConfigError
        When ``k`` is below 3 or above the number of subjects.
    """
    labels = np.array([_bare(s) for s in np.asarray(window_subjects).reshape(-1)])
    subjects = sorted(set(labels.tolist()))
    if not 3 <= k <= len(subjects):
        raise ConfigError(
            f"k-fold across subjects needs 3 <= k <= the number of subjects "
            f"({len(subjects)}); got k={k}."
        )
    order = np.random.default_rng(seed).permutation(len(subjects))
    folds = [[subjects[i] for i in sorted(part)] for part in np.array_split(order, k)]
    splits = []
    for i in range(k):
        val = folds[(i + 1) % k]
        train = [s for j, fold in enumerate(folds) if j not in (i, (i + 1) % k) for s in fold]
        splits.append(subject_split(labels, train=train, val=val, test=folds[i]))
    return splits, folds


def _bare(label: object) -> str:
    return str(label).removeprefix("sub-")


def check_disjoint(split: Split, n_windows: int) -> None:
    """Raise ValueError if the sets overlap or index outside ``range(n_windows)``."""
    indices: Sequence[NDArray[np.int64]] = [split[name] for name in SETS]
    everything = np.concatenate(indices)
    if everything.size != np.unique(everything).size:
        raise ValueError("split sets overlap")
    if everything.size and (everything.min() < 0 or everything.max() >= n_windows):
        raise ValueError("split index out of range")
