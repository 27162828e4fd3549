"""Prediction metrics per ROI: Pearson correlation and mean squared error.

The paper reports Pearson r (and MSE) between predicted and measured ROI time series
on the test windows; for inter-subject models, r and MSE are computed per held-out scan
and averaged (:func:`grouped_metrics`). :func:`evaluation_table` adds what a reader
needs to trust an r (effective sample size, bootstrap CI, null p-value, paired tests
against the baselines, FDR q-values; :mod:`~bids_neurobolt.train.stats`).

References
----------
.. [1] Li Y, Lou A, Xu Z, et al. (2024). NeuroBOLT: Resting-state EEG-to-fMRI synthesis
   with multi-dimensional feature mapping. NeurIPS 2024. arXiv:2410.05341.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray


def _as_2d(values: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    return array[:, None] if array.ndim == 1 else array


def pearson_r(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[np.float64]:
    """Pearson correlation of each column.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n_samples,) or (n_samples, n_rois)
        Measured and predicted values.

    Returns
    -------
    numpy.ndarray, shape (n_rois,)
        r per column; NaN where either column is constant or there are fewer than 2
        samples.
    """
    y_true, y_pred = _as_2d(y_true), _as_2d(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shapes differ: {y_true.shape} vs {y_pred.shape}")
    if y_true.shape[0] < 2:
        return np.full(y_true.shape[1], np.nan)
    dt = y_true - y_true.mean(axis=0)
    dp = y_pred - y_pred.mean(axis=0)
    denom = np.sqrt((dt**2).sum(axis=0) * (dp**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (dt * dp).sum(axis=0) / denom
    return np.where(denom > 0, np.clip(r, -1.0, 1.0), np.nan)


def mse(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[np.float64]:
    """Mean squared error of each column (NaN for no samples)."""
    y_true, y_pred = _as_2d(y_true), _as_2d(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"shapes differ: {y_true.shape} vs {y_pred.shape}")
    if y_true.shape[0] == 0:
        return np.full(y_true.shape[1], np.nan)
    return ((y_true - y_pred) ** 2).mean(axis=0)


def metrics_table(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    sets: Mapping[str, ArrayLike],
    roi_names: Sequence[str],
    *,
    prefix: str = "",
) -> pd.DataFrame:
    """Pearson r and MSE per ROI and set.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n_windows, n_rois)
        Measured and predicted values of every window.
    sets : mapping of str to array-like of int
        Window indices of each set (e.g. ``{"train": ..., "val": ..., "test": ...}``).
    roi_names : sequence of str
        Column names.
    prefix : str
        Prefix of the metric columns (``"baseline_"`` for the ridge baseline).

    Returns
    -------
    pandas.DataFrame
        Columns ``roi``, ``split``, ``n``, ``<prefix>pearson_r``, ``<prefix>mse``; one row
        per ROI and set (sets with no windows are skipped).
    """
    y_true, y_pred = _as_2d(y_true), _as_2d(y_pred)
    rows = []
    for name, idx in sets.items():
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            continue
        r = pearson_r(y_true[idx], y_pred[idx])
        e = mse(y_true[idx], y_pred[idx])
        for j, roi in enumerate(roi_names):
            rows.append(
                {"roi": roi, "split": name, "n": int(idx.size),
                 f"{prefix}pearson_r": r[j], f"{prefix}mse": e[j]}
            )  # fmt: skip
    columns = ["roi", "split", "n", f"{prefix}pearson_r", f"{prefix}mse"]
    return pd.DataFrame(rows, columns=columns)


def grouped_metrics(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    groups: ArrayLike,
    roi_names: Sequence[str],
) -> pd.DataFrame:
    """Pearson r and MSE per group (scan or subject) and ROI, as the paper's inter-subject test.

    Parameters
    ----------
    y_true, y_pred : array-like, shape (n_windows, n_rois)
        Measured and predicted values of the evaluated windows.
    groups : array-like, shape (n_windows,)
        Group label of each window.
    roi_names : sequence of str
        Column names.

    Returns
    -------
    pandas.DataFrame
        Columns ``group``, ``roi``, ``n``, ``pearson_r``, ``mse``; average the rows of a
        ROI for the paper's mean per-scan r.
    """
    y_true, y_pred = _as_2d(y_true), _as_2d(y_pred)
    groups = np.asarray(groups)
    rows = []
    for group in pd.unique(groups):
        idx = np.flatnonzero(groups == group)
        r = pearson_r(y_true[idx], y_pred[idx])
        e = mse(y_true[idx], y_pred[idx])
        for j, roi in enumerate(roi_names):
            rows.append(
                {"group": group, "roi": roi, "n": int(idx.size), "pearson_r": r[j], "mse": e[j]}
            )
    return pd.DataFrame(rows, columns=["group", "roi", "n", "pearson_r", "mse"])


#: Models of an evaluation table and the prefix of their columns (NeuroBOLT has none).
MODELS: dict[str, str] = {"neurobolt": "", "baseline": "baseline_", "fir": "fir_"}


def evaluation_table(
    y_true: ArrayLike,
    predictions: Mapping[str, ArrayLike],
    sets: Mapping[str, ArrayLike],
    roi_names: Sequence[str],
    *,
    seed: int = 0,
    blocks: ArrayLike | None = None,
) -> pd.DataFrame:
    """Correlations with their uncertainty for NeuroBOLT and the baselines, per ROI and set.

    Parameters
    ----------
    y_true : array-like, shape (n_windows, n_rois)
        Measured values.
    predictions : mapping of str to array-like, shape (n_windows, n_rois)
        ``neurobolt`` and, when present, ``baseline`` (HRF ridge) and ``fir`` (FIR
        ridge), on the same windows.
    sets : mapping of str to array-like of int
        Window indices of each set (sets with no windows are skipped).
    roi_names : sequence of str
        Column names.
    seed : int
        Seed of the bootstrap and of the surrogates.
    blocks : array-like of int | None
        Cross-validation fold of each window: the correlation statistics of a set are
        computed after removing each fold's mean from the targets and from every
        prediction (:func:`centre_within`); the MSEs use the values as they are.

    Returns
    -------
    pandas.DataFrame
        One row per set and ROI: ``roi``, ``split``, ``n``, ``n_eff``, ``pearson_r``,
        ``pearson_r_ci_low``, ``pearson_r_ci_high``, ``p_value``, ``q_value``, ``mse``;
        per baseline ``<b>_r``, ``<b>_r_ci_low``, ``<b>_r_ci_high``, ``<b>_p_value``,
        ``<b>_mse`` and ``p_value_vs_<b>`` (``<b>`` is ``baseline`` or ``fir``). The
        correlation columns are NaN (written ``n/a``) where ``n_eff`` is below
        :data:`~bids_neurobolt.train.stats.MIN_N_EFF`: too short to evaluate.
    """
    from bids_neurobolt.train.stats import correlation_table

    raw_true, raw_ours = _as_2d(y_true), _as_2d(predictions["neurobolt"])
    y_true, ours = raw_true, raw_ours
    if blocks is not None:
        y_true, ours = centre_within(raw_true, blocks), centre_within(raw_ours, blocks)
    parts = []
    for name, idx in sets.items():
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            continue
        table = correlation_table(y_true[idx], ours[idx], roi_names=roi_names, seed=seed)
        table.insert(1, "split", name)
        table["mse"] = mse(raw_true[idx], raw_ours[idx])
        for model, prefix in MODELS.items():
            if not prefix or model not in predictions:
                continue
            raw_theirs = _as_2d(predictions[model])
            theirs = raw_theirs if blocks is None else centre_within(raw_theirs, blocks)
            paired = correlation_table(
                y_true[idx], ours[idx], theirs[idx], roi_names=roi_names, seed=seed
            )
            table[f"{prefix}r"] = paired["baseline_r"].to_numpy()
            table[f"{prefix}r_ci_low"] = paired["baseline_r_ci_low"].to_numpy()
            table[f"{prefix}r_ci_high"] = paired["baseline_r_ci_high"].to_numpy()
            table[f"{prefix}p_value"] = paired["baseline_p_value"].to_numpy()
            table[f"{prefix}mse"] = mse(raw_true[idx], raw_theirs[idx])
            table[f"p_value_vs_{prefix.rstrip('_')}"] = paired["p_value_vs_baseline"].to_numpy()
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def centre_within(values: ArrayLike, blocks: ArrayLike) -> NDArray[np.float64]:
    """Subtract each block's mean from its rows (columns separately).

    Out-of-sample predictions of blocked cross-validation come from one model per fold,
    each with the intercept of its own training windows. Pooled across folds, those
    intercepts form a step function that is *anti*-correlated with the test blocks' means
    (a test block above the run's mean leaves training windows below it), which biases
    a pooled correlation downwards, to clearly negative values for a model that predicts
    little more than its training mean. Centring targets and predictions within each
    fold's test block removes that artifact; the correlation then measures how well each
    model follows the BOLD within the blocks.

    Parameters
    ----------
    values : array-like, shape (n, k)
        Values in window order.
    blocks : array-like of int, shape (n,)
        Block (fold) of each row.

    Returns
    -------
    numpy.ndarray, shape (n, k)

    References
    ----------
    .. [1] Varoquaux G (2018). Cross-validation failure: small sample sizes lead to large
       error bars. NeuroImage 180:68-77.
    """
    out = _as_2d(values).copy()
    blocks = np.asarray(blocks)
    for block in np.unique(blocks):
        rows = blocks == block
        out[rows] -= np.nanmean(out[rows], axis=0)
    return out
