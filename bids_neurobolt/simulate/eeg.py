r"""Clean EEG: channel layout, band-power latents and the physiological signal.

The clean EEG of a run is a sum of

- **band oscillations** (delta, theta, alpha, beta): narrow-band Gaussian processes with
  fixed scalp patterns (alpha posterior, theta frontal-midline, delta frontal, beta
  central), whose amplitude envelope follows a slow random *band-power latent*;
- **a 1/f background**: a dozen spatially smooth sources with power spectra
  :math:`1/(f_0^2 + f^2)^{\chi/2}`, plus an independent 1/f component per electrode and
  one for the reference electrode;
- **amplifier noise**: white, below 1 µV RMS.

Every scalp pattern is evaluated at the electrode and at the reference electrode (FCz)
and the two are subtracted, so the data are referenced the way a BrainCap MR records
them. The band-power latents are the hidden causes that :mod:`.bold` also turns into
ROI BOLD signals, which is what makes the dataset a ground truth for EEG-to-fMRI models.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.fft
from numpy.typing import NDArray

from bids_neurobolt.simulate.noise import smooth_noise

#: EEG electrode names in the order they are recorded. The first 31 are the BrainCap MR
#: 32-channel layout (whose 32nd channel is the ECG), the rest extend it to the 64-channel
#: layout (10-10 positions), midline first, so any ``n_channels`` keeps a sensible cap.
EEG_CHANNELS: tuple[str, ...] = (
    # BrainCap MR 32 (reference FCz, ground AFz)
    "Fp1", "Fp2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T7", "T8",
    "P7", "P8", "Fz", "Cz", "Pz", "Oz", "FC1", "FC2", "CP1", "CP2", "FC5", "FC6", "CP5",
    "CP6", "TP9", "TP10", "POz",
    # extension to BrainCap MR 64
    "CPz", "Fpz", "F1", "F2", "C1", "C2", "P1", "P2", "AF3", "AF4", "FC3", "FC4", "CP3",
    "CP4", "PO3", "PO4", "F5", "F6", "C5", "C6", "P5", "P6", "AF7", "AF8", "FT7", "FT8",
    "TP7", "TP8", "PO7", "PO8", "FT9", "FT10",
)  # fmt: skip

#: Recording reference and ground electrodes (not recorded as channels).
REFERENCE_CHANNEL = "FCz"
GROUND_CHANNEL = "AFz"

#: Name of the ECG channel appended after the EEG channels.
ECG_CHANNEL = "ECG"

#: EEG bands whose power is modulated by the latents, in latent-column order.
BANDS: tuple[str, ...] = ("delta", "theta", "alpha", "beta")

#: Frequency range of each band in Hz (documentation and ground truth).
BAND_RANGES: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
}

# Spectral peak (Hz) and width (Hz, Gaussian SD) of the band processes; alpha's peak
# frequency is drawn per subject.
_BAND_SPECTRA: dict[str, tuple[float, float]] = {
    "delta": (2.0, 1.0),
    "theta": (6.0, 1.0),
    "alpha": (10.0, 0.9),
    "beta": (20.0, 4.0),
}

# Scalp sources of each band: (electrode whose direction is the centre, angular width,
# relative weight). Widths are in units of 1 - cos(angle).
_BAND_SOURCES: dict[str, tuple[tuple[str, float, float], ...]] = {
    "delta": (("Fpz", 0.35, 1.0), ("Cz", 0.5, 0.5)),
    "theta": (("AF3", 0.2, 1.0), ("AF4", 0.2, 1.0)),
    "alpha": (("O1", 0.12, 1.0), ("O2", 0.12, 1.0), ("Pz", 0.15, 0.6)),
    "beta": (("C3", 0.08, 1.0), ("C4", 0.08, 1.0), ("Fz", 0.2, 0.4)),
}

# Typical RMS amplitude (µV) of each band at its pattern peak, before referencing.
_BAND_AMPLITUDES: dict[str, float] = {"delta": 14.0, "theta": 9.0, "alpha": 26.0, "beta": 6.0}

# How each band's log-power latent loads on the shared vigilance latent (drowsiness
# raises delta/theta and lowers alpha/beta power).
_VIGILANCE_LOADINGS: dict[str, float] = {"delta": -0.5, "theta": -0.3, "alpha": 0.5, "beta": 0.3}

_N_BACKGROUND = 12  # spatially smooth 1/f sources
_BACKGROUND_AMPLITUDE = 9.0  # µV RMS of each background source at its pattern peak
_CHANNEL_NOISE_AMPLITUDE = 2.5  # µV RMS of the per-electrode 1/f component
_WHITE_NOISE = 0.7  # µV RMS amplifier noise
_ONE_OVER_F_KNEE = 0.5  # Hz, keeps the 1/f spectrum finite at DC
_ONE_OVER_F_MAX = 300.0  # Hz, above this the amplifier noise dominates
_HEAD_CENTRE = np.array([0.0, -0.015, 0.0])  # m, centre of the montage's head sphere


def channel_names(n_channels: int) -> tuple[str, ...]:
    """Return the first ``n_channels`` names of :data:`EEG_CHANNELS`.

    Parameters
    ----------
    n_channels : int
        Number of EEG channels, between 1 and ``len(EEG_CHANNELS)``.

    Returns
    -------
    tuple of str
        Channel names in recording order.
    """
    if not 1 <= n_channels <= len(EEG_CHANNELS):
        raise ValueError(f"n_channels must be between 1 and {len(EEG_CHANNELS)}")
    return EEG_CHANNELS[:n_channels]


@functools.lru_cache(maxsize=1)
def _montage_positions() -> dict[str, NDArray[np.float64]]:
    import mne

    montage = mne.channels.make_standard_montage("colin27_1020")
    return {name: np.asarray(pos, float) for name, pos in montage.get_positions()["ch_pos"].items()}


def electrode_directions(names: tuple[str, ...] | list[str]) -> NDArray[np.float64]:
    """Return unit vectors from the head centre to the electrodes (RAS, 10-20 montage).

    Parameters
    ----------
    names : sequence of str
        Electrode names known to MNE's ``colin27_1020`` montage.

    Returns
    -------
    ndarray, shape (n_names, 3)
        Unit direction vectors (x right, y anterior, z superior).
    """
    positions = _montage_positions()
    vectors = np.array([positions[name] - _HEAD_CENTRE for name in names])
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def scalp_bump(
    directions: NDArray[np.float64], centre: NDArray[np.float64], width: float
) -> NDArray[np.float64]:
    """Smooth scalp pattern peaking at ``centre``: ``exp((d · c - 1) / width)``.

    Parameters
    ----------
    directions : ndarray, shape (n, 3)
        Unit vectors of the electrodes.
    centre : ndarray, shape (3,)
        Unit vector of the pattern's peak.
    width : float
        Angular width in units of ``1 - cos(angle)`` (0.1 is about 25 degrees).

    Returns
    -------
    ndarray, shape (n,)
        Pattern values in (0, 1].
    """
    return np.exp((directions @ centre - 1.0) / width)


def smooth_latents(
    rng: np.random.Generator, n_times: int, n_latents: int, sfreq: float, timescale: float
) -> NDArray[np.float64]:
    """Smooth random time courses with zero mean and unit variance (in expectation).

    White Gaussian noise low-pass filtered with a Gaussian kernel of SD ``timescale``
    seconds (see :func:`~bids_neurobolt.simulate.noise.smooth_noise`).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    n_times, n_latents : int
        Output shape.
    sfreq : float
        Sampling rate of the latents in Hz.
    timescale : float
        Kernel SD in seconds (the autocorrelation falls to 1/e after ``2 * timescale``).

    Returns
    -------
    ndarray, shape (n_times, n_latents)
    """
    return smooth_noise(rng, (n_times, n_latents), timescale * sfreq)


def latent_covariance() -> NDArray[np.float64]:
    """Return the expected covariance of the :func:`band_latents` (unit diagonal)."""
    loadings = np.array([_VIGILANCE_LOADINGS[band] for band in BANDS])
    return np.outer(loadings, loadings) + np.diag(1.0 - loadings**2)


def band_latents(
    rng: np.random.Generator, n_times: int, sfreq: float, timescale: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Band-power latents (one per band in :data:`BANDS`) and a shared vigilance latent.

    Each band latent is a scaled log band power ``z_b = sqrt(1 - r_b²) u_b + r_b v`` with
    independent smooth courses ``u_b`` and the vigilance course ``v`` (all of zero mean and
    unit variance in expectation, see :func:`latent_covariance`), so bands co-vary the way
    they do with drowsiness (delta/theta up, alpha/beta down).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    n_times : int
        Number of latent samples.
    sfreq : float
        Latent sampling rate in Hz.
    timescale : float
        Smoothness in seconds (see :func:`smooth_latents`).

    Returns
    -------
    latents : ndarray, shape (n_times, len(BANDS))
        Band log-power latents (zero mean, unit variance in expectation).
    vigilance : ndarray, shape (n_times,)
        Vigilance latent (zero mean, unit variance in expectation).
    """
    courses = smooth_latents(rng, n_times, len(BANDS) + 1, sfreq, timescale)
    vigilance = courses[:, -1]
    loadings = np.array([_VIGILANCE_LOADINGS[band] for band in BANDS])
    latents = np.sqrt(1.0 - loadings**2) * courses[:, :-1] + loadings * vigilance[:, None]
    return latents, vigilance


