"""Heartbeats: R-peak times with heart-rate variability, the ECG and the BCG artifact.

**R-peaks** come from an integral pulse frequency modulation (IPFM) model: the heart
period ``HP(t)`` is a mean plus respiratory sinus arrhythmia (RSA, at the breathing
rate), a Mayer-wave component near 0.1 Hz and a slow random drift; a beat fires each
time the integral of ``1 / HP`` crosses an integer, plus a few ms of jitter. Default
ranges come from the R-peak markers of three real 5 kHz EEG-fMRI sessions (UCL
"EEG, fMRI and NODDI at rest", BrainVision Analyzer markers): mean RR 0.86-1.08 s, RR SD
0.05-0.15 s, RMSSD 0.03-0.15 s, respiratory peak 0.16-0.31 Hz.

**ECG** is a sum of Gaussian P, Q, R, S and T waves around each R-peak (the T wave's
latency and width scale with the square root of the preceding RR interval), with an
enlarged T wave as the magnetohydrodynamic effect produces in the scanner, respiratory
baseline wander and noise.

**BCG** (ballistocardiogram, pulse artifact) on each EEG channel is a beat-locked
waveform 0.15-0.6 s after the R-peak: a mix of three Gabor atoms whose weights vary
smoothly over the scalp (left-right and anterior-posterior gradients with polarity
reversals, plus a random component), with small beat-to-beat changes in amplitude and
latency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bids_neurobolt.simulate.noise import smooth_noise

_GRID_RATE = 20.0  # Hz, heart-period and respiration grid
_MIN_RR, _MAX_RR = 0.45, 1.8  # s, clip of the instantaneous heart period

# (name, latency s, width s, relative amplitude, scales with sqrt(RR))
_ECG_WAVES: tuple[tuple[str, float, float, float, bool], ...] = (
    ("P", -0.20, 0.025, 0.12, False),
    ("Q", -0.030, 0.010, -0.12, False),
    ("R", 0.0, 0.011, 1.0, False),
    ("S", 0.030, 0.012, -0.25, False),
    ("T", 0.30, 0.055, 0.5, True),
)
_ECG_WINDOW = (-0.35, 0.65)  # s around each R-peak
_BCG_WINDOW = (0.0, 0.9)  # s after each R-peak

# Gabor atoms of the BCG: latency (s), width (s), frequency (Hz), phase (rad).
_BCG_ATOMS = np.array(
    [
        [0.23, 0.045, 5.0, 0.0],
        [0.32, 0.065, 3.5, np.pi / 2],
        [0.43, 0.085, 2.5, np.pi],
    ]
)


@dataclass(frozen=True)
class HeartTraits:
    """A subject's cardiac and respiratory constants.

    Attributes
    ----------
    mean_rr : float
        Mean RR interval (s).
    rsa_sd, lf_sd, vlf_sd : float
        SD (s) of the heart period's respiratory, Mayer-wave and slow components.
    lf_frequency : float
        Mayer-wave frequency (Hz).
    respiration_rate : float
        Mean breathing frequency (Hz).
    beat_jitter : float
        SD (s) of the independent jitter of each R-peak.
    ecg_amplitude : float
        R-wave amplitude (µV).
    t_wave : float
        T-wave amplitude relative to the R wave.
    ecg_polarity : float
        +1, or -1 for an inverted ECG lead.
    """

    mean_rr: float
    rsa_sd: float
    lf_sd: float
    vlf_sd: float
    lf_frequency: float
    respiration_rate: float
    beat_jitter: float
    ecg_amplitude: float
    t_wave: float
    ecg_polarity: float


def heart_traits(rng: np.random.Generator, *, inverted: bool = False) -> HeartTraits:
    """Draw a subject's heart-rate variability and ECG shape.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator (subject stream).
    inverted : bool
        Invert the ECG polarity (a reversed lead).

    Returns
    -------
    HeartTraits
    """
    return HeartTraits(
        mean_rr=float(rng.uniform(0.82, 1.08)),
        rsa_sd=float(rng.uniform(0.015, 0.06)),
        lf_sd=float(rng.uniform(0.02, 0.05)),
        vlf_sd=float(rng.uniform(0.015, 0.04)),
        lf_frequency=float(rng.uniform(0.08, 0.12)),
        respiration_rate=float(rng.uniform(0.2, 0.3)),
        beat_jitter=0.004,
        ecg_amplitude=float(1000.0 * rng.uniform(0.6, 1.4)),
        t_wave=float(rng.uniform(0.4, 0.8)),
        ecg_polarity=-1.0 if inverted else 1.0,
    )


@dataclass(frozen=True)
class Heartbeats:
    """Beat and breathing time courses of one run.

    Attributes
    ----------
    beat_times : ndarray, shape (n_beats,)
        R-peak times (s from the first EEG sample); may include a beat or two just
        before the recording whose BCG reaches into it.
    grid_times : ndarray, shape (n_grid,)
        Times (s) of the respiration grid.
    respiration_phase : ndarray, shape (n_grid,)
        Breathing phase (rad) on the grid.
    """

    beat_times: NDArray[np.float64]
    grid_times: NDArray[np.float64]
    respiration_phase: NDArray[np.float64]

    def r_peaks(self, sfreq: float, n_samples: int) -> NDArray[np.int64]:
        """R-peak sample indices inside the recording."""
        samples = np.round(self.beat_times * sfreq).astype(np.int64)
        return samples[(samples >= 0) & (samples < n_samples)]


def heartbeats(
    rng: np.random.Generator, traits: HeartTraits, t_start: float, t_stop: float
) -> Heartbeats:
    """Simulate R-peak times with an IPFM heart-period model.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator (run stream).
    traits : HeartTraits
        The subject's constants.
    t_start, t_stop : float
        Span (s) to cover; beats are generated from one second before ``t_start``.

    Returns
    -------
    Heartbeats

    References
    ----------
    .. [1] Mateo J, Laguna P (2000). Improved heart rate variability signal analysis
           from the beat occurrence times according to the IPFM model. IEEE Trans
           Biomed Eng 47:985-996.
    """
    grid = np.arange(t_start - 2.0, t_stop + 2.0, 1.0 / _GRID_RATE)
    wander = smooth_noise(rng, (grid.size,), 20.0 * _GRID_RATE)  # breathing rate drifts ~10 %
    respiration = (
        rng.uniform(0, 2 * np.pi)
        + 2 * np.pi * np.cumsum(traits.respiration_rate * (1.0 + 0.1 * wander)) / _GRID_RATE
    )
    vlf = smooth_noise(rng, (grid.size,), 15.0 * _GRID_RATE)
    period = (
        traits.mean_rr
        + np.sqrt(2) * traits.rsa_sd * np.sin(respiration)
        + np.sqrt(2)
        * traits.lf_sd
        * np.sin(2 * np.pi * traits.lf_frequency * grid + rng.uniform(0, 2 * np.pi))
        + traits.vlf_sd * vlf
    )
    period = np.clip(period, _MIN_RR, _MAX_RR)
    phase = np.concatenate([[0.0], np.cumsum(1.0 / period[:-1]) / _GRID_RATE])
    first = rng.uniform(0.0, 1.0)
    beats = np.interp(np.arange(first, phase[-1]), phase, grid)
    beats = beats + traits.beat_jitter * rng.standard_normal(beats.size)
    beats = np.sort(beats)
    beats = beats[(beats >= t_start - 1.0) & (beats <= t_stop)]
    return Heartbeats(beat_times=beats, grid_times=grid, respiration_phase=respiration)


def ecg_signal(
    rng: np.random.Generator, traits: HeartTraits, beats: Heartbeats, n_samples: int, sfreq: float
) -> NDArray[np.float32]:
    """Simulate the clean ECG channel in µV.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator (run stream).
    traits : HeartTraits
        The subject's constants.
    beats : Heartbeats
        Beat times and respiration.
    n_samples : int
        Number of samples.
    sfreq : float
        Sampling rate in Hz.

    Returns
    -------
    ndarray, shape (n_samples,), float32

    References
    ----------
    .. [1] McSharry PE, Clifford GD, Tarassenko L, Smith LA (2003). A dynamical model for
           generating synthetic electrocardiogram signals. IEEE Trans Biomed Eng
           50:289-294.
    """
    t = beats.beat_times
    rr = np.diff(t, prepend=t[0] - traits.mean_rr) if t.size else t
    lo, hi = _ECG_WINDOW
    offsets = np.arange(int(np.floor(lo * sfreq)), int(np.ceil(hi * sfreq)) + 1)
    index = np.round(t * sfreq).astype(np.int64)[:, None] + offsets  # (n_beats, width)
    tau = index / sfreq - t[:, None]
    stretch = np.sqrt(rr / traits.mean_rr)[:, None]
    wave = np.zeros(index.shape)
    for name, latency, width, amplitude, scales in _ECG_WAVES:
        if name == "T":
            amplitude = traits.t_wave
        centre = latency * stretch if scales else latency
        sd = width * stretch if scales else width
        wave += amplitude * np.exp(-0.5 * ((tau - centre) / sd) ** 2)
    inside = (index >= 0) & (index < n_samples)
    ecg = np.bincount(index[inside], weights=wave[inside], minlength=n_samples)
    ecg *= traits.ecg_polarity * traits.ecg_amplitude
    times = np.arange(n_samples) / sfreq
    wander = np.interp(times, beats.grid_times, np.sin(beats.respiration_phase))
    ecg += 0.05 * traits.ecg_amplitude * wander
    ecg += 5.0 * rng.standard_normal(n_samples)
    return ecg.astype(np.float32)


@dataclass(frozen=True)
class BCGModel:
    """Spatial and temporal structure of a subject's pulse artifact.

    Attributes
    ----------
    atoms : ndarray, shape (n_atoms, 4)
        Gabor atoms: latency (s after the R-peak), width (s), frequency (Hz), phase (rad).
    weights : ndarray, shape (n_channels, n_atoms)
        Weight (µV) of each atom on each channel (zero for non-EEG channels).
    """

    atoms: NDArray[np.float64]
    weights: NDArray[np.float64]


def bcg_atoms(atoms: NDArray[np.float64], tau: NDArray[np.float64]) -> NDArray[np.float64]:
    """Evaluate Gabor atoms ``exp(-(tau-l)²/2w²) cos(2 pi f (tau-l) + phi)``.

    Parameters
    ----------
    atoms : ndarray, shape (n_atoms, 4)
        Latency, width, frequency, phase of each atom.
    tau : ndarray
        Times after the R-peak (s); any shape.

    Returns
    -------
    ndarray, shape (n_atoms, *tau.shape)
    """
    latency, width, frequency, phase = (
        atoms[:, i].reshape((-1,) + (1,) * tau.ndim) for i in range(4)
    )
    shifted = tau[None] - latency
    return np.exp(-0.5 * (shifted / width) ** 2) * np.cos(2 * np.pi * frequency * shifted + phase)


def bcg_model(
    rng: np.random.Generator,
    directions: NDArray[np.float64],
    reference: NDArray[np.float64],
    amplitude: float,
    n_ecg: int,
) -> BCGModel:
    """Draw a subject's BCG atoms and their scalp weights.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator (subject stream).
    directions : ndarray, shape (n_eeg, 3)
        Unit vectors of the EEG electrodes.
    reference : ndarray, shape (3,)
        Unit vector of the reference electrode.
    amplitude : float
        Median over EEG channels of the peak absolute BCG (µV).
    n_ecg : int
        Number of ECG channels (which get no BCG).

    Returns
    -------
    BCGModel

    References
    ----------
    .. [1] Allen PJ, Polizzi G, Krakow K, Fish DR, Lemieux L (1998). Identification of
           EEG events in the MR scanner: the problem of pulse artifact and a method for
           its subtraction. NeuroImage 8:229-239.
    .. [2] Mullinger KJ, Havenhand J, Bowtell R (2013). Identifying the sources of the
           pulse artefact in EEG recordings made inside an MR scanner. NeuroImage
           71:75-83.
    """
    atoms = _BCG_ATOMS.copy()
    atoms[:, 0] += rng.uniform(-0.02, 0.02, len(atoms))
    atoms[:, 1] *= rng.uniform(0.85, 1.15, len(atoms))
    atoms[:, 2] *= rng.uniform(0.85, 1.15, len(atoms))
    relative = directions - reference
    patterns = np.column_stack(
        [
            relative[:, 0],  # left-right, polarity reversal at the midline
            relative[:, 1],  # anterior-posterior
            directions @ _random_unit(rng),  # a random smooth gradient
        ]
    )
    patterns /= np.abs(patterns).max(axis=0)
    weights = patterns + 0.25 * rng.standard_normal(patterns.shape)
    weights *= rng.choice([-1.0, 1.0], size=len(atoms))
    tau = np.linspace(*_BCG_WINDOW, 2048)
    peaks = np.abs(weights @ bcg_atoms(atoms, tau)).max(axis=1)
    weights *= amplitude / np.median(peaks)
    weights = np.vstack([weights, np.zeros((n_ecg, len(atoms)))])
    return BCGModel(atoms=atoms, weights=weights)


def _random_unit(rng: np.random.Generator) -> NDArray[np.float64]:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def bcg_beat_variability(
    rng: np.random.Generator, n_beats: int, n_atoms: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Beat-to-beat gains (SD 10 %) of each atom and latency shifts (SD 5 ms).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator (run stream).
    n_beats, n_atoms : int
        Output sizes.

    Returns
    -------
    gains : ndarray, shape (n_beats, n_atoms)
    delays : ndarray, shape (n_beats,)
        Seconds.
    """
    gains = np.clip(1.0 + 0.1 * rng.standard_normal((n_beats, n_atoms)), 0.5, 1.5)
    delays = 0.005 * rng.standard_normal(n_beats)
    return gains, delays


