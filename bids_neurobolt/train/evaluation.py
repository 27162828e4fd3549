"""Evaluate NeuroBOLT and the linear baselines on one run, out of sample.

Two evaluation schemes (``--split``):

- ``blocked-cv`` (default): k contiguous test blocks with gaps
  (:func:`~bids_neurobolt.train.splits.blocked_cv_splits`). Every window is predicted
  once by a model that did not see it, NeuroBOLT and both ridges alike, so the test
  statistics use the whole run. One more NeuroBOLT is then trained on every window, for
  the epoch the folds chose (their median best epoch): that is the model saved for
  ``--model``.
- ``paper``: the paper's chronological 80/10/10 split with 20 s gaps; one model, tested
  on the last tenth of the run.

Both return predictions of every model, the windows of each reported set (``test`` is
always the out-of-sample part) and a metrics table with the statistics of
:mod:`~bids_neurobolt.train.stats`.

References
----------
.. [1] Li Y, Lou A, Xu Z, et al. (2024). NeuroBOLT: Resting-state EEG-to-fMRI synthesis
   with multi-dimensional feature mapping. NeurIPS 2024. arXiv:2410.05341.
.. [2] Roberts DR, Bahn V, Ciuti S, et al. (2017). Cross-validation strategies for data
   with temporal, spatial, hierarchical, or phylogenetic structure. Ecography 40(8):913-929.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from bids_neurobolt.errors import ConfigError
from bids_neurobolt.train import baselines
from bids_neurobolt.train.metrics import evaluation_table
from bids_neurobolt.train.splits import Split, blocked_cv_splits, intra_scan_split

logger = logging.getLogger(__name__)

#: Evaluation schemes of ``--split``.
SPLIT_KINDS: tuple[str, ...] = ("blocked-cv", "paper")

#: Folds of the blocked cross-validation within a run.
CV_FOLDS = 5


@dataclass
class RunEvaluation:
    """Outcome of :func:`evaluate_run`.

    Attributes
    ----------
    predictions : dict of str to numpy.ndarray, shape (n_windows, n_rois)
        ``neurobolt``, ``baseline`` (HRF ridge) and ``fir`` (FIR ridge): out-of-sample
        predictions for ``blocked-cv``; the single model's for every window for ``paper``.
    sets : dict of str to numpy.ndarray of int
        Windows of each reported set; ``test`` holds the out-of-sample windows. With
        ``blocked-cv``, ``train`` is every window, fitted in sample by the models
        trained on all of them (a check for overfitting, not an evaluation).
    metrics : pandas.DataFrame
        :func:`~bids_neurobolt.train.metrics.evaluation_table` of the sets; with
        ``blocked-cv`` the test correlations are computed within folds
        (:func:`~bids_neurobolt.train.metrics.centre_within`).
    final : FitResult | None
        The NeuroBOLT model to save (trained on every window for ``blocked-cv``; None
        when :func:`evaluate_run` was asked not to train it).
    folds : list of dict
        Per fold: window counts, best epoch, history.
    split : str
        The scheme used.
    description : str
        The scheme in words (for sidecars and logs).
    """

    predictions: dict[str, NDArray[np.float32]]
    sets: dict[str, NDArray[np.int64]]
    metrics: pd.DataFrame
    final: Any
    folds: list[dict[str, Any]] = field(default_factory=list)
    split: str = "blocked-cv"
    description: str = ""


def make_run_splits(split: str, n_windows: int, gap: int, *, k: int = CV_FOLDS) -> list[Split]:
    """Return the splits of a run for a scheme (one for ``paper``, k for ``blocked-cv``).

    Raises
    ------
    ConfigError
        For an unknown scheme.
    DataError
        When the run is too short for the scheme.
    """
    if split == "paper":
        return [intra_scan_split(n_windows, gap=gap)]
    if split == "blocked-cv":
        return blocked_cv_splits(n_windows, k=k, gap=gap)
    raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_KINDS)}.")


def evaluate_run(
    windows: ArrayLike,
    targets: ArrayLike,
    splits: Sequence[Split],
    *,
    train: Callable[..., Any],
    roi_names: Sequence[str],
    sfreq: float = 200.0,
    seed: int = 0,
    final: bool = True,
) -> RunEvaluation:
    """Train and evaluate NeuroBOLT and both ridges on every split of one run.

    Parameters
    ----------
    windows : array-like, shape (n_windows, n_channels, n_times)
        The run's windows.
    targets : array-like, shape (n_windows, n_rois)
        Scaled ROI targets of each window's volume.
    splits : sequence of Split
        One split (``paper``) or the folds of a blocked cross-validation, whose test sets
        partition the windows.
    train : callable
        ``train(split, keep_epoch=None) -> FitResult``: trains a NeuroBOLT (the caller
        fixes windows, targets, architecture, recipe, start and device).
    roi_names : sequence of str
        Target columns.
    sfreq : float
        Window sampling rate (Hz).
    seed : int
        Seed of the statistics' resampling.
    final : bool
        With several folds, also train the model on every window (the saved model) and
        report its in-sample ``train`` rows; False evaluates only (benchmarks).

    Returns
    -------
    RunEvaluation
    """
    y = np.asarray(targets, dtype=np.float32)
    n = y.shape[0]
    features = {kind: baselines.baseline_features(windows, kind=kind, sfreq=sfreq)
                for kind in ("hrf", "fir")}  # fmt: skip
    cross_validated = len(splits) > 1
    predictions = {name: np.full(y.shape, np.nan, np.float32)
                   for name in ("neurobolt", "baseline", "fir")}  # fmt: skip
    folds, fits = [], []
    for number, split in enumerate(splits, start=1):
        if cross_validated:
            logger.info(
                "fold %d/%d: train %d, validate %d, test %d windows",
                number, len(splits), split.train.size, split.val.size, split.test.size,
            )  # fmt: skip
        fit = train(split)
        fits.append(fit)
        rows = split.test if cross_validated else np.arange(n)
        predictions["neurobolt"][rows] = fit.predictions[rows]
        for name, values in baseline_fold_predictions(features, y, split).items():
            predictions[name][rows] = values[rows]
        folds.append(
            {"fold": number, "windows": split.sizes(), "best_epoch": fit.best_epoch,
             "history": fit.history.round(6).to_dict(orient="list")}
        )  # fmt: skip
    if cross_validated and not final:
        model, in_sample = None, predictions
        sets = {"test": np.concatenate([s.test for s in splits])}
        description = f"blocked {len(splits)}-fold cross-validation within the run"
    elif cross_validated:
        epoch = int(np.median([f.best_epoch for f in fits]))
        logger.info("model on all %d windows, kept at epoch %d (the folds' median)", n, epoch)
        everything = Split(np.arange(n), np.zeros(0, np.int64), np.zeros(0, np.int64))
        model = train(everything, keep_epoch=epoch)
        in_sample = {"neurobolt": model.predictions,
                     **baseline_fold_predictions(features, y, everything)}  # fmt: skip
        sets = {"train": np.arange(n), "test": np.concatenate([s.test for s in splits])}
        description = (
            f"blocked {len(splits)}-fold cross-validation within the run (contiguous test "
            "blocks, gaps between test, validation and training windows); the saved model "
            f"is trained on every window for {epoch} epochs (the folds' median best epoch)"
        )
    else:
        model = fits[0]
        in_sample = predictions
        split = splits[0]
        sets = {"train": split.train, "val": split.val, "test": split.test}
        description = "the paper's chronological 80/10/10 split with gaps"
    folds_of = fold_labels(splits, n) if cross_validated else None
    metrics = [
        evaluation_table(y, in_sample if name == "train" else predictions, {name: idx},
                         roi_names, seed=seed, blocks=None if name == "train" else folds_of)
        for name, idx in sets.items()
    ]  # fmt: skip
    return RunEvaluation(
        predictions=predictions,
        sets=sets,
        metrics=pd.concat(metrics, ignore_index=True),
        final=model,
        folds=folds,
        split="blocked-cv" if cross_validated else "paper",
        description=description,
    )


def fold_labels(splits: Sequence[Split], n_windows: int) -> NDArray[np.int64]:
    """Return the fold that tests each window (-1 for windows no fold tests)."""
    labels = np.full(n_windows, -1, dtype=np.int64)
    for number, split in enumerate(splits):
        labels[split.test] = number
    return labels


def too_short(metrics: pd.DataFrame, split: str = "test") -> list[str]:
    """ROIs whose ``split`` rows were too short to evaluate (``n_eff`` below the minimum)."""
    rows = metrics[metrics["split"] == split]
    return rows.loc[rows["pearson_r"].isna() & rows["n_eff"].notna(), "roi"].tolist()


def baseline_fold_predictions(
    features: Mapping[str, NDArray[np.float64]], targets: NDArray[np.float32], split: Split
) -> dict[str, NDArray[np.float32]]:
    """Predictions of both ridges for every window, trained on one split."""
    return {
        name: baselines.baseline_predictions(features[kind], targets, split.train, split.val)
        for name, kind in (("baseline", "hrf"), ("fir", "fir"))
    }
