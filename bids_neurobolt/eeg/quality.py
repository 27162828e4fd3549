"""Artifact-residual and signal metrics of a cleaned recording.

Pure functions on arrays (µV), used for the ``desc-clean_quality.json`` of every run and
for the benchmarks:

- :func:`welch_psd` and :func:`harmonic_power`: power at the slice and volume
  frequencies and their harmonics (the FFT index of Niazy et al. 2005, measured in a
  band of +-``half_width`` Hz because the artifact drifts and leaks);
- :func:`band_powers`: power in Allen's bands (0.8-4, 4-8, 8-12, 12-24 Hz; Allen et al.
  2000 compared them with EEG recorded outside the scanner);
- :func:`beat_locked_rms`: RMS of the average over heartbeats (what is left of the
  BCG), with :func:`random_locked_rms` as the floor that EEG alone gives;
- :func:`compare_to_truth`: correlation and RMS error against a known clean EEG
  (simulations), band-passed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft
from numpy.typing import NDArray

from bids_neurobolt.eeg.preprocess import filter_data

#: Allen et al. (2000) frequency bands (Hz).
ALLEN_BANDS: dict[str, tuple[float, float]] = {
    "delta": (0.8, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 12.0),
    "beta": (12.0, 24.0),
}


def welch_psd(
    data: NDArray[np.floating],
    sfreq: float,
    *,
    segment: float = 4.0,
    overlap: float = 0.5,
    fmax: float | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Power spectral density per channel (Welch: Hann windows, mean of periodograms).

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Signals (µV).
    sfreq : float
        Sampling rate (Hz).
    segment : float
        Window length (s); the frequency resolution is ``1 / segment``.
    overlap : float
        Overlap of consecutive windows (0 to < 1).
    fmax : float | None
        Keep frequencies up to this one.

    Returns
    -------
    freqs : ndarray, shape (n_freqs,)
    psd : ndarray, shape (n_channels, n_freqs)
        One-sided, µV²/Hz.

    References
    ----------
    .. [1] Welch P (1967). The use of fast Fourier transform for the estimation of power
           spectra. IEEE Trans Audio Electroacoust 15:70-73.
    """
    x = np.asarray(data, dtype=np.float32)
    nperseg = max(2, min(round(segment * sfreq), x.shape[-1]))
    step = max(1, round(nperseg * (1.0 - overlap)))
    starts = np.arange(0, x.shape[-1] - nperseg + 1, step)
    freqs = np.fft.rfftfreq(nperseg, 1.0 / sfreq)
    keep = freqs <= (fmax if fmax is not None else freqs[-1])
    window = np.hanning(nperseg + 2)[1:-1].astype(np.float32)
    scale = 1.0 / (sfreq * float(np.sum(window.astype(np.float64) ** 2)))
    psd = np.zeros((x.shape[0], int(keep.sum())), dtype=np.float64)
    view = np.lib.stride_tricks.sliding_window_view(x, nperseg, axis=-1)
    for first in range(0, starts.size, 16):  # bounded memory: 16 segments at a time
        segments = view[:, starts[first : first + 16]] * window
        segments -= segments.mean(axis=-1, keepdims=True) * window
        spectrum = scipy.fft.rfft(segments, axis=-1, workers=2)[..., keep]
        psd += (np.abs(spectrum) ** 2).sum(axis=1)
    psd *= scale / max(starts.size, 1)
    psd[:, 1:] *= 2.0
    if nperseg % 2 == 0 and keep[-1]:
        psd[:, -1] /= 2.0
    return freqs[keep], psd


