"""``clean`` stage: remove the MR gradient and BCG artifacts of a run's EEG.

Reads the raw recording through MNE-BIDS channel chunk by channel chunk (the file is
never loaded whole), takes the volume and slice markers from the ``sync`` stage and the
slice timing from the BOLD sidecar, calls
:func:`~bids_neurobolt.eeg.pipeline.clean_recording` and writes the ``desc-clean``
derivative (:mod:`bids_neurobolt.derivatives.clean`) and three report figures.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bids_neurobolt.bids.eeg_io import open_raw
from bids_neurobolt.config import CleanConfig
from bids_neurobolt.derivatives import naming, writer
from bids_neurobolt.derivatives.clean import write_clean
from bids_neurobolt.eeg.bcg import BCGParams
from bids_neurobolt.eeg.gradient import GradientParams
from bids_neurobolt.eeg.pipeline import CleanParams, CleanResult, clean_recording
from bids_neurobolt.errors import DataError, MissingInputError
from bids_neurobolt.log import throttled
from bids_neurobolt.report import figures
from bids_neurobolt.stages.context import RunContext, StageResult

logger = logging.getLogger(__name__)

#: Seconds of raw and cleaned EEG shown in the report, and channels shown.
TRACE_SECONDS = 4.0
TRACE_CHANNELS = 6

#: Bytes of float64 samples read from the file at a time.
READ_BLOCK_BYTES = 64 * 2**20

#: Folder of a simulated dataset that holds the ground truth (written by the simulator).
SIMULATION_DIR = Path("sourcedata") / "simulation"


class RawRows:
    """Row-chunk reader over an MNE raw object, in µV as float32.

    :func:`clean_recording` reads ``data[a:b]`` and ``data[a:b, s:t]``; this adapter
    answers them from the file so that only one chunk of channels is in memory.

    Parameters
    ----------
    raw : mne.io.BaseRaw
        The recording (not preloaded).
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self.shape = (len(raw.ch_names), int(raw.n_times))

    def __getitem__(self, key: slice | tuple[slice, slice]) -> NDArray[np.float32]:
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        if not isinstance(rows, slice) or not isinstance(cols, slice):
            raise TypeError("RawRows supports slices only, e.g. data[a:b] or data[a:b, s:t]")
        picks = np.arange(self.shape[0])[rows]
        start, stop, step = cols.indices(self.shape[1])
        if step != 1:
            raise TypeError("RawRows supports contiguous sample ranges only")
        out = np.empty((picks.size, stop - start), dtype=np.float32)
        # MNE returns float64 volts: read in time blocks so that only one block exists in
        # float64, never the whole channel chunk (2.5x the float32 result otherwise).
        step = max(1, READ_BLOCK_BYTES // (8 * max(1, picks.size)))
        for first in range(start, stop, step):
            last = min(stop, first + step)
            block = self._raw.get_data(picks=picks, start=first, stop=last, verbose="error")
            np.multiply(block, 1e6, out=out[:, first - start : last - start], casting="unsafe")
        return out


def clean_params(config: CleanConfig) -> CleanParams:
    """Translate the command-line settings into :class:`CleanParams`."""
    return CleanParams(
        gradient_mode=config.gradient,  # type: ignore[arg-type]
        bcg_mode=config.bcg,  # type: ignore[arg-type]
        gradient_params=GradientParams(
            window=config.aas_window or None,
            obs_components="auto" if config.obs_components < 0 else config.obs_components,
        ),
        bcg_params=BCGParams(n_components=config.bcg_components),
        l_freq=config.highpass or None,
        h_freq=config.lowpass,
    )


def run(ctx: RunContext) -> StageResult:
    """Clean a run's EEG and write ``desc-clean_eeg.vhdr`` with its sidecars.

    The quality file is written last: with the current settings hash it marks a
    complete result, and a rerun skips the run.
    """
    entities = ctx.spec.entities
    vhdr = naming.clean_eeg_path(ctx.output_dir, entities, "eeg", ".vhdr")
    quality = naming.clean_eeg_path(ctx.output_dir, entities, "quality", ".json")
    if ctx.up_to_date("clean", vhdr, quality):
        return StageResult("skipped", outputs=[vhdr, quality])
    raw = open_raw(ctx.spec)
    names = list(raw.ch_names)
    types = raw.get_channel_types()
    sync, bold = ctx.sync, ctx.bold
    params = clean_params(ctx.config.science.clean)
    slice_samples = None
    if sync is not None and sync.slice_samples.size:
        slice_samples = sync.slice_samples
    slice_timing = np.asarray(bold.slice_timing) if bold is not None and bold.slice_timing else None
    truth = _ground_truth(ctx, names)
    try:
        result = _clean(ctx, raw, names, types, params, slice_samples, slice_timing, truth)
    except DataError as exc:
        if exc.path is None:  # the arrays' checks do not know the file: name it
            raise DataError(exc.problem, path=ctx.spec.eeg, fix=exc.fix) from None
        raise
    _figures(ctx, raw, result)
    sources = [ctx.uri(ctx.spec.eeg)]
    if ctx.spec.bold is not None:
        sources.append(ctx.uri(ctx.spec.bold))
    written = write_clean(
        ctx.output_dir,
        entities,
        result,
        source_sidecar=ctx.layout.get_metadata(str(ctx.spec.eeg)),
        sources=sources,
        provenance={**ctx.provenance("clean"), "Parameters": _parameters(ctx)},
        extra={"GroundTruthAvailable": truth is not None},
    )
    diag = result.diagnostics
    logger.debug(
        "%s: cleaned %.0f s of EEG in %.1f s (%.0fx real time).",
        ctx.spec.label,
        diag["duration_s"],
        diag["seconds"],
        diag["real_time_factor"],
    )
    return StageResult("done", outputs=written)


def _clean(
    ctx: RunContext,
    raw: Any,
    names: list[str],
    types: list[str],
    params: CleanParams,
    slice_samples: NDArray[np.int64] | None,
    slice_timing: NDArray[np.float64] | None,
    truth: NDArray[np.float32] | None,
) -> CleanResult:
    sync, bold = ctx.sync, ctx.bold
    return clean_recording(
        RawRows(raw),
        float(raw.info["sfreq"]),
        names,
        types,
        None if sync is None else sync.volume_samples,
        slice_samples=slice_samples,
        slice_timing=slice_timing,
        repetition_time=None if bold is None else bold.repetition_time,
        bad_channels=list(raw.info["bads"]),
        params=params,
        truth=truth,
        progress=throttled(logger, ctx.spec.label),
    )


def _parameters(ctx: RunContext) -> dict[str, Any]:
    clean = ctx.config.science.clean
    return {
        "GradientRemoval": clean.gradient,
        "BCGRemoval": clean.bcg,
        "AASWindow": clean.aas_window or "auto",
        "GradientOBSComponents": "auto" if clean.obs_components < 0 else clean.obs_components,
        "BCGComponents": clean.bcg_components,
        "HighPassHz": clean.highpass or None,
        "LowPassHz": clean.lowpass,
    }


def _ground_truth(ctx: RunContext, names: list[str]) -> NDArray[np.float32] | None:
    """Return the simulated clean EEG in the recording's channel order, if there is one."""
    if not (ctx.bids_dir / SIMULATION_DIR).is_dir():
        return None
    from bids_neurobolt.simulate.groundtruth import load_ground_truth

    spec = ctx.spec
    try:
        truth = load_ground_truth(
            ctx.bids_dir, spec.subject, session=spec.session, task=spec.task, run=spec.run
        )
    except MissingInputError:
        return None
    if set(truth.ch_names) != set(names) or truth.n_samples != ctx.header.n_samples:
        logger.warning(
            "%s: the simulation's ground truth does not match the recording (channels or "
            "length differ); ground-truth metrics skipped.",
            spec.label,
        )
        return None
    order = [truth.ch_names.index(n) for n in names]
    return truth.clean_eeg[order]


def _figures(ctx: RunContext, raw: Any, result: CleanResult) -> None:
    entities = ctx.spec.entities
    spectral = result.diagnostics.get("spectral", {})
    writer.write_text(
        naming.figure_path(ctx.output_dir, entities, "spectrum", "eeg"),
        figures.clean_spectrum(
            result.spectra,
            spectral.get("slice_harmonics", {}).get("frequencies_hz", ()),
            spectral.get("volume_harmonics", {}).get("frequencies_hz", ()),
            result.sfreq,
        ),
    )
    raw_sfreq = float(raw.info["sfreq"])
    eeg = [i for i in result.channels.model][:TRACE_CHANNELS]
    if eeg:
        start = _trace_start(result)
        first = int(start * raw_sfreq)
        n_raw = min(int(TRACE_SECONDS * raw_sfreq), raw.n_times - first)
        raw_rows = raw.get_data(picks=eeg, start=first, stop=first + n_raw, verbose="error")
        a = int(start * result.sfreq)
        clean_rows = result.data[eeg, a : a + int(TRACE_SECONDS * result.sfreq)]
        writer.write_text(
            naming.figure_path(ctx.output_dir, entities, "traces", "eeg"),
            figures.clean_traces(
                raw_rows * 1e6,
                raw_sfreq,
                clean_rows,
                result.sfreq,
                [result.channels.names[i] for i in eeg],
                start,
            ),
        )
    if result.cardiac_reference is not None:
        types = result.channels.types
        ecg_rows = [i for i, t in enumerate(types) if t == "ecg"]
        ecg = result.data[ecg_rows[0]] if result.cardiac_reference == "ecg" and ecg_rows else None
        template = result.spectra.get("bcg_template")
        if template is not None:
            template = {**template, "name": result.channels.names[template["row"]]}
        writer.write_text(
            naming.figure_path(ctx.output_dir, entities, "bcg", "eeg"),
            figures.bcg_detection(ecg, result.sfreq, result.beats, template),
        )


def _trace_start(result: CleanResult) -> float:
    """Start the traces a little after the middle volume (inside the scan)."""
    if result.volume_samples.size:
        middle = result.volume_samples[result.volume_samples.size // 2]
        return float(middle) / result.sfreq
    duration = result.data.shape[1] / result.sfreq
    return max(0.0, duration / 2 - TRACE_SECONDS / 2)
