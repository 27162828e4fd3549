"""Write measured ROI targets: ``..._atlas-<A>_desc-bold_timeseries.tsv`` and its JSON sidecar.

The TSV has one row per BOLD volume (aligned with the run's synchronisation table) and
one column per ROI, the global signal last. The sidecar follows BEP012: it carries
``SamplingFrequency`` (1/TR), a description of every column, ``Sources`` (BIDS URIs
of the inputs) and every parameter that produced the values, including the scaling
statistics needed to map predictions back to BOLD units. Both files are written
atomically, the TSV first and the sidecar last: a sidecar whose settings hash matches
marks a complete result that a rerun may reuse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bids_neurobolt import __version__
from bids_neurobolt.derivatives import naming, writer
from bids_neurobolt.fmri.targets import GLOBAL_SIGNAL, TargetsResult


def write_targets(
    output_dir: Path,
    entities: Mapping[str, str | None],
    result: TargetsResult,
    *,
    atlas_label: str,
    repetition_time: float,
    sources: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write a run's ROI targets and sidecar.

    Parameters
    ----------
    output_dir : Path
        The derivative dataset root.
    entities : mapping
        The run's entities (``RunSpec.entities``).
    result : TargetsResult
        From :func:`~bids_neurobolt.fmri.targets.extract_targets` or
        :func:`~bids_neurobolt.fmri.targets.targets_from_table`.
    atlas_label : str
        BIDS atlas label for the file name (e.g. ``DiFuMo64``).
    repetition_time : float
        Seconds between rows.
    sources : sequence of str
        BIDS URIs (``bids:raw:...``) or paths of the inputs.
    extra : mapping | None
        More sidecar keys (e.g. ``ConfigHash``, ``RandomSeed``), added last.

    Returns
    -------
    tsv, json : Path
        The files written.
    """
    tsv = naming.timeseries_path(output_dir, entities, atlas_label, desc="bold")
    sidecar = naming.sidecar_path(tsv)
    writer.write_tsv(tsv, result.table, float_format="%.6g")
    writer.write_json(
        sidecar,
        targets_sidecar(
            result,
            atlas_label=atlas_label,
            repetition_time=repetition_time,
            sources=sources,
            extra=extra,
        ),
    )
    return tsv, sidecar


def targets_sidecar(
    result: TargetsResult,
    *,
    atlas_label: str,
    repetition_time: float,
    sources: Sequence[str],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the JSON sidecar of a targets table (see :func:`write_targets`)."""
    columns: dict[str, Any] = {}
    for position, name in enumerate(result.names):
        if name == GLOBAL_SIGNAL:
            description = "Global signal: mean over the EPI brain mask, cleaned like the ROIs."
        else:
            description = f"ROI '{name}' of atlas {atlas_label}."
        columns[name] = {
            "Description": description + " Scaled target (see Parameters.Scaling).",
            "Atlas": atlas_label if name != GLOBAL_SIGNAL else None,
            "Column": position,
            "Units": "arbitrary",
        }
    sidecar: dict[str, Any] = {
        "Description": "Measured ROI BOLD targets for NeuroBOLT, one row per BOLD volume.",
        "SamplingFrequency": 1.0 / repetition_time,
        "RepetitionTime": repetition_time,
        "StartTime": 0.0,
        "Columns": list(result.names),
        "ColumnDescriptions": columns,
        "Sources": list(sources),
        "Parameters": _plain(result.parameters),
        "Diagnostics": _plain(result.diagnostics),
        "SoftwareVersions": _versions(),
    }
    if extra:
        sidecar.update(_plain(dict(extra)))
    return sidecar


def _versions() -> dict[str, str]:
    import nibabel
    import nilearn
    import scipy

    return {
        "bids-neurobolt": __version__,
        "nilearn": nilearn.__version__,
        "nibabel": nibabel.__version__,
        "scipy": scipy.__version__,
        "numpy": np.__version__,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