@dataclass(frozen=True)
class EEGTraits:
    """Subject-specific constants of the clean EEG.

    Attributes
    ----------
    alpha_frequency : float
        Individual alpha peak frequency in Hz.
    band_patterns : ndarray, shape (n_channels, n_band_sources)
        Referenced scalp patterns of the band sources, in µV RMS.
    band_of_source : ndarray of int, shape (n_band_sources,)
        Index into :data:`BANDS` of each band source.
    background_patterns : ndarray, shape (n_channels, n_background)
        Referenced scalp patterns (µV RMS) of the 1/f background sources; the last
        column is the reference electrode's own noise (``-1`` times its amplitude).
    background_exponents : ndarray, shape (n_background,)
        Spectral exponent ``chi`` of each background source.
    channel_noise : float
        RMS (µV) of each electrode's independent 1/f component.
    white_noise : float
        RMS (µV) of the amplifier noise.
    """

    alpha_frequency: float
    band_patterns: NDArray[np.float64]
    band_of_source: NDArray[np.int64]
    background_patterns: NDArray[np.float64]
    background_exponents: NDArray[np.float64]
    channel_noise: float
    white_noise: float


def eeg_traits(rng: np.random.Generator, ch_names: tuple[str, ...]) -> EEGTraits:
    """Draw a subject's EEG constants: alpha frequency, band and background patterns.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator (subject stream).
    ch_names : tuple of str
        EEG channel names (no ECG).

    Returns
    -------
    EEGTraits
    """
    directions = electrode_directions(ch_names)
    reference = electrode_directions([REFERENCE_CHANNEL])[0]
    all_directions = electrode_directions(list(_montage_positions()))

    patterns, band_of_source = [], []
    for b, band in enumerate(BANDS):
        amplitude = _BAND_AMPLITUDES[band] * rng.uniform(0.7, 1.3)
        for centre_name, width, weight in _BAND_SOURCES[band]:
            centre = electrode_directions([centre_name])[0]
            pattern = scalp_bump(directions, centre, width) - scalp_bump(
                reference[None], centre, width
            )
            patterns.append(amplitude * weight * pattern)
            band_of_source.append(b)

    background = []
    for _ in range(_N_BACKGROUND):
        centre = all_directions[rng.integers(len(all_directions))]
        width = rng.uniform(0.1, 0.4)
        pattern = scalp_bump(directions, centre, width) - scalp_bump(reference[None], centre, width)
        background.append(_BACKGROUND_AMPLITUDE * rng.uniform(0.6, 1.4) * pattern)
    # The reference electrode's own noise appears, inverted, on every channel.
    background.append(np.full(len(ch_names), -_CHANNEL_NOISE_AMPLITUDE))
    exponents = np.append(rng.uniform(1.0, 2.0, _N_BACKGROUND), 1.0)

    return EEGTraits(
        alpha_frequency=float(rng.uniform(9.0, 11.0)),
        band_patterns=np.array(patterns).T,
        band_of_source=np.array(band_of_source, dtype=np.int64),
        background_patterns=np.array(background).T,
        background_exponents=exponents,
        channel_noise=_CHANNEL_NOISE_AMPLITUDE,
        white_noise=_WHITE_NOISE,
    )


