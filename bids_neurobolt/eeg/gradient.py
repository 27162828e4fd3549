"""MR gradient artifact removal at the native sampling rate.

The switching imaging gradients induce the same voltage waveform at every slice of every
volume, 100-1000 times larger than the EEG. This module removes it with trigger-locked
average artifact subtraction (AAS, Allen et al. 2000) refined as in FASTR (Niazy et al.
2005):

1. **timing** (:func:`artifact_timing`): one artifact epoch per slice, from the slice
   markers (missing ones completed from the volume markers), or from the volume markers
   plus ``SliceTiming``; per volume when slices are unknown or irregular;
2. **sub-sample alignment** (:func:`plan_gradient`): each epoch's delay relative to the
   artifact template is estimated to a small fraction of a sample on a reference channel
   (cross-correlation maximised in the frequency domain), because triggers are only
   known to the sample and, without a synchronised clock, drift across it;
3. **template subtraction** (:func:`subtract_gradient`): every epoch is shifted onto a
   common grid by a phase ramp (an exact band-limited fractional delay, instead of
   upsampling by 10), the template of each epoch is the mean of the ``window`` nearest
   aligned epochs (the window is clipped, not dropped, at the first and last artifacts,
   so every artifact is corrected), shifted back and subtracted. With slice epochs the
   template is made free of EEG below half the slice frequency (the artifact has no
   content there), so slow EEG is not removed with it;
4. **optimal basis set** (OBS): the principal components of the residuals above
   ``obs_highpass`` (70 Hz) are fitted to each epoch and subtracted, per channel.

All channels of a chunk are processed at once (no loop over channels); callers bound the
memory by passing channel chunks (:func:`chunk_size`).

References
----------
.. [1] Allen PJ, Josephs O, Turner R (2000). A method for removing imaging artifact from
       continuous EEG recorded during functional MRI. NeuroImage 12:230-239.
.. [2] Niazy RK, Beckmann CF, Iannetti GD, Brady JM, Smith SM (2005). Removal of FMRI
       environment artifacts from EEG data using optimal basis sets. NeuroImage
       28:720-737.
.. [3] Mandelkow H, Halder P, Boesiger P, Brandeis D (2006). Synchronization facilitates
       removal of MRI artefacts from concurrent EEG recordings and increases usable
       bandwidth. NeuroImage 32:1120-1126.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.fft
from numpy.typing import NDArray

from bids_neurobolt.eeg.preprocess import filter_data, response
from bids_neurobolt.errors import DataError

logger = logging.getLogger(__name__)

#: Slowest sampling rate (Hz) at which the gradient artifact can be removed.
MIN_GRADIENT_SFREQ = 1000.0

#: Fewest samples an artifact epoch (slice or volume) may span.
MIN_EPOCH_SAMPLES = 16

_FFT_WORKERS = 2
_MARKER_TOLERANCE = 2.0  # samples: slice markers this close belong to the same slice
_SPACING_TOLERANCE = 0.1  # relative deviation of slice spacings tolerated in slice mode
#: Most residual components FASTR's "auto" order can keep.
OBS_MAX_COMPONENTS = 4

_PCA_EIGH_MAX_DIM = 96  # PCA by eigendecomposition up to this dimension, else subspace iteration


@dataclass(frozen=True)
class GradientParams:
    """Settings of the gradient artifact removal.

    Attributes
    ----------
    window : int | None
        Artifacts averaged into each template with slice epochs. None (default) takes
        ``max(30, artifacts in window_seconds)``: FASTR's 30 artifacts, widened so that
        the template spans ``window_seconds``. Averaging over a span ``S`` notches the
        EEG within about ``1 / (2 S)`` Hz of every slice harmonic, so a short span removes
        EEG there along with the artifact.
    window_seconds : float
        Time span of the default window (s).
    volume_window : int
        Artifacts averaged into each template with volume epochs.
    pre_fraction : float
        Part of the artifact period taken before each trigger (FASTR ``pre_frac``).
    align : bool
        Estimate and correct the sub-sample delay of every epoch.
    max_shift : float
        Largest delay searched, in samples, either side of the trigger.
    obs_components : int or "auto"
        Principal components of the residuals fitted per epoch (0 disables OBS;
        ``"auto"`` keeps those locked to the scanner, see :func:`fit_obs`).
    obs_highpass : float
        Only residual content above this frequency (Hz) is fitted by OBS.
    obs_max_epochs : int
        Epochs used to estimate the residual components (evenly spread).
    template_highpass : bool
        With slice epochs, keep EEG below half the slice frequency out of the template.
    pad : int
        Samples of tapered context on each side of an epoch for the phase shifts.
    """

    window: int | None = None
    window_seconds: float = 4.0
    volume_window: int = 20
    pre_fraction: float = 0.03
    align: bool = True
    max_shift: float = 2.0
    obs_components: int | Literal["auto"] = "auto"
    obs_highpass: float = 70.0
    obs_max_epochs: int = 150
    template_highpass: bool = True
    pad: int = 32

    def __post_init__(self) -> None:
        if (self.window is not None and self.window < 2) or self.volume_window < 2:
            raise ValueError("window and volume_window must be at least 2")
        if not 0.0 <= self.pre_fraction < 0.5:
            raise ValueError("pre_fraction must be in [0, 0.5)")
        if self.obs_components != "auto" and int(self.obs_components) < 0:
            raise ValueError("obs_components must be >= 0 or 'auto'")
        if self.pad < 4:
            raise ValueError("pad must be at least 4 samples")


@dataclass(frozen=True)
class ArtifactTiming:
    """Where each gradient artifact epoch starts.

    Attributes
    ----------
    onsets : ndarray of float64
        Trigger position of every artifact epoch in (fractional) samples, sorted.
    kind : {"slice", "volume"}
        What one epoch is.
    source : str
        Where the triggers came from (for the quality report).
    period : float
        Median trigger spacing in samples.
    slices_per_volume : int
        Excitations per volume (1 in volume mode).
    n_completed : int
        Slice triggers inserted where markers were missing.
    """

    onsets: NDArray[np.float64]
    kind: Literal["slice", "volume"]
    source: str
    period: float
    slices_per_volume: int
    n_completed: int = 0


@dataclass(frozen=True)
class GradientPlan:
    """Epoch layout and sub-sample delays shared by every channel.

    Attributes
    ----------
    starts : ndarray of int64
        First sample of each epoch window (``pad`` samples before its core).
    core_len : ndarray of int64
        Samples each epoch corrects (its core), from ``starts + pad``.
    length : int
        Epoch window length (an FFT-friendly size).
    pad : int
        Context samples before the core.
    shifts : ndarray of float64
        Delay of each epoch relative to the template, in samples.
    usable : ndarray of bool
        Epochs lying fully inside the recording (the others are corrected, but not
        averaged into templates).
    window : int
        Epochs per template.
    kind : {"slice", "volume"}
        Epoch kind.
    sfreq : float
        Sampling rate (Hz).
    n_samples : int
        Recording length.
    period : float
        Median epoch spacing (samples).
    """

    starts: NDArray[np.int64]
    core_len: NDArray[np.int64]
    length: int
    pad: int
    shifts: NDArray[np.float64]
    usable: NDArray[np.bool_]
    window: int
    kind: Literal["slice", "volume"]
    sfreq: float
    n_samples: int
    period: float
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def n_epochs(self) -> int:
        """Number of artifact epochs."""
        return int(self.starts.size)

    @property
    def span(self) -> tuple[int, int]:
        """First and one-past-last sample corrected."""
        first = int(self.starts[0] + self.pad)
        last = int(self.starts[-1] + self.pad + self.core_len[-1])
        return max(first, 0), min(last, self.n_samples)


# --------------------------------------------------------------------------- timing


def artifact_timing(
    volume_samples: NDArray[np.integer],
    sfreq: float,
    *,
    slice_samples: NDArray[np.integer] | None = None,
    slice_timing: NDArray[np.floating] | None = None,
    repetition_time: float | None = None,
    reference: NDArray[np.floating] | None = None,
) -> ArtifactTiming:
    """Build the artifact epochs: slices when they can be known, else volumes.

    Slice markers are used when present; volumes with missing (or extra) slice markers
    get the median within-volume slice positions of the complete volumes, keeping the
    markers that match. Without slice markers, ``SliceTiming`` gives the excitation
    times within each volume (repeated values of multiband sequences are merged). With
    neither, the slice period is measured on ``reference`` (:func:`detect_slice_period`).
    Slice epochs need evenly spaced excitations; otherwise volume epochs are used.

    Parameters
    ----------
    volume_samples : array of int
        Sample of each volume marker (native rate).
    sfreq : float
        Sampling rate in Hz.
    slice_samples : array of int | None
        Sample of each slice marker, if the recording has them.
    slice_timing : array of float | None
        BIDS ``SliceTiming`` of the BOLD run (s).
    repetition_time : float | None
        ``RepetitionTime`` (s); the median marker spacing when None.
    reference : ndarray, shape (n_samples,) | None
        A channel with a strong artifact, to measure the slice period when neither
        slice markers nor ``SliceTiming`` are given.

    Returns
    -------
    ArtifactTiming

    Raises
    ------
    DataError
        With fewer than two volume markers.

    References
    ----------
    .. [1] Niazy RK et al. (2005). NeuroImage 28:720-737 (FASTR ``trig_correct``).
    """
    volumes = np.sort(np.asarray(volume_samples, dtype=np.float64))
    if volumes.size < 2:
        raise DataError(
            f"{volumes.size} volume marker(s): at least two are needed to locate the "
            "MR gradient artifact.",
            fix="Check the volume-marker name (--volume-marker) and that the EEG covers the scan.",
        )
    tr = float(np.median(np.diff(volumes))) if repetition_time is None else repetition_time * sfreq
    offsets, source, completed = None, "", 0
    if slice_samples is not None and np.size(slice_samples) > 0:
        found = _offsets_from_markers(volumes, np.asarray(slice_samples, np.float64), tr)
        if found is not None:
            offsets, completed, n_full = found
            source = (
                "slice markers"
                if completed == 0
                else f"slice markers ({completed} completed from {n_full} complete volumes)"
            )
    if offsets is None and slice_timing is not None and np.size(slice_timing) > 0:
        times = np.unique(np.round(np.asarray(slice_timing, dtype=np.float64), 6))
        if times.size > 1:
            offsets = np.broadcast_to(times * sfreq, (volumes.size, times.size))
            source = "volume markers + SliceTiming"
    if offsets is None and reference is not None:
        period = detect_slice_period(reference, volumes.astype(np.int64), tr)
        if period is not None:
            count = int(np.floor(tr / period + 0.05))
            offsets = np.broadcast_to(np.arange(count) * period, (volumes.size, count))
            source = f"volume markers + slice period measured on the data ({count} per volume)"
    if offsets is not None and _evenly_spaced(offsets, tr):
        onsets = (volumes[:, None] + offsets).ravel()
        period = float(np.median(np.diff(offsets, axis=1)))
        if period >= MIN_EPOCH_SAMPLES:
            return ArtifactTiming(
                onsets=np.sort(onsets),
                kind="slice",
                source=source,
                period=period,
                slices_per_volume=offsets.shape[1],
                n_completed=completed,
            )
        logger.info(
            "Slice period of %.1f samples is too short for slice epochs; using volume epochs.",
            period,
        )
    elif offsets is not None:
        logger.info("Slices are not evenly spaced (%s); using volume epochs.", source)
    return ArtifactTiming(
        onsets=volumes,
        kind="volume",
        source="volume markers",
        period=tr,
        slices_per_volume=1 if offsets is None else offsets.shape[1],
        n_completed=0,
    )


def _offsets_from_markers(
    volumes: NDArray[np.float64], slices: NDArray[np.float64], tr: float
) -> tuple[NDArray[np.float64], int, int] | None:
    """Within-volume slice positions per volume, completing missing slice markers.

    The positions of all slice markers relative to their volume marker are clustered
    (markers within 2 samples of each other); every cluster present in at least half
    the volumes is an expected slice. A volume lacking a marker near an expected slice
    gets the median position of that slice over the other volumes; markers near no
    expected slice are ignored.

    Returns
    -------
    tuple | None
        ``(offsets (n_volumes, n_slices), n_completed, n_complete_volumes)``, or None when
        no slice appears in half the volumes.
    """
    slices = np.sort(slices)
    owner = np.searchsorted(volumes, slices, side="right") - 1
    inside = (owner >= 0) & (slices < volumes[np.maximum(owner, 0)] + tr - 0.5)
    slices, owner = slices[inside], owner[inside]
    if slices.size == 0:
        return None
    relative = slices - volumes[owner]
    order = np.argsort(relative, kind="stable")
    cluster = np.zeros(relative.size, dtype=np.int64)
    cluster[order[1:]] = np.cumsum(np.diff(relative[order]) > _MARKER_TOLERANCE)
    support = np.array(
        [np.unique(owner[cluster == c]).size for c in range(cluster.max() + 1)], dtype=np.int64
    )
    expected = np.flatnonzero(support >= 0.5 * volumes.size)
    if expected.size < 2:
        return None
    reference = np.array([np.median(relative[cluster == c]) for c in expected])
    offsets = np.broadcast_to(reference, (volumes.size, expected.size)).copy()
    found = np.zeros(offsets.shape, dtype=bool)
    for j, c in enumerate(expected):
        members = np.flatnonzero(cluster == c)
        offsets[owner[members], j] = relative[members]
        found[owner[members], j] = True
    return offsets, int(np.count_nonzero(~found)), int(np.count_nonzero(found.all(axis=1)))


def detect_slice_period(
    reference: NDArray[np.floating],
    volume_samples: NDArray[np.integer],
    tr: float,
    *,
    max_volumes: int = 20,
    min_correlation: float = 0.9,
) -> float | None:
    """Measure the slice period on the volume-locked average of a channel.

    The average artifact of up to ``max_volumes`` volumes is correlated with itself at
    every lag from :data:`MIN_EPOCH_SAMPLES` to half a volume; the period is the shortest
    lag whose correlation is within 2 % of the best one (so that a multiple of the
    period is not taken), refined to a fraction of a sample by a parabola, and must
    repeat at least twice per volume.

    Parameters
    ----------
    reference : ndarray, shape (n_samples,)
        A channel with a strong gradient artifact.
    volume_samples : array of int
        Volume marker samples.
    tr : float
        Volume period in samples.
    max_volumes : int
        Volumes averaged.
    min_correlation : float
        Smallest correlation accepted at the period.

    Returns
    -------
    float | None
        The slice period in samples, or None if no lag repeats well enough.
    """
    length = int(np.floor(tr))
    starts = np.asarray(volume_samples, dtype=np.int64)
    starts = starts[starts + length <= reference.shape[-1]][:max_volumes]
    if starts.size == 0 or length < 2 * MIN_EPOCH_SAMPLES:
        return None
    template = np.mean([reference[v : v + length] for v in starts], axis=0, dtype=np.float64)
    template -= template.mean()
    n_fft = scipy.fft.next_fast_len(2 * length, real=True)
    spectrum = scipy.fft.rfft(template, n_fft)
    lagged = scipy.fft.irfft(np.abs(spectrum) ** 2, n_fft)[: length // 2 + 1]
    energy = np.cumsum(template**2)
    lags = np.arange(MIN_EPOCH_SAMPLES, length // 2 + 1)
    # correlation over the overlap: sum x[n] x[n+lag] / sqrt(sum x[:-lag]^2 sum x[lag:]^2)
    head = energy[length - 1 - lags]
    tail = energy[-1] - energy[lags - 1]
    corr = lagged[lags] / np.sqrt(np.maximum(head * tail, 1e-30))
    best = float(corr.max())
    if best < min_correlation:
        return None
    lag_index = int(np.flatnonzero(corr >= best - 0.02)[0])
    while lag_index + 1 < corr.size and corr[lag_index + 1] > corr[lag_index]:
        lag_index += 1
    if 0 < lag_index < corr.size - 1:
        a, b, c = corr[lag_index - 1 : lag_index + 2]
        denom = a - 2 * b + c
        delta = 0.5 * (a - c) / denom if denom < 0 else 0.0
    else:
        delta = 0.0
    period = float(lags[lag_index] + np.clip(delta, -0.5, 0.5))
    return period if tr / period >= 2 else None


def _evenly_spaced(offsets: NDArray[np.float64], tr: float) -> bool:
    """Tell whether slice excitations tile each volume at a regular spacing."""
    gaps = np.diff(offsets, axis=1)
    period = float(np.median(gaps))
    if period <= 0:
        return False
    tolerance = max(2.0, _SPACING_TOLERANCE * period)
    if np.any(np.abs(gaps - period) > tolerance):
        return False
    # the last slice must fit before the next volume
    return bool(np.all(tr - offsets[:, -1] >= period - tolerance))


# --------------------------------------------------------------------------- plan


def plan_gradient(
    timing: ArtifactTiming,
    reference: NDArray[np.floating],
    sfreq: float,
    params: GradientParams | None = None,
) -> GradientPlan:
    """Lay out the artifact epochs and estimate each one's sub-sample delay.

    Parameters
    ----------
    timing : ArtifactTiming
        The artifact epochs.
    reference : ndarray, shape (n_samples,)
        One channel with a strong artifact (raw data, µV), used for the delays.
    sfreq : float
        Sampling rate in Hz.
    params : GradientParams | None
        Settings (defaults when None).

    Returns
    -------
    GradientPlan

    Raises
    ------
    DataError
        If the sampling rate is too low, or the markers lie outside the recording.
    """
    params = params or GradientParams()
    n_samples = int(reference.shape[-1])
    if sfreq < MIN_GRADIENT_SFREQ:
        raise DataError(
            f"the EEG is sampled at {sfreq:g} Hz; removing the MR gradient artifact needs "
            f"at least {MIN_GRADIENT_SFREQ:g} Hz (5000 Hz is usual).",
            fix="Use the recording at its original sampling rate, or one whose gradient "
            "artifact was already removed (then skip gradient correction).",
        )
    period = timing.period
    if period < MIN_EPOCH_SAMPLES:
        raise DataError(
            f"artifact epochs of {period:.1f} samples are too short at {sfreq:g} Hz.",
            fix="Record at a higher sampling rate (5000 Hz is usual).",
        )
    onsets = timing.onsets
    if onsets[0] < 0 or onsets[0] >= n_samples:
        raise DataError(
            f"the first scanner marker (sample {onsets[0]:.0f}) lies outside the "
            f"recording of {n_samples} samples.",
            fix="Check that the markers belong to this recording.",
        )
    kind = timing.kind
    if kind == "volume":
        window = params.volume_window
    elif params.window is None:
        window = max(30, round(params.window_seconds * sfreq / period))
    else:
        window = params.window
    slices = timing.slices_per_volume if kind == "volume" else 1
    pre = round(params.pre_fraction * period / max(slices, 1))
    whole = np.floor(onsets).astype(np.int64)
    core_start = whole - pre
    nominal = math.ceil(period) + 1
    core_len = np.minimum(np.diff(core_start, append=core_start[-1] + nominal), nominal)
    pad = params.pad
    length = scipy.fft.next_fast_len(nominal + 2 * pad, real=True)
    starts = core_start - pad
    usable = (starts >= 0) & (starts + length <= n_samples)
    # cores never run past the end of the recording
    core_len = np.clip(np.minimum(core_len, n_samples - core_start), 0, None)
    frac = onsets - whole
    init = frac - np.mean(frac)
    diagnostics: dict[str, Any] = {
        "epoch_kind": kind,
        "n_epochs": int(onsets.size),
        "epoch_samples": float(period),
        "template_window": int(min(window, onsets.size)),
        "trigger_source": timing.source,
        "slices_per_volume": timing.slices_per_volume,
        "slice_triggers_completed": timing.n_completed,
        "incomplete_epochs": int(np.count_nonzero(~usable)),
    }
    plan = GradientPlan(
        starts=starts,
        core_len=core_len,
        length=length,
        pad=pad,
        shifts=init,
        usable=usable,
        window=int(min(window, onsets.size)),
        kind=kind,
        sfreq=sfreq,
        n_samples=n_samples,
        period=float(period),
        diagnostics=diagnostics,
    )
    if params.align:
        shifts, score = estimate_shifts(plan, reference, init, params.max_shift)
        diagnostics["shift_sd_samples"] = float(np.std(shifts))
        diagnostics["shift_range_samples"] = float(np.ptp(shifts))
        diagnostics["alignment_correlation"] = score
        plan = dataclasses.replace(plan, shifts=shifts)
    return plan


def estimate_shifts(
    plan: GradientPlan,
    reference: NDArray[np.floating],
    init: NDArray[np.float64],
    max_shift: float,
    *,
    n_iter: int = 2,
) -> tuple[NDArray[np.float64], float]:
    """Estimate each epoch's delay relative to the artifact template.

    The delay maximises the cross-correlation with the aligned mean of all epochs,
    ``c(d) = Re sum_k R_e(k) conj(T(k)) exp(2 pi i k d / L)``: a grid search within
    ``max_shift`` of the initial guess (1/8-sample steps), a parabola through the best
    grid point and its neighbours, then a Newton step. The template is re-estimated from
    the aligned epochs ``n_iter`` times.

    Parameters
    ----------
    plan : GradientPlan
        Epoch layout.
    reference : ndarray, shape (n_samples,)
        Reference channel.
    init : ndarray, shape (n_epochs,)
        Initial delays (fractional trigger positions), samples.
    max_shift : float
        Search half-width in samples.
    n_iter : int
        Template refinements.

    Returns
    -------
    shifts : ndarray, shape (n_epochs,)
        Delays in samples (mean zero).
    score : float
        Median correlation of the aligned epochs with the template.
    """
    epochs = gather_epochs(np.asarray(reference, np.float32)[None], plan)[0]
    spectra = scipy.fft.rfft(epochs, axis=-1, workers=_FFT_WORKERS)
    spectra[:, 0] = 0.0
    omega = (2 * np.pi * np.arange(spectra.shape[-1]) / plan.length).astype(np.float32)
    step = 0.125
    grid = np.arange(-max_shift, max_shift + step / 2, step)
    steer = np.exp(1j * omega[:, None] * grid[None, :]).astype(np.complex64)
    weight = plan.usable.astype(np.float32)
    if weight.sum() < 1:
        weight[:] = 1.0
    start = np.exp(1j * omega * init[:, None]).astype(np.complex64)
    shifts = init.astype(np.float64).copy()
    for _ in range(n_iter):
        phase = np.exp(1j * omega * shifts[:, None]).astype(np.complex64)
        template = (weight @ (spectra * phase)) / weight.sum()
        cross = spectra * np.conj(template) * start  # c(d) = Re sum cross exp(i w d)
        score = (cross @ steer).real
        best = np.clip(np.argmax(score, axis=1), 1, grid.size - 2)
        rows = np.arange(best.size)
        a, b, c = score[rows, best - 1], score[rows, best], score[rows, best + 1]
        denom = a - 2 * b + c
        delta = np.where(denom < 0, 0.5 * (a - c) / np.where(denom < 0, denom, -1.0), 0.0)
        offset = grid[best] + step * np.clip(delta, -1.0, 1.0)
        # one Newton step on c(d) from the parabola's vertex
        turn = cross * np.exp(1j * omega * offset[:, None]).astype(np.complex64)
        first = (turn * (1j * omega)).sum(axis=1).real
        second = -(turn * omega**2).sum(axis=1).real
        newton = np.where(second < 0, -first / np.where(second < 0, second, -1.0), 0.0)
        offset = np.clip(offset + np.clip(newton, -step, step), -max_shift, max_shift)
        shifts = init + offset
        shifts -= np.mean(shifts[weight > 0])
    aligned = spectra * np.exp(1j * omega * shifts[:, None]).astype(np.complex64)
    template = (weight @ aligned) / weight.sum()
    num = (aligned @ np.conj(template)).real
    den = np.sqrt((np.abs(aligned) ** 2).sum(axis=1) * (np.abs(template) ** 2).sum()) + 1e-30
    return shifts, float(np.median(num / den))


# --------------------------------------------------------------------------- subtraction


def gather_epochs(
    x: NDArray[np.float32], plan: GradientPlan, first: int = 0, stop: int | None = None
) -> NDArray[np.float32]:
    """Cut the tapered windows of epochs ``first`` to ``stop`` of every channel.

    Parameters
    ----------
    x : ndarray, shape (n_channels, n_samples)
        Data.
    plan : GradientPlan
        Epoch layout.
    first, stop : int
        Epoch range (all epochs by default).

    Returns
    -------
    ndarray, shape (n_channels, stop - first, length), float32
        Windows multiplied by a cosine taper over the ``pad`` samples at each end;
        samples outside the recording are zero.
    """
    n = x.shape[-1]
    length = plan.length
    starts = plan.starts[first:stop]
    inside = (starts >= 0) & (starts + length <= n)
    out = np.zeros((x.shape[0], starts.size, length), dtype=np.float32)
    if inside.any():
        view = np.lib.stride_tricks.sliding_window_view(x, length, axis=-1)
        out[:, inside] = view[:, starts[inside]]
    for e in np.flatnonzero(~inside):
        lo, hi = max(starts[e], 0), min(starts[e] + length, n)
        if hi > lo:
            out[:, e, lo - starts[e] : hi - starts[e]] = x[:, lo:hi]
    out *= _taper(length, plan.pad)
    return out


def _taper(length: int, pad: int) -> NDArray[np.float32]:
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(pad) + 0.5) / pad)
    taper = np.ones(length, dtype=np.float32)
    taper[:pad] = ramp
    taper[-pad:] = ramp[::-1]
    return taper


def subtract_gradient(
    x: NDArray[np.float32],
    plan: GradientPlan,
    params: GradientParams | None = None,
    *,
    obs_rows: NDArray[np.integer] | None = None,
    diagnostics: dict[str, Any] | None = None,
) -> NDArray[np.float32]:
    """Subtract the gradient artifact from a chunk of channels, in place.

    Parameters
    ----------
    x : ndarray, shape (n_channels, n_samples), float32
        Raw data of a channel chunk (µV); corrected in place.
    plan : GradientPlan
        Epoch layout and delays from :func:`plan_gradient`.
    params : GradientParams | None
        Settings (defaults when None).
    obs_rows : array of int | None
        Rows of ``x`` that get the OBS residual fit (EEG channels); all when None.
    diagnostics : dict | None
        Receives ``obs_components`` (components fitted per OBS row), when given.

    Returns
    -------
    ndarray
        ``x``, corrected.

    References
    ----------
    .. [1] Allen PJ, Josephs O, Turner R (2000). NeuroImage 12:230-239.
    .. [2] Niazy RK et al. (2005). NeuroImage 28:720-737.
    """
    params = params or GradientParams()
    if x.dtype != np.float32:
        raise TypeError("subtract_gradient works in place on float32 data")
    length, n_channels = plan.length, x.shape[0]
    artifact = np.zeros_like(x)
    step = epochs_per_block(n_channels, plan)
    for first in range(0, plan.n_epochs, step):
        stop = min(first + step, plan.n_epochs)
        lo, hi = max(first - 1, 0), min(stop + 1, plan.n_epochs)  # a neighbour each side
        waves = _templates(x, plan, lo, hi)
        if plan.kind == "slice" and params.template_highpass:
            _remove_slow_part(waves, plan, lo)
        samples, epoch, offset = core_index(plan, first, stop)
        flat = (epoch - lo) * length + plan.pad + offset
        artifact[:, samples] = waves.reshape(n_channels, -1)[:, flat]
        del waves
    x -= artifact
    del artifact
    if params.obs_components != 0:
        rows = np.arange(x.shape[0]) if obs_rows is None else np.asarray(obs_rows)
        if rows.size:
            fitted, n_used = fit_obs(
                x[rows], plan, params.obs_components, params.obs_max_epochs, params.obs_highpass
            )
            if np.any(n_used > 0):
                x[rows] -= fitted
            if diagnostics is not None:
                diagnostics.setdefault("obs_components", []).extend(n_used.tolist())
    return x


def fit_obs(
    corrected: NDArray[np.float32],
    plan: GradientPlan,
    n_components: int | Literal["auto"],
    max_epochs: int,
    highpass: float,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Fit the leading principal components of the residual artifacts to every epoch.

    The optimal basis set of FASTR: the residual after template subtraction, high-passed
    at ``highpass`` (so that the fit cannot take EEG below it), is cut into the epoch
    cores; per channel, the leading principal components over epochs are fitted to each
    epoch by least squares. With ``"auto"``, a component is kept only if its variance
    exceeds twice the largest component variance of as many windows cut at random
    positions: components not locked to the scanner (background EEG, which fills the
    few dimensions above the high-pass edge in short slice epochs) are not removed. The
    components are estimated on high-passed windows around ``max_epochs`` epochs; the
    whole residual is filtered only for channels that keep a component.

    Parameters
    ----------
    corrected : ndarray, shape (n_channels, n_samples)
        A channel chunk after template subtraction.
    plan : GradientPlan
        Epoch layout.
    n_components : int or "auto"
        Components fitted (at most :data:`OBS_MAX_COMPONENTS` with ``"auto"``).
    max_epochs : int
        Epochs (evenly spread) used to estimate the components.
    highpass : float
        High-pass edge (Hz).

    Returns
    -------
    fitted : ndarray, shape (n_channels, n_samples), float32
        The fitted residual artifact (zero outside the epochs).
    n_used : ndarray of int, shape (n_channels,)
        Components fitted per channel.

    References
    ----------
    .. [1] Niazy RK et al. (2005). NeuroImage 28:720-737.
    """
    n_channels = corrected.shape[0]
    nominal = int(plan.core_len.max())
    fitted_out = np.zeros(corrected.shape, dtype=np.float32)
    k_max = OBS_MAX_COMPONENTS if n_components == "auto" else int(n_components)
    none = np.zeros(n_channels, dtype=np.int64)
    usable = np.flatnonzero(plan.usable)
    if k_max == 0 or usable.size < 2 * k_max + 2 or nominal < 2 * k_max:
        return fitted_out, none
    pick = usable[np.linspace(0, usable.size - 1, min(max_epochs, usable.size)).round().astype(int)]
    core_starts = plan.starts + plan.pad
    windows = _highpassed_windows(corrected, core_starts[pick], nominal, plan.sfreq, highpass)
    basis, variance = top_components(windows, k_max, return_variance=True)
    if n_components == "auto":
        first, last = plan.span
        rng = np.random.default_rng(0)
        starts = rng.integers(first, max(last - nominal, first + 1), pick.size)
        control = _highpassed_windows(corrected, starts, nominal, plan.sfreq, highpass)
        _, background = top_components(control, 1, return_variance=True)
        n_used = np.sum(variance > 2.0 * background[:, :1], axis=1).astype(np.int64)
    else:
        n_used = np.full(n_channels, k_max, dtype=np.int64)
    rows = np.flatnonzero(n_used > 0)
    if rows.size == 0:
        return fitted_out, n_used
    residual = filter_data(corrected[rows], plan.sfreq, l_freq=highpass)
    samples, epoch, offset = core_index(plan)
    epochs = np.zeros((rows.size, plan.n_epochs, nominal), dtype=np.float32)
    epochs[:, epoch, offset] = residual[:, samples]
    del residual
    chosen = basis[rows] * (np.arange(k_max)[None, :] < n_used[rows, None])[:, None, :]
    fitted = np.matmul(np.matmul(epochs, chosen), np.swapaxes(chosen, 1, 2))
    block = np.zeros((rows.size, corrected.shape[1]), dtype=np.float32)
    block[:, samples] = fitted[:, epoch, offset]
    fitted_out[rows] = block
    return fitted_out, n_used


