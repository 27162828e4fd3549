"""MR gradient artifact: scanner timing, EPI gradient waveforms and the induced voltages.

The switching imaging gradients induce a voltage in every loop formed by an electrode
lead and the reference lead, proportional to the loop's effective area and to the rate
of change of each gradient, dG/dt (Faraday's law). The artifact is therefore a linear
mix of the three axes' dG/dt waveforms with channel-specific coefficients, and it
repeats with every slice of every volume (Allen et al. 2000; Niazy et al. 2005).

This module builds

- the scanner timing: true (continuous-time) slice onsets in EEG samples, which drift
  against the EEG clock, and the integer marker samples at which the EEG amplifier
  registers them (the first sample at or after each onset, so onsets lie up to one
  sample *before* their markers: sub-sample jitter that template methods must handle);
- one slice of a gradient-echo EPI sequence as a table of gradient ramps (spoilers,
  slice selection and refocusing, readout/phase prephasers, an alternating EPI readout
  with phase-encoding blips, a crusher);
- the dG/dt of each axis evaluated *analytically* at the sample times: each ramp's
  rectangular derivative convolved with a Gaussian of SD ``1 / sfreq`` (standing in for
  the amplifier's anti-aliasing filter), which is a difference of two error functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import erf

from bids_neurobolt.simulate.noise import smooth_noise

AXES: tuple[str, ...] = ("x", "y", "z")

# EPI sequence constants (seconds; gradient amplitudes relative to the readout lobe).
_ECHO_SPACING = 5.0e-4  # one readout lobe: a 1 kHz fundamental
_READOUT_RAMP = 1.0e-4
_MAX_LINES = 64
_MIN_LINES = 8
_BLIP_DURATION = 1.0e-4
_BLIP_AMPLITUDE = 0.15
_SPOILER = (2.0e-4, 3.0e-4, 1.2e-3, 0.6)  # start, ramp, flat, amplitude (x, y and z)
_SLICE_SELECT = (2.2e-3, 2.0e-4, 2.6e-3, 0.8)  # on z
_REPHASE_RAMP, _REPHASE_FLAT = 2.0e-4, 1.0e-3
_CRUSHER = (3.0e-4, 1.0e-3, 0.7)  # ramp, flat, amplitude (z), after the readout
_GAP = 2.0e-4
_USABLE_FRACTION = 0.97  # of the slice period
_KERNEL_HALF_WIDTH = 5.0  # evaluate each smoothed ramp over +-5 SD

#: Shortest slice period (s) the EPI model fits in (8 readout lines at 0.25 ms).
MIN_SLICE_PERIOD = 0.012


@dataclass(frozen=True)
class ScannerTiming:
    """When each slice of each volume was acquired, on the EEG clock.

    Attributes
    ----------
    slice_onsets : ndarray, shape (n_volumes, n_slices)
        True slice onsets in (fractional) EEG samples, in acquisition order.
    slice_markers : ndarray of int64, shape (n_volumes, n_slices)
        Samples at which the amplifier registered the slice triggers:
        ``ceil(slice_onsets)``.
    """

    slice_onsets: NDArray[np.float64]
    slice_markers: NDArray[np.int64]

    @property
    def volume_onsets(self) -> NDArray[np.float64]:
        """True onsets (fractional samples) of the volumes' first slices."""
        return self.slice_onsets[:, 0]

    @property
    def volume_markers(self) -> NDArray[np.int64]:
        """Volume trigger samples (those of the volumes' first slices)."""
        return self.slice_markers[:, 0]


def scanner_timing(
    *,
    n_volumes: int,
    n_slices: int,
    tr: float,
    sfreq: float,
    first_volume: float,
    clock_error: float,
) -> ScannerTiming:
    """Slice onsets of an EPI run on the EEG clock.

    Parameters
    ----------
    n_volumes, n_slices : int
        Volumes in the run and slices per volume (equally spaced, no gap).
    tr : float
        Repetition time in seconds on the scanner clock.
    sfreq : float
        EEG sampling rate in Hz.
    first_volume : float
        Onset of the first volume in seconds from the first EEG sample.
    clock_error : float
        Relative rate error of the scanner clock against the EEG clock (``2e-5`` is
        20 ppm); unsynchronised clocks make the sub-sample phase of the triggers drift.

    Returns
    -------
    ScannerTiming
    """
    volume = np.arange(n_volumes)[:, None]
    slice_ = np.arange(n_slices)[None, :]
    seconds = first_volume + (volume * tr + slice_ * tr / n_slices) * (1.0 + clock_error)
    onsets = seconds * sfreq
    return ScannerTiming(slice_onsets=onsets, slice_markers=np.ceil(onsets).astype(np.int64))


