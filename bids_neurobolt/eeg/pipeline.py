"""Clean one simultaneous EEG-fMRI recording: the function the workflow calls.

:func:`clean_recording` takes the raw EEG (µV, native rate), the scanner's volume
markers from the synchronisation stage and, when known, the slice markers and the BOLD
run's ``SliceTiming``/``RepetitionTime``, and returns the cleaned EEG at the model rate
with everything the derivative and the quality report need:

1. **checks**: NaN samples (error), flat and saturated channels (kept, marked bad,
   warned), markers outside the recording (error), a recording that ends inside the
   last volume (warned; the volumes recorded are corrected);
2. **gradient artifact** at the native rate (:mod:`.gradient`), channel chunk by
   channel chunk so that memory stays bounded, each chunk then low-passed and
   downsampled to the working rate (500 Hz);
3. **R-peaks** on the ECG (:func:`.bcg.detect_r_peaks`), or heartbeats from the EEG
   when the ECG is absent, flat or unreadable (warned, recorded);
4. **BCG** (:func:`.bcg.remove_bcg`) on the EEG channels;
5. **filter and resample** to 200 Hz, channel names mapped to 10-20 labels;
6. **quality metrics** (:mod:`.quality`), against the ground truth when one is given.

Without volume markers (a recording made outside the scanner) steps 2-4 are skipped.

References
----------
.. [1] Allen PJ, Josephs O, Turner R (2000). NeuroImage 12:230-239.
.. [2] Niazy RK et al. (2005). NeuroImage 28:720-737.
.. [3] Li Y et al. (2024). NeuroBOLT: resting-state EEG-to-fMRI synthesis with
       multi-dimensional feature mapping. NeurIPS 2024.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from bids_neurobolt.eeg import bcg, gradient, quality
from bids_neurobolt.eeg.preprocess import MODEL_SFREQ, ChannelMap, map_channels, resample
from bids_neurobolt.errors import DataError, NeuroboltWarning

logger = logging.getLogger(__name__)

#: Channel types that pick up the gradient artifact (all recorded through the amplifier).
_GRADIENT_TYPES = frozenset({"eeg", "ecg", "eog", "emg", "misc", "resp", "bio"})
_STEEP_UV = 50.0  # median SD of sample-to-sample differences (µV) of raw in-scanner EEG


@dataclass(frozen=True)
class CleanParams:
    """Settings of :func:`clean_recording` (science settings: recorded in the sidecars).

    Attributes
    ----------
    gradient_mode : {"auto", "on", "off"}
        Gradient artifact removal. ``"auto"``: when there are volume markers; below
        :data:`~.gradient.MIN_GRADIENT_SFREQ` it is skipped if the recording shows no
        volume-locked artifact (already corrected), else an error.
    bcg_mode : {"auto", "on", "off"}
        BCG removal. ``"auto"``: when there are volume markers (recording in the
        scanner); ``"on"`` also outside the scanner.
    gradient_params : GradientParams
        See :class:`~.gradient.GradientParams`.
    bcg_params : BCGParams
        See :class:`~.bcg.BCGParams`.
    work_sfreq : float
        Rate (Hz) of the R-peak detection, the BCG removal and the residual spectra.
    out_sfreq : float
        Output (model) rate in Hz.
    l_freq, h_freq : float | None
        High-pass and low-pass edges (Hz) of the output; None for none.
    saturation_fraction : float
        A channel is saturated when more than this share of its samples sit at its
        extreme values.
    memory_budget_mb : float
        Memory for the temporary arrays of one channel chunk.
    keep_native : bool
        Also return the cleaned data at the native rate.
    n_harmonics : int
        Slice and volume harmonics reported in the quality metrics.
    """

    gradient_mode: Literal["auto", "on", "off"] = "auto"
    bcg_mode: Literal["auto", "on", "off"] = "auto"
    gradient_params: gradient.GradientParams = field(default_factory=gradient.GradientParams)
    bcg_params: bcg.BCGParams = field(default_factory=bcg.BCGParams)
    work_sfreq: float = 500.0
    out_sfreq: float = MODEL_SFREQ
    l_freq: float | None = None
    h_freq: float | None = 75.0
    saturation_fraction: float = 1e-3
    memory_budget_mb: float = 1024.0
    keep_native: bool = False
    n_harmonics: int = 5

    def describe(self) -> dict[str, Any]:
        """Return every setting as JSON-ready values."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class CleanResult:
    """A cleaned recording and what the derivative and the report need.

    Attributes
    ----------
    data : ndarray, shape (n_channels, n_samples), float32
        All channels (EEG and others, in recording order), µV, at ``sfreq``.
    sfreq : float
        Output rate (Hz).
    channels : ChannelMap
        Output names (10-20 labels), types, renames and the model-input indices.
    bad_channels : dict
        Output name -> reason (``"flat"``, ``"saturated"``).
    beats : ndarray of int64
        Heartbeats (R-peaks, or EEG-derived pulse peaks) as samples at ``sfreq``.
    cardiac_reference : str | None
        ``"ecg"``, ``"eeg"`` or None (no BCG removal).
    volume_samples : ndarray of int64
        Volume markers as samples at ``sfreq`` (empty outside the scanner).
    native : ndarray | None
        Cleaned data at the native rate (``keep_native``).
    diagnostics : dict
        JSON-ready metrics and facts for ``desc-clean_quality.json``.
    spectra : dict
        ``freqs`` and median PSDs over EEG channels (``raw``, ``after_gradient``,
        ``cleaned``, and ``truth`` when given) for the report's figure, and, when the
        BCG was removed, ``bcg_template``: ``row`` (the channel with the largest BCG),
        ``times`` (s from the beat) and its beat-locked average ``before`` and ``after``.
    """

    data: NDArray[np.float32]
    sfreq: float
    channels: ChannelMap
    bad_channels: dict[str, str]
    beats: NDArray[np.int64]
    cardiac_reference: str | None
    volume_samples: NDArray[np.int64]
    native: NDArray[np.float32] | None
    diagnostics: dict[str, Any]
    spectra: dict[str, Any]

    @property
    def model_data(self) -> NDArray[np.float32]:
        """The model input: EEG channels with a 10-20 label, not bad."""
        return self.data[list(self.channels.model)]

    @property
    def model_names(self) -> tuple[str, ...]:
        """Names of the model-input channels."""
        return tuple(self.channels.names[i] for i in self.channels.model)


