"""Classic EEG-informed fMRI baseline: ridge regression on HRF-convolved band power.

For every window (the 16 s of EEG before a volume), each channel's log band power
(delta 1-4, theta 4-8, alpha 8-13, beta 13-30, gamma 30-45 Hz) is computed in 1 s bins
(Hann-tapered periodogram), then convolved with the canonical haemodynamic response
and its temporal derivative evaluated at each bin's lag before the volume. These
``n_channels x 5 x 2`` regressors, standardised on the training windows, enter a
multi-output ridge regression whose penalty is chosen per ROI on the validation
windows (by leave-one-out on the training windows when there are none). It uses
exactly the windows and split of the NeuroBOLT model, so the two are comparable.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln

from bids_neurobolt.errors import DataError
from bids_neurobolt.train.metrics import metrics_table
from bids_neurobolt.train.splits import Split
from bids_neurobolt.train.windows import WindowStack, take_windows

#: EEG bands (Hz) of the baseline's regressors.
BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 45.0),
}

#: Ridge penalties tried, relative to the number of training windows.
ALPHAS: tuple[float, ...] = tuple(np.logspace(-3, 4, 15).tolist())


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


def band_power_features(
    windows: ArrayLike | WindowStack,
    *,
    sfreq: float = 200.0,
    bin_seconds: float = 1.0,
    bands: dict[str, tuple[float, float]] | None = None,
    chunk: int = 256,
) -> NDArray[np.float64]:
    """HRF-convolved log band power of every window, channel and band.

    Parameters
    ----------
    windows : array-like, shape (n_windows, n_channels, n_times)
        EEG windows (any amplitude unit; log power makes the unit an offset).
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
    numpy.ndarray, shape (n_windows, n_channels * n_bands * 2)
        Features ordered channel, band, then (HRF, derivative).
    """
    bands = bands or BANDS
    n_windows, n_ch, n_times = windows.shape  # type: ignore[union-attr]
    bin_len = round(bin_seconds * sfreq)
    if bin_len < 2 or n_times % bin_len:
        raise DataError(
            f"windows of {n_times} samples do not hold whole {bin_seconds} s bins at {sfreq} Hz."
        )
    n_bins = n_times // bin_len
    freqs = np.fft.rfftfreq(bin_len, 1.0 / sfreq)
    band_matrix = np.zeros((freqs.size, len(bands)))
    for j, (low, high) in enumerate(bands.values()):
        sel = (freqs >= low) & (freqs < high)
        if not sel.any():
            raise DataError(f"no frequency bin of {bin_seconds} s bins falls in {low}-{high} Hz.")
        band_matrix[sel, j] = 1.0 / sel.sum()
    taper = np.hanning(bin_len)
    weights = hrf_weights(n_bins, bin_seconds)  # (2, n_bins)
    out = np.empty((n_windows, n_ch, len(bands), 2))
    for start in range(0, n_windows, chunk):
        idx = np.arange(start, min(start + chunk, n_windows))
        x = take_windows(windows, idx).astype(np.float64)
        x = x.reshape(idx.size, n_ch, n_bins, bin_len)
        x = x - x.mean(axis=-1, keepdims=True)
        power = np.abs(np.fft.rfft(x * taper, axis=-1)) ** 2
        log_power = np.log(power @ band_matrix + 1e-12)  # (w, ch, bins, bands)
        out[idx] = np.einsum("wcbf,hb->wcfh", log_power, weights)
    return out.reshape(n_windows, -1)


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
        Chosen penalties.
    """

    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    intercept: NDArray[np.float64]
    coef: NDArray[np.float64]
    alpha: NDArray[np.float64]

    def predict(self, features: ArrayLike) -> NDArray[np.float64]:
        """Predict ``(n_samples, n_outputs)``."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return z @ self.coef + self.intercept


def fit_ridge(
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_val: ArrayLike | None = None,
    y_val: ArrayLike | None = None,
    *,
    alphas: Sequence[float] = ALPHAS,
) -> RidgeModel:
    """Fit ridge regression, choosing each output's penalty on validation data.

    Penalties are ``alpha * n_train`` for ``alpha`` in ``alphas``. Without validation
    data each output's penalty minimises the leave-one-out error on the training data.

    Parameters
    ----------
    x_train, y_train : array-like
        Training features ``(n, p)`` and targets ``(n, k)``.
    x_val, y_val : array-like | None
        Validation features and targets.
    alphas : sequence of float
        Relative penalties tried.

    Returns
    -------
    RidgeModel

    References
    ----------
    .. [1] Hoerl AE, Kennard RW (1970). Technometrics 12(1):55-67.
    """
    x = np.asarray(x_train, dtype=np.float64)
    y = np.asarray(y_train, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    y_mean = y.mean(axis=0)
    u, s, vt = np.linalg.svd(z, full_matrices=False)
    uty = u.T @ (y - y_mean)  # (r, k)
    penalties = np.asarray(alphas, dtype=np.float64) * x.shape[0]
    # coef(alpha) = V diag(s / (s^2 + alpha)) U^T y
    shrink = s[None, :] / (s[None, :] ** 2 + penalties[:, None])  # (a, r)
    have_val = x_val is not None and y_val is not None and len(x_val) > 0  # type: ignore[arg-type]
    if have_val:
        zv = (np.asarray(x_val, dtype=np.float64) - mean) / scale
        yv = np.asarray(y_val, dtype=np.float64)
        yv = yv[:, None] if yv.ndim == 1 else yv
        zv_v = zv @ vt.T  # (m, r)
        errors = np.stack(
            [(((zv_v * sh) @ uty + y_mean - yv) ** 2).mean(axis=0) for sh in shrink]
        )  # (a, k)
    else:
        hat_weights = s[None, :] * shrink  # s^2 / (s^2 + alpha)
        errors = []
        for hw in hat_weights:
            fitted = u @ (hw[:, None] * uty)
            leverage = (u**2) @ hw + 1.0 / x.shape[0]
            resid = (y - y_mean - fitted) / (1.0 - leverage)[:, None]
            errors.append((resid**2).mean(axis=0))
        errors = np.stack(errors)
    best = np.argmin(errors, axis=0)  # (k,)
    coef = np.stack([vt.T @ (shrink[a] * uty[:, j]) for j, a in enumerate(best)], axis=1)
    return RidgeModel(mean=mean, scale=scale, intercept=y_mean, coef=coef, alpha=penalties[best])


@dataclass
class BaselineResult:
    """Outcome of :func:`ridge_baseline`.

    Attributes
    ----------
    predictions : numpy.ndarray, shape (n_windows, n_rois)
        Predictions for every window.
    metrics : pandas.DataFrame
        ``roi``, ``split``, ``n``, ``baseline_pearson_r``, ``baseline_mse``.
    model : RidgeModel
        The fitted regression.
    """

    predictions: NDArray[np.float32]
    metrics: pd.DataFrame
    model: RidgeModel


def ridge_baseline(
    windows: ArrayLike | WindowStack,
    targets: ArrayLike,
    split: Split,
    *,
    roi_names: Sequence[str] | None = None,
    sfreq: float = 200.0,
) -> BaselineResult:
    """Train and evaluate the band-power ridge baseline on the NeuroBOLT split.

    Parameters
    ----------
    windows : array-like, shape (n_windows, n_channels, n_times)
        The model's windows.
    targets : array-like, shape (n_windows, n_rois)
        Scaled ROI targets.
    split : Split
        Train/validation/test windows (validation chooses the penalty).
    roi_names : sequence of str | None
        Names for the metrics table.
    sfreq : float
        Sampling rate (Hz).

    Returns
    -------
    BaselineResult
    """
    y = np.asarray(targets, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y
    if split.train.size < 3:
        raise DataError("the ridge baseline needs at least 3 training windows.")
    features = band_power_features(windows, sfreq=sfreq)
    model = fit_ridge(features[split.train], y[split.train], features[split.val], y[split.val])
    predictions = model.predict(features).astype(np.float32)
    names = list(roi_names) if roi_names is not None else [f"roi{i}" for i in range(y.shape[1])]
    sets = {"train": split.train, "val": split.val, "test": split.test}
    metrics = metrics_table(y, predictions, sets, names, prefix="baseline_")
    return BaselineResult(predictions=predictions, metrics=metrics, model=model)
