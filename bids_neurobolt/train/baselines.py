"""Linear EEG-informed fMRI baselines: ridge regression on band power.

Every window (the 16 s of EEG before a volume) is described by each channel's log band
power (delta 1-4, theta 4-8, alpha 8-13, beta 13-30, gamma 30-45 Hz) in 1 s bins
(Hann-tapered periodogram). Two linear models use it, on exactly the windows and split
of the NeuroBOLT model, so that they are comparable with it:

- the **HRF ridge** (:func:`ridge_baseline`) convolves each channel's and band's power
  with the canonical haemodynamic response and its temporal derivative evaluated at
  each bin's lag before the volume [1]_ [2]_ [3]_: ``n_channels x 5 x 2`` regressors;
- the **FIR ridge** (:func:`fir_ridge_baseline`) keeps the power of every bin as its own
  regressor, a finite impulse response with no assumed HRF shape or delay [5]_ [6]_:
  ``n_channels x 5 x n_bins`` regressors (16 for 16 s windows).

Regressors are standardised on the training windows and enter a multi-output ridge
regression [4]_ with one penalty per ROI, chosen by blocked cross-validation on the
training windows (:func:`fit_ridge`): contiguous blocks of windows are held out in turn
and the windows within ``gap`` of a held-out block are left out of that fold's fit,
because neighbouring windows share 15 of their 16 s of EEG and their BOLD is
autocorrelated, which makes leave-one-out optimistic [7]_ [8]_; each ROI takes the
largest penalty within one standard error of the least cross-validated error [9]_.

References
----------
.. [1] Goldman RI, Stern JM, Engel J, Cohen MS (2002). Simultaneous EEG and fMRI of the
   alpha rhythm. NeuroReport 13(18):2487-2492.
.. [2] Laufs H, Kleinschmidt A, Beyerle A, et al. (2003). EEG-correlated fMRI of human
   alpha activity. NeuroImage 19(4):1463-1476.
.. [3] Friston KJ, Fletcher P, Josephs O, Holmes A, Rugg MD, Turner R (1998).
   Event-related fMRI: characterizing differential responses. NeuroImage 7(1):30-40.
.. [4] Hoerl AE, Kennard RW (1970). Ridge regression: biased estimation for
   nonorthogonal problems. Technometrics 12(1):55-67.
.. [5] Glover GH (1999). Deconvolution of impulse response in event-related BOLD fMRI.
   NeuroImage 9(4):416-429.
.. [6] de Munck JC, Gonçalves SI, Huijboom L, et al. (2007). The hemodynamic response of
   the alpha rhythm: an EEG/fMRI study. NeuroImage 35(3):1142-1151.
.. [7] Burman P, Chow E, Nolan D (1994). A cross-validatory method for dependent data.
   Biometrika 81(2):351-358.
.. [8] Roberts DR, Bahn V, Ciuti S, et al. (2017). Cross-validation strategies for data
   with temporal, spatial, hierarchical, or phylogenetic structure. Ecography
   40(8):913-929.
.. [9] Hastie T, Tibshirani R, Friedman J (2009). The Elements of Statistical Learning,
   2nd ed., section 7.10. Springer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln

from bids_neurobolt.errors import DataError
from bids_neurobolt.train.metrics import metrics_table
from bids_neurobolt.train.splits import Split
from bids_neurobolt.train.windows import WindowStack, take_windows

#: EEG bands (Hz) of the baselines' regressors.
BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}

#: Ridge penalties tried, relative to ``trace(Z'Z) / min(n, p)`` of the standardised
#: training features ``Z`` (``n`` when there are no more features than windows): from
#: almost no shrinkage (1e-3) to shrinking everything (1e6).
ALPHAS: tuple[float, ...] = tuple(np.logspace(-3, 6, 37).tolist())

#: Contiguous blocks of training windows of the penalty's cross-validation.
N_FOLDS = 5

#: Windows left out on each side of a held-out block (16 s windows at TR >= 2 s share
#: EEG with at most 7 neighbours on each side).
CV_GAP = 8

#: Feature kinds of :func:`baseline_features`.
FEATURE_KINDS: tuple[str, ...] = ("hrf", "fir")

FeatureKind = Literal["hrf", "fir"]

#: Rules of :func:`fit_ridge` turning cross-validated errors into a penalty.
PENALTY_RULES: tuple[str, ...] = ("1se", "min")

PenaltyRule = Literal["1se", "min"]

# Eigenvalues below this fraction of the largest are treated as zero (rank).
_RANK_TOL = 1e-10


def canonical_hrf(times: ArrayLike) -> NDArray[np.float64]:
    """SPM's canonical haemodynamic response (double gamma, peak ~5 s, undershoot ~15 s).

    Parameters
    ----------
    times : array-like
        Times after the neural event (s); negative times give 0.

    Returns
    -------
    numpy.ndarray
        ``g(t; 6) - g(t; 16) / 6`` with ``g`` the unit-scale gamma density.

    References
    ----------
    .. [1] Friston KJ, Fletcher P, Josephs O, et al. (1998). NeuroImage 7(1):30-40.
    """
    t = np.asarray(times, dtype=np.float64)
    out = np.zeros_like(t)
    pos = t > 0

    def gamma_pdf(shape: float) -> NDArray[np.float64]:
        return np.exp((shape - 1) * np.log(t[pos]) - t[pos] - gammaln(shape))

    out[pos] = gamma_pdf(6.0) - gamma_pdf(16.0) / 6.0
    return out


def hrf_weights(n_bins: int, bin_seconds: float) -> NDArray[np.float64]:
    """HRF and temporal-derivative weights of each bin of a window, ``(2, n_bins)``.

    Bin ``k`` (0 first) is centred ``(n_bins - k - 0.5) * bin_seconds`` before the volume.
    """
    lags = (n_bins - np.arange(n_bins) - 0.5) * bin_seconds
    hrf = canonical_hrf(lags)
    derivative = hrf - canonical_hrf(lags - 1.0)
    return np.stack([hrf / np.abs(hrf).sum(), derivative / np.abs(derivative).sum()])


def lag_weights(kind: FeatureKind, n_bins: int, bin_seconds: float) -> NDArray[np.float64]:
    """Weights turning the ``n_bins`` band powers of a window into its lag regressors.

    Parameters
    ----------
    kind : {"hrf", "fir"}
        ``"hrf"``: the canonical HRF and its derivative (:func:`hrf_weights`, 2 rows);
        ``"fir"``: the identity, one regressor per bin (``n_bins`` rows).
    n_bins : int
        Bins per window.
    bin_seconds : float
        Length of a bin (s).

    Returns
    -------
    numpy.ndarray, shape (n_lags, n_bins)

    Raises
    ------
    ValueError
        When ``kind`` is unknown.
    """
    if kind == "hrf":
        return hrf_weights(n_bins, bin_seconds)
    if kind == "fir":
        return np.eye(n_bins)
    raise ValueError(f"'kind' must be one of {FEATURE_KINDS}. Got {kind!r}.")


def baseline_features(
    windows: ArrayLike | WindowStack,
    *,
    kind: FeatureKind = "hrf",
    sfreq: float = 200.0,
    bin_seconds: float = 1.0,
    bands: dict[str, tuple[float, float]] | None = None,
    chunk: int = 256,
) -> NDArray[np.float64]:
    """Log band power of every window, channel and band, combined over the bins' lags.

    Each ``bin_seconds`` bin of each channel is Hann-tapered; its periodogram, averaged
    over each band's frequencies, gives the log band power, which :func:`lag_weights`
    combines over the bins of the window.

    Parameters
    ----------
    windows : array-like or WindowStack, shape (n_windows, n_channels, n_times)
        EEG windows (any amplitude unit; log power makes the unit an offset).
    kind : {"hrf", "fir"}
        ``"hrf"``: convolved with the canonical HRF and its temporal derivative (2 lag
        regressors); ``"fir"``: every bin's power (``n_times / (bin_seconds * sfreq)``
        lag regressors, the earliest bin first).
    sfreq : float
        Sampling rate (Hz).
    bin_seconds : float
        Length of the power bins (s); ``n_times`` must hold a whole number of them.
    bands : dict | None
        Band name to (low, high) Hz; :data:`BANDS` by default.
    chunk : int
        Windows processed at once (memory).

    Returns
    -------
    numpy.ndarray, shape (n_windows, n_channels * n_bands * n_lags)
        Features ordered channel, band, then lag regressor.

    Raises
    ------
    DataError
        When the windows do not hold whole bins or a band holds no frequency.

    References
    ----------
    .. [1] Goldman RI, Stern JM, Engel J, Cohen MS (2002). NeuroReport 13(18):2487-2492.
    .. [2] Glover GH (1999). NeuroImage 9(4):416-429.
    """
    bands = bands or BANDS
    n_windows, n_ch, n_times = windows.shape  # type: ignore[union-attr]
    bin_len = round(bin_seconds * sfreq)
    if bin_len < 2 or n_times % bin_len:
        raise DataError(
            f"windows of {n_times} samples do not hold whole {bin_seconds} s bins at {sfreq} Hz."
        )
    n_bins = n_times // bin_len
    weights = lag_weights(kind, n_bins, bin_seconds)  # (n_lags, n_bins)
    freqs = np.fft.rfftfreq(bin_len, 1.0 / sfreq)
    band_matrix = np.zeros((freqs.size, len(bands)))
    for j, (low, high) in enumerate(bands.values()):
        sel = (freqs >= low) & (freqs < high)
        if not sel.any():
            raise DataError(f"no frequency bin of {bin_seconds} s bins falls in {low}-{high} Hz.")
        band_matrix[sel, j] = 1.0 / sel.sum()
    taper = np.hanning(bin_len)
    out = np.empty((n_windows, n_ch, len(bands), weights.shape[0]))
    for start in range(0, n_windows, chunk):
        idx = np.arange(start, min(start + chunk, n_windows))
        x = take_windows(windows, idx).astype(np.float64)
        x = x.reshape(idx.size, n_ch, n_bins, bin_len)
        x = x - x.mean(axis=-1, keepdims=True)
        power = np.abs(np.fft.rfft(x * taper, axis=-1)) ** 2
        log_power = np.log(power @ band_matrix + 1e-12)  # (w, ch, bins, bands)
        out[idx] = np.einsum("wcbf,hb->wcfh", log_power, weights)
    return out.reshape(n_windows, -1)


def band_power_features(
    windows: ArrayLike | WindowStack,
    *,
    sfreq: float = 200.0,
    bin_seconds: float = 1.0,
    bands: dict[str, tuple[float, float]] | None = None,
    chunk: int = 256,
) -> NDArray[np.float64]:
    """HRF-convolved log band power: :func:`baseline_features` with ``kind="hrf"``.

    Parameters
    ----------
    windows : array-like or WindowStack, shape (n_windows, n_channels, n_times)
        EEG windows.
    sfreq : float
        Sampling rate (Hz).
    bin_seconds : float
        Length of the power bins (s).
    bands : dict | None
        Band name to (low, high) Hz; :data:`BANDS` by default.
    chunk : int
        Windows processed at once (memory).

    Returns
    -------
    numpy.ndarray, shape (n_windows, n_channels * n_bands * 2)
        Features ordered channel, band, then (HRF, derivative).
    """
    return baseline_features(
        windows, kind="hrf", sfreq=sfreq, bin_seconds=bin_seconds, bands=bands, chunk=chunk
    )


@dataclass
class RidgeModel:
    """Multi-output ridge regression with one penalty per output.

    Attributes
    ----------
    mean, scale : numpy.ndarray
        Feature standardisation (training statistics).
    intercept : numpy.ndarray, shape (n_outputs,)
    coef : numpy.ndarray, shape (n_features, n_outputs)
    alpha : numpy.ndarray, shape (n_outputs,)
        Chosen penalties (absolute, on the standardised features).
    penalties : numpy.ndarray, shape (n_penalties,)
        Penalties tried, ascending.
    cv_mse : numpy.ndarray, shape (n_penalties, n_outputs)
        Cross-validated mean squared error of each penalty and output.
    """

    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    intercept: NDArray[np.float64]
    coef: NDArray[np.float64]
    alpha: NDArray[np.float64]
    penalties: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    cv_mse: NDArray[np.float64] = field(default_factory=lambda: np.empty((0, 0)))

    def predict(self, features: ArrayLike) -> NDArray[np.float64]:
        """Predict ``(n_samples, n_outputs)``."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return z @ self.coef + self.intercept