def clean_recording(
    data: NDArray[np.floating],
    sfreq: float,
    ch_names: Sequence[str],
    ch_types: Sequence[str],
    volume_samples: NDArray[np.integer] | None,
    *,
    slice_samples: NDArray[np.integer] | None = None,
    slice_timing: NDArray[np.floating] | None = None,
    repetition_time: float | None = None,
    bad_channels: Sequence[str] = (),
    params: CleanParams | None = None,
    truth: NDArray[np.floating] | None = None,
    progress: Callable[[str], None] | None = None,
) -> CleanResult:
    """Remove the MR gradient and BCG artifacts and prepare the model input.

    Parameters
    ----------
    data : array, shape (n_channels, n_samples)
        Raw EEG in µV at the native rate (all channels, recording order). Any object
        with ``shape`` that returns arrays for ``data[a:b]`` and ``data[a:b, s:t]``
        (a :class:`numpy.memmap`, or an adapter reading channels from the file) works:
        rows are read chunk by chunk and the input is never modified.
    sfreq : float
        Native sampling rate (Hz).
    ch_names, ch_types : sequence of str
        Channel names and types (``eeg``, ``ecg``, ``eog``, ``emg``, ``misc``...).
    volume_samples : array of int | None
        Sample of each BOLD volume marker (``SyncResult.volume_samples``); None for a
        recording made outside the scanner.
    slice_samples : array of int | None
        Slice markers (``SyncResult.slice_samples``), if any.
    slice_timing : array of float | None
        The BOLD run's ``SliceTiming`` (s).
    repetition_time : float | None
        The BOLD run's ``RepetitionTime`` (s).
    bad_channels : sequence of str
        Channels already known to be bad (kept, out of the model input; NaN samples
        in them are set to zero).
    params : CleanParams | None
        Settings (defaults when None).
    truth : ndarray, shape (n_channels, n_samples) | None
        The clean EEG of a simulation, for the ground-truth metrics.
    progress : callable | None
        Receives one line per finished step and per block of channels cleaned.

    Returns
    -------
    CleanResult

    Raises
    ------
    DataError
        NaN samples in a channel not marked bad; fewer than two volume markers, or
        markers outside the recording; a sampling rate too low to remove a gradient
        artifact that is present; no usable EEG channel.

    Warns
    -----
    NeuroboltWarning
        Flat or saturated channels; no usable ECG (EEG-derived cardiac reference); no
        cardiac reference at all (BCG not removed); a recording that ends inside the
        last volume; loud EEG without volume markers.
    """
    params = params or CleanParams()
    report = progress or (lambda _message: None)
    started = time.perf_counter()
    names = [str(n) for n in ch_names]
    types = [str(t).lower() for t in ch_types]
    n_channels, n_samples = int(data.shape[0]), int(data.shape[1])
    if len(names) != n_channels or len(types) != n_channels:
        raise ValueError("ch_names and ch_types must have one entry per row of data")
    eeg_rows = np.array([i for i, t in enumerate(types) if t == "eeg"], dtype=np.int64)
    if eeg_rows.size == 0:
        raise DataError(
            "the recording has no EEG channel.",
            fix="Check the channel types in channels.tsv (type EEG).",
        )
    bad = check_channels(data, names, types, sfreq, params, bad_channels)
    good_eeg = np.array([i for i in eeg_rows if names[i] not in bad], dtype=np.int64)
    if good_eeg.size == 0:
        raise DataError(
            f"every EEG channel is unusable ({_listing(bad)}).",
            fix="Check the recording (amplifier range, electrodes, channel types).",
        )
    diagnostics: dict[str, Any] = {
        "sampling_frequency": sfreq,
        "n_channels": n_channels,
        "duration_s": round(n_samples / sfreq, 3),
        "bad_channels": dict(bad),
    }
    in_scanner = volume_samples is not None
    volumes = check_volumes(volume_samples, n_samples, sfreq, repetition_time, diagnostics)
    reference = int(good_eeg[0])
    if volumes is not None:
        reference = _strongest_channel(data, good_eeg, volumes, sfreq)
    else:
        _warn_if_loud(data, good_eeg)
    plan = _gradient_plan(
        data,
        sfreq,
        volumes,
        slice_samples,
        slice_timing,
        repetition_time,
        reference,
        params,
        diagnostics,
    )
    span = scan_span(volumes, n_samples, sfreq, repetition_time)
    work_sfreq = min(params.work_sfreq, sfreq)
    fmax = 0.4 * work_sfreq

    # ---------------------------------------------------------------- native rate
    gradient_rows = {i for i, t in enumerate(types) if t in _GRADIENT_TYPES}
    good_set = set(good_eeg.tolist())
    work: NDArray[np.float32] | None = None
    native = np.empty((n_channels, n_samples), np.float32) if params.keep_native else None
    raw_psd: dict[int, NDArray[np.float64]] = {}
    raw_freqs = np.zeros(0)
    gradient_diag: dict[str, Any] = {}
    rows_per_chunk = gradient.chunk_size(n_samples, plan, params.memory_budget_mb * 2**20)
    metrics_seconds = 0.0  # raw spectra for the quality report, not artifact removal
    t0 = time.perf_counter()
    with single_threaded_blas():
        for lo in range(0, n_channels, rows_per_chunk):
            rows = np.arange(lo, min(lo + rows_per_chunk, n_channels))
            chunk = np.array(data[lo : rows[-1] + 1], dtype=np.float32)
            chunk[[i - lo for i in rows if names[i] in bad]] = np.nan_to_num(
                chunk[[i - lo for i in rows if names[i] in bad]]
            )
            in_eeg = [i for i in rows if i in good_set]
            if in_eeg:
                t_metrics = time.perf_counter()
                raw_freqs, psd = quality.welch_psd(
                    chunk[np.array(in_eeg) - lo, span[0] : span[1]], sfreq, overlap=0.0, fmax=fmax
                )
                raw_psd.update(zip(in_eeg, psd, strict=True))
                metrics_seconds += time.perf_counter() - t_metrics
            if plan is not None:
                picked = np.array([i - lo for i in rows if i in gradient_rows], dtype=np.int64)
                sub = np.ascontiguousarray(chunk[picked])
                obs = np.array(
                    [k for k, i in enumerate(picked + lo) if i in good_set], dtype=np.int64
                )
                gradient.subtract_gradient(
                    sub, plan, params.gradient_params, obs_rows=obs, diagnostics=gradient_diag
                )
                chunk[picked] = sub
                del sub
            if native is not None:
                native[rows] = chunk
            low = resample(chunk, sfreq, work_sfreq)
            if work is None:
                work = np.empty((n_channels, low.shape[1]), dtype=np.float32)
            work[rows] = low
            del chunk, low
            done, elapsed = int(rows[-1]) + 1, time.perf_counter() - t0
            left = elapsed * (n_channels - done) / done
            report(
                f"gradient and resampling: channels 1-{done} of {n_channels} done, "
                f"{done / elapsed:.1f} channels/s, about {left:.0f} s left"
            )
    if work is None:  # pragma: no cover - there is at least one channel
        raise RuntimeError("no channel was processed")
    if plan is not None:
        grad = diagnostics["gradient"]
        grad["seconds"] = round(time.perf_counter() - t0 - metrics_seconds, 3)
        if gradient_diag.get("obs_components"):
            grad["obs_components"] = quality.summary(np.array(gradient_diag["obs_components"]), 2)
        report(f"gradient artifact removed ({plan.n_epochs} {plan.kind} epochs)")
    work_span = (int(span[0] * work_sfreq / sfreq), int(np.ceil(span[1] * work_sfreq / sfreq)))
    freqs, psd_gradient = quality.welch_psd(
        work[good_eeg, work_span[0] : work_span[1]], work_sfreq, fmax=fmax
    )

    # ---------------------------------------------------------------- BCG at the work rate
    beats = None
    figure_data: dict[str, Any] = {}
    if params.bcg_mode == "on" or (params.bcg_mode == "auto" and in_scanner):
        t0 = time.perf_counter()
        with single_threaded_blas():
            beats = find_heartbeats(work, work_sfreq, names, types, good_eeg, plan, diagnostics)
            if beats is not None:
                fitted = _remove_bcg(
                    work, good_eeg, work_sfreq, beats, params, diagnostics, figure_data
                )
                if native is not None:
                    native[good_eeg] -= resample(fitted, work_sfreq, sfreq)[:, :n_samples]
                del fitted
                report(f"BCG removed ({beats.samples.size} beats, {beats.source} reference)")
        diagnostics["bcg"]["seconds"] = round(time.perf_counter() - t0, 3)
    else:
        reason = "disabled" if params.bcg_mode == "off" else "recording outside the scanner"
        diagnostics["bcg"] = {"bcg_corrected": False, "reason": reason}

    # ---------------------------------------------------------------- output
    _, psd_clean = quality.welch_psd(
        work[good_eeg, work_span[0] : work_span[1]], work_sfreq, fmax=fmax
    )
    out = resample(work, work_sfreq, params.out_sfreq, l_freq=params.l_freq, h_freq=params.h_freq)
    del work
    psd_raw = _on_grid(raw_freqs, np.array([raw_psd[i] for i in good_eeg]), freqs)
    spectra: dict[str, Any] = {
        "freqs": freqs,
        "raw": np.median(psd_raw, axis=0),
        "after_gradient": np.median(psd_gradient, axis=0),
        "cleaned": np.median(psd_clean, axis=0),
        **figure_data,
    }
    diagnostics["spectral"] = spectral_metrics(
        freqs,
        psd_raw,
        psd_gradient,
        psd_clean,
        plan,
        repetition_time,
        volumes,
        sfreq,
        fmax,
        params.n_harmonics,
    )
    if truth is not None:
        diagnostics["ground_truth"] = truth_metrics(
            truth,
            good_eeg,
            out,
            params,
            sfreq,
            span,
            volumes,
            repetition_time,
            spectra,
            freqs,
            psd_clean,
            plan,
            fmax,
        )
    channels = map_channels(names, types, bad=list(bad))
    out_sfreq = params.out_sfreq
    beat_samples = np.zeros(0, dtype=np.int64)
    if beats is not None:
        beat_samples = np.round(beats.samples * out_sfreq / work_sfreq).astype(np.int64)
        beat_samples = beat_samples[(beat_samples >= 0) & (beat_samples < out.shape[1])]
    volumes_out = np.zeros(0, dtype=np.int64)
    if volumes is not None:
        volumes_out = np.round(volumes * out_sfreq / sfreq).astype(np.int64)
    diagnostics["channels"] = {
        "renamed": channels.renamed,
        "model_input": [channels.names[i] for i in channels.model],
        "unlabelled_eeg": list(channels.unlabelled),
    }
    diagnostics["output_sampling_frequency"] = out_sfreq
    diagnostics["seconds"] = round(time.perf_counter() - started, 3)
    diagnostics["real_time_factor"] = round(
        n_samples / sfreq / max(diagnostics["seconds"], 1e-9), 1
    )
    diagnostics["parameters"] = params.describe()
    report(f"cleaned EEG at {out_sfreq:g} Hz in {diagnostics['seconds']:.1f} s")
    return CleanResult(
        data=out,
        sfreq=out_sfreq,
        channels=channels,
        bad_channels={channels.names[names.index(n)]: why for n, why in bad.items()},
        beats=beat_samples,
        cardiac_reference=None if beats is None else beats.source,
        volume_samples=volumes_out,
        native=native,
        diagnostics=jsonable(diagnostics),
        spectra=spectra,
    )


