"""Prediction metrics per ROI: Pearson correlation and mean squared error.

The paper reports Pearson r (and MSE) between predicted and measured ROI time series
on the test windows; for inter-subject models, r and MSE are computed per held-out scan
and averaged (:func:`grouped_metrics`).

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
