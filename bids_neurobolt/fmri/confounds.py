"""Nuisance regressors: pick columns of an fMRIPrep-style confounds table by strategy.

The default strategy is the NeuroBOLT paper's: the six rigid-body motion parameters
(``trans_x/y/z`` in mm, ``rot_x/y/z`` in rad). Larger strategies add temporal
derivatives and squares (Friston 24) and the mean white-matter and CSF signals. Columns
that fMRIPrep derives (``*_derivative1``, ``*_power2``) are computed from the base
columns when the table lacks them; their first row, ``n/a`` by construction in
fMRIPrep, is set to 0. Any other missing value is an error naming the rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bids_neurobolt.errors import ConfigError, DataError

#: The six rigid-body motion parameters, as fMRIPrep names them.
MOTION6: tuple[str, ...] = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
_MOTION12 = MOTION6 + tuple(f"{c}_derivative1" for c in MOTION6)
_MOTION24 = _MOTION12 + tuple(f"{c}_power2" for c in _MOTION12)
_WMCSF: tuple[str, ...] = ("white_matter", "csf")

#: Confound strategies: name -> (columns, description).
CONFOUND_STRATEGIES: Mapping[str, tuple[tuple[str, ...], str]] = {
    "none": ((), "no confound regression (detrending only)"),
    "motion6": (MOTION6, "6 rigid-body motion parameters (as in the NeuroBOLT paper)"),
    "motion12": (_MOTION12, "6 motion parameters and their temporal derivatives"),
    "motion24": (
        _MOTION24,
        "Friston 24: 6 motion parameters, their derivatives, and the squares of both",
    ),
    "motion6+wmcsf": (MOTION6 + _WMCSF, "6 motion parameters, mean white-matter and CSF signals"),
    "motion24+wmcsf": (_MOTION24 + _WMCSF, "Friston 24, mean white-matter and CSF signals"),
}

#: The default strategy.
DEFAULT_STRATEGY = "motion6"


@dataclass(frozen=True)
class Confounds:
    """Selected nuisance regressors.

    Attributes
    ----------
    values : ndarray, shape (n_volumes, n_confounds)
        The regressors (float64, finite).
    names : tuple of str
        Column names.
    strategy : str
        The strategy that chose them.
    filled_first_row : tuple of str
        Derived columns whose leading ``n/a`` was set to 0.
    """

    values: NDArray[np.float64]
    names: tuple[str, ...]
    strategy: str
    filled_first_row: tuple[str, ...] = ()


def strategy_columns(strategy: str) -> tuple[str, ...]:
    """Return the columns a strategy uses.

    Raises
    ------
    ConfigError
        For an unknown strategy (the message lists the known ones).
    """
    if strategy not in CONFOUND_STRATEGIES:
        known = ", ".join(f"'{k}' ({v[1]})" for k, v in CONFOUND_STRATEGIES.items())
        raise ConfigError(f"unknown confound strategy {strategy!r}.", fix=f"Use one of: {known}.")
    return CONFOUND_STRATEGIES[strategy][0]


def select_confounds(
    table: pd.DataFrame,
    strategy: str = DEFAULT_STRATEGY,
    *,
    source: str | PathLike[str] | None = None,
) -> Confounds:
    """Pick the regressors of a strategy from a confounds table.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per BOLD volume (fMRIPrep ``desc-confounds_timeseries.tsv`` read with
        ``n/a`` as NaN).
    strategy : str
        A key of :data:`CONFOUND_STRATEGIES`.
    source : path-like | None
        The file the table came from, named in error messages.

    Returns
    -------
    Confounds

    Raises
    ------
    ConfigError
        For an unknown strategy.
    DataError
        If base columns are missing, not numeric, or have missing values.
    """
    columns = strategy_columns(strategy)
    derived = {c: _base_of(c) for c in columns if _base_of(c) is not None}
    base_needed = list(dict.fromkeys(_root(c) for c in columns))
    missing = [c for c in base_needed if c not in table.columns]
    if missing:
        shown = ", ".join(map(str, list(table.columns)[:12])) or "none"
        raise DataError(
            f"the confounds table lacks the column(s) {', '.join(missing)} needed by the "
            f"confound strategy '{strategy}' (it has: {shown}"
            f"{', ...' if table.shape[1] > 12 else ''}).",
            path=source,
            fix="Pass the fMRIPrep desc-confounds_timeseries.tsv of this run, or choose "
            "another strategy (--confounds none skips confound regression).",
        )
    values: dict[str, NDArray[np.float64]] = {}
    filled: list[str] = []
    for column in columns:
        if column in table.columns:
            series = _numeric(table[column], column, source)
        else:
            series = _derive(column, table, source)
        if column in derived and np.isnan(series[0]) and not np.isnan(series[1:]).any():
            series = series.copy()
            series[0] = 0.0
            filled.append(column)
        bad = np.flatnonzero(~np.isfinite(series))
        if bad.size:
            raise DataError(
                f"the confound column '{column}' has missing or infinite values in "
                f"{bad.size} row(s) (volumes {_rows(bad)}).",
                path=source,
                fix="Regenerate the confounds with fMRIPrep, or choose a strategy without "
                "this column; rows of n/a cannot be regressed out.",
            )
        values[column] = series
    matrix = np.column_stack([values[c] for c in columns]) if columns else np.zeros((len(table), 0))
    return Confounds(
        values=matrix.astype(np.float64),
        names=tuple(columns),
        strategy=strategy,
        filled_first_row=tuple(filled),
    )


def check_confound_matrix(
    values: NDArray[np.floating], n_volumes: int, *, source: str | PathLike[str] | None = None
) -> NDArray[np.float64]:
    """Check a confound matrix against the BOLD run: shape and finiteness.

    Parameters
    ----------
    values : ndarray, shape (n_volumes,) or (n_volumes, n_confounds)
        The regressors.
    n_volumes : int
        Number of BOLD volumes.
    source : path-like | None
        Named in error messages.

    Returns
    -------
    ndarray, shape (n_volumes, n_confounds)

    Raises
    ------
    DataError
        On a row-count mismatch or missing values (naming the rows).
    """
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    if matrix.ndim != 2 or matrix.shape[0] != n_volumes:
        raise DataError(
            f"the confounds have {matrix.shape[0]} rows but the BOLD run has {n_volumes} volumes.",
            path=source,
            fix="Use the confounds file of this very run (same sub/ses/task/run entities).",
        )
    bad_rows = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad_rows.size:
        raise DataError(
            f"the confounds have missing or infinite values in {bad_rows.size} row(s) "
            f"(volumes {_rows(bad_rows)}).",
            path=source,
            fix="Fill or drop those regressors; rows of n/a cannot be regressed out.",
        )
    return matrix


def _root(column: str) -> str:
    return column.split("_derivative1")[0].split("_power2")[0]


def _base_of(column: str) -> str | None:
    """Return the column a derived column is computed from (None for a base column)."""
    if column.endswith("_power2"):
        return column[: -len("_power2")]
    if column.endswith("_derivative1"):
        return column[: -len("_derivative1")]
    return None


def _derive(column: str, table: pd.DataFrame, source: str | PathLike[str] | None) -> NDArray:
    base = _base_of(column)
    assert base is not None
    values = (
        _numeric(table[base], base, source)
        if base in table.columns
        else _derive(base, table, source)
    )
    if column.endswith("_power2"):
        return values**2
    out = np.empty_like(values)
    out[0] = np.nan
    out[1:] = np.diff(values)
    return out


def _numeric(series: pd.Series, column: str, source: str | PathLike[str] | None) -> NDArray:
    converted = pd.to_numeric(series, errors="coerce")
    not_numeric = converted.isna() & series.notna()
    if not_numeric.any():
        rows = np.flatnonzero(not_numeric.to_numpy())
        raise DataError(
            f"the confound column '{column}' holds text that is not a number "
            f"(volumes {_rows(rows)}: {series.iloc[rows[0]]!r}).",
            path=source,
            fix="Write numbers, with n/a for missing values.",
        )
    return converted.to_numpy(dtype=np.float64)


def _rows(rows: NDArray[np.intp]) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:8])
    return shown + (", ..." if rows.size > 8 else "")
