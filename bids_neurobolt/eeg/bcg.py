"""Ballistocardiogram (pulse artifact) removal: R-peaks, then beat-locked optimal basis sets.

Every heartbeat moves the head and the blood in the static field, inducing on each EEG
channel a waveform 0.1-0.7 s after the R-peak that is as large as alpha. This module

1. finds the R-peaks on the gradient-corrected ECG (:func:`detect_r_peaks`): QRS energy
   (8-30 Hz, where the QRS dominates the magnetohydrodynamic T wave), an adaptive
   threshold, the ECG's polarity from the beats themselves (inverted leads are common
   in the scanner), sub-sample refinement against the average QRS, and RR-interval
   repair (extra detections removed, missed beats searched again or interpolated);
2. without a usable ECG, derives a cardiac reference from the EEG
   (:func:`eeg_cardiac_reference`): the spatial filter of the 1-10 Hz EEG whose output
   repeats best at the cardiac period (periodic component analysis), whose peaks then
   stand in for R-peaks;
3. removes the BCG per channel with an optimal basis set (:func:`remove_bcg`): the
   beat-locked mean, its time derivative (pulse-delay changes) and the leading principal
   components of the beats that are locked to the heartbeat (see
   :class:`BCGParams`), fitted to every beat by least squares together with an offset
   and a slope (which are not removed, so slow EEG is kept), cross-faded between
   neighbouring beats.

All channels are fitted at once (batched linear algebra, no loop over channels).

References
----------
.. [1] Allen PJ, Polizzi G, Krakow K, Fish DR, Lemieux L (1998). Identification of EEG
       events in the MR scanner: the problem of pulse artifact and a method for its
       subtraction. NeuroImage 8:229-239.
.. [2] Niazy RK, Beckmann CF, Iannetti GD, Brady JM, Smith SM (2005). Removal of FMRI
       environment artifacts from EEG data using optimal basis sets. NeuroImage
       28:720-737.
.. [3] Pan J, Tompkins WJ (1985). A real-time QRS detection algorithm. IEEE Trans Biomed
       Eng 32:230-236.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import scipy.signal
import scipy.sparse
from numpy.typing import NDArray

from bids_neurobolt.eeg.gradient import top_components
from bids_neurobolt.eeg.preprocess import filter_data

logger = logging.getLogger(__name__)

#: Physiological RR bounds (s) for a heartbeat.
MIN_RR, MAX_RR = 0.33, 2.0

_QRS_BAND = (8.0, 30.0)
_LOCATE_BAND = (1.0, 40.0)
_EEG_CARDIAC_BAND = (1.0, 10.0)


@dataclass(frozen=True)
class BCGParams:
    """Settings of the BCG removal.

    Attributes
    ----------
    n_components : int
        Most principal components of the beats fitted with the mean beat and its
        derivative (Niazy: 3-4).
    auto_components : bool
        Keep only components that carry more beat-locked variance than ``auto_ratio``
        times the strongest component of epochs not locked to the heartbeat (when the
        BCG varies less from beat to beat than the EEG does, fitting components removes
        EEG, not artifact).
    auto_ratio : float
        Threshold of the automatic choice.
    shrink : bool
        Shrink each beat's fitted coefficients towards their mean over beats by their
        reliability (their beat-to-beat spread beyond what EEG alone gives), so that
        the fit follows real beat-to-beat changes but not the EEG.
    before, after : float
        Each beat's epoch spans ``before`` to ``after`` times the longest covered RR
        interval around its R-peak (before: the end of the previous beat's BCG).
    max_rr_ratio : float
        Longest RR interval covered by an epoch, relative to the median.
    crossfade : float
        Seconds over which neighbouring beats' fits are blended.
    max_beats_pca : int
        Beats (evenly spread) used to estimate the components.
    """

    n_components: int = 4
    auto_components: bool = True
    auto_ratio: float = 1.5
    shrink: bool = True
    before: float = 0.25
    after: float = 0.75
    max_rr_ratio: float = 1.5
    crossfade: float = 0.04
    max_beats_pca: int = 400

    def __post_init__(self) -> None:
        if self.n_components < 0:
            raise ValueError("n_components must be >= 0")
        if self.before < 0 or self.after <= 0:
            raise ValueError("before must be >= 0 and after > 0")


@dataclass(frozen=True)
class HeartBeats:
    """Heartbeat times found on a cardiac reference.

    Attributes
    ----------
    samples : ndarray of float64
        Beat positions in (fractional) samples at ``sfreq``, sorted.
    sfreq : float
        Sampling rate of ``samples`` (Hz).
    source : str
        ``"ecg"`` (R-peaks) or ``"eeg"`` (peaks of an EEG-derived pulse component).
    polarity : int
        +1, or -1 for an inverted ECG (or component).
    n_removed : int
        Detections dropped as too close to a neighbour.
    n_inserted : int
        Beats interpolated into gaps where none was detected.
    """

    samples: NDArray[np.float64]
    sfreq: float
    source: str
    polarity: int = 1
    n_removed: int = 0
    n_inserted: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rr(self) -> NDArray[np.float64]:
        """RR intervals in seconds."""
        return np.diff(self.samples) / self.sfreq

    @property
    def heart_rate(self) -> float:
        """Median heart rate (beats per minute)."""
        rr = self.rr
        return float(60.0 / np.median(rr)) if rr.size else float("nan")

    def describe(self) -> dict[str, Any]:
        """Return the facts recorded in the quality file."""
        rr = self.rr
        return {
            "cardiac_reference": self.source,
            "n_beats": int(self.samples.size),
            "heart_rate_bpm": round(self.heart_rate, 2),
            "rr_sd_s": round(float(np.std(rr)), 4) if rr.size else None,
            "polarity": self.polarity,
            "beats_removed": self.n_removed,
            "beats_interpolated": self.n_inserted,
            **self.details,
        }


# --------------------------------------------------------------------------- R-peaks


def detect_r_peaks(
    ecg: NDArray[np.floating],
    sfreq: float,
    *,
    notch_freqs: NDArray[np.floating] | None = None,
) -> HeartBeats | None:
    """Find the R-peaks of an in-scanner ECG.

    Parameters
    ----------
    ecg : ndarray, shape (n_samples,)
        The gradient-corrected ECG (any polarity).
    sfreq : float
        Its sampling rate (Hz), at least 100.
    notch_freqs : array | None
        Frequencies (Hz) of residual scanner artifact to ignore (slice harmonics).

    Returns
    -------
    HeartBeats | None
        None when the channel is flat or shows no plausible heart rhythm (fewer than
        one beat per ``MAX_RR`` seconds, a median heart rate outside 30-180 bpm, or more
        than 20 % of the beats removed or interpolated, or beats that do not share a QRS
        shape).

    References
    ----------
    .. [1] Pan J, Tompkins WJ (1985). IEEE Trans Biomed Eng 32:230-236.
    .. [2] Christov II (2004). Real time electrocardiogram QRS detection using combined
           adaptive threshold. BioMed Eng OnLine 3:28.
    """
    x = np.asarray(ecg, dtype=np.float64)
    duration = x.size / sfreq
    if x.size < 4 * sfreq or not np.isfinite(x).all() or np.ptp(x) <= 0:
        return None
    qrs = _notched_band(x, sfreq, _QRS_BAND, notch_freqs)
    envelope = _moving_average(qrs**2, round(0.05 * sfreq))
    if not np.any(envelope > 0):
        return None
    candidates, _ = scipy.signal.find_peaks(envelope, distance=max(1, int(0.25 * sfreq)))
    if candidates.size < 3:
        return None
    heights = envelope[candidates]
    level = _local_level(candidates, heights, sfreq, span=10.0, q=90)
    margin = 0.1 * sfreq  # filter transients at the ends of the recording
    beats = candidates[(heights >= 0.3 * level) & (candidates > margin)]
    beats = beats[beats < x.size - margin]
    if beats.size < 3:
        return None
    located = _notched_band(x, sfreq, _LOCATE_BAND, notch_freqs)
    polarity = _polarity(located, beats, round(0.04 * sfreq))
    peaks, similarity = _refine(polarity * located, beats, sfreq)
    if np.median(similarity) < 0.7:  # no consistent QRS shape: not an ECG
        return None
    strength = envelope[np.clip(np.round(peaks).astype(int), 0, envelope.size - 1)]
    odd = (similarity < 0.5) | (strength > 5.0 * np.median(strength))  # spikes, artifacts
    peaks, removed = _drop_extra(peaks[~odd], envelope)
    removed += int(np.count_nonzero(odd))
    peaks, inserted = _fill_gaps(peaks, candidates, heights, level)
    if peaks.size < max(3, duration / MAX_RR / 2):
        return None
    beats_found = HeartBeats(peaks, sfreq, "ecg", polarity, removed, inserted)
    if not 30.0 <= beats_found.heart_rate <= 180.0 or removed + inserted > 0.2 * peaks.size:
        return None
    return beats_found


def _notched_band(
    x: NDArray[np.float64],
    sfreq: float,
    band: tuple[float, float],
    notch_freqs: NDArray[np.floating] | None,
) -> NDArray[np.float64]:
    lo, hi = band
    hi = min(hi, 0.45 * sfreq)
    y = filter_data(x[None], sfreq, l_freq=lo, h_freq=hi)[0].astype(np.float64)
    if notch_freqs is None or len(notch_freqs) == 0:
        return y
    spectrum = np.fft.rfft(y)
    freqs = np.fft.rfftfreq(y.size, 1.0 / sfreq)
    for f0 in np.asarray(notch_freqs, dtype=np.float64):
        spectrum[np.abs(freqs - f0) <= 0.5] = 0.0
    return np.fft.irfft(spectrum, y.size)


def _moving_average(x: NDArray[np.float64], width: int) -> NDArray[np.float64]:
    width = max(1, width)
    kernel = np.full(width, 1.0 / width)
    return np.convolve(x, kernel, mode="same")


def _local_level(
    positions: NDArray[np.integer],
    values: NDArray[np.float64],
    sfreq: float,
    *,
    span: float,
    q: float,
) -> NDArray[np.float64]:
    """Return the ``q``-th percentile of ``values`` within ``span`` s of each position."""
    half = span * sfreq
    lo = np.searchsorted(positions, positions - half)
    hi = np.searchsorted(positions, positions + half, side="right")
    blocks = {}
    level = np.empty(values.size)
    for i, (a, b) in enumerate(zip(lo, hi, strict=True)):
        key = (int(a), int(b))
        if key not in blocks:
            blocks[key] = float(np.percentile(values[a:b], q))
        level[i] = blocks[key]
    return level


def _polarity(x: NDArray[np.float64], beats: NDArray[np.integer], half: int) -> int:
    """+1 if the largest deflection around most beats is positive, else -1."""
    idx = np.clip(beats[:, None] + np.arange(-half, half + 1), 0, x.size - 1)
    windows = x[idx]
    positive = windows.max(axis=1) >= -windows.min(axis=1)
    return 1 if np.mean(positive) >= 0.5 else -1


def _refine(
    x: NDArray[np.float64], beats: NDArray[np.integer], sfreq: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Locate each R-peak to a fraction of a sample, and say how QRS-like it is.

    The maximum of the (polarity-corrected) signal within 40 ms of the QRS energy peak,
    then the lag that best matches the median QRS (within 10 ms), refined by a parabola.

    Returns
    -------
    peaks : ndarray
        Sorted fractional positions.
    similarity : ndarray
        Correlation of each beat with the median QRS (same order as ``peaks``).
    """
    half = round(0.04 * sfreq)
    idx = np.clip(beats[:, None] + np.arange(-half, half + 1), 0, x.size - 1)
    peaks = idx[np.arange(beats.size), np.argmax(x[idx], axis=1)]
    width, shift = round(0.05 * sfreq), max(1, round(0.01 * sfreq))
    offsets = np.arange(-width - shift, width + shift + 1)
    windows = x[np.clip(peaks[:, None] + offsets, 0, x.size - 1)]
    core = slice(shift, shift + 2 * width + 1)
    template = np.median(windows[:, core], axis=0)
    template -= template.mean()
    lags = np.arange(-shift, shift + 1)
    score = np.stack(
        [windows[:, shift + lag : shift + lag + 2 * width + 1] @ template for lag in lags], axis=1
    )
    best = np.argmax(score, axis=1)
    inner = (best > 0) & (best < lags.size - 1)
    rows = np.arange(peaks.size)
    a = score[rows, np.clip(best - 1, 0, None)]
    b = score[rows, best]
    c = score[rows, np.clip(best + 1, None, lags.size - 1)]
    denom = a - 2 * b + c
    delta = np.where(inner & (denom < 0), 0.5 * (a - c) / np.where(denom < 0, denom, -1.0), 0.0)
    aligned = windows[rows[:, None], lags[best][:, None] + shift + np.arange(2 * width + 1)]
    aligned = aligned - aligned.mean(axis=1, keepdims=True)
    similarity = (aligned @ template) / np.sqrt(
        (aligned**2).sum(axis=1) * (template**2).sum() + 1e-30
    )
    position = peaks + lags[best] + np.clip(delta, -0.5, 0.5)
    order = np.argsort(position)
    return position[order].astype(np.float64), similarity[order]


def _drop_extra(
    peaks: NDArray[np.float64], envelope: NDArray[np.float64]
) -> tuple[NDArray[np.float64], int]:
    """Remove detections closer than 0.6 of the local RR to a neighbour.

    Of the two, the one whose removal leaves the interval closest to the local RR goes
    (a spurious detection mid-interval, not the real beat next to it); on a tie, the
    weaker one.
    """
    removed = 0
    while peaks.size > 3:
        rr = np.diff(peaks)
        local = _running_median(rr, 9)
        short = np.flatnonzero(rr < 0.6 * local)
        if short.size == 0:
            break
        i = int(short[0])
        before = peaks[i - 1] if i > 0 else peaks[i] - local[i]
        after = peaks[i + 2] if i + 2 < peaks.size else peaks[i + 1] + local[i]
        drop_first = abs(peaks[i + 1] - before - local[i])
        drop_second = abs(after - peaks[i] - local[i])
        if np.isclose(drop_first, drop_second):
            index = np.clip(np.round(peaks[[i, i + 1]]).astype(int), 0, envelope.size - 1)
            victim = i + int(envelope[index[1]] < envelope[index[0]])
        else:
            victim = i if drop_first < drop_second else i + 1
        peaks = np.delete(peaks, victim)
        removed += 1
    return peaks, removed


def _fill_gaps(
    peaks: NDArray[np.float64],
    candidates: NDArray[np.integer],
    heights: NDArray[np.float64],
    level: NDArray[np.float64],
) -> tuple[NDArray[np.float64], int]:
    """Search long RR intervals again at a lower threshold, else interpolate beats."""
    if peaks.size < 3:
        return peaks, 0
    rr = np.diff(peaks)
    local = _running_median(rr, 9)
    added: list[float] = []
    inserted = 0
    for i in np.flatnonzero(rr > 1.6 * local):
        lo, hi, step = peaks[i], peaks[i + 1], local[i]
        n_missing = round((hi - lo) / step) - 1
        if n_missing < 1:
            continue
        inside = (candidates > lo + 0.5 * step) & (candidates < hi - 0.5 * step)
        weak = candidates[inside & (heights >= 0.15 * level)]
        expected = lo + (hi - lo) * np.arange(1, n_missing + 1) / (n_missing + 1)
        for e in expected:
            near = weak[np.abs(weak - e) < 0.25 * step] if weak.size else weak
            if near.size:
                added.append(float(near[np.argmin(np.abs(near - e))]))
            else:
                added.append(float(e))
                inserted += 1
    if added:
        peaks = np.sort(np.concatenate([peaks, added]))
    return peaks, inserted


def _running_median(x: NDArray[np.float64], width: int) -> NDArray[np.float64]:
    half = width // 2
    padded = np.pad(x, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    return np.median(windows, axis=1)


# --------------------------------------------------------------------------- EEG reference


def eeg_cardiac_reference(eeg: NDArray[np.floating], sfreq: float) -> HeartBeats | None:
    """Find heartbeats in the EEG itself when there is no usable ECG.

    Periodic component analysis: the cardiac period is the lag (0.4-1.5 s) at which the
    1-10 Hz EEG channels repeat best on average; the spatial filter that maximises the
    lagged covariance at that period relative to the covariance (a generalised
    eigenproblem) extracts the BCG, which is the part of the EEG that repeats with the
    heartbeat. Its peaks (polarity chosen by the larger deflections) mark the beats,
    offset from the R-peaks by the pulse delay, which beat-locked OBS does not need.

    Parameters
    ----------
    eeg : ndarray, shape (n_channels, n_samples)
        Gradient-corrected EEG.
    sfreq : float
        Sampling rate (Hz).

    Returns
    -------
    HeartBeats | None
        ``source="eeg"``; None when the extracted component's autocorrelation at the
        cardiac period is below 0.3.

    References
    ----------
    .. [1] Sameni R, Jutten C, Shamsollahi MB (2008). Multichannel electrocardiogram
           decomposition using periodic component analysis. IEEE Trans Biomed Eng
           55:1935-1940.
    .. [2] Niazy RK et al. (2005). NeuroImage 28:720-737.
    """
    band = _EEG_CARDIAC_BAND
    x = filter_data(np.asarray(eeg, np.float32), sfreq, l_freq=band[0], h_freq=band[1])
    x = x.astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    n = x.shape[-1]
    if n < 10 * sfreq or x.shape[0] == 0:
        return None
    lo, hi = int(0.4 * sfreq), int(1.5 * sfreq)
    auto = _autocorrelation(x)
    period = lo + int(np.argmax(auto[:, lo:hi].mean(axis=0)))
    c0 = x @ x.T / n
    lagged = x[:, :-period] @ x[:, period:].T / (n - period)
    lagged = 0.5 * (lagged + lagged.T)
    ridge = 1e-9 * np.trace(c0) * np.eye(c0.shape[0])
    _, vectors = scipy.linalg.eigh(lagged, c0 + ridge)
    signal = vectors[:, -1] @ x
    score = float(_autocorrelation(signal[None])[0, lo:hi].max())
    if score < 0.3:
        return None
    polarity = 1 if np.percentile(signal, 99.5) >= -np.percentile(signal, 0.5) else -1
    signal = polarity * signal
    candidates, _ = scipy.signal.find_peaks(signal, distance=max(1, int(0.6 * period)))
    if candidates.size < 3:
        return None
    heights = signal[candidates]
    level = _local_level(candidates, heights, sfreq, span=10.0, q=75)
    peaks = candidates[heights >= 0.3 * level].astype(np.float64)
    peaks, removed = _drop_extra(peaks, np.abs(signal))
    peaks, inserted = _fill_gaps(peaks, candidates, heights, level)
    return HeartBeats(
        peaks,
        sfreq,
        "eeg",
        polarity,
        removed,
        inserted,
        details={
            "eeg_cardiac_period_s": round(period / sfreq, 3),
            "eeg_component_autocorrelation": round(score, 3),
        },
    )


def _autocorrelation(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Normalised autocorrelation of each row at lags 0 .. n - 1 (via FFT)."""
    n = x.shape[-1]
    spectrum = np.fft.rfft(x, 2 * n, axis=-1)
    auto = np.fft.irfft(np.abs(spectrum) ** 2, axis=-1)[:, :n]
    return auto / np.maximum(auto[:, :1], 1e-30)


# --------------------------------------------------------------------------- OBS


#: Channels whose BCG is fitted together (bounds the memory of the beat epochs).
CHANNELS_PER_BLOCK = 8


def remove_bcg(
    data: NDArray[np.float32],
    sfreq: float,
    beats: HeartBeats,
    params: BCGParams | None = None,
) -> tuple[NDArray[np.float32], dict[str, Any]]:
    """Fit and subtract the BCG of every channel with a beat-locked optimal basis set.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples), float32
        Gradient-corrected EEG (µV) at ``sfreq``; corrected in place.
    sfreq : float
        Sampling rate (Hz).
    beats : HeartBeats
        Heartbeats at ``sfreq`` (R-peaks, or EEG-derived pulse peaks, for which the epoch
        is centred on the peak).
    params : BCGParams | None
        Settings (defaults when None).

    Returns
    -------
    fitted : ndarray, shape (n_channels, n_samples), float32
        The BCG removed.
    diagnostics : dict
        Epoch span and components used.

    References
    ----------
    .. [1] Niazy RK et al. (2005). NeuroImage 28:720-737.
    """
    params = params or BCGParams()
    n_ch = data.shape[0]
    if n_ch > CHANNELS_PER_BLOCK:
        return _remove_bcg_in_blocks(data, sfreq, beats, params)
    peaks = np.asarray(beats.samples, dtype=np.float64)
    n = data.shape[1]
    fitted = np.zeros_like(data, dtype=np.float32)
    if peaks.size < max(3, params.n_components + 2) or n_ch == 0:
        return fitted, {"bcg_corrected": False, "reason": "too few beats"}
    before, after = (0.5, 0.5) if beats.source == "eeg" else (params.before, params.after)
    rr = np.diff(peaks)
    cap = min(float(rr.max()), params.max_rr_ratio * float(np.median(rr)))
    pre, post = int(np.ceil(before * cap)), int(np.ceil(after * cap))
    offsets = np.arange(-pre, post + 1)
    centre = np.round(peaks).astype(np.int64)
    index = centre[:, None] + offsets
    inside = (index >= 0) & (index < n)
    complete = inside.all(axis=1)
    epochs = data[:, np.clip(index, 0, n - 1)] * inside[None].astype(np.float32)
    weights = _beat_weights(peaks, centre, offsets, after / (before + after), sfreq, params)
    weights *= inside
    rows = np.clip(index, 0, n - 1).ravel()
    mixer = scipy.sparse.csr_matrix(
        (weights.ravel(), (rows, np.arange(rows.size))), shape=(n, rows.size)
    )
    fixed = _mean_beat(epochs[:, complete])
    template_only = np.zeros((n_ch, peaks.size, 2), dtype=np.float32)
    template_only[..., 0] = 1.0
    residual = data - _overlap_add(mixer, fixed, template_only)
    control = _control_epochs(residual, offsets, int(complete.sum()), centre)
    del residual
    basis, n_used = _beat_basis(epochs[:, complete], fixed, control, params)
    coef = _fit_beats(epochs, inside, basis)[..., : basis.shape[-1]]
    shrinkage = None
    if params.shrink:
        noise = _fit_beats(control, np.ones(control.shape[1:], dtype=bool), basis)
        coef, shrinkage = _shrink(coef, complete, noise[..., : basis.shape[-1]])
    fitted[:] = _overlap_add(mixer, basis, coef)
    data -= fitted
    diagnostics: dict[str, Any] = {
        "bcg_corrected": True,
        "bcg_epoch_s": [round(-pre / sfreq, 3), round(post / sfreq, 3)],
        "bcg_components": n_used.tolist(),
    }
    if shrinkage is not None:
        diagnostics["bcg_template_reliability"] = [round(float(v), 3) for v in shrinkage[:, 0]]
    return fitted, diagnostics


def _remove_bcg_in_blocks(
    data: NDArray[np.float32], sfreq: float, beats: HeartBeats, params: BCGParams
) -> tuple[NDArray[np.float32], dict[str, Any]]:
    """:func:`remove_bcg` over blocks of channels (every step is per channel: same result).

    The beat epochs of all channels at once take channels x beats x epoch samples (900 MB
    for 63 channels and an hour at 500 Hz, several times over); blocks bound that.
    """
    fitted = np.zeros_like(data, dtype=np.float32)
    merged: dict[str, Any] = {}
    for lo in range(0, data.shape[0], CHANNELS_PER_BLOCK):
        block = np.ascontiguousarray(data[lo : lo + CHANNELS_PER_BLOCK])
        part, info = remove_bcg(block, sfreq, beats, params)
        if not info.get("bcg_corrected"):
            return fitted, info
        data[lo : lo + CHANNELS_PER_BLOCK] = block
        fitted[lo : lo + CHANNELS_PER_BLOCK] = part
        for key, value in info.items():
            if isinstance(value, list) and key != "bcg_epoch_s":
                merged.setdefault(key, []).extend(value)
            else:
                merged[key] = value
    return fitted, merged


def _overlap_add(
    mixer: scipy.sparse.csr_matrix, basis: NDArray[np.float32], coef: NDArray[np.floating]
) -> NDArray[np.float32]:
    """Sum every beat's fitted waveform, weighted by its cross-fade, into a signal."""
    artifact = np.matmul(coef.astype(np.float32), np.swapaxes(basis, 1, 2))
    return np.ascontiguousarray((mixer @ artifact.reshape(basis.shape[0], -1).T).T)


def _mean_beat(epochs: NDArray[np.float32]) -> NDArray[np.float32]:
    """Return the mean beat and its time derivative per channel, shape (channels, L, 2)."""
    mean = epochs.mean(axis=1)
    return np.stack([mean, np.gradient(mean, axis=1)], axis=2).astype(np.float32)


def _shrink(
    coef: NDArray[np.float32], complete: NDArray[np.bool_], noise: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Shrink every beat's coefficients towards their mean by their reliability.

    The spread of a coefficient over beats is beat-to-beat artifact change plus EEG
    projected on its regressor; the EEG part is measured on ``noise`` (the same fit at
    positions not locked to the heartbeat). Each beat keeps the share
    ``(spread - noise) / spread`` of its deviation from the mean (empirical Bayes).
    """
    steady = coef[:, complete].astype(np.float64)
    centre = steady.mean(axis=1)
    spread = steady.var(axis=1)
    background = noise.astype(np.float64).var(axis=1)
    reliability = np.clip((spread - background) / np.maximum(spread, 1e-30), 0.0, 1.0)
    shrunk = centre[:, None, :] + reliability[:, None, :] * (coef - centre[:, None, :])
    return shrunk.astype(np.float32), reliability


def _beat_basis(
    epochs: NDArray[np.float32],
    fixed: NDArray[np.float32],
    control: NDArray[np.float32],
    params: BCGParams,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Per channel: the mean beat, its derivative and the beat-locked components.

    Principal components of the beats left after fitting ``fixed`` (and an offset and
    slope) are kept, up to ``n_components``; with ``auto_components`` only where they
    carry more variance than ``auto_ratio`` times the strongest component of
    ``control`` (epochs not locked to the heartbeat, fitted the same way).
    """
    k = min(params.n_components, max(epochs.shape[1] - 3, 0))
    if k == 0:
        return fixed, np.zeros(epochs.shape[0], dtype=np.int64)
    if epochs.shape[1] > params.max_beats_pca:
        pick = np.linspace(0, epochs.shape[1] - 1, params.max_beats_pca).round().astype(int)
        epochs = epochs[:, pick]
    components, variance = top_components(_project_out(epochs, fixed), k, return_variance=True)
    if params.auto_components:
        _, background = top_components(_project_out(control, fixed), 1, return_variance=True)
        n_used = np.sum(variance > params.auto_ratio * background[:, :1], axis=1)
    else:
        n_used = np.full(epochs.shape[0], k, dtype=np.int64)
    components *= (np.arange(k)[None, :] < n_used[:, None])[:, None, :]
    return np.concatenate([fixed, components], axis=2).astype(np.float32), n_used


def _project_out(epochs: NDArray[np.float32], fixed: NDArray[np.floating]) -> NDArray[np.float32]:
    """Residual of every epoch after a least-squares fit of ``fixed`` plus offset and slope."""
    length = epochs.shape[-1]
    design = np.concatenate(
        [fixed, np.broadcast_to(_trend(length), (fixed.shape[0], length, 2))], axis=2
    ).astype(np.float64)
    q, _ = np.linalg.qr(design)
    q = q.astype(np.float32)
    return epochs - np.matmul(np.matmul(epochs, q), np.swapaxes(q, 1, 2))


def _control_epochs(
    data: NDArray[np.float32], offsets: NDArray[np.int64], count: int, centre: NDArray[np.int64]
) -> NDArray[np.float32]:
    """Epochs at random positions between the first and last beat (fixed seed)."""
    rng = np.random.default_rng(0)
    lo = max(int(centre[0]), -int(offsets[0]))
    hi = min(int(centre[-1]), data.shape[1] - 1 - int(offsets[-1]))
    starts = rng.integers(lo, max(hi, lo + 1), max(int(count), 2))
    return data[:, starts[:, None] + offsets]


def _trend(length: int) -> NDArray[np.float32]:
    """Orthonormal offset and slope regressors, shape (length, 2)."""
    t = np.linspace(-1.0, 1.0, length)
    q, _ = np.linalg.qr(np.column_stack([np.ones(length), t]))
    return q.astype(np.float32)


def _fit_beats(
    epochs: NDArray[np.float32],
    inside: NDArray[np.bool_],
    basis: NDArray[np.float32],
) -> NDArray[np.float32]:
    """Least-squares coefficients of [basis, offset, slope] for every beat and channel."""
    n_ch, length = basis.shape[0], basis.shape[1]
    trend = np.broadcast_to(_trend(length), (n_ch, length, 2))
    design = np.concatenate([basis, trend], axis=2).astype(np.float64)  # (c, L, p)
    gram = np.matmul(np.swapaxes(design, 1, 2), design)
    pinv = np.linalg.solve(gram + 1e-9 * np.eye(gram.shape[-1]), np.swapaxes(design, 1, 2))
    coef = np.matmul(epochs, np.swapaxes(pinv, 1, 2).astype(np.float32))  # (c, beats, p)
    partial = np.flatnonzero(~inside.all(axis=1))
    for b in partial:  # beats cut by the recording's edges: fit the samples present
        mask = inside[b]
        if mask.sum() <= design.shape[-1]:
            coef[:, b] = 0.0
            continue
        d = design[:, mask]
        g = np.matmul(np.swapaxes(d, 1, 2), d) + 1e-9 * np.eye(d.shape[-1])
        rhs = np.matmul(np.swapaxes(d, 1, 2), epochs[:, b, mask].astype(np.float64)[..., None])
        coef[:, b] = np.linalg.solve(g, rhs)[..., 0]
    return coef


def _beat_weights(
    peaks: NDArray[np.float64],
    centre: NDArray[np.int64],
    offsets: NDArray[np.int64],
    split: float,
    sfreq: float,
    params: BCGParams,
) -> NDArray[np.float32]:
    """Cross-faded share of each beat's fit at each epoch sample (a partition of unity).

    Beats ``b`` and ``b + 1`` hand over at ``peaks[b] + split * RR_b`` (the end of beat
    ``b``'s BCG), with a raised-cosine blend of ``crossfade`` seconds.
    """
    position = centre[:, None] + offsets  # (beats, L)
    handover = peaks[:-1] + split * np.diff(peaks)
    start = np.concatenate([[position[0, 0] - 1.0], handover])
    stop = np.concatenate([handover, [position[-1, -1] + 1.0]])
    width = max(params.crossfade * sfreq, 1.0)
    rise = _smooth_step((position - start[:, None]) / width + 0.5)
    fall = 1.0 - _smooth_step((position - stop[:, None]) / width + 0.5)
    edge = _smooth_step((offsets - offsets[0]) / width) * _smooth_step(
        (offsets[-1] - offsets) / width
    )
    return (rise * fall * edge[None, :]).astype(np.float32)


def _smooth_step(t: NDArray[np.float64]) -> NDArray[np.float64]:
    t = np.clip(t, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)