# --------------------------------------------------------------------------- checks


def check_channels(
    data: NDArray[np.floating],
    names: Sequence[str],
    types: Sequence[str],
    sfreq: float,
    params: CleanParams,
    known_bad: Sequence[str] = (),
) -> dict[str, str]:
    """Find NaN, flat and saturated channels.

    Parameters
    ----------
    data : array, shape (n_channels, n_samples)
        Raw data (read in row chunks).
    names, types : sequence of str
        Channel names and (lower-case) types.
    sfreq : float
        Sampling rate (Hz), for the messages.
    params : CleanParams
        ``saturation_fraction``.
    known_bad : sequence of str
        Channels already marked bad (NaN allowed there).

    Returns
    -------
    dict
        Channel name -> ``"bad (input)"``, ``"flat"`` or ``"saturated"``.

    Raises
    ------
    DataError
        If a channel not marked bad holds NaN or infinite samples.
    """
    bad = {name: "bad (input)" for name in known_bad if name in names}
    n_channels, n_samples = data.shape
    step = max(1, int(2**27 // max(n_samples, 1)))  # ~512 MB of float32 per block
    broken: list[str] = []
    limit = max(10, int(params.saturation_fraction * n_samples))
    for lo in range(0, n_channels, step):
        block = np.asarray(data[lo : lo + step], dtype=np.float32)
        finite = np.isfinite(block)
        for k in np.flatnonzero(~finite.all(axis=1)):
            name = names[lo + k]
            if name not in bad:
                first = int(np.argmin(finite[k]))
                count = int(np.count_nonzero(~finite[k]))
                broken.append(f"{name} ({count} samples, first at {first / sfreq:.3f} s)")
        broken_rows = np.flatnonzero(~finite.all(axis=1))
        del finite
        if broken_rows.size:
            block[broken_rows] = np.nan_to_num(block[broken_rows], nan=0.0, posinf=0.0, neginf=0.0)
        top, bottom = block.max(axis=1), block.min(axis=1)
        for k in range(block.shape[0]):
            name = names[lo + k]
            if name in bad or types[lo + k] not in ("eeg", "ecg", "eog"):
                continue
            if top[k] == bottom[k]:
                bad[name] = "flat"
            elif (
                np.count_nonzero(block[k] == top[k]) + np.count_nonzero(block[k] == bottom[k])
                > limit
            ):
                bad[name] = "saturated"
    if broken:
        raise DataError(
            "NaN or infinite samples in "
            + ", ".join(broken[:5])
            + (f" and {len(broken) - 5} more channel(s)" if len(broken) > 5 else "")
            + ".",
            fix="Repair the recording, or mark these channels bad (status 'bad' in "
            "channels.tsv) so that they are kept out of the cleaning and the model.",
        )
    flagged = {n: why for n, why in bad.items() if why in ("flat", "saturated")}
    if flagged:
        note = (
            " A saturated channel clipped the gradient artifact, which cannot then be removed."
            if "saturated" in flagged.values()
            else ""
        )
        warnings.warn(
            f"NeuroboltWarning: channels kept but marked bad: {_listing(flagged)}.{note}",
            NeuroboltWarning,
            stacklevel=3,
        )
    return bad


def check_volumes(
    volume_samples: NDArray[np.integer] | None,
    n_samples: int,
    sfreq: float,
    repetition_time: float | None,
    diagnostics: dict[str, Any],
) -> NDArray[np.int64] | None:
    """Check that the volume markers lie in the recording and cover the scan.

    Returns
    -------
    ndarray of int64 | None
        Sorted volume markers, or None outside the scanner.

    Raises
    ------
    DataError
        Fewer than two markers, or markers outside the recording.
    """
    if volume_samples is None:
        diagnostics["in_scanner"] = False
        return None
    volumes = np.sort(np.asarray(volume_samples, dtype=np.int64))
    diagnostics["in_scanner"] = True
    diagnostics["n_volumes"] = int(volumes.size)
    if volumes.size < 2:
        raise DataError(
            f"{volumes.size} volume marker(s) in a recording made in the scanner; the gradient "
            "artifact cannot be located.",
            fix="Check the volume-marker name (--volume-marker), or process the recording "
            "as EEG-only if it was made outside the scanner.",
        )
    if volumes[0] < 0 or volumes[-1] >= n_samples:
        raise DataError(
            f"volume markers run from sample {volumes[0]} to {volumes[-1]} but the recording "
            f"has {n_samples} samples ({n_samples / sfreq:.1f} s): the EEG is shorter than the "
            "BOLD run it is paired with.",
            fix="Use the complete EEG recording of this run, or trim the BOLD run to the "
            "volumes the EEG covers.",
        )
    tr = repetition_time if repetition_time else float(np.median(np.diff(volumes))) / sfreq
    missing = volumes[-1] + tr * sfreq - n_samples
    if missing > 0:
        diagnostics["last_volume_missing_s"] = round(missing / sfreq, 4)
        warnings.warn(
            f"NeuroboltWarning: the EEG ends {missing / sfreq:.3f} s before the end of the last "
            "BOLD volume; the part recorded is corrected.",
            NeuroboltWarning,
            stacklevel=3,
        )
    return volumes


def scan_span(
    volumes: NDArray[np.int64] | None, n_samples: int, sfreq: float, tr: float | None
) -> tuple[int, int]:
    """Return the samples ``[start, stop)`` of the scan (all of them outside the scanner)."""
    if volumes is None:
        return 0, n_samples
    period = tr * sfreq if tr else float(np.median(np.diff(volumes)))
    return int(volumes[0]), int(min(n_samples, np.ceil(volumes[-1] + period)))


def _warn_if_loud(data: NDArray[np.floating], rows: NDArray[np.int64]) -> None:
    """Warn when EEG without volume markers looks like raw in-scanner data.

    The gradient artifact's steep ramps make the sample-to-sample differences hundreds
    of µV, where EEG (even with large slow drifts) changes by a few µV per sample.
    """
    n = data.shape[1]
    sample = np.asarray(data[int(rows[0]) : int(rows[-1]) + 1, : min(n, 500_000)], np.float32)
    step = float(np.median(np.std(np.diff(sample, axis=1), axis=1)))
    if step > _STEEP_UV:
        warnings.warn(
            "NeuroboltWarning: the EEG has no volume markers but changes by "
            f"{step:.0f} µV per sample (SD), as raw EEG recorded during fMRI does; it is "
            "cleaned as a recording made outside the scanner (no gradient or BCG removal).",
            NeuroboltWarning,
            stacklevel=3,
        )


def _strongest_channel(
    data: NDArray[np.floating], rows: NDArray[np.int64], volumes: NDArray[np.int64], sfreq: float
) -> int:
    """Return the EEG channel with the largest signal over the first volumes."""
    start = int(volumes[0])
    stop = int(min(data.shape[1], volumes[min(3, volumes.size - 1)] + 1))
    if stop - start < 8:
        stop = min(data.shape[1], start + int(sfreq))
    first, last = int(rows[0]), int(rows[-1]) + 1
    block = np.asarray(data[first:last, start:stop], dtype=np.float64)[rows - first]
    return int(rows[int(np.argmax(block.std(axis=1)))])


def _gradient_plan(
    data: NDArray[np.floating],
    sfreq: float,
    volumes: NDArray[np.int64] | None,
    slice_samples: NDArray[np.integer] | None,
    slice_timing: NDArray[np.floating] | None,
    repetition_time: float | None,
    reference: int,
    params: CleanParams,
    diagnostics: dict[str, Any],
) -> gradient.GradientPlan | None:
    """Decide whether to remove the gradient artifact and lay out its epochs."""
    if params.gradient_mode == "off" or (volumes is None and params.gradient_mode == "auto"):
        reason = "disabled" if params.gradient_mode == "off" else "recording outside the scanner"
        diagnostics["gradient"] = {"gradient_corrected": False, "reason": reason}
        return None
    if volumes is None:
        raise DataError(
            "gradient correction was requested but the recording has no volume markers.",
            fix="Name the volume marker (--volume-marker), or turn gradient correction off.",
        )
    ref = np.asarray(data[reference : reference + 1], dtype=np.float32)[0]
    if sfreq < gradient.MIN_GRADIENT_SFREQ and params.gradient_mode == "auto":
        share = gradient.artifact_present(ref[None], volumes)
        if not share > 0.5:
            logger.info(
                "No volume-locked artifact at %g Hz (%.2f of the variance); the gradient "
                "artifact was already removed.",
                sfreq,
                share,
            )
            diagnostics["gradient"] = {
                "gradient_corrected": False,
                "reason": f"no gradient artifact found at {sfreq:g} Hz (already corrected)",
                "volume_locked_variance": round(float(share), 4),
            }
            return None
    timing = gradient.artifact_timing(
        volumes,
        sfreq,
        slice_samples=slice_samples,
        slice_timing=slice_timing,
        repetition_time=repetition_time,
        reference=ref,
    )
    plan = gradient.plan_gradient(timing, ref, sfreq, params.gradient_params)
    diagnostics["gradient"] = {"gradient_corrected": True, **plan.diagnostics}
    return plan


# --------------------------------------------------------------------------- BCG


def find_heartbeats(
    work: NDArray[np.float32],
    sfreq: float,
    names: Sequence[str],
    types: Sequence[str],
    good_eeg: NDArray[np.int64],
    plan: gradient.GradientPlan | None,
    diagnostics: dict[str, Any],
) -> bcg.HeartBeats | None:
    """R-peaks from the ECG channels, else heartbeats from the EEG (warned).

    Returns
    -------
    bcg.HeartBeats | None
        None (warned, recorded) when no cardiac reference can be found.
    """
    notch = None
    if plan is not None and plan.kind == "slice":
        slice_rate = plan.sfreq / plan.period
        notch = slice_rate * np.arange(1, int(0.5 * sfreq / slice_rate) + 1)
    ecg_rows = [i for i, t in enumerate(types) if t == "ecg"]
    problem = "no ECG channel"
    for i in ecg_rows:
        found = bcg.detect_r_peaks(work[i], sfreq, notch_freqs=notch)
        if found is not None:
            diagnostics["bcg"] = {"ecg_channel": names[i], **found.describe()}
            return found
        problem = f"no heart rhythm found on {names[i]}"
        if np.ptp(work[i]) == 0:
            problem = f"{names[i]} is flat"
    beats = bcg.eeg_cardiac_reference(work[good_eeg], sfreq)
    if beats is None:
        warnings.warn(
            f"NeuroboltWarning: {problem} and no pulse rhythm in the EEG: the BCG (pulse) "
            "artifact is NOT removed.",
            NeuroboltWarning,
            stacklevel=3,
        )
        diagnostics["bcg"] = {"bcg_corrected": False, "reason": problem + "; none in the EEG"}
        return None
    warnings.warn(
        f"NeuroboltWarning: {problem}; heartbeats were taken from the EEG's pulse component "
        f"({beats.samples.size} beats, {beats.heart_rate:.0f} bpm). Check the BCG removal in "
        "the report.",
        NeuroboltWarning,
        stacklevel=3,
    )
    diagnostics["bcg"] = {"ecg_problem": problem, **beats.describe()}
    return beats


def _remove_bcg(
    work: NDArray[np.float32],
    rows: NDArray[np.int64],
    sfreq: float,
    beats: bcg.HeartBeats,
    params: CleanParams,
    diagnostics: dict[str, Any],
    figure_data: dict[str, Any],
) -> NDArray[np.float32]:
    """Remove the BCG from ``work[rows]`` in place; record the beat-locked residual.

    ``figure_data`` receives ``bcg_template``: the beat-locked average of the channel
    with the largest BCG, before and after removal, for the report.
    """
    window = (-0.4, 0.4) if beats.source == "eeg" else (0.0, 0.8)
    eeg = np.ascontiguousarray(work[rows])
    before = quality.beat_locked_rms(eeg, sfreq, beats.samples, window=window)
    shown = int(np.nanargmax(before)) if np.isfinite(before).any() else 0
    template_window = (-0.2, 0.8)
    template_before = quality.beat_average(
        eeg[shown : shown + 1], sfreq, beats.samples, window=template_window
    )
    fitted, info = bcg.remove_bcg(eeg, sfreq, beats, params.bcg_params)
    work[rows] = eeg
    after = quality.beat_locked_rms(eeg, sfreq, beats.samples, window=window)
    template_after = quality.beat_average(
        eeg[shown : shown + 1], sfreq, beats.samples, window=template_window
    )
    if template_before is not None and template_after is not None:
        figure_data["bcg_template"] = {
            "row": int(rows[shown]),
            "times": template_window[0] + np.arange(template_before.shape[1]) / sfreq,
            "before": template_before[0],
            "after": template_after[0],
        }
    floor = quality.random_locked_rms(eeg, sfreq, beats.samples.size, window=window)
    for key in ("bcg_components", "bcg_template_reliability"):
        if key in info:
            info[key] = quality.summary(np.asarray(info[key], dtype=np.float64), 3)
    diagnostics["bcg"].update(info)
    diagnostics["bcg"]["beat_locked_rms_uv"] = {
        "window_s": list(window),
        "before": quality.summary(before, 3),
        "after": quality.summary(after, 3),
        "eeg_floor": quality.summary(floor, 3),
        "reduction_db": quality.summary(quality.decibels((after / before) ** 2), 2),
    }
    return fitted


# --------------------------------------------------------------------------- metrics


def spectral_metrics(
    freqs: NDArray[np.float64],
    psd_raw: NDArray[np.float64],
    psd_gradient: NDArray[np.float64],
    psd_clean: NDArray[np.float64],
    plan: gradient.GradientPlan | None,
    repetition_time: float | None,
    volumes: NDArray[np.int64] | None,
    sfreq: float,
    fmax: float,
    n_harmonics: int,
) -> dict[str, Any]:
    """Residual power at slice and volume harmonics and Allen's band powers.

    Returns
    -------
    dict
        ``slice_harmonics`` and ``volume_harmonics`` (frequencies, dB after vs raw per
        harmonic, median over EEG channels), ``allen_bands`` (µV², medians, raw vs
        cleaned).
    """
    out: dict[str, Any] = {"psd_segment_s": 4.0, "fmax_hz": round(fmax, 3)}
    if volumes is not None:
        tr = repetition_time if repetition_time else float(np.median(np.diff(volumes))) / sfreq
        fundamentals = {"volume": 1.0 / tr}
        if plan is not None and plan.kind == "slice":
            fundamentals["slice"] = sfreq / plan.period
        for kind, f0 in fundamentals.items():
            harmonics, before = quality.harmonic_power(
                freqs, psd_raw, f0, n_harmonics=n_harmonics, fmax=fmax
            )
            _, after = quality.harmonic_power(
                freqs, psd_clean, f0, n_harmonics=n_harmonics, fmax=fmax
            )
            out[f"{kind}_harmonics"] = {
                "frequencies_hz": [round(float(h), 4) for h in harmonics],
                "raw_uv2": [round(float(v), 4) for v in np.median(before, axis=0)],
                "cleaned_uv2": [round(float(v), 4) for v in np.median(after, axis=0)],
                "change_db": [
                    round(float(v), 2) for v in np.median(quality.decibels(after / before), axis=0)
                ],
            }
    bands_raw = quality.band_powers(freqs, psd_raw, quality.ALLEN_BANDS)
    bands_clean = quality.band_powers(freqs, psd_clean, quality.ALLEN_BANDS)
    out["allen_bands_uv2"] = {
        name: {
            "range_hz": list(quality.ALLEN_BANDS[name]),
            "raw": round(float(np.median(bands_raw[name])), 4),
            "cleaned": round(float(np.median(bands_clean[name])), 4),
        }
        for name in quality.ALLEN_BANDS
    }
    return out


def truth_metrics(
    truth: NDArray[np.floating],
    good_eeg: NDArray[np.int64],
    out: NDArray[np.float32],
    params: CleanParams,
    sfreq: float,
    span: tuple[int, int],
    volumes: NDArray[np.int64] | None,
    repetition_time: float | None,
    spectra: dict[str, Any],
    freqs: NDArray[np.float64],
    psd_clean: NDArray[np.float64],
    plan: gradient.GradientPlan | None,
    fmax: float,
) -> dict[str, Any]:
    """Correlation and RMS error against the ground truth, and its spectral metrics.

    Compared at the output rate in 1-40 Hz on the EEG channels: over the scan without its
    first and last volume (``interior``) and over the whole scan (``scan``).
    """
    t = resample(
        np.asarray(truth[good_eeg], np.float32),
        sfreq,
        params.out_sfreq,
        l_freq=params.l_freq,
        h_freq=params.h_freq,
    )
    o = out[good_eeg]
    ratio = params.out_sfreq / sfreq
    start, stop = int(span[0] * ratio), int(span[1] * ratio)
    tr = (repetition_time or 0.0) * params.out_sfreq
    if volumes is not None and not tr:
        tr = float(np.median(np.diff(volumes))) * ratio
    result: dict[str, Any] = {"band_hz": [1.0, 40.0]}
    spans = {"scan": (start, stop)}
    if tr and stop - start > 4 * tr:
        spans["interior"] = (int(start + tr), int(stop - tr))
    for name, (a, b) in spans.items():
        corr, rmse = quality.compare_to_truth(o, t, params.out_sfreq, span=(a, b))
        result[name] = {
            "correlation": quality.summary(corr, 4),
            "rmse_uv": quality.summary(rmse, 3),
            "relative_rmse": quality.summary(rmse / np.maximum(t[:, a:b].std(axis=1), 1e-9), 4),
        }
    truth_psd = quality.welch_psd(
        np.asarray(truth[good_eeg, span[0] : span[1]], np.float32), sfreq, fmax=fmax
    )
    psd_truth = _on_grid(truth_psd[0], truth_psd[1], freqs)
    spectra["truth"] = np.median(psd_truth, axis=0)
    if plan is not None and plan.kind == "slice":
        harmonics, cleaned = quality.harmonic_power(
            freqs, psd_clean, sfreq / plan.period, n_harmonics=params.n_harmonics, fmax=fmax
        )
        _, true = quality.harmonic_power(
            freqs, psd_truth, sfreq / plan.period, n_harmonics=params.n_harmonics, fmax=fmax
        )
        result["slice_harmonics_vs_truth_db"] = {
            "frequencies_hz": [round(float(h), 4) for h in harmonics],
            "change_db": [
                round(float(v), 2) for v in np.median(quality.decibels(cleaned / true), axis=0)
            ],
        }
    bands_clean = quality.band_powers(freqs, psd_clean, quality.ALLEN_BANDS)
    bands_truth = quality.band_powers(freqs, psd_truth, quality.ALLEN_BANDS)
    result["allen_percent_difference"] = {
        name: round(
            float(
                np.median(
                    100
                    * np.abs(bands_clean[name] - bands_truth[name])
                    / np.maximum(bands_truth[name], 1e-12)
                )
            ),
            2,
        )
        for name in quality.ALLEN_BANDS
    }
    return result


# --------------------------------------------------------------------------- helpers


def _on_grid(
    freqs: NDArray[np.float64], psd: NDArray[np.float64], grid: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Interpolate PSDs (rows) onto another frequency grid."""
    if psd.size == 0:
        return np.zeros((0, grid.size))
    return np.stack([np.interp(grid, freqs, row) for row in psd])


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run BLAS single-threaded (many small batched products; FFTs use their own workers).

    Multi-threaded OpenBLAS on small matrices is up to 30 times slower on a loaded
    machine (measured here); the FFTs, which dominate, run on ``workers`` threads.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _listing(bad: dict[str, str]) -> str:
    return ", ".join(f"{name} ({why})" for name, why in bad.items())


def jsonable(value: Any) -> Any:
    """Convert numpy scalars and arrays (recursively) to JSON-ready Python values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