def _as_2d(y: ArrayLike) -> NDArray[np.float64]:
    y = np.asarray(y, dtype=np.float64)
    return y[:, None] if y.ndim == 1 else y


def _ridge_path(
    zc: NDArray[np.float64], yc: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Thin SVD ``zc = U diag(s) Vt`` of centred features, returned as ``(s, Vt, U'yc)``.

    The ridge coefficients for penalty ``lam`` are ``Vt.T @ (s / (s**2 + lam) * U'yc)``.
    The decomposition comes from the eigenvectors of the smaller cross-product: ``Z'Z``
    (primal) when there are at least as many rows as features, else ``ZZ'`` (dual).
    Directions with eigenvalues below ``_RANK_TOL`` of the largest are dropped.
    """
    n, p = zc.shape
    gram = zc.T @ zc if n >= p else zc @ zc.T
    eig, vec = np.linalg.eigh(gram)
    top = eig[-1] if eig.size else 0.0
    keep = eig > _RANK_TOL * top if top > 0 else np.zeros(eig.size, dtype=bool)
    s, vec = np.sqrt(eig[keep]), vec[:, keep]
    if n >= p:
        return s, vec.T, (vec.T @ (zc.T @ yc)) / s[:, None]
    return s, (vec.T @ zc) / s[:, None], vec.T @ yc


def _path_sse(
    projected: NDArray[np.float64],
    s: NDArray[np.float64],
    uty: NDArray[np.float64],
    penalties: NDArray[np.float64],
    target: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Sum of squared errors ``(n_penalties, n_outputs)`` of ``projected @ coefficients``."""
    out = np.empty((penalties.size, target.shape[1]))
    for i, lam in enumerate(penalties):
        pred = projected @ ((s / (s**2 + lam))[:, None] * uty)
        out[i] = ((pred - target) ** 2).sum(axis=0)
    return out


def blocked_folds(
    n: int, n_folds: int = N_FOLDS, gap: int = CV_GAP
) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """Contiguous cross-validation blocks of ``n`` ordered rows, with a gap around each.

    Parameters
    ----------
    n : int
        Rows, in time order.
    n_folds : int
        Blocks (at most ``n``), of sizes differing by at most one.
    gap : int
        Rows left out of the fit on each side of the held-out block; reduced to
        ``(n - largest block) // 4`` when larger, so that every fit keeps at least half
        of the rows outside its block.

    Yields
    ------
    fit_rows, held_rows : numpy.ndarray of int
        Rows to fit on and rows to predict.

    References
    ----------
    .. [1] Burman P, Chow E, Nolan D (1994). Biometrika 81(2):351-358.
    """
    k = max(1, min(n_folds, n))
    edges = np.linspace(0, n, k + 1).round().astype(np.int64)
    gap = max(0, min(gap, (n - int(np.diff(edges).max())) // 4))
    rows = np.arange(n, dtype=np.int64)
    for start, stop in pairwise(edges):
        yield rows[(rows < start - gap) | (rows >= stop + gap)], rows[start:stop]


def _choose_penalty(
    cv_mse: NDArray[np.float64],
    fold_sse: Sequence[NDArray[np.float64]],
    fold_n: Sequence[int],
    rule: PenaltyRule,
) -> NDArray[np.int64]:
    """Index of each output's penalty: least error, or the largest within one SE of it."""
    n_pen, n_out = cv_mse.shape
    best = n_pen - 1 - np.argmin(cv_mse[::-1], axis=0)  # ties: the larger penalty
    if rule == "min" or len(fold_sse) < 2:
        return best
    fold_mse = np.stack(fold_sse) / np.asarray(fold_n, dtype=np.float64)[:, None, None]
    cols = np.arange(n_out)
    se = fold_mse[:, best, cols].std(axis=0, ddof=1) / np.sqrt(len(fold_sse))
    within = cv_mse <= cv_mse[best, cols] + se
    return n_pen - 1 - np.argmax(within[::-1], axis=0)


def fit_ridge(
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_val: ArrayLike | None = None,
    y_val: ArrayLike | None = None,
    *,
    alphas: Sequence[float] = ALPHAS,
    n_folds: int = N_FOLDS,
    gap: int = CV_GAP,
    rule: PenaltyRule = "1se",
) -> RidgeModel:
    """Fit ridge regression, choosing each output's penalty by blocked cross-validation.

    The rule:

    1. Features are standardised on the training rows (``Z``, ``n x p``). The penalties
       tried are ``alpha * trace(Z'Z) / min(n, p)`` for ``alpha`` in ``alphas``: the
       unit is the mean eigenvalue of ``Z'Z`` over ``min(n, p)`` directions (``n``
       when ``p <= n`` and no feature is constant), so ``alpha = 1e6`` shrinks every
       coefficient almost to zero.
    2. The training rows, taken in their order (time), are cut into ``n_folds``
       contiguous blocks. Each block is predicted by a ridge fitted on the training
       rows more than ``gap`` rows away from it (:func:`blocked_folds`), with its own
       centring, for every penalty.
    3. Each output's squared errors are summed over the blocks; with validation rows,
       the squared errors of the fit on all training rows are added, so validation
       counts in proportion to its size (a handful of windows cannot decide alone).
    4. Each output takes the largest penalty whose mean squared error is within one
       standard error (over the blocks, at the best penalty) of the least one: the
       "one-standard-error rule" (``rule="1se"``), which keeps flat, noisy error
       curves (targets the features do not predict) from choosing a small penalty by
       chance; ``rule="min"`` takes the least error. The ridge is then refitted on all
       training rows.

    Every fit uses one eigendecomposition of the smaller cross-product (``Z'Z`` or
    ``ZZ'``), so many features (``p > n``) stay cheap.

    Parameters
    ----------
    x_train, y_train : array-like
        Training features ``(n, p)`` and targets ``(n,)`` or ``(n, k)``, rows in time
        order.
    x_val, y_val : array-like | None
        Validation features and targets, added to the choice of penalty.
    alphas : sequence of float
        Relative penalties tried (positive).
    n_folds : int
        Cross-validation blocks (at least 2).
    gap : int
        Rows left out on each side of a held-out block (0 or more).
    rule : {"1se", "min"}
        How the errors choose the penalty (step 4).

    Returns
    -------
    RidgeModel

    Raises
    ------
    DataError
        With fewer than 3 training rows.
    ValueError
        When ``alphas``, ``n_folds``, ``gap`` or ``rule`` are invalid.

    References
    ----------
    .. [1] Hoerl AE, Kennard RW (1970). Technometrics 12(1):55-67.
    .. [2] Burman P, Chow E, Nolan D (1994). Biometrika 81(2):351-358.
    .. [3] Hastie T, Tibshirani R, Friedman J (2009). The Elements of Statistical
       Learning, 2nd ed., sections 3.4.1 and 7.10. Springer.
    """
    relative = np.sort(np.asarray(alphas, dtype=np.float64))
    if relative.size == 0 or not np.all(relative > 0):
        raise ValueError(f"'alphas' must be positive numbers. Got {alphas!r}.")
    if n_folds < 2:
        raise ValueError(f"'n_folds' must be at least 2. Got {n_folds!r}.")
    if gap < 0:
        raise ValueError(f"'gap' must be 0 or more. Got {gap!r}.")
    if rule not in PENALTY_RULES:
        raise ValueError(f"'rule' must be one of {PENALTY_RULES}. Got {rule!r}.")
    x = np.asarray(x_train, dtype=np.float64)
    y = _as_2d(y_train)
    n, p = x.shape
    if n < 3:
        raise DataError(f"ridge regression needs at least 3 training rows; got {n}.")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    y_mean = y.mean(axis=0)
    s, vt, uty = _ridge_path(z, y - y_mean)
    unit = float((s**2).sum()) / min(n, p)
    penalties = relative * (unit if unit > 0 else 1.0)
    fold_sse, fold_n = [], []
    for fit_rows, held in blocked_folds(n, n_folds, gap):
        if fit_rows.size < 2:
            continue
        z_mean, yf_mean = z[fit_rows].mean(axis=0), y[fit_rows].mean(axis=0)
        fs, fvt, futy = _ridge_path(z[fit_rows] - z_mean, y[fit_rows] - yf_mean)
        projected = (z[held] - z_mean) @ fvt.T
        fold_sse.append(_path_sse(projected, fs, futy, penalties, y[held] - yf_mean))
        fold_n.append(held.size)
    sse = np.sum(fold_sse, axis=0) if fold_sse else np.zeros((penalties.size, y.shape[1]))
    count = sum(fold_n)
    if x_val is not None and y_val is not None and len(x_val) > 0:  # type: ignore[arg-type]
        zv = (np.asarray(x_val, dtype=np.float64) - mean) / scale
        yv = _as_2d(y_val)
        sse = sse + _path_sse(zv @ vt.T, s, uty, penalties, yv - y_mean)
        count += zv.shape[0]
    cv_mse = sse / max(count, 1)
    best = _choose_penalty(cv_mse, fold_sse, fold_n, rule)
    alpha = penalties[best]
    coef = vt.T @ ((s[:, None] / (s[:, None] ** 2 + alpha[None, :])) * uty)
    return RidgeModel(
        mean=mean,
        scale=scale,
        intercept=y_mean,
        coef=coef,
        alpha=alpha,
        penalties=penalties,
        cv_mse=cv_mse,
    )


def baseline_predictions(
    features: ArrayLike,
    targets: ArrayLike,
    train_idx: ArrayLike,
    val_idx: ArrayLike | None = None,
    *,
    alphas: Sequence[float] = ALPHAS,
    n_folds: int = N_FOLDS,
    gap: int = CV_GAP,
) -> NDArray[np.float32]:
    """Fit the ridge on some windows and predict every window.

    With features computed once per run (:func:`baseline_features`), this predicts the
    held-out windows of each fold of a cross-validation, e.g. ``train_idx`` every window
    outside (and a gap away from) test block ``i``.

    Parameters
    ----------
    features : array-like, shape (n_windows, n_features)
        Features of every window.
    targets : array-like, shape (n_windows,) or (n_windows, n_rois)
        Targets of every window (only the training and validation rows are read).
    train_idx : array-like of int
        Training windows, in time order.
    val_idx : array-like of int | None
        Validation windows, added to the choice of penalty (:func:`fit_ridge`).
    alphas, n_folds, gap
        As in :func:`fit_ridge`.

    Returns
    -------
    numpy.ndarray of float32, shape (n_windows, n_rois)
        Predictions for every window.
    """
    x = np.asarray(features)
    y = _as_2d(targets)
    train = np.asarray(train_idx, dtype=np.int64)
    val = np.asarray([] if val_idx is None else val_idx, dtype=np.int64)
    model = fit_ridge(x[train], y[train], x[val], y[val], alphas=alphas, n_folds=n_folds, gap=gap)
    return model.predict(x).astype(np.float32)


@dataclass
class BaselineResult:
    """Outcome of :func:`ridge_baseline` or :func:`fir_ridge_baseline`.

    Attributes
    ----------
    predictions : numpy.ndarray, shape (n_windows, n_rois)
        Predictions for every window.
    metrics : pandas.DataFrame
        ``roi``, ``split``, ``n``, ``<prefix>pearson_r``, ``<prefix>mse`` (prefix
        ``baseline_`` for the HRF ridge and ``fir_`` for the FIR ridge by default).
    model : RidgeModel
        The fitted regression.
    """

    predictions: NDArray[np.float32]
    metrics: pd.DataFrame
    model: RidgeModel


def _baseline(
    kind: FeatureKind,
    windows: ArrayLike | WindowStack,
    targets: ArrayLike,
    split: Split,
    *,
    roi_names: Sequence[str] | None,
    sfreq: float,
    prefix: str,
    n_folds: int,
    gap: int,
) -> BaselineResult:
    y = _as_2d(targets)
    if split.train.size < 3:
        raise DataError(f"the {kind} ridge baseline needs at least 3 training windows.")
    features = baseline_features(windows, kind=kind, sfreq=sfreq)
    model = fit_ridge(
        features[split.train],
        y[split.train],
        features[split.val],
        y[split.val],
        n_folds=n_folds,
        gap=gap,
    )
    predictions = model.predict(features).astype(np.float32)
    names = list(roi_names) if roi_names is not None else [f"roi{i}" for i in range(y.shape[1])]
    sets = {"train": split.train, "val": split.val, "test": split.test}
    metrics = metrics_table(y, predictions, sets, names, prefix=prefix)
    return BaselineResult(predictions=predictions, metrics=metrics, model=model)


def ridge_baseline(
    windows: ArrayLike | WindowStack,
    targets: ArrayLike,
    split: Split,
    *,
    roi_names: Sequence[str] | None = None,
    sfreq: float = 200.0,
    prefix: str = "baseline_",
    n_folds: int = N_FOLDS,
    gap: int = CV_GAP,
) -> BaselineResult:
    """Train and evaluate the HRF-convolved band-power ridge on the NeuroBOLT split.

    Parameters
    ----------
    windows : array-like or WindowStack, shape (n_windows, n_channels, n_times)
        The model's windows.
    targets : array-like, shape (n_windows, n_rois)
        Scaled ROI targets.
    split : Split
        Train/validation/test windows; the penalty is chosen by blocked
        cross-validation on the training windows, with the validation windows added
        (:func:`fit_ridge`).
    roi_names : sequence of str | None
        Names for the metrics table.
    sfreq : float
        Sampling rate (Hz).
    prefix : str
        Prefix of the metric columns.
    n_folds, gap : int
        Blocks and gap (windows) of the penalty's cross-validation.

    Returns
    -------
    BaselineResult

    References
    ----------
    .. [1] Goldman RI, Stern JM, Engel J, Cohen MS (2002). NeuroReport 13(18):2487-2492.
    .. [2] Hoerl AE, Kennard RW (1970). Technometrics 12(1):55-67.
    """
    return _baseline(
        "hrf", windows, targets, split, roi_names=roi_names, sfreq=sfreq, prefix=prefix,
        n_folds=n_folds, gap=gap,
    )  # fmt: skip


def fir_ridge_baseline(
    windows: ArrayLike | WindowStack,
    targets: ArrayLike,
    split: Split,
    *,
    roi_names: Sequence[str] | None = None,
    sfreq: float = 200.0,
    prefix: str = "fir_",
    n_folds: int = N_FOLDS,
    gap: int = CV_GAP,
) -> BaselineResult:
    """Train and evaluate the FIR band-power ridge (every bin's power a regressor).

    No HRF shape or delay is assumed: each channel's and band's log power in every 1 s
    bin of the window is a regressor (``n_channels x 5 x 16`` for 16 s windows), and the
    ridge learns each ROI's response over the lags.

    Parameters
    ----------
    windows : array-like or WindowStack, shape (n_windows, n_channels, n_times)
        The model's windows.
    targets : array-like, shape (n_windows, n_rois)
        Scaled ROI targets.
    split : Split
        Train/validation/test windows, used as in :func:`ridge_baseline`.
    roi_names : sequence of str | None
        Names for the metrics table.
    sfreq : float
        Sampling rate (Hz).
    prefix : str
        Prefix of the metric columns.
    n_folds, gap : int
        Blocks and gap (windows) of the penalty's cross-validation.

    Returns
    -------
    BaselineResult

    References
    ----------
    .. [1] Glover GH (1999). NeuroImage 9(4):416-429.
    .. [2] de Munck JC, Gonçalves SI, Huijboom L, et al. (2007). NeuroImage
       35(3):1142-1151.
    """
    return _baseline(
        "fir", windows, targets, split, roi_names=roi_names, sfreq=sfreq, prefix=prefix,
        n_folds=n_folds, gap=gap,
    )  # fmt: skip