def _highpassed_windows(
    x: NDArray[np.float32], starts: NDArray[np.integer], length: int, sfreq: float, highpass: float
) -> NDArray[np.float32]:
    """High-pass short windows of ``x`` (cosine-tapered context of 64 samples each side)."""
    pad = 64
    total = scipy.fft.next_fast_len(length + 2 * pad, real=True)
    index = np.clip(np.asarray(starts)[:, None] - pad + np.arange(total), 0, x.shape[-1] - 1)
    windows = x[:, index] * _taper(total, pad)
    spectra = scipy.fft.rfft(windows, axis=-1, workers=_FFT_WORKERS)
    freqs = np.arange(spectra.shape[-1]) * sfreq / total
    spectra *= response(freqs, sfreq / 2, highpass, None, False).astype(np.float32)
    return scipy.fft.irfft(spectra, n=total, axis=-1, workers=_FFT_WORKERS)[..., pad : pad + length]


def epochs_per_block(n_channels: int, plan: GradientPlan, budget: float = 32e6) -> int:
    """Epochs processed together so that one complex array of the block stays small.

    Small blocks keep the temporaries in the allocator's reusable memory and the cache
    (large ones cost page faults at every chunk); each block also reads ``window``
    neighbouring epochs.
    """
    n_bins = plan.length // 2 + 1
    fit = int(budget // (8 * n_bins * max(n_channels, 1))) - plan.window
    return max(fit, 2 * plan.window, 16)


def _templates(x: NDArray[np.float32], plan: GradientPlan, lo: int, hi: int) -> NDArray[np.float32]:
    """Artifact templates of epochs ``lo`` to ``hi`` in each epoch's own time frame.

    Each template is the mean of the ``window`` nearest aligned epochs (the first or last
    ``window`` epochs near the ends of the scan), shifted back to the epoch's own delay.
    Sliding sums come from a cumulative sum over the epochs the block needs, after
    removing their mean (which keeps float32 sums accurate).
    """
    n_ep, window = plan.n_epochs, plan.window
    first_all = np.clip(np.arange(lo, hi) - window // 2, 0, n_ep - window)
    a, b = int(first_all[0]), int(first_all[-1]) + window
    usable = plan.usable[a:b] if plan.usable.any() else np.ones(b - a, dtype=bool)
    spectra = scipy.fft.rfft(gather_epochs(x, plan, a, b), axis=-1, workers=_FFT_WORKERS)
    omega = (2 * np.pi / plan.length) * np.arange(spectra.shape[-1])
    phase = np.exp(1j * omega[None, :] * plan.shifts[a:b, None]).astype(np.complex64)
    spectra *= phase
    if usable.any():
        mean = spectra[:, usable].mean(axis=1, dtype=np.complex128).astype(np.complex64)
    else:
        mean = spectra.mean(axis=1, dtype=np.complex128).astype(np.complex64)
        usable = np.ones(b - a, dtype=bool)
    spectra -= mean[:, None, :]
    spectra[:, ~usable] = 0
    csum = np.empty((spectra.shape[0], b - a + 1, spectra.shape[2]), dtype=np.complex64)
    csum[:, 0] = 0
    np.cumsum(spectra, axis=1, out=csum[:, 1:])
    del spectra
    start = first_all - a
    counts = np.concatenate([[0], np.cumsum(usable)])
    count = np.maximum(counts[start + window] - counts[start], 1).astype(np.float32)
    template = csum[:, start + window]
    template -= csum[:, start]
    del csum
    back = np.conj(phase[lo - a : hi - a])
    template *= back / count[:, None]
    template += mean[:, None, :] * back[None]
    return scipy.fft.irfft(template, n=plan.length, axis=-1, workers=_FFT_WORKERS).astype(
        np.float32, copy=False
    )


def top_components(
    y: NDArray[np.floating], k: int, *, n_iter: int = 6, return_variance: bool = False
) -> Any:
    """Leading right singular vectors of each matrix in a batch (uncentred PCA).

    The eigenvectors of the smaller of ``y.T @ y`` and ``y @ y.T`` when that is small,
    else a randomised subspace iteration (Halko et al. 2011) with a fixed seed.

    Parameters
    ----------
    y : ndarray, shape (batch, n_observations, dim)
        Observations (rows) per batch item.
    k : int
        Components wanted (at most ``min(n_observations, dim)``).
    n_iter : int
        Subspace iterations in the randomised case.
    return_variance : bool
        Also return the mean square projection on each component.

    Returns
    -------
    components : ndarray, shape (batch, dim, k), float32
        Orthonormal columns, strongest first.
    variance : ndarray, shape (batch, k)
        Only with ``return_variance``.

    References
    ----------
    .. [1] Halko N, Martinsson PG, Tropp JA (2011). Finding structure with randomness:
           probabilistic algorithms for constructing approximate matrix decompositions.
           SIAM Review 53:217-288.
    """
    y64 = np.asarray(y, dtype=np.float64)
    n_obs, dim = y64.shape[-2:]
    k = min(k, n_obs, dim)
    yt = np.swapaxes(y64, 1, 2)
    if dim <= _PCA_EIGH_MAX_DIM:
        values, vectors = np.linalg.eigh(np.matmul(yt, y64))
        components = vectors[:, :, ::-1][:, :, :k]
    elif n_obs <= _PCA_EIGH_MAX_DIM:
        values, vectors = np.linalg.eigh(np.matmul(y64, yt))
        left = vectors[:, :, ::-1][:, :, :k]
        scale = np.sqrt(np.maximum(values[:, ::-1][:, None, :k], 1e-30))
        components = np.matmul(yt, left) / scale
    else:
        rng = np.random.default_rng(0)
        q, _ = np.linalg.qr(rng.standard_normal((y64.shape[0], dim, k + 4)))
        for _ in range(n_iter):
            q, _ = np.linalg.qr(np.matmul(yt, np.matmul(y64, q)))
        small = np.matmul(y64, q)
        values, vectors = np.linalg.eigh(np.matmul(np.swapaxes(small, 1, 2), small))
        components = np.matmul(q, vectors[:, :, ::-1][:, :, :k])
    components = components.astype(np.float32)
    if not return_variance:
        return components
    return components, values[:, ::-1][:, :k] / n_obs


def core_index(
    plan: GradientPlan, first: int = 0, stop: int | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Locate every sample corrected by epochs ``first`` to ``stop``.

    Returns
    -------
    samples, epoch, offset : ndarray of int64
        Sample index, epoch, and position in the epoch's core of each sample.
    """
    stop = plan.n_epochs if stop is None else stop
    core_len = plan.core_len[first:stop]
    epoch = np.repeat(np.arange(first, stop), core_len)
    offset = np.arange(epoch.size) - np.repeat(np.cumsum(core_len) - core_len, core_len)
    samples = plan.starts[epoch] + plan.pad + offset
    keep = (samples >= 0) & (samples < plan.n_samples)
    return samples[keep], epoch[keep], offset[keep]


def _remove_slow_part(waves: NDArray[np.float32], plan: GradientPlan, first: int = 0) -> None:
    """Remove from the templates their content below half the slice rate, in place.

    That content is EEG leaked into the average (the artifact has none there). The mean
    of each epoch's core (Hann weighted) samples it at the slice rate; within each core
    it is interpolated linearly towards the neighbouring epochs' means (to the centre
    of each neighbour), in the epochs' own time frame. ``waves`` holds epochs ``first``
    onwards.
    """
    n_ep = waves.shape[1]
    core_len = plan.core_len[first : first + n_ep]
    starts = plan.starts[first : first + n_ep]
    nominal = int(plan.core_len.max())
    weights = np.hanning(nominal + 2)[1:-1].astype(np.float32)
    cores = waves[:, :, plan.pad : plan.pad + nominal]
    mask = np.arange(nominal)[None, :] < core_len[:, None]
    w = weights[None, :] * mask
    means = np.einsum("cen,en->ce", cores, w) / np.maximum(w.sum(axis=1), 1e-6)[None, :]
    if n_ep < 2:
        cores -= means[:, :, None]
        return
    centres = (starts + plan.pad + (core_len - 1) / 2.0).astype(np.float64)
    gaps = np.diff(centres)
    slope = np.diff(means, axis=1) / gaps.astype(np.float32)  # between epoch e and e + 1
    before = np.concatenate([slope[:, :1], slope], axis=1)  # slope on the left of centre e
    after = np.concatenate([slope, slope[:, -1:]], axis=1)  # slope on the right
    t = (np.arange(nominal)[None, :] - (core_len[:, None] - 1) / 2.0).astype(np.float32)
    left = np.minimum(t, 0.0)[None]
    right = np.maximum(t, 0.0)[None]
    cores -= means[:, :, None] + before[:, :, None] * left + after[:, :, None] * right


def chunk_size(n_samples: int, plan: GradientPlan | None, budget_bytes: float) -> int:
    """Channels per chunk so that the working arrays stay within ``budget_bytes``.

    Parameters
    ----------
    n_samples : int
        Recording length.
    plan : GradientPlan | None
        Epoch layout (None: no gradient correction).
    budget_bytes : float
        Memory allowed for one chunk's temporaries.

    Returns
    -------
    int
        At least 1.
    """
    per_channel = 20.0 * n_samples  # the resampling's padded copy, spectrum and output
    if plan is not None:  # the artifact buffer and the core indices (epoch blocks are small)
        per_channel += 8.0 * n_samples
    return max(1, int(budget_bytes // per_channel))


def artifact_present(
    data: NDArray[np.floating], volume_samples: NDArray[np.integer], *, max_volumes: int = 40
) -> float:
    """Share of the signal variance that repeats at every volume.

    The volume-locked average of up to ``max_volumes`` volumes, relative to the variance
    of the same samples: near 1 when a gradient artifact dominates, near
    ``1 / n_volumes`` for EEG without one (e.g. already corrected by vendor software).

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_samples)
        Data (a few channels suffice).
    volume_samples : array of int
        Volume marker samples.
    max_volumes : int
        Volumes used.

    Returns
    -------
    float
        Median over channels, in [0, 1].
    """
    vols = np.asarray(volume_samples, dtype=np.int64)
    if vols.size < 3:
        return float("nan")
    length = int(np.min(np.diff(vols)))
    vols = vols[:-1][:max_volumes]
    vols = vols[vols + length <= data.shape[-1]]
    if vols.size < 3 or length < 2:
        return float("nan")
    epochs = np.stack([data[:, v : v + length] for v in vols], axis=1).astype(np.float64)
    epochs -= epochs.mean(axis=2, keepdims=True)
    locked = epochs.mean(axis=1)
    total = (epochs**2).mean(axis=(1, 2))
    share = (locked**2).mean(axis=1) / np.maximum(total, 1e-30)
    return float(np.median(share))