def slice_timing(n_slices: int, tr: float) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Interleaved ascending slice order and the BIDS ``SliceTiming`` it implies.

    Parameters
    ----------
    n_slices : int
        Number of slices.
    tr : float
        Repetition time in seconds.

    Returns
    -------
    order : ndarray of int64, shape (n_slices,)
        Spatial slice index acquired at each acquisition position (0, 2, 4, ..., 1, 3, ...).
    timing : ndarray, shape (n_slices,)
        Acquisition time (s) of each spatial slice, in ``[0, tr)``.
    """
    order = np.concatenate([np.arange(0, n_slices, 2), np.arange(1, n_slices, 2)])
    timing = np.empty(n_slices)
    timing[order] = np.arange(n_slices) * tr / n_slices
    return order.astype(np.int64), timing


def _trapezoid(axis: int, start: float, ramp: float, flat: float, amplitude: float) -> list:
    return [
        (axis, start, start + ramp, amplitude / ramp),
        (axis, start + ramp + flat, start + 2 * ramp + flat, -amplitude / ramp),
    ]


_REPHASE_START = _SLICE_SELECT[0] + 2 * _SLICE_SELECT[1] + _SLICE_SELECT[2]
_READOUT_START = _REPHASE_START + 2 * _REPHASE_RAMP + _REPHASE_FLAT + _GAP


def epi_readout(slice_period: float) -> tuple[int, float]:
    """Size the EPI readout (lines, echo spacing) to fit in one slice period.

    64 lines at 0.5 ms echo spacing (a 1 kHz readout fundamental) when they fit,
    otherwise fewer lines (an even number, at least 8) and, if even 8 do not fit, a
    shorter echo spacing.

    Parameters
    ----------
    slice_period : float
        Time between slice onsets in seconds, at least :data:`MIN_SLICE_PERIOD`.

    Returns
    -------
    n_lines : int
        Readout lines (lobes).
    echo_spacing : float
        Duration of one lobe in seconds.
    """
    if slice_period < MIN_SLICE_PERIOD:
        raise ValueError(f"slice period {slice_period:.4f} s < {MIN_SLICE_PERIOD} s")
    crusher_ramp, crusher_flat, _ = _CRUSHER
    available = (
        _USABLE_FRACTION * slice_period - _READOUT_START - 2 * crusher_ramp - crusher_flat - _GAP
    )
    n_lines = min(_MAX_LINES, int(available / _ECHO_SPACING) // 2 * 2)
    if n_lines >= _MIN_LINES:
        return n_lines, _ECHO_SPACING
    return _MIN_LINES, available / _MIN_LINES


def epi_ramps(slice_period: float) -> NDArray[np.float64]:
    """Gradient ramps of one slice of a gradient-echo EPI sequence.

    Fat-saturation spoilers on all axes, slice selection and refocusing (z), readout and
    phase prephasers, the alternating readout (x) with phase-encoding blips (y) sized by
    :func:`epi_readout`, and a crusher (z).

    Parameters
    ----------
    slice_period : float
        Time between slice onsets in seconds, at least :data:`MIN_SLICE_PERIOD`.

    Returns
    -------
    ndarray, shape (n_ramps, 4)
        Columns: axis (0 x readout, 1 y phase, 2 z slice), ramp start and end (s from the
        slice onset), slope (gradient units per second; a readout lobe has amplitude 1).
    """
    n_lines, echo_spacing = epi_readout(slice_period)
    ramps: list = []
    start, ramp, flat, amplitude = _SPOILER
    for axis in range(3):
        ramps += _trapezoid(axis, start, ramp, flat, amplitude)
    start, ramp, flat, amplitude = _SLICE_SELECT
    ramps += _trapezoid(2, start, ramp, flat, amplitude)
    rephase_start = _REPHASE_START
    rephase_amplitude = -amplitude * (flat / 2 + ramp) / (_REPHASE_FLAT + _REPHASE_RAMP)
    ramps += _trapezoid(2, rephase_start, _REPHASE_RAMP, _REPHASE_FLAT, rephase_amplitude)
    readout_start = _READOUT_START
    crusher_ramp, crusher_flat, crusher_amplitude = _CRUSHER
    readout_ramp = min(_READOUT_RAMP, echo_spacing / 4)
    blip = min(_BLIP_DURATION, 2 * readout_ramp)

    # Prephasers (readout: half a lobe; phase: half the blips), during the slice rephaser.
    lobe_area = echo_spacing - readout_ramp
    ramps += _trapezoid(
        0,
        rephase_start,
        _REPHASE_RAMP,
        _REPHASE_FLAT,
        -0.5 * lobe_area / (_REPHASE_FLAT + _REPHASE_RAMP),
    )
    blip_area = _BLIP_AMPLITUDE * blip / 2
    ramps += _trapezoid(
        1,
        rephase_start,
        _REPHASE_RAMP,
        _REPHASE_FLAT,
        -0.5 * (n_lines - 1) * blip_area / (_REPHASE_FLAT + _REPHASE_RAMP),
    )

    # Alternating readout lobes and phase-encoding blips between them (vectorised).
    line = np.arange(n_lines)
    lobe_start = readout_start + line * echo_spacing
    sign = np.where(line % 2 == 0, 1.0, -1.0)
    up = np.column_stack(
        [
            np.zeros(n_lines),
            lobe_start,
            lobe_start + readout_ramp,
            sign / readout_ramp,
        ]
    )
    down = np.column_stack(
        [
            np.zeros(n_lines),
            lobe_start + echo_spacing - readout_ramp,
            lobe_start + echo_spacing,
            -sign / readout_ramp,
        ]
    )
    blip_centre = lobe_start[1:]
    half = blip / 2
    blip_up = np.column_stack(
        [
            np.ones(n_lines - 1),
            blip_centre - half,
            blip_centre,
            np.full(n_lines - 1, _BLIP_AMPLITUDE / half),
        ]
    )
    blip_down = np.column_stack(
        [
            np.ones(n_lines - 1),
            blip_centre,
            blip_centre + half,
            np.full(n_lines - 1, -_BLIP_AMPLITUDE / half),
        ]
    )
    readout_end = readout_start + n_lines * echo_spacing
    ramps += _trapezoid(2, readout_end + _GAP, crusher_ramp, crusher_flat, crusher_amplitude)
    return np.vstack([np.array(ramps, dtype=float), up, down, blip_up, blip_down])


def ramp_derivative(
    tau: NDArray[np.float64], start: NDArray, end: NDArray, slope: NDArray, sigma: float
) -> NDArray[np.float64]:
    """Smoothed derivative of linear ramps, evaluated analytically.

    A ramp from ``start`` to ``end`` with gradient slope ``s`` has a rectangular
    derivative ``s`` on ``[start, end]``; convolved with a Gaussian of SD ``sigma`` it is
    ``s / 2 * (erf((tau - start) / (sigma sqrt 2)) - erf((tau - end) / (sigma sqrt 2)))``.

    Parameters
    ----------
    tau : ndarray
        Times relative to the slice onset (any unit, the same as ``start``/``end``/``sigma``).
    start, end, slope : ndarray
        Ramp parameters, broadcastable against ``tau``.
    sigma : float
        SD of the Gaussian smoothing kernel.

    Returns
    -------
    ndarray
        The smoothed derivative at ``tau``.
    """
    scale = 1.0 / (sigma * np.sqrt(2.0))
    return 0.5 * slope * (erf((tau - start) * scale) - erf((tau - end) * scale))


def normalise_ramps(ramps: NDArray[np.float64], sigma: float) -> NDArray[np.float64]:
    """Scale all slopes so that the largest smoothed dG/dt of any axis is 1.

    One factor for all axes keeps their physical ratios (the readout switches fastest).

    Parameters
    ----------
    ramps : ndarray, shape (n_ramps, 4)
        Ramp table from :func:`epi_ramps`.
    sigma : float
        Smoothing SD in seconds.

    Returns
    -------
    ndarray, shape (n_ramps, 4)
        The table with normalised slopes.
    """
    out = ramps.copy()
    out[:, 3] /= np.abs(slice_waveforms(ramps, sigma)).max()
    return out


def slice_waveforms(
    ramps: NDArray[np.float64], sigma: float, n_points: int = 8192
) -> NDArray[np.float64]:
    """dG/dt of the three axes over one slice on a fine regular grid.

    Parameters
    ----------
    ramps : ndarray, shape (n_ramps, 4)
        Ramp table.
    sigma : float
        Smoothing SD in seconds.
    n_points : int
        Number of grid points spanning the ramps plus five SDs on either side.

    Returns
    -------
    ndarray, shape (3, n_points)
    """
    tau = np.linspace(
        ramps[:, 1].min() - _KERNEL_HALF_WIDTH * sigma,
        ramps[:, 2].max() + _KERNEL_HALF_WIDTH * sigma,
        n_points,
    )
    out = np.zeros((3, n_points))
    for axis in range(3):
        sel = ramps[ramps[:, 0] == axis]
        out[axis] = ramp_derivative(tau[:, None], sel[:, 1], sel[:, 2], sel[:, 3], sigma).sum(
            axis=1
        )
    return out


def gradient_derivatives(
    onsets: NDArray[np.float64],
    ramps: NDArray[np.float64],
    sigma: float,
    sfreq: float,
    n_samples: int,
    chunk: int = 256,
) -> NDArray[np.float64]:
    """Smoothed dG/dt of the three gradient axes at every EEG sample.

    Each ramp of each slice is evaluated only on the samples within five kernel SDs of
    it and scattered into the output, so the cost is proportional to the number of
    ramps, not to the number of samples times ramps.

    Parameters
    ----------
    onsets : ndarray, shape (n_slices_total,)
        True slice onsets in fractional samples.
    ramps : ndarray, shape (n_ramps, 4)
        Ramp table (times in seconds).
    sigma : float
        Smoothing SD in seconds.
    sfreq : float
        Sampling rate in Hz.
    n_samples : int
        Length of the output.
    chunk : int
        Slices processed at a time (bounds the memory used).

    Returns
    -------
    ndarray, shape (3, n_samples)
    """
    out = np.zeros((3, n_samples))
    sig = sigma * sfreq
    for axis in range(3):
        sel = ramps[ramps[:, 0] == axis]
        start, end, slope = sel[:, 1] * sfreq, sel[:, 2] * sfreq, sel[:, 3]
        width = int(np.ceil((end - start).max() + 2 * _KERNEL_HALF_WIDTH * sig)) + 2
        offsets = np.arange(width)
        for first in range(0, onsets.size, chunk):
            onset = onsets[first : first + chunk, None, None]
            lo = np.floor(onset + start[None, :, None] - _KERNEL_HALF_WIDTH * sig)
            index = (lo + offsets).astype(np.int64)  # (n_onsets, n_ramps, width)
            values = ramp_derivative(
                index - onset, start[:, None], end[:, None], slope[:, None], sig
            )
            inside = (index >= 0) & (index < n_samples)
            out[axis] += np.bincount(index[inside], weights=values[inside], minlength=n_samples)
    return out


def gradient_coupling(
    rng: np.random.Generator,
    directions: NDArray[np.float64],
    reference: NDArray[np.float64],
    n_ecg: int,
) -> NDArray[np.float64]:
    """Unscaled coupling of each channel to the three gradient axes.

    An x-gradient changes Bz in proportion to x, so the EMF of the loop between an
    electrode and the reference grows with their separation along each axis. The
    coupling is that separation plus a random term for the lead routing; ECG leads (on
    the chest or back) get larger, random couplings.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator (subject stream).
    directions : ndarray, shape (n_eeg, 3)
        Unit vectors of the EEG electrodes.
    reference : ndarray, shape (3,)
        Unit vector of the reference electrode.
    n_ecg : int
        Number of ECG channels after the EEG channels (0 or 1).

    Returns
    -------
    ndarray, shape (n_eeg + n_ecg, 3)
    """
    eeg = directions - reference + 0.6 * rng.standard_normal(directions.shape)
    ecg = 1.5 * rng.standard_normal((n_ecg, 3))
    return np.vstack([eeg, ecg])


def scale_coupling(
    coupling: NDArray[np.float64],
    ramps: NDArray[np.float64],
    sigma: float,
    amplitude: float,
    n_eeg: int,
) -> NDArray[np.float64]:
    """Scale couplings so that the median EEG channel's artifact peaks at ``amplitude`` µV.

    Parameters
    ----------
    coupling : ndarray, shape (n_channels, 3)
        Unscaled couplings; the first ``n_eeg`` rows are EEG channels.
    ramps : ndarray, shape (n_ramps, 4)
        Normalised ramp table.
    sigma : float
        Smoothing SD in seconds.
    amplitude : float
        Target median peak absolute artifact (µV) over the EEG channels.
    n_eeg : int
        Number of EEG channels.

    Returns
    -------
    ndarray, shape (n_channels, 3)
        Couplings in µV per unit dG/dt.
    """
    peaks = np.abs(coupling @ slice_waveforms(ramps, sigma)).max(axis=1)
    return coupling * (amplitude / np.median(peaks[:n_eeg]))


def coupling_drift(
    rng: np.random.Generator, n_channels: int, n_volumes: int, variability: float
) -> NDArray[np.float64]:
    """Slow per-channel gain of the artifact (head motion changes the loop areas).

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator (run stream).
    n_channels, n_volumes : int
        Output shape.
    variability : float
        SD of the relative gain change (0 gives identical artifacts in every slice).

    Returns
    -------
    ndarray, shape (n_channels, n_volumes)
        Gain at each volume onset, around 1.
    """
    if variability == 0 or n_volumes < 2:
        return np.ones((n_channels, n_volumes))
    return 1.0 + variability * smooth_noise(rng, (n_volumes, n_channels), 10.0).T


def gradient_artifact(
    n_samples: int,
    sfreq: float,
    slice_onsets: NDArray[np.float64],
    ramps: NDArray[np.float64],
    sigma: float,
    coupling: NDArray[np.float64],
    gain: NDArray[np.float64],
) -> NDArray[np.float32]:
    """Gradient artifact on every channel, in µV.

    ``artifact[c, n] = gain_c(n) * sum_a coupling[c, a] * dG_a/dt(n)``, with the gain
    linearly interpolated between volume onsets.

    Parameters
    ----------
    n_samples : int
        Number of EEG samples.
    sfreq : float
        Sampling rate in Hz.
    slice_onsets : ndarray, shape (n_volumes, n_slices)
        True slice onsets in fractional samples.
    ramps : ndarray, shape (n_ramps, 4)
        Normalised ramp table.
    sigma : float
        Smoothing SD in seconds.
    coupling : ndarray, shape (n_channels, 3)
        Couplings in µV.
    gain : ndarray, shape (n_channels, n_volumes)
        Per-volume gain of each channel.

    Returns
    -------
    ndarray, shape (n_channels, n_samples), float32

    References
    ----------
    .. [1] Allen PJ, Josephs O, Turner R (2000). A method for removing imaging artifact
           from continuous EEG recorded during functional MRI. NeuroImage 12:230-239.
    .. [2] Niazy RK, Beckmann CF, Iannetti GD, Brady JM, Smith SM (2005). Removal of
           FMRI environment artifacts from EEG data using optimal basis sets.
           NeuroImage 28:720-737.
    """
    n_channels = coupling.shape[0]
    out = np.zeros((n_channels, n_samples), dtype=np.float32)
    if slice_onsets.size == 0:
        return out
    derivatives = gradient_derivatives(slice_onsets.ravel(), ramps, sigma, sfreq, n_samples)
    span = np.flatnonzero(np.any(derivatives != 0, axis=0))
    lo, hi = span[0], span[-1] + 1
    samples = np.arange(lo, hi)
    for c in range(n_channels):
        gain_c = np.interp(samples, slice_onsets[:, 0], gain[c])
        out[c, lo:hi] = gain_c * (coupling[c] @ derivatives[:, lo:hi])
    return out
