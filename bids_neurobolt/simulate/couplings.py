r"""EEG-to-BOLD couplings and null controls for benchmarking EEG-to-fMRI models.

In the default simulation (:func:`~bids_neurobolt.simulate.dataset.simulate_run`) each
ROI's BOLD is a weighted sum of the band log-power latents ``w_r·z`` convolved with the
canonical HRF: exactly the form of the ridge baseline on HRF-convolved log band power,
which therefore cannot lose. :func:`simulate_coupled_run` simulates one resting run
(clean EEG at 200 Hz, one marker per volume, scaled ROI targets) under one of
:data:`COUPLINGS`:

``linear``
    The simulator's own coupling, HRF-convolved ``w_r·z``.
``hrf-lag``
    ``w_r·z`` convolved with an ROI-specific double-gamma HRF (peak 4-8 s, its own
    dispersion and undershoot) delayed by an extra lag of 0-10 s (:func:`roi_hrfs`).
``nonlinear``
    Half of the EEG-driven variance from ``w_r·z``, half from the product ``z_i z_j`` of
    the two band latents the ROI is most strongly coupled to (:func:`interaction_drive`),
    less its least-squares fit by the band latents: the product is uncorrelated with
    every ``z_b`` in expectation (odd moments of a Gaussian vanish) and the fit removes
    the sample correlation, so a model linear in log band power explains about half of
    the drive (0.53 on average over ROIs and seeds 0-9, 0.74 at most for one ROI).
``spatial``
    Two narrow-band sources (:data:`SPATIAL_FREQUENCY`, power measured in
    :data:`SPATIAL_BAND`) with opposite-signed ("dipolar") topographies are added to the
    EEG, with a common-mode rhythm in the same band whose power varies independently.
    Every channel carries the rhythm and the sources with the same relative gains
    (``|dipole| = sqrt(k) * common`` channel by channel, ``k`` =
    :data:`SPATIAL_SOURCE_POWER`, so the sources are 17 % of the rhythm's amplitude), so
    every channel's band power is the same mixture, dominated by the common rhythm,
    and no combination of channels' band powers separates the sources; a spatial
    contrast of the channels (:func:`spatial_contrasts`) recovers each source. The ROI
    BOLD is driven, through the canonical HRF, by the sources' log power only
    (``cos θ_r z_1 + sin θ_r z_2``); their latents are made uncorrelated with the band
    latents and the common rhythm's over the run. With 26 channels and seeds 0-9 the
    best single channel's HRF-convolved log band power correlates with an ROI's drive
    at ``|r|`` 0.11 on average (0.23 at most), the sources' contrasts at 0.93 (0.89 at
    least). Needs :func:`min_spatial_channels` (7) channels or more.
``control-unrelated``
    This run's EEG paired with the ``linear`` targets of an independent run of the same
    subject (another run stream): no EEG-BOLD relation at all.
``control-shifted``
    This run's ``linear`` targets circularly shifted by ``round(300 / tr)`` volumes
    (5 minutes) against the EEG: the targets keep their own statistics, the pairing is
    broken.

The targets are measured like the app's: ``targets = scale(lowpass(e + o + n))`` with
the EEG-driven part ``e``, the ROI's own component plus the global signal ``o`` (as the
simulator draws them; the global signal follows vigilance, which the band latents
reflect only in part), and white measurement noise ``n`` of SD ``noise`` times the SD of
``e + o`` per ROI; ``lowpass`` is the paper's 0.15 Hz 5th-order zero-phase Butterworth
and ``scale`` subtracts the mean and divides by the 95th percentile of ``|x|``
(:func:`scale_like_targets`). ``drive`` is ``e`` through the same filter and divisor,
so ``targets = drive + scaled(o + n)``. In every coupling ``e`` has the same SD per ROI
as the simulator's linear part, so the signal-to-noise ratio does not depend on the
coupling. With the simulator's defaults (``roi_eeg_fraction`` 0.8, ROI SD 0.5 %, global
SD 0.25 %) ``e`` makes about 73 % of the noise-free variance of a 600 s run (mean over
ROIs and seeds 0-9), and ``noise=0.3`` adds white noise of 9 % of it, of which about 5 %
of the filtered signal's variance is left after the 0.15 Hz low-pass at TR 2.1 s; so
``drive`` explains about 58 % of the targets' variance (``r`` 0.76 on average, 0.64-0.82
per seed for the linear coupling), the rest being the ROI's own component and the global
signal.

The EEG is simulated at :data:`NATIVE_SFREQ` (250 Hz, without MR artifacts) and
resampled to 200 Hz; a 600 s run takes about 1 s (2 s for ``control-unrelated``, which
simulates a second run) on a shared 2-core machine.

Randomness: the subject's constants come from
:func:`~bids_neurobolt.simulate.dataset.subject_model` (ROI weights: the
:data:`~bids_neurobolt.simulate.bold.ROIS` weights plus N(0, 0.1) per subject); the run
from the stream ``(seed, 2, subject, 0, 0)`` as in the simulator (the unrelated
control's targets from ``(seed, 2, subject, 0, 1)``); the spatial sources from
``(seed, 7, subject)``. The ROI-specific HRFs, lags and spatial mixing angles are drawn
from generators seeded by the ROI index alone and the topographies follow from the
electrode positions, so they are the same in every seed and subject; with several
subjects (1..N, same seed) an inter-subject model sees the same couplings up to the
subject's ROI weights, EEG and topography gains.

References
----------
.. [1] Glover GH (1999). Deconvolution of impulse response in event-related BOLD fMRI.
       NeuroImage 9:416-429.
.. [2] Handwerker DA, Ollinger JM, D'Esposito M (2004). Variation of BOLD hemodynamic
       responses across subjects and brain regions and their effects on statistical
       analyses. NeuroImage 21:1639-1651.
.. [3] Li Y, et al. (2024). NeuroBOLT: Resting-state EEG-to-fMRI synthesis with
       multi-dimensional feature mapping. Advances in Neural Information Processing
       Systems 37.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.signal import resample_poly
from scipy.special import gammaln

from bids_neurobolt.fmri.targets import ABSMAX_PERCENTILE, lowpass_filter
from bids_neurobolt.simulate import eeg
from bids_neurobolt.simulate.bold import ROI_NAMES, canonical_hrf
from bids_neurobolt.simulate.dataset import (
    SimulationConfig,
    SubjectModel,
    simulate_run,
    subject_model,
)
from bids_neurobolt.simulate.groundtruth import GroundTruth

#: The couplings :func:`simulate_coupled_run` knows, nulls last.
COUPLINGS: tuple[str, ...] = (
    "linear",
    "hrf-lag",
    "nonlinear",
    "spatial",
    "control-unrelated",
    "control-shifted",
)

#: Sampling rate (Hz) of :attr:`CoupledRun.eeg` (the model's input rate).
EEG_SFREQ = 200.0

#: Rate (Hz) at which the EEG is simulated before resampling to :data:`EEG_SFREQ`.
NATIVE_SFREQ = 250.0

#: Circular shift (s) of the ``control-shifted`` targets.
SHIFT_SECONDS = 300.0

#: Centre and width (Gaussian SD) in Hz of the spatial coupling's rhythms, and the band
#: (centre +- 2 SD) in which their power is measured.
SPATIAL_FREQUENCY = 16.0
SPATIAL_BANDWIDTH = 1.5
SPATIAL_BAND: tuple[float, float] = (13.0, 19.0)

#: Recorded RMS (µV) of the common-mode rhythm at its largest, and the power of each
#: dipolar source relative to it on every channel (``k``).
SPATIAL_COMMON_AMPLITUDE = 12.0
SPATIAL_SOURCE_POWER = 0.03

#: SD of the natural-log power of the common-mode rhythm and of the dipolar sources.
SPATIAL_COMMON_MODULATION = 1.0
SPATIAL_SOURCE_MODULATION = 0.8

_PRE_SCAN = 2.0  # s of EEG before the first volume (as benchmarks/bench_model.py)
_STREAM_RUN = 2  # the simulator's run stream
_STREAM_SPATIAL = 7
_STREAM_ROI = 20_250  # ROI constants: default_rng([_STREAM_ROI, kind, roi_index])
_KIND_HRF, _KIND_ANGLE = 1, 2
_HRF_LENGTH = 32.0  # s, as the simulator's canonical HRF
_EPSILON = 1e-8  # added to the absmax divisor, as the app
# Electrode-direction axes (RAS) whose sign gives the two dipolar patterns; tilted so that
# no electrode of the cap lies on a null line.
_DIPOLE_AXES = np.array([[1.0, 0.25, 0.1], [-0.15, 1.0, 0.2]])


@dataclass(frozen=True)
class CoupledRun:
    """One simulated run under a coupling, ready for windowing and training.

    Attributes
    ----------
    eeg : ndarray, shape (n_channels, n_samples), float32
        Clean EEG at :data:`EEG_SFREQ` (200 Hz) in µV, sample 0 at time 0.
    markers : ndarray of int64, shape (n_volumes,)
        Sample index (200 Hz) of each volume.
    targets : ndarray, shape (n_volumes, n_rois), float32
        Measured ROI BOLD, low-passed and scaled like the app's targets.
    drive : ndarray, shape (n_volumes, n_rois), float64
        The noise-free part of ``targets`` that this EEG determines (through the
        coupling's true HRF, lag or nonlinearity), filtered and divided like the
        targets. For the controls: what this EEG would drive through the linear
        coupling, which is unrelated to ``targets``.
    ch_names : tuple of str
        EEG channel names.
    roi_names : tuple of str
        ROI names (:data:`~bids_neurobolt.simulate.bold.ROI_NAMES`).
    tr : float
        Repetition time (s).
    coupling : str
        One of :data:`COUPLINGS`.
    """

    eeg: NDArray[np.float32]
    markers: NDArray[np.int64]
    targets: NDArray[np.float32]
    drive: NDArray[np.float64]
    ch_names: tuple[str, ...]
    roi_names: tuple[str, ...]
    tr: float
    coupling: str


@dataclass(frozen=True)
class CouplingTruth:
    """What produced a :class:`CoupledRun` (for checks and reports).

    Attributes
    ----------
    latent_times : ndarray, shape (n_t,)
        Times (s from the first EEG sample) of the latents (10 Hz, from 40 s before).
    latents : ndarray, shape (n_t, 4)
        Band log-power latents (delta, theta, alpha, beta) of this EEG.
    roi_weights : ndarray, shape (n_rois, 4)
        The subject's ROI-by-band weights.
    neural_drive : ndarray, shape (n_t, n_rois)
        Each ROI's EEG-driven input before the HRF (any scale); for the controls, that
        of the linear coupling of this EEG.
    kernels : ndarray, shape (n_rois, n_taps)
        Each ROI's HRF (lag included) at the latent rate, unit sum.
    volume_times : ndarray, shape (n_volumes,)
        Volume times (s).
    target_scale : ndarray, shape (n_rois,)
        Divisor of the scaled targets and drive (95th percentile of ``|x|``).
    spatial_latents : ndarray, shape (n_t, 3) | None
        ``spatial``: log-power latents of the common rhythm and of the two sources.
    topographies : ndarray, shape (3, n_channels) | None
        ``spatial``: recorded RMS gain (µV) of the common rhythm and the two sources on
        each channel.
    """

    latent_times: NDArray[np.float64]
    latents: NDArray[np.float64]
    roi_weights: NDArray[np.float64]
    neural_drive: NDArray[np.float64]
    kernels: NDArray[np.float64]
    volume_times: NDArray[np.float64]
    target_scale: NDArray[np.float64]
    spatial_latents: NDArray[np.float64] | None = None
    topographies: NDArray[np.float64] | None = None


# --------------------------------------------------------------------------- HRFs


@dataclass(frozen=True)
class RoiHrf:
    """Double-gamma HRF of one ROI plus an extra delay (``hrf-lag`` coupling).

    ``h(t) = g(t - lag; peak, dispersion) - ratio * g(t - lag; undershoot, dispersion)``
    with ``g(t; p, b)`` the gamma density of scale ``b`` whose mode is ``p``.

    Attributes
    ----------
    peak : float
        Time to peak (s) without the lag.
    undershoot : float
        Time of the undershoot's trough (s) without the lag.
    dispersion : float
        Gamma scale (s) of both lobes (1 in the canonical HRF).
    ratio : float
        Undershoot-to-peak ratio of the two gamma densities (1/6 canonical).
    lag : float
        Extra delay (s).
    """

    peak: float
    undershoot: float
    dispersion: float
    ratio: float
    lag: float

    def kernel(self, dt: float, length: float = _HRF_LENGTH) -> NDArray[np.float64]:
        """Sample the delayed HRF every ``dt`` s over ``lag + length`` s (unit sum)."""
        return gamma_hrf(
            dt,
            peak=self.peak,
            undershoot=self.undershoot,
            dispersion=self.dispersion,
            ratio=self.ratio,
            lag=self.lag,
            length=self.lag + length,
        )


def gamma_hrf(
    dt: float,
    *,
    peak: float = 5.0,
    undershoot: float = 15.0,
    dispersion: float = 1.0,
    ratio: float = 1.0 / 6.0,
    lag: float = 0.0,
    length: float = _HRF_LENGTH,
) -> NDArray[np.float64]:
    """Sample a delayed double-gamma HRF, normalised to unit sum.

    The defaults give :func:`~bids_neurobolt.simulate.bold.canonical_hrf`.

    Parameters
    ----------
    dt : float
        Sampling interval (s).
    peak, undershoot : float
        Modes (s) of the positive and negative gamma lobes.
    dispersion : float
        Gamma scale (s) of both lobes.
    ratio : float
        Weight of the negative lobe's density.
    lag : float
        Delay (s) added to the whole response.
    length : float
        Kernel length (s).

    Returns
    -------
    ndarray, shape (round(length / dt),)

    References
    ----------
    .. [1] Glover GH (1999). Deconvolution of impulse response in event-related BOLD
           fMRI. NeuroImage 9:416-429.
    """
    t = np.arange(round(length / dt)) * dt - lag
    positive = t > 0
    log_t = np.log(np.where(positive, t, 1.0))

    def gamma_pdf(mode: float) -> NDArray[np.float64]:
        shape = mode / dispersion + 1.0
        log_pdf = (shape - 1.0) * (log_t - np.log(dispersion)) - t / dispersion
        return np.where(positive, np.exp(log_pdf - gammaln(shape)) / dispersion, 0.0)

    h = gamma_pdf(peak) - ratio * gamma_pdf(undershoot)
    return h / h.sum()


def roi_hrfs(n_rois: int = len(ROI_NAMES)) -> tuple[RoiHrf, ...]:
    """Draw the ``hrf-lag`` coupling's HRF of each ROI (the same in every seed and subject).

    ROI ``r`` (1-based) draws from ``default_rng([20250, 1, r])``: peak ``U(4, 8)`` s,
    dispersion ``U(0.8, 1.2)`` s, undershoot ``U(8, 12)`` s after the peak, ratio
    ``U(0.1, 0.35)`` and an extra lag ``U(0, 10)`` s.

    Parameters
    ----------
    n_rois : int
        Number of ROIs.

    Returns
    -------
    tuple of RoiHrf
        Handwerker et al. (2004) report peaks of 4-7 s and differences of seconds
        between regions and subjects; the extra lag goes beyond that on purpose.
    """
    out = []
    for index in range(1, n_rois + 1):
        rng = np.random.default_rng([_STREAM_ROI, _KIND_HRF, index])
        peak = float(rng.uniform(4.0, 8.0))
        out.append(
            RoiHrf(
                peak=peak,
                dispersion=float(rng.uniform(0.8, 1.2)),
                undershoot=peak + float(rng.uniform(8.0, 12.0)),
                ratio=float(rng.uniform(0.1, 0.35)),
                lag=float(rng.uniform(0.0, 10.0)),
            )
        )
    return tuple(out)


# --------------------------------------------------------------------------- drives


def interaction_drive(
    latents: NDArray[np.float64], weights: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Return the neural drive of the ``nonlinear`` coupling, ``(n_t, n_rois)``.

    ``sqrt(1/2) w_r·z / sd + sqrt(1/2) p_r / sd`` where ``p_r`` is the product ``z_i z_j``
    of the two bands of largest ``|w_r|`` less its least-squares fit by a constant and
    the band latents over these samples (it is uncorrelated with them in expectation;
    the fit removes the sample correlation too), SDs over the latent samples.

    Parameters
    ----------
    latents : ndarray, shape (n_t, n_bands)
        Band log-power latents.
    weights : ndarray, shape (n_rois, n_bands)
        ROI-by-band weights.

    Returns
    -------
    ndarray, shape (n_t, n_rois)
    """
    linear = latents @ weights.T
    pairs = interaction_pairs(weights)
    product = _residual(latents[:, pairs[:, 0]] * latents[:, pairs[:, 1]], latents)
    return np.sqrt(0.5) * linear / linear.std(0) + np.sqrt(0.5) * product / product.std(0)


def _residual(values: NDArray[np.float64], against: NDArray[np.float64]) -> NDArray[np.float64]:
    """Return ``values`` less their least-squares fit by a constant and ``against``."""
    design = np.column_stack([np.ones(values.shape[0]), against])
    return values - design @ np.linalg.lstsq(design, values, rcond=None)[0]


def interaction_pairs(weights: NDArray[np.float64]) -> NDArray[np.int64]:
    """Return the two bands ``(i, j)`` of largest ``|w_r|`` of each ROI, ``(n_rois, 2)``."""
    return np.argsort(-np.abs(weights), axis=1, kind="stable")[:, :2]


def spatial_angles(n_rois: int = len(ROI_NAMES)) -> NDArray[np.float64]:
    """Mixing angle ``θ_r`` of the two spatial sources in each ROI's drive (radians).

    ROI ``r`` (1-based) draws ``U(0, 2π)`` from ``default_rng([20250, 2, r])``.
    """
    return np.array(
        [
            np.random.default_rng([_STREAM_ROI, _KIND_ANGLE, r]).uniform(0.0, 2.0 * np.pi)
            for r in range(1, n_rois + 1)
        ]
    )


def coupled_bold(
    truth: GroundTruth,
    neural_drive: NDArray[np.float64],
    kernels: NDArray[np.float64] | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Replace the EEG-driven part of a simulated run's ROI BOLD by another drive's.

    Each ROI's drive is convolved with its kernel on the latent grid, sampled at the
    volume times, and given the mean zero and the SD of the run's own EEG-driven part
    (``truth.roi_eeg_signals``), so the signal-to-noise ratio is that of the simulator.

    Parameters
    ----------
    truth : GroundTruth
        A run simulated by :func:`~bids_neurobolt.simulate.dataset.simulate_run`.
    neural_drive : ndarray, shape (n_t, n_rois)
        The new drive at ``truth.latent_times``.
    kernels : ndarray, shape (n_rois, n_taps) | None
        HRF of each ROI at the latent rate; the canonical HRF when None.

    Returns
    -------
    eeg_part : ndarray, shape (n_volumes, n_rois)
        The new EEG-driven part (percent signal change).
    total : ndarray, shape (n_volumes, n_rois)
        ``truth.bold_roi_signals()`` with its EEG-driven part replaced.
    """
    times = truth.latent_times
    if kernels is None:
        hrf = canonical_hrf(float(times[1] - times[0]))
        kernels = np.broadcast_to(hrf, (neural_drive.shape[1], hrf.size))
    n = neural_drive.shape[0]
    sampled = np.column_stack(
        [
            np.interp(truth.roi_times, times, np.convolve(column, kernel)[:n])
            for column, kernel in zip(neural_drive.T, kernels, strict=True)
        ]
    )
    reference = truth.roi_eeg_signals
    eeg_part = (sampled - sampled.mean(0)) / sampled.std(0) * reference.std(0)
    return eeg_part, truth.bold_roi_signals() - reference + eeg_part


# --------------------------------------------------------------------------- spatial


def spatial_patterns(ch_names: tuple[str, ...]) -> NDArray[np.float64]:
    """Return the shapes (unit gain) of the spatial coupling's topographies, ``(3, n_ch)``.

    Row 0 is the common rhythm's gain (a broad pattern centred on Cz, 0.6-1 on the cap),
    rows 1 and 2 the dipolar sources': the common gain times ``sqrt(k)`` times the sign
    of the electrode's direction along a left-right and an anterior-posterior axis.

    Parameters
    ----------
    ch_names : tuple of str
        EEG channel names.

    Returns
    -------
    ndarray, shape (3, n_channels)
    """
    directions = eeg.electrode_directions(ch_names)
    common = 0.6 + 0.4 * eeg.scalp_bump(directions, eeg.electrode_directions(["Cz"])[0], 0.5)
    signs = np.where(directions @ _DIPOLE_AXES.T >= 0.0, 1.0, -1.0).T
    return np.vstack([common, np.sqrt(SPATIAL_SOURCE_POWER) * signs * common])


@functools.cache
def min_spatial_channels() -> int:
    """Return the fewest channels (a prefix of the cap) that separate the spatial rhythms.

    Both dipolar patterns must take both signs and differ, so that the common rhythm's
    and the two sources' topographies are linearly independent.
    """
    for n_channels in range(3, len(eeg.EEG_CHANNELS) + 1):
        if np.linalg.matrix_rank(spatial_patterns(eeg.channel_names(n_channels))) == 3:
            return n_channels
    raise RuntimeError("no prefix of the cap separates the spatial rhythms")  # pragma: no cover


def spatial_contrasts(topographies: NDArray[np.float64]) -> NDArray[np.float64]:
    """Return channel weights that recover each spatial rhythm (pseudo-inverse rows).

    ``spatial_contrasts(A) @ (A @ s) == s`` for the rhythms ``s`` (common, source 1,
    source 2), so the common rhythm cancels from the two source contrasts.

    Parameters
    ----------
    topographies : ndarray, shape (3, n_channels)
        Gains of the rhythms (:attr:`CouplingTruth.topographies`).

    Returns
    -------
    ndarray, shape (3, n_channels)
    """
    return np.linalg.pinv(topographies.T)


def _spatial_eeg(
    rng: np.random.Generator,
    ch_names: tuple[str, ...],
    latent_times: NDArray[np.float64],
    band_latents: NDArray[np.float64],
    n_samples: int,
    timescale: float,
) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float64]]:
    """Simulate the spatial coupling's rhythms on the channels, latents and topographies.

    The sources' latents are made uncorrelated over the latent samples with the band
    latents and each other, the common rhythm's with all of them (each keeps its SD).
    """
    drawn = eeg.smooth_latents(rng, latent_times.size, 3, 1.0 / _dt(latent_times), timescale)
    latents = np.empty_like(drawn)
    for column in (1, 2, 0):  # the sources, then the common rhythm
        against = np.column_stack(
            [band_latents, latents[:, 1:column] if column else latents[:, 1:]]
        )
        residual = _residual(drawn[:, column], against)
        latents[:, column] = residual * drawn[:, column].std() / residual.std()
    gain = SPATIAL_COMMON_AMPLITUDE * rng.uniform(0.8, 1.2)
    jitter = 1.0 + 0.05 * rng.standard_normal(len(ch_names))
    topographies = gain * jitter * spatial_patterns(ch_names)
    freqs = eeg.fft_frequencies(n_samples, EEG_SFREQ, SPATIAL_FREQUENCY + 5.0 * SPATIAL_BANDWIDTH)
    spectrum = np.exp(-((freqs - SPATIAL_FREQUENCY) ** 2) / (4.0 * SPATIAL_BANDWIDTH**2))
    spectrum[0] = 0.0
    carriers = eeg.spectral_noise(rng, n_samples, EEG_SFREQ, np.tile(spectrum, (3, 1)))
    times = np.arange(n_samples) / EEG_SFREQ
    for row, modulation in enumerate(
        (SPATIAL_COMMON_MODULATION, SPATIAL_SOURCE_MODULATION, SPATIAL_SOURCE_MODULATION)
    ):
        carriers[row] *= eeg.band_envelopes(
            latents[:, row : row + 1], latent_times, times, modulation
        )[0].astype(np.float32)
    return topographies.T.astype(np.float32) @ carriers, latents, topographies


# --------------------------------------------------------------------------- targets


def scale_like_targets(
    values: NDArray[np.floating], tr: float, divisor: NDArray[np.float64] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Low-pass, demean and divide ROI signals as the app's targets (paper's "absmax").

    Parameters
    ----------
    values : ndarray, shape (n_volumes, n_rois)
        Signals, one row per volume.
    tr : float
        Repetition time (s).
    divisor : ndarray, shape (n_rois,) | None
        Divide by this; None uses the 95th percentile of the filtered ``|x|`` plus 1e-8.

    Returns
    -------
    scaled : ndarray, shape (n_volumes, n_rois)
    divisor : ndarray, shape (n_rois,)

    References
    ----------
    .. [1] Li Y, et al. (2024). NeuroBOLT. NeurIPS 37 (code: ``preproc.py``).
    """
    filtered = lowpass_filter(values, tr)
    filtered -= filtered.mean(axis=0)
    if divisor is None:
        divisor = np.percentile(np.abs(filtered), ABSMAX_PERCENTILE, axis=0) + _EPSILON
    return filtered / divisor, divisor


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class _Base:
    truth: GroundTruth
    eeg: NDArray[np.float32]
    rng: np.random.Generator


def _dt(times: NDArray[np.float64]) -> float:
    return float(times[1] - times[0])


def _config(duration: float, tr: float, seed: int, n_channels: int) -> SimulationConfig:
    config = SimulationConfig(
        n_subjects=1,
        duration=duration,
        sfreq=NATIVE_SFREQ,
        tr=tr,
        n_channels=n_channels,
        ecg=False,
        seed=seed,
        pre_scan=_PRE_SCAN,
        post_scan=_PRE_SCAN,
    )
    config.validate()
    return config


def _base_run(config: SimulationConfig, model: SubjectModel, subject: int, run: int) -> _Base:
    rng = np.random.default_rng([config.seed, _STREAM_RUN, subject, 0, run])
    truth = simulate_run(config, model, rng, scanner=False).truth
    common = math.gcd(round(EEG_SFREQ), round(config.sfreq))
    up, down = round(EEG_SFREQ) // common, round(config.sfreq) // common
    clean = resample_poly(truth.clean_eeg, up, down, axis=1).astype(np.float32)
    return _Base(truth=truth, eeg=clean, rng=rng)


def _observe(
    eeg_part: NDArray[np.float64],
    total: NDArray[np.float64],
    noise: float,
    rng: np.random.Generator,
    tr: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Measured targets, the drive, and the divisor, from noise-free BOLD."""
    measured = total + noise * total.std(axis=0) * rng.standard_normal(total.shape)
    targets, divisor = scale_like_targets(measured, tr)
    drive, _ = scale_like_targets(eeg_part, tr, divisor)
    return targets, drive, divisor


def _check(coupling: str, duration: float, noise: float, subject: int) -> None:
    if coupling not in COUPLINGS:
        raise ValueError(f"'coupling' must be one of {COUPLINGS}. Got {coupling!r}.")
    if coupling == "control-shifted" and duration < 2.0 * SHIFT_SECONDS:
        raise ValueError(
            f"the 'control-shifted' coupling shifts the targets by {SHIFT_SECONDS:g} s and "
            f"needs a duration of at least {2.0 * SHIFT_SECONDS:g} s. Got {duration:g} s."
        )
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"'noise' must be a finite value >= 0. Got {noise!r}.")
    if subject < 1:
        raise ValueError(f"'subject' must be >= 1. Got {subject!r}.")


def simulate_coupled(
    coupling: str,
    *,
    duration: float = 600.0,
    tr: float = 2.1,
    seed: int = 0,
    noise: float = 0.3,
    n_channels: int = 26,
    subject: int = 1,
) -> tuple[CoupledRun, CouplingTruth]:
    """Simulate a run under a coupling, and return what produced it.

    Parameters
    ----------
    coupling, duration, tr, seed, noise, n_channels, subject
        See :func:`simulate_coupled_run`.

    Returns
    -------
    run : CoupledRun
    truth : CouplingTruth
    """
    _check(coupling, duration, noise, subject)
    if coupling == "spatial" and n_channels < min_spatial_channels():
        raise ValueError(
            f"the 'spatial' coupling needs at least {min_spatial_channels()} channels, so "
            "that some lie on either side of both dipole axes (left-right, front-back). "
            f"Got n_channels={n_channels}."
        )
    config = _config(duration, tr, seed, n_channels)
    model = subject_model(config, subject)
    base = _base_run(config, model, subject, run=0)
    truth = base.truth
    latents, weights, times = truth.latents, truth.roi_weights, truth.latent_times
    n_rois = weights.shape[0]
    hrf = canonical_hrf(_dt(times), _HRF_LENGTH)
    kernels = np.tile(hrf, (n_rois, 1))
    eeg_data, spatial_latents, topographies = base.eeg, None, None
    neural = latents @ weights.T

    if coupling == "hrf-lag":
        raw_kernels = [h.kernel(_dt(times)) for h in roi_hrfs(n_rois)]
        kernels = np.zeros((n_rois, max(k.size for k in raw_kernels)))
        for row, kernel in zip(kernels, raw_kernels, strict=True):
            row[: kernel.size] = kernel
        eeg_part, total = coupled_bold(truth, neural, kernels)
    elif coupling == "nonlinear":
        neural = interaction_drive(latents, weights)
        eeg_part, total = coupled_bold(truth, neural, kernels)
    elif coupling == "spatial":
        rng = np.random.default_rng([seed, _STREAM_SPATIAL, subject])
        rhythms, spatial_latents, topographies = _spatial_eeg(
            rng, truth.ch_names, times, latents, base.eeg.shape[1], config.latent_timescale
        )
        eeg_data = base.eeg + rhythms
        angles = spatial_angles(n_rois)
        neural = spatial_latents[:, 1:] @ np.vstack([np.cos(angles), np.sin(angles)])
        eeg_part, total = coupled_bold(truth, neural, kernels)
    else:
        eeg_part, total = truth.roi_eeg_signals, truth.bold_roi_signals()

    targets, drive, divisor = _observe(eeg_part, total, noise, base.rng, tr)
    if coupling == "control-unrelated":
        other = _base_run(config, model, subject, run=1)
        signals = other.truth
        targets, _, _ = _observe(
            signals.roi_eeg_signals, signals.bold_roi_signals(), noise, other.rng, tr
        )
    elif coupling == "control-shifted":
        targets = np.roll(targets, round(SHIFT_SECONDS / tr), axis=0)

    run = CoupledRun(
        eeg=np.ascontiguousarray(eeg_data, dtype=np.float32),
        markers=np.round(truth.roi_times * EEG_SFREQ).astype(np.int64),
        targets=targets.astype(np.float32),
        drive=drive,
        ch_names=tuple(truth.ch_names),
        roi_names=tuple(truth.roi_names),
        tr=float(tr),
        coupling=coupling,
    )
    return run, CouplingTruth(
        latent_times=times,
        latents=latents,
        roi_weights=weights,
        neural_drive=neural,
        kernels=kernels,
        volume_times=truth.roi_times,
        target_scale=divisor,
        spatial_latents=spatial_latents,
        topographies=topographies,
    )


def simulate_coupled_run(
    coupling: str,
    *,
    duration: float = 600.0,
    tr: float = 2.1,
    seed: int = 0,
    noise: float = 0.3,
    n_channels: int = 26,
    subject: int = 1,
) -> CoupledRun:
    """Simulate one resting EEG-fMRI run whose BOLD follows the EEG through ``coupling``.

    Parameters
    ----------
    coupling : str
        One of :data:`COUPLINGS` (see the module description).
    duration : float
        Scan duration (s); ``round(duration / tr)`` volumes. ``control-shifted`` needs
        at least 600 s.
    tr : float
        Repetition time (s).
    seed : int
        Non-negative random seed.
    noise : float
        SD of the white measurement noise, relative to each ROI's noise-free SD.
    n_channels : int
        EEG channels (a prefix of :data:`~bids_neurobolt.simulate.eeg.EEG_CHANNELS`);
        ``spatial`` needs at least :func:`min_spatial_channels` (7).
    subject : int
        Subject index (1-based): the subject's constants are shared by all its runs,
        and subjects of one seed share the couplings.

    Returns
    -------
    CoupledRun

    Raises
    ------
    ValueError
        An unknown coupling, a negative noise or a subject below 1, or too short a run
        for ``control-shifted``.
    bids_neurobolt.errors.ConfigError
        A simulation setting out of range (a ``ValueError`` too).

    Examples
    --------
    >>> run = simulate_coupled_run("hrf-lag", duration=600.0, seed=3)  # doctest: +SKIP
    >>> run.targets.shape == run.drive.shape == (286, 6)  # doctest: +SKIP
    True
    """
    return simulate_coupled(
        coupling,
        duration=duration,
        tr=tr,
        seed=seed,
        noise=noise,
        n_channels=n_channels,
        subject=subject,
    )[0]