def harmonic_power(
    freqs: NDArray[np.float64],
    psd: NDArray[np.float64],
    fundamental: float,
    *,
    n_harmonics: int = 5,
    half_width: float = 0.25,
    fmax: float | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Power (µV²) within ``half_width`` Hz of each harmonic of ``fundamental``.

    Parameters
    ----------
    freqs, psd : ndarray
        From :func:`welch_psd`.
    fundamental : float
        Slice or volume frequency (Hz).
    n_harmonics : int
        Harmonics measured (1 = the fundamental).
    half_width : float
        Half width of the band integrated around each harmonic (Hz).
    fmax : float | None
        Ignore harmonics above this frequency.

    Returns
    -------
    harmonics : ndarray, shape (n,)
        Frequencies measured (Hz).
    power : ndarray, shape (n_channels, n)
        µV².

    References
    ----------
    .. [1] Niazy RK et al. (2005). NeuroImage 28:720-737.
    """
    top = min(freqs[-1], fmax) if fmax is not None else freqs[-1]
    harmonics = fundamental * np.arange(1, n_harmonics + 1)
    harmonics = harmonics[harmonics + half_width <= top]
    step = freqs[1] - freqs[0] if freqs.size > 1 else 1.0
    power = (
        np.stack(
            [psd[:, np.abs(freqs - h) <= half_width + 1e-9].sum(axis=1) * step for h in harmonics],
            axis=1,
        )
        if harmonics.size
        else np.zeros((psd.shape[0], 0))
    )
    return harmonics, power


def band_powers(
    freqs: NDArray[np.float64], psd: NDArray[np.float64], bands: dict[str, tuple[float, float]]
) -> dict[str, NDArray[np.float64]]:
    """Power (µV²) per channel in each band ``[lo, hi)``."""
    step = freqs[1] - freqs[0] if freqs.size > 1 else 1.0
    return {
        name: psd[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) * step
        for name, (lo, hi) in bands.items()
    }


def beat_locked_rms(
    data: NDArray[np.floating],
    sfreq: float,
    beats: NDArray[np.floating],
    *,
    window: tuple[float, float] = (0.0, 0.8),
) -> NDArray[np.float64]:
    """RMS over time of the average of ``window`` (s) around each beat, per channel.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Signals (µV), e.g. EEG before or after BCG removal.
    sfreq : float
        Sampling rate (Hz).
    beats : array
        Beat positions in samples at ``sfreq``.
    window : tuple of float
        Start and end of the epoch relative to each beat (s).

    Returns
    -------
    ndarray, shape (n_channels,)
        µV; NaN with fewer than two complete epochs.

    References
    ----------
    .. [1] Allen PJ et al. (1998). NeuroImage 8:229-239.
    """
    average = beat_average(data, sfreq, beats, window=window)
    if average is None:
        return np.full(data.shape[0], np.nan)
    average -= average.mean(axis=1, keepdims=True)
    return np.sqrt((average**2).mean(axis=1))


def beat_average(
    data: NDArray[np.floating],
    sfreq: float,
    beats: NDArray[np.floating],
    *,
    window: tuple[float, float] = (0.0, 0.8),
) -> NDArray[np.float64] | None:
    """Average of ``window`` (s) around each beat, per channel (the BCG template).

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Signals (µV).
    sfreq : float
        Sampling rate (Hz).
    beats : array
        Beat positions in samples at ``sfreq``.
    window : tuple of float
        Start and end of the epoch relative to each beat (s).

    Returns
    -------
    ndarray, shape (n_channels, n_times) | None
        The average epoch; None with fewer than two complete epochs.
    """
    lo, hi = round(window[0] * sfreq), round(window[1] * sfreq)
    starts = np.round(np.asarray(beats, dtype=np.float64)).astype(np.int64) + lo
    starts = starts[(starts >= 0) & (starts + (hi - lo) <= data.shape[-1])]
    if starts.size < 2:
        return None
    view = np.lib.stride_tricks.sliding_window_view(data, hi - lo, axis=-1)
    return view[:, starts].mean(axis=1, dtype=np.float64)


def random_locked_rms(
    data: NDArray[np.floating],
    sfreq: float,
    n_beats: int,
    *,
    window: tuple[float, float] = (0.0, 0.8),
    seed: int = 0,
) -> NDArray[np.float64]:
    """:func:`beat_locked_rms` at ``n_beats`` random positions: the EEG-only floor."""
    rng = np.random.default_rng(seed)
    span = round((window[1] - window[0]) * sfreq)
    lo = -round(window[0] * sfreq)
    positions = rng.integers(max(lo, 0), max(data.shape[-1] - span + lo, lo + 1), max(n_beats, 2))
    return beat_locked_rms(data, sfreq, positions, window=window)


def compare_to_truth(
    cleaned: NDArray[np.floating],
    truth: NDArray[np.floating],
    sfreq: float,
    *,
    band: tuple[float, float] = (1.0, 40.0),
    span: tuple[int, int] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Correlation and RMS error of each channel against the ground truth, band-passed.

    Parameters
    ----------
    cleaned, truth : ndarray, shape (n_channels, n_samples)
        Cleaned and true clean EEG at the same rate (µV).
    sfreq : float
        Sampling rate (Hz).
    band : tuple of float
        Band-pass applied to both first (Hz).
    span : tuple of int | None
        Samples ``[start, stop)`` compared (after filtering the whole signals).

    Returns
    -------
    correlation : ndarray, shape (n_channels,)
    rmse : ndarray, shape (n_channels,)
        µV.
    """
    a = filter_data(cleaned, sfreq, l_freq=band[0], h_freq=band[1]).astype(np.float64)
    b = filter_data(truth, sfreq, l_freq=band[0], h_freq=band[1]).astype(np.float64)
    if span is not None:
        a, b = a[:, span[0] : span[1]], b[:, span[0] : span[1]]
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    corr = (a * b).sum(axis=1) / np.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1) + 1e-30)
    rmse = np.sqrt(((a - b) ** 2).mean(axis=1))
    return corr, rmse


def decibels(ratio: NDArray[np.floating]) -> NDArray[np.float64]:
    """``10 log10(ratio)``, with zero ratios mapped to -inf-safe -300 dB."""
    return 10.0 * np.log10(np.maximum(np.asarray(ratio, dtype=np.float64), 1e-30))


def summary(values: NDArray[np.floating], digits: int = 4) -> dict[str, Any]:
    """Median, minimum and maximum over channels (JSON-ready, NaN as None)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"median": None, "min": None, "max": None}
    return {
        "median": round(float(np.median(v)), digits),
        "min": round(float(v.min()), digits),
        "max": round(float(v.max()), digits),
    }