def bcg_artifact(
    n_samples: int,
    sfreq: float,
    beat_times: NDArray[np.float64],
    atoms: NDArray[np.float64],
    weights: NDArray[np.float64],
    gains: NDArray[np.float64],
    delays: NDArray[np.float64],
) -> NDArray[np.float32]:
    """BCG artifact on every channel, in µV.

    ``bcg[c, n] = sum_k weights[c, k] sum_b gains[b, k] atom_k(n / sfreq - t_b - delays[b])``.

    Parameters
    ----------
    n_samples : int
        Number of EEG samples.
    sfreq : float
        Sampling rate in Hz.
    beat_times : ndarray, shape (n_beats,)
        R-peak times (s).
    atoms : ndarray, shape (n_atoms, 4)
        Gabor atoms (see :class:`BCGModel`).
    weights : ndarray, shape (n_channels, n_atoms)
        Channel weights (µV).
    gains : ndarray, shape (n_beats, n_atoms)
        Beat-to-beat gains.
    delays : ndarray, shape (n_beats,)
        Beat-to-beat latency shifts (s).

    Returns
    -------
    ndarray, shape (n_channels, n_samples), float32
    """
    onset = beat_times + delays
    lo, hi = _BCG_WINDOW
    offsets = np.arange(int(np.floor(lo * sfreq)), int(np.ceil(hi * sfreq)) + 1)
    index = np.floor(onset * sfreq).astype(np.int64)[:, None] + offsets  # (n_beats, width)
    tau = index / sfreq - onset[:, None]
    values = bcg_atoms(atoms, tau) * gains.T[:, :, None]  # (n_atoms, n_beats, width)
    inside = (index >= 0) & (index < n_samples)
    sources = np.array(
        [np.bincount(index[inside], weights=v[inside], minlength=n_samples) for v in values]
    )
    return (weights @ sources).astype(np.float32)
