"""Filtering, resampling and channel names for the model input.

Filtering and resampling happen together in the frequency domain
(:func:`resample`): one real FFT of the (reflect-padded) signal, a zero-phase
response with cosine transition bands, and an inverse FFT of the length the new rate
needs. This is the FFT resampling MNE's ``Raw.resample`` uses (which NeuroBOLT applied to
its EEG), with the anti-alias low-pass built in, so downsampling never aliases.

Channel names are mapped to 10-20/10-05 labels (case-insensitive, reference suffixes
such as ``-REF`` removed, and the old temporal names T3/T4/T5/T6 renamed T7/T8/P7/P8);
EEG channels with a 10-20 label form the model input, the other channels (ECG, EOG, EMG,
misc, unlabelled or bad EEG) stay in the derivative with their types.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import scipy.fft
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

#: Sampling rate of the model input (Hz): NeuroBOLT and LaBraM work at 200 Hz.
MODEL_SFREQ = 200.0

#: Old 10-20 temporal labels and their 10-10 names (American Clinical Neurophysiology
#: Society 2006 nomenclature).
ALIASES: dict[str, str] = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8"}

_FFT_WORKERS = 2
_REFERENCE_SUFFIX = re.compile(
    r"[-_ ]?(ref|reference|avg|average|a1|a2|m1|m2|le|re|lm|rm)$", re.IGNORECASE
)
_TYPE_PREFIX = re.compile(r"^(eeg)[-_ ]*", re.IGNORECASE)


# --------------------------------------------------------------------------- filters


def resample(
    data: NDArray[np.floating],
    sfreq: float,
    new_sfreq: float,
    *,
    l_freq: float | None = None,
    h_freq: float | None = None,
    pad: float = 2.0,
) -> NDArray[np.float32]:
    """Filter and resample along the last axis in the frequency domain (zero phase).

    Parameters
    ----------
    data : ndarray, shape (..., n_samples)
        Signals.
    sfreq : float
        Their sampling rate (Hz).
    new_sfreq : float
        Output rate (Hz); equal to ``sfreq`` to filter only. The ratio must be a
        fraction with a denominator below 10000.
    l_freq : float | None
        High-pass edge (Hz): full gain above it, a cosine transition of
        ``min(max(0.25 * l_freq, 2), l_freq)`` Hz below it.
    h_freq : float | None
        Low-pass edge (Hz): full gain below it, a cosine transition of
        ``min(max(0.25 * h_freq, 2), nyquist - h_freq)`` Hz above it. When downsampling
        without one (or with one above 80 % of the new Nyquist), the anti-alias
        transition spans 80-100 % of the new Nyquist.
    pad : float
        Seconds of reflected signal added at each end against edge effects.

    Returns
    -------
    ndarray, shape (..., ceil(n_samples * new_sfreq / sfreq)), float32
        Sample ``k`` lies at ``k / new_sfreq`` seconds, like input sample
        ``k * sfreq / new_sfreq``.

    References
    ----------
    .. [1] Gramfort A et al. (2013). MEG and EEG data analysis with MNE-Python.
           Front Neurosci 7:267.
    """
    x = np.asarray(data)
    n = x.shape[-1]
    ratio = Fraction(new_sfreq / sfreq).limit_denominator(10000)
    if abs(float(ratio) - new_sfreq / sfreq) > 1e-9 * new_sfreq / sfreq:
        raise ValueError(f"cannot resample {sfreq} Hz to {new_sfreq} Hz exactly")
    up, down = ratio.numerator, ratio.denominator
    n_pad = min(round(pad * sfreq / down) * down, (n - 1) // down * down)
    total = n + 2 * n_pad
    size = down * scipy.fft.next_fast_len(-(-total // down), real=True)
    padded = _reflect_pad(x, n_pad, size - n - n_pad)
    spectrum = scipy.fft.rfft(padded, axis=-1, workers=_FFT_WORKERS)
    del padded
    out_size = size * up // down
    n_bins = out_size // 2 + 1
    keep = min(n_bins, spectrum.shape[-1])
    freqs = np.arange(keep) * sfreq / size
    gain = response(freqs, min(sfreq, new_sfreq) / 2, l_freq, h_freq, down > up)
    out = np.zeros((*spectrum.shape[:-1], n_bins), dtype=np.complex64)
    out[..., :keep] = spectrum[..., :keep] * (gain * (up / down)).astype(np.float32)
    del spectrum
    if out_size % 2 == 0 and keep == n_bins:
        out[..., -1] = out[..., -1].real  # the new Nyquist bin is real
    y = scipy.fft.irfft(out, n=out_size, axis=-1, workers=_FFT_WORKERS)
    start = n_pad * up // down
    length = -(-n * up // down)
    return np.ascontiguousarray(y[..., start : start + length], dtype=np.float32)


def filter_data(
    data: NDArray[np.floating],
    sfreq: float,
    *,
    l_freq: float | None = None,
    h_freq: float | None = None,
    pad: float = 2.0,
) -> NDArray[np.float32]:
    """Zero-phase band filter in the frequency domain (see :func:`resample`)."""
    return resample(data, sfreq, sfreq, l_freq=l_freq, h_freq=h_freq, pad=pad)


def response(
    freqs: NDArray[np.floating],
    nyquist: float,
    l_freq: float | None,
    h_freq: float | None,
    anti_alias: bool,
) -> NDArray[np.float64]:
    """Zero-phase gain of :func:`resample` at ``freqs`` (Hz).

    Parameters
    ----------
    freqs : ndarray
        Frequencies (Hz).
    nyquist : float
        Nyquist frequency of the output (Hz).
    l_freq, h_freq : float | None
        High-pass and low-pass edges (Hz).
    anti_alias : bool
        Downsampling: roll off over 80-100 % of ``nyquist`` unless ``h_freq`` is lower.

    Returns
    -------
    ndarray
        Gain in [0, 1].
    """
    f = np.asarray(freqs, dtype=np.float64)
    gain = np.ones_like(f)
    if l_freq is not None and l_freq > 0:
        width = min(max(0.25 * l_freq, 2.0), l_freq)
        gain *= _cosine_step(f, l_freq - width, l_freq)
    if h_freq is not None and h_freq < nyquist:
        width = min(max(0.25 * h_freq, 2.0), nyquist - h_freq)
        if anti_alias and h_freq + width > nyquist:
            width = nyquist - h_freq
        gain *= 1.0 - _cosine_step(f, h_freq, h_freq + width)
    elif anti_alias:
        gain *= 1.0 - _cosine_step(f, 0.8 * nyquist, nyquist)
    if anti_alias:
        gain[f >= nyquist] = 0.0
    return gain


def _cosine_step(f: NDArray[np.float64], lo: float, hi: float) -> NDArray[np.float64]:
    """0 below ``lo``, 1 above ``hi``, a raised cosine in between."""
    if hi <= lo:
        return (f >= hi).astype(np.float64)
    t = np.clip((f - lo) / (hi - lo), 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def _reflect_pad(x: NDArray[np.floating], left: int, right: int) -> NDArray[np.float32]:
    """Pad the last axis with its point reflection about each end sample.

    The odd extension ``2 x[0] - x[i]`` keeps the signal and its slope continuous at
    the edges (as ``scipy.signal.filtfilt`` pads).
    """
    n = x.shape[-1]
    out = np.empty((*x.shape[:-1], left + n + right), dtype=np.float32)
    out[..., left : left + n] = x
    if n == 1:
        out[..., :left] = x
        out[..., left + n :] = x
        return out
    period = 2 * (n - 1)
    for positions, where, end in (
        (np.arange(-left, 0), slice(0, left), 0),
        (np.arange(n, n + right), slice(left + n, left + n + right), n - 1),
    ):
        folded = positions % period
        folded = np.where(folded < n, folded, period - folded)
        out[..., where] = 2 * x[..., end : end + 1] - x[..., folded]
    return out


# --------------------------------------------------------------------------- channels


@functools.lru_cache(maxsize=1)
def standard_labels() -> dict[str, str]:
    """Upper-case 10-05 label -> canonical spelling (e.g. ``"FPZ" -> "Fpz"``).

    The vocabulary is MNE's 10-05 montage (``colin27_1005``, formerly ``standard_1005``):
    10-20, 10-10 and 10-05 positions.
    """
    import mne

    builtin = mne.channels.get_builtin_montages()
    kind = "colin27_1005" if "colin27_1005" in builtin else "standard_1005"
    names = mne.channels.make_standard_montage(kind).ch_names
    return {name.upper(): name for name in names}


def standard_name(name: str) -> str | None:
    """Return the 10-20 label of a channel name, or None if it has none.

    Parameters
    ----------
    name : str
        A recorded channel name (``"FP1"``, ``"EEG T3-REF"``, ``"cz"``...).

    Returns
    -------
    str | None
        The canonical label (``"Fp1"``, ``"T7"``, ``"Cz"``), or None.
    """
    text = _TYPE_PREFIX.sub("", name.strip())
    labels = standard_labels()
    for candidate in (text, _REFERENCE_SUFFIX.sub("", text)):
        key = candidate.strip().upper()
        key = ALIASES.get(key, key)
        if key in labels:
            return labels[key]
    return None


@dataclass(frozen=True)
class ChannelMap:
    """Channel names for the derivative and the model input.

    Attributes
    ----------
    names : tuple of str
        Output names: the 10-20 label where one exists (EEG channels), else the
        original name.
    types : tuple of str
        Channel types (lower case, as given).
    renamed : dict
        Original name -> new name, for channels renamed.
    model : tuple of int
        Indices of the channels that form the model input (EEG with a 10-20 label, not
        bad), in recording order.
    unlabelled : tuple of str
        EEG channels without a 10-20 label (kept, not in the model input).
    """

    names: tuple[str, ...]
    types: tuple[str, ...]
    renamed: dict[str, str]
    model: tuple[int, ...]
    unlabelled: tuple[str, ...]


def map_channels(
    names: Sequence[str], types: Sequence[str], *, bad: Sequence[str] = ()
) -> ChannelMap:
    """Map EEG channel names to 10-20 labels and choose the model-input channels.

    Parameters
    ----------
    names : sequence of str
        Recorded channel names.
    types : sequence of str
        Their types (``eeg``, ``ecg``, ``eog``, ``emg``, ``misc``...; case-insensitive).
    bad : sequence of str
        Channels to keep out of the model input (original or new names).

    Returns
    -------
    ChannelMap
        Names that would collide (two channels with the same label) keep their
        original names, with a log message.
    """
    types_l = tuple(str(t).lower() for t in types)
    labels = [standard_name(n) if t == "eeg" else None for n, t in zip(names, types_l, strict=True)]
    counts: dict[str, int] = {}
    for label in labels:
        if label is not None:
            counts[label] = counts.get(label, 0) + 1
    taken = {n for n, lab in zip(names, labels, strict=True) if lab is None}
    out: list[str] = []
    for name, label in zip(names, labels, strict=True):
        if label is None:
            out.append(name)
        elif counts[label] > 1 or (label != name and label in taken):
            logger.info("Channel %s keeps its name: %s is used by another channel.", name, label)
            out.append(name)
        else:
            out.append(label)
    bad_set = set(bad)
    model = tuple(
        i
        for i, (orig, new, t, lab) in enumerate(zip(names, out, types_l, labels, strict=True))
        if t == "eeg" and lab is not None and new == lab and not ({orig, new} & bad_set)
    )
    unlabelled = tuple(
        n for n, t, lab in zip(names, types_l, labels, strict=True) if t == "eeg" and lab is None
    )
    renamed = {o: n for o, n in zip(names, out, strict=True) if o != n}
    return ChannelMap(
        names=tuple(out), types=types_l, renamed=renamed, model=model, unlabelled=unlabelled
    )
