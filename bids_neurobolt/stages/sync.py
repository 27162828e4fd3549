"""``sync`` stage: write the per-volume synchronisation table of a run."""

from __future__ import annotations

import logging
from typing import Any

from bids_neurobolt.derivatives import naming, writer
from bids_neurobolt.report import figures
from bids_neurobolt.stages.context import RunContext, StageResult

logger = logging.getLogger(__name__)


def run(ctx: RunContext) -> StageResult:
    """Check the markers of a run against its BOLD and write ``desc-sync_events.tsv``.

    The figure is written first, the table next and the JSON sidecar last: a sidecar
    with the current settings hash marks a complete result.
    """
    table_path = naming.sync_table_path(ctx.output_dir, ctx.spec.entities)
    sidecar = naming.sidecar_path(table_path)
    if ctx.up_to_date("sync", table_path, sidecar):
        return StageResult("skipped", outputs=[table_path, sidecar])
    result = ctx.sync
    if result is None:
        return StageResult("not applicable", "EEG-only recording without volume markers")
    writer.write_text(
        naming.figure_path(ctx.output_dir, ctx.spec.entities, "syncintervals", "eeg"),
        figures.sync_intervals(
            result.volume_samples, result.sfreq, result.repetition_time, result.tolerance
        ),
    )
    writer.write_tsv(table_path, result.to_events())
    writer.write_json(sidecar, _sidecar(ctx))
    logger.debug(
        "%s: %d volumes aligned (marker '%s' from the %s), TR %.4f s.",
        ctx.spec.label,
        result.n_volumes,
        result.marker,
        result.marker_source,
        result.measured_tr,
    )
    return StageResult("done", outputs=[table_path, sidecar])


def _sidecar(ctx: RunContext) -> dict[str, Any]:
    result = ctx.sync
    assert result is not None
    sources = [ctx.uri(ctx.spec.eeg)]
    if ctx.spec.bold is not None:
        sources.append(ctx.uri(ctx.spec.bold))
    sync = ctx.config.science.sync
    return {
        "Description": naming.DESCRIPTIONS["sync"],
        "onset": {"Description": "Marker time from the first EEG sample.", "Units": "s"},
        "duration": {"Description": "Zero: markers are instants.", "Units": "s"},
        "trial_type": {
            "Description": "Kind of scanner marker.",
            "Levels": {"volume": "start of a BOLD volume", "slice": "start of a slice"},
        },
        "sample": {"Description": "Zero-based EEG sample index at the native sampling rate."},
        "volume": {"Description": "Zero-based index of the BOLD volume (4th NIfTI axis)."},
        "slice": {"Description": "Rank of the slice marker within its volume, from 0."},
        **result.describe(),
        "Sources": sources,
        "Parameters": {
            "VolumeMarkerNames": list(sync.volume_markers),
            "SliceMarkerNames": list(sync.slice_markers),
            "SkipMarkers": sync.skip_markers,
            "ToleranceSamples": sync.tolerance_samples,
            "ToleranceFraction": sync.tolerance_fraction,
        },
        **ctx.provenance("sync"),
    }