def spectral_noise(
    rng: np.random.Generator,
    n_samples: int,
    sfreq: float,
    amplitude_spectra: NDArray[np.float64],
) -> NDArray[np.float32]:
    """Gaussian processes with given amplitude spectra, each scaled to unit RMS.

    Random complex Fourier coefficients are drawn directly in the frequency domain
    (only up to the highest non-zero bin) and inverted with one real inverse FFT. The
    DC bin should be zero (zero-mean processes).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    n_samples : int
        Number of time samples.
    sfreq : float
        Sampling rate in Hz (sets the bin frequencies ``k * sfreq / n_fft``).
    amplitude_spectra : ndarray, shape (n_processes, n_bins)
        Amplitude (square root of power) of each process at the first ``n_bins`` bins of
        an ``n_fft = scipy.fft.next_fast_len(n_samples, real=True)`` point real FFT;
        bins above ``n_bins`` are zero. Use :func:`fft_frequencies` for the frequencies.

    Returns
    -------
    ndarray, shape (n_processes, n_samples), float32
    """
    n_fft = scipy.fft.next_fast_len(n_samples, real=True)
    n_proc, n_bins = amplitude_spectra.shape
    coefficients = np.zeros((n_proc, n_fft // 2 + 1), dtype=np.complex64)
    shape = (n_proc, n_bins)
    coefficients[:, :n_bins] = amplitude_spectra * (
        rng.standard_normal(shape, dtype=np.float32)
        + 1j * rng.standard_normal(shape, dtype=np.float32)
    )
    # Parseval: the mean square of the inverse transform is 2 sum |X_k|^2 / n_fft^2 (DC
    # and Nyquist bins aside), so each row is scaled to unit RMS without a pass over it.
    power = 2.0 * (np.abs(coefficients[:, :n_bins]) ** 2).sum(axis=1) / n_fft**2
    coefficients /= np.sqrt(np.maximum(power, np.finfo(np.float32).tiny))[:, None]
    return scipy.fft.irfft(coefficients, n=n_fft, axis=-1, workers=-1)[:, :n_samples]


def fft_frequencies(n_samples: int, sfreq: float, f_max: float) -> NDArray[np.float64]:
    """Bin frequencies (Hz) up to ``f_max`` of the FFT used by :func:`spectral_noise`."""
    n_fft = scipy.fft.next_fast_len(n_samples, real=True)
    n_bins = min(int(np.floor(f_max * n_fft / sfreq)) + 1, n_fft // 2 + 1)
    return np.arange(n_bins) * sfreq / n_fft


def one_over_f(freqs: NDArray[np.float64], exponent: float) -> NDArray[np.float64]:
    """Amplitude spectrum of 1/f^chi power, with a knee at 0.5 Hz and zero at DC."""
    amplitude = (_ONE_OVER_F_KNEE**2 + freqs**2) ** (-exponent / 4.0)
    amplitude[0] = 0.0
    return amplitude


def band_envelopes(
    latents: NDArray[np.float64],
    latent_times: NDArray[np.float64],
    times: NDArray[np.float64],
    modulation: float,
) -> NDArray[np.float64]:
    """Amplitude envelopes of the bands at the EEG sample times.

    The band power is ``exp(modulation * z_b(t))``, normalised so that its mean is one:
    the amplitude is ``exp(modulation * z_b / 2 - modulation² / 4)``.

    Parameters
    ----------
    latents : ndarray, shape (n_latent_times, n_bands)
        Band log-power latents (zero mean, unit variance in expectation).
    latent_times, times : ndarray
        Times (s) of the latent samples and of the EEG samples.
    modulation : float
        SD of the natural-log band power.

    Returns
    -------
    ndarray, shape (n_bands, n_times)
    """
    envelopes = np.empty((latents.shape[1], times.size))
    for b in range(latents.shape[1]):
        z = np.interp(times, latent_times, latents[:, b])
        envelopes[b] = np.exp(modulation * z / 2.0 - modulation**2 / 4.0)
    return envelopes


def clean_eeg(
    rng: np.random.Generator,
    traits: EEGTraits,
    latents: NDArray[np.float64],
    latent_times: NDArray[np.float64],
    n_samples: int,
    sfreq: float,
    modulation: float,
) -> NDArray[np.float32]:
    """Simulate referenced physiological EEG in µV.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator (run stream).
    traits : EEGTraits
        Subject constants from :func:`eeg_traits`.
    latents : ndarray, shape (n_latent_times, len(BANDS))
        Band log-power latents from :func:`band_latents`.
    latent_times : ndarray, shape (n_latent_times,)
        Latent sample times in seconds from the first EEG sample.
    n_samples : int
        Number of EEG samples.
    sfreq : float
        EEG sampling rate in Hz.
    modulation : float
        SD of the natural-log band power driven by the latents.

    Returns
    -------
    ndarray, shape (n_channels, n_samples), float32
        Clean EEG in µV, referenced to :data:`REFERENCE_CHANNEL`.

    Notes
    -----
    Background activity follows the aperiodic 1/f ("power-law") spectrum of resting EEG
    with periodic band peaks on top, as parameterised by Donoghue et al. (2020).

    References
    ----------
    .. [1] Donoghue T, et al. (2020). Parameterizing neural power spectra into periodic
           and aperiodic components. Nat Neurosci 23:1655-1665.
    """
    nyquist = sfreq / 2.0
    times = np.arange(n_samples) / sfreq

    # Band oscillations, amplitude-modulated by the latents.
    peaks = dict(_BAND_SPECTRA, alpha=(traits.alpha_frequency, _BAND_SPECTRA["alpha"][1]))
    f_band = max(fc + 5 * bw for fc, bw in peaks.values())
    freqs = fft_frequencies(n_samples, sfreq, min(f_band, 0.9 * nyquist))
    spectra = np.array(
        [
            np.exp(-((freqs - peaks[BANDS[b]][0]) ** 2) / (4 * peaks[BANDS[b]][1] ** 2))
            for b in traits.band_of_source
        ]
    )
    spectra[:, 0] = 0.0
    sources = spectral_noise(rng, n_samples, sfreq, spectra)
    envelopes = band_envelopes(latents, latent_times, times, modulation)
    sources *= envelopes[traits.band_of_source].astype(np.float32)
    eeg = traits.band_patterns.astype(np.float32) @ sources
    del sources

    # Spatially smooth 1/f background, plus the reference electrode's noise.
    freqs = fft_frequencies(n_samples, sfreq, min(_ONE_OVER_F_MAX, 0.9 * nyquist))
    spectra = np.array([one_over_f(freqs, chi) for chi in traits.background_exponents])
    eeg += traits.background_patterns.astype(np.float32) @ spectral_noise(
        rng, n_samples, sfreq, spectra
    )

    # Independent 1/f component per electrode and white amplifier noise.
    n_channels = traits.band_patterns.shape[0]
    spectra = np.broadcast_to(one_over_f(freqs, 1.0), (n_channels, freqs.size))
    eeg += np.float32(traits.channel_noise) * spectral_noise(rng, n_samples, sfreq, spectra)
    eeg += np.float32(traits.white_noise) * rng.standard_normal(eeg.shape, dtype=np.float32)
    return eeg
