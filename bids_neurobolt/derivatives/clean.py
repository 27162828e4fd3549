"""Write the cleaned EEG of a run: BrainVision files, sidecars, channels, events, quality.

Files, in ``<out>/sub-<l>[/ses-<s>]/eeg/`` (names from :func:`~.naming.clean_eeg_path`)::

    <entities>_desc-clean_eeg.vhdr/.vmrk/.eeg   BrainVision, float32, µV, 200 Hz
    <entities>_desc-clean_eeg.json              raw-compliant EEG sidecar (+ Sources)
    <entities>_desc-clean_channels.tsv          every channel, its type and status
    <entities>_desc-clean_events.tsv/.json      volume markers and heartbeats (200 Hz samples)
    <entities>_desc-clean_quality.json          artifact-removal metrics (in .bidsignore)

Every file appears complete or not at all: the three BrainVision files are written into
a temporary folder next to their destination, then renamed one by one (``.eeg``, then
``.vmrk``, then ``.vhdr``, the file readers open first), and the others through
:mod:`.writer`. The sidecars and tables are written before the ``.vhdr``, so a complete
header always has its sidecars; the quality file is written last.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_neurobolt.derivatives import naming, writer
from bids_neurobolt.eeg.pipeline import CleanResult
from bids_neurobolt.errors import IOFailure, OutputError

#: BIDS channel types for the lower-case types used in the pipeline.
BIDS_TYPES: dict[str, str] = {
    "eeg": "EEG",
    "ecg": "ECG",
    "eog": "EOG",
    "emg": "EMG",
    "misc": "MISC",
    "resp": "RESP",
    "stim": "TRIG",
    "bio": "MISC",
}

#: Keys of the source ``_eeg.json`` carried over (acquisition facts still true).
_CARRIED = (
    "TaskName",
    "TaskDescription",
    "Instructions",
    "InstitutionName",
    "InstitutionAddress",
    "Manufacturer",
    "ManufacturersModelName",
    "CapManufacturer",
    "CapManufacturersModelName",
    "EEGReference",
    "EEGGround",
    "EEGPlacementScheme",
    "PowerLineFrequency",
    "HardwareFilters",
)


#: ``_events.json`` of the cleaned EEG: what its columns mean.
EVENTS_SIDECAR: dict[str, Any] = {
    "sample": {
        "Description": "Zero-based sample index at the SamplingFrequency of the desc-clean EEG."
    },
    "trial_type": {
        "Description": "What happened at this sample.",
        "Levels": {
            "volume": "Scanner volume marker: start of a BOLD volume.",
            "R-peak": "R-peak detected on the ECG after gradient artifact removal.",
            "heartbeat (EEG-derived)": "Peak of the EEG's pulse component, used in place of "
            "R-peaks when no usable ECG was recorded (offset from the R-peak by the pulse delay).",
        },
    },
}


def write_clean(
    output_dir: Path,
    entities: Mapping[str, str | None],
    result: CleanResult,
    *,
    source_sidecar: Mapping[str, Any],
    sources: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write a run's cleaned EEG derivative files.

    Parameters
    ----------
    output_dir : Path
        The derivative dataset root.
    entities : mapping
        The run's entities (``RunSpec.entities``: subject, session, task, acquisition, run).
    result : CleanResult
        From :func:`~bids_neurobolt.eeg.pipeline.clean_recording`.
    source_sidecar : mapping
        The raw recording's ``_eeg.json`` (TaskName, EEGReference, PowerLineFrequency...).
    sources : sequence of str
        BIDS URIs (``bids:raw:...``) of the inputs, for ``Sources``.
    extra : mapping | None
        More keys for the quality file.
    provenance : mapping | None
        Keys for both the ``_eeg.json`` and the quality file (settings hash, seed,
        software version); the quality file, written last, marks a complete result.

    Returns
    -------
    list of Path
        The files written, the ``.vhdr`` second to last and the quality file last.

    Raises
    ------
    OutputError, IOFailure
        If the files cannot be written.
    """

    def path(suffix: str, ext: str) -> Path:
        return naming.clean_eeg_path(output_dir, entities, suffix, ext)

    sidecar = eeg_sidecar(result, source_sidecar, sources) | dict(provenance or {})
    written = [
        writer.write_json(path("eeg", ".json"), sidecar),
        writer.write_tsv(path("channels", ".tsv"), channels_table(result)),
        writer.write_json(path("events", ".json"), EVENTS_SIDECAR),
        writer.write_tsv(path("events", ".tsv"), events_table(result)),
    ]
    written += write_brainvision(path("eeg", ".vhdr"), result)
    quality = {
        "Description": "Artifact-removal metrics of bids-neurobolt's clean stage.",
        "Sources": list(sources),
        **dict(provenance or {}),
        **(dict(extra) if extra else {}),
        **result.diagnostics,
    }
    written.append(writer.write_json(path("quality", ".json"), quality))
    return written


def write_brainvision(vhdr: Path, result: CleanResult) -> list[Path]:
    """Write the BrainVision trio atomically (temporary folder, then ``.eeg/.vmrk/.vhdr``).

    Parameters
    ----------
    vhdr : Path
        Final header path; the data and marker files take the same stem.
    result : CleanResult
        The cleaned recording (µV).

    Returns
    -------
    list of Path
        ``.eeg``, ``.vmrk``, ``.vhdr`` paths.
    """
    import pybv

    folder = vhdr.parent
    tmp = folder / f".{vhdr.stem}.{uuid.uuid4().hex[:8]}.tmp"
    base = vhdr.stem
    finals = [folder / f"{base}{ext}" for ext in (".eeg", ".vmrk", ".vhdr")]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        pybv.write_brainvision(
            data=result.data.astype(np.float64) * 1e-6,
            sfreq=result.sfreq,
            ch_names=list(result.channels.names),
            fname_base=base,
            folder_out=str(tmp),
            events=_markers(result),
            resolution=1.0,
            unit="µV",
            fmt="binary_float32",
        )
        for final in finals:
            (tmp / final.name).replace(final)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise OutputError(
                f"cannot write here ({exc.strerror}).",
                path=folder,
                fix="Choose an output folder you can write to, or fix its permissions.",
            ) from None
        raise IOFailure(
            f"writing the cleaned EEG failed ({exc.strerror or exc}).",
            path=vhdr,
            fix="Check the output folder (space, permissions), then run again.",
        ) from None
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return finals


def _markers(result: CleanResult) -> list[dict[str, Any]]:
    events = [
        {"onset": int(s), "description": "Volume", "type": "Comment"} for s in result.volume_samples
    ]
    label = "R-peak" if result.cardiac_reference == "ecg" else "Heartbeat"
    events += [{"onset": int(s), "description": label, "type": "Comment"} for s in result.beats]
    n = result.data.shape[1]
    return sorted((e for e in events if 0 <= e["onset"] < n), key=lambda e: e["onset"])


def eeg_sidecar(
    result: CleanResult, source: Mapping[str, Any], sources: Sequence[str]
) -> dict[str, Any]:
    """Build the ``_eeg.json`` of the cleaned recording (raw-compliant fields).

    Parameters
    ----------
    result : CleanResult
        The cleaned recording.
    source : mapping
        The raw recording's sidecar; acquisition facts are carried over.
    sources : sequence of str
        BIDS URIs of the inputs.

    Returns
    -------
    dict
    """
    types = result.channels.types
    counts = {t: sum(1 for x in types if x == t) for t in ("eeg", "ecg", "eog", "emg")}
    misc = len(types) - sum(counts.values())
    params = result.diagnostics.get("parameters", {})
    diagnostics = result.diagnostics
    gradient = diagnostics.get("gradient", {})
    removal: dict[str, str] = {}
    if gradient.get("gradient_corrected"):
        removal["gradient"] = (
            f"{gradient.get('epoch_kind', 'volume')}-triggered average artifact subtraction "
            "with sub-sample alignment, then optimal basis sets fitted to the residuals"
        )
    if diagnostics.get("bcg", {}).get("bcg_corrected"):
        reference = "R-peak" if result.cardiac_reference == "ecg" else "EEG-derived heartbeat"
        removal["ballistocardiogram"] = f"{reference}-locked optimal basis sets"
    filters: dict[str, Any] = {
        # BIDS wants an object per filter: without any removal the key is left out.
        **({"MRArtifactRemoval": removal} if removal else {}),
        "AntiAliasLowPass": {
            "CutoffHz": 0.8 * result.sfreq / 2 if params.get("h_freq") is None else params["h_freq"]
        },
    }
    if params.get("l_freq"):
        filters["HighPass"] = {"CutoffHz": params["l_freq"]}
    sidecar: dict[str, Any] = {key: source[key] for key in _CARRIED if key in source}
    sidecar["Description"] = (
        "EEG cleaned of the MR gradient and ballistocardiogram artifacts by bids-neurobolt "
        "(see descriptions.tsv and the desc-clean_quality.json of this run)."
        if removal
        else "EEG filtered and resampled by bids-neurobolt; no MR artifact was removed "
        "(recorded without volume markers, or removal disabled; see desc-clean_quality.json)."
    )
    sidecar.setdefault("TaskName", "unknown")
    sidecar.setdefault("EEGReference", "n/a")
    sidecar.setdefault("PowerLineFrequency", "n/a")
    sidecar.update(
        {
            "SamplingFrequency": result.sfreq,
            "SoftwareFilters": filters,
            "EEGChannelCount": counts["eeg"],
            "ECGChannelCount": counts["ecg"],
            "EOGChannelCount": counts["eog"],
            "EMGChannelCount": counts["emg"],
            "MiscChannelCount": misc,
            "RecordingDuration": round(result.data.shape[1] / result.sfreq, 6),
            "RecordingType": "continuous",
        }
    )
    if sources:
        sidecar["Sources"] = list(sources)
    return sidecar


def channels_table(result: CleanResult) -> pd.DataFrame:
    """Build ``_channels.tsv``: every channel with its BIDS type, unit and status."""
    names = result.channels.names
    model = set(result.channels.model)
    rows = []
    for i, (name, kind) in enumerate(zip(names, result.channels.types, strict=True)):
        why = result.bad_channels.get(name)
        if why is None and kind == "eeg" and i not in model:
            note = "no 10-20 label: kept out of the model input"
        elif why is None:
            note = "n/a" if kind == "eeg" else "not EEG: kept out of the model input"
        else:
            note = why
        rows.append(
            {
                "name": name,
                "type": BIDS_TYPES.get(kind, "MISC"),
                "units": "µV",
                "sampling_frequency": result.sfreq,
                "status": "bad" if why is not None else "good",
                "status_description": note,
            }
        )
    return pd.DataFrame(rows)


def events_table(result: CleanResult) -> pd.DataFrame:
    """Build ``_events.tsv``: volume markers and heartbeats, samples at the output rate."""
    beat = "R-peak" if result.cardiac_reference == "ecg" else "heartbeat (EEG-derived)"
    samples = np.concatenate([result.volume_samples, result.beats]).astype(np.int64)
    kinds = ["volume"] * result.volume_samples.size + [beat] * result.beats.size
    table = pd.DataFrame(
        {
            "onset": samples / result.sfreq,
            "duration": 0.0,
            "trial_type": kinds,
            "sample": samples,
        }
    )
    return table.sort_values(["sample", "trial_type"], kind="stable").reset_index(drop=True)
