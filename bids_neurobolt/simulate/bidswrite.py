"""Write the simulated raw BIDS dataset: EEG (BrainVision), BOLD (NIfTI), sidecars.

The EEG is written with pybv (float32, µV, resolution 1) so that the markers keep their
BrainVision types: a volume marker ``R<n>`` is a ``Response`` marker and ``S<n>`` a
``Stimulus`` marker, any other name (and the slice marker) a ``Comment``. MNE reads them
back as the annotation descriptions given by :func:`marker_description`, e.g.
``Response/R128`` and ``Comment/Slice``; ``events.tsv`` uses the same strings as
``trial_type``, so ``mne_bids.read_raw_bids`` gives the same descriptions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

_TRIGGER = re.compile(r"(?P<kind>[RS])\s*(?P<code>\d{1,3})")
_BRAINVISION_TYPES = {"R": "Response", "S": "Stimulus"}


def check_marker_name(name: str) -> str | None:
    """Return why ``name`` cannot be a BrainVision marker, or None if it can."""
    if not name or name != name.strip():
        return "it is empty or starts/ends with a space"
    if any(char in name for char in ",\n\r\t"):
        return "it contains a comma, tab or line break"
    if not name.isprintable():
        return "it contains a non-printable character"
    return None


def marker_event(name: str) -> tuple[str, int | str]:
    """BrainVision marker type and description (as pybv takes them) for a marker name.

    Parameters
    ----------
    name : str
        Marker name: ``R<n>`` or ``S<n>`` (n from 0 to 999) for a Response or Stimulus
        trigger, anything else for a Comment.

    Returns
    -------
    type : str
        ``"Response"``, ``"Stimulus"`` or ``"Comment"``.
    description : int or str
        The trigger code, or the comment text.
    """
    match = _TRIGGER.fullmatch(name)
    if match:
        return _BRAINVISION_TYPES[match["kind"]], int(match["code"])
    return "Comment", name


def marker_description(name: str) -> str:
    """Annotation description MNE gives a marker written under ``name``.

    ``"R128"`` gives ``"Response/R128"``, ``"S1"`` gives ``"Stimulus/S  1"`` (BrainVision
    pads trigger codes to three characters) and ``"Slice"`` gives ``"Comment/Slice"``.

    Parameters
    ----------
    name : str
        Marker name as passed to the simulator.

    Returns
    -------
    str
    """
    kind, description = marker_event(name)
    if kind == "Comment":
        return f"Comment/{description}"
    return f"{kind}/{kind[0]}{description:>3}"


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_tsv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(header)] + ["\t".join(str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_dataset_files(
    root: Path,
    *,
    version: str,
    participants: Sequence[dict[str, object]],
    readme: str,
) -> None:
    """Write ``dataset_description.json``, ``README``, ``participants.tsv``/``.json``.

    Parameters
    ----------
    root : Path
        Dataset root.
    version : str
        bids-neurobolt version.
    participants : sequence of dict
        One dict per subject with keys ``participant_id``, ``age``, ``sex``.
    readme : str
        README text.
    """
    _write_json(
        root / "dataset_description.json",
        {
            "Name": "bids-neurobolt simulated simultaneous EEG-fMRI",
            "BIDSVersion": "1.10.0",
            "DatasetType": "raw",
            "License": "CC0-1.0",
            "Authors": ["bids-neurobolt developers"],
            "GeneratedBy": [
                {
                    "Name": "bids-neurobolt-simulate",
                    "Version": version,
                    "Description": "Synthetic EEG with gradient and BCG artifacts, ECG and "
                    "BOLD driven by EEG band power; ground truth in sourcedata/simulation.",
                    "CodeURL": "https://github.com/bids-neurobolt/bids-neurobolt",
                }
            ],
        },
    )
    (root / "README").write_text(readme, encoding="utf-8")
    _write_tsv(
        root / "participants.tsv",
        ["participant_id", "age", "sex"],
        [[p["participant_id"], p["age"], p["sex"]] for p in participants],
    )
    _write_json(
        root / "participants.json",
        {
            "participant_id": {"Description": "Simulated participant."},
            "age": {"Description": "Simulated age.", "Units": "year"},
            "sex": {
                "Description": "Simulated sex.",
                "Levels": {"F": "female", "M": "male"},
            },
        },
    )


def write_eeg_run(
    eeg_dir: Path,
    basename: str,
    *,
    data: NDArray[np.float32],
    ch_names: Sequence[str],
    ch_types: Sequence[str],
    sfreq: float,
    reference: str,
    ground: str,
    markers: Sequence[tuple[int, str, str]],
    task: str,
    task_description: str,
    subject_artefacts: str,
    version: str,
) -> Path:
    """Write one EEG run: BrainVision files, ``_eeg.json``, ``_channels.tsv``, events.

    Parameters
    ----------
    eeg_dir : Path
        The ``eeg/`` folder.
    basename : str
        BIDS file name stem without suffix, e.g. ``sub-01_task-rest``.
    data : ndarray, shape (n_channels, n_samples), float32
        Signals in µV.
    ch_names, ch_types : sequence of str
        Channel names and types (``"eeg"`` or ``"ecg"``).
    sfreq : float
        Sampling rate in Hz.
    reference, ground : str
        Reference and ground electrodes.
    markers : sequence of (sample, name, meaning)
        Markers sorted by sample; ``meaning`` documents them in ``events.json``.
    task : str
        Task label.
    task_description : str
        Task description for the sidecar.
    subject_artefacts : str
        ``SubjectArtefactDescription`` (the simulated artifacts).
    version : str
        bids-neurobolt version.

    Returns
    -------
    Path
        The ``.vhdr`` file.
    """
    from pybv import write_brainvision

    eeg_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{basename}_eeg"
    events = []
    for sample, name, _ in markers:
        kind, description = marker_event(name)
        events.append(
            {"onset": int(sample), "duration": 1, "description": description, "type": kind}
        )
    write_brainvision(
        data=np.multiply(data, 1e-6, dtype=np.float64),  # pybv takes volts
        sfreq=sfreq,
        ch_names=list(ch_names),
        ref_ch_names=reference,
        fname_base=stem,
        folder_out=eeg_dir,
        events=events or None,
        resolution=1.0,
        unit="µV",
        fmt="binary_float32",
        overwrite=False,
    )

    n_eeg = sum(t == "eeg" for t in ch_types)
    n_ecg = sum(t == "ecg" for t in ch_types)
    _write_json(
        eeg_dir / f"{stem}.json",
        {
            "TaskName": task,
            "TaskDescription": task_description,
            "Manufacturer": "bids-neurobolt",
            "ManufacturersModelName": "simulated MR-compatible amplifier",
            "SoftwareVersions": version,
            "SamplingFrequency": sfreq,
            "PowerLineFrequency": 50,
            "SoftwareFilters": "n/a",
            "HardwareFilters": "n/a",
            "EEGReference": reference,
            "EEGGround": ground,
            "EEGPlacementScheme": "10-20 (10-10 positions)",
            "CapManufacturer": "n/a",
            "EEGChannelCount": n_eeg,
            "ECGChannelCount": n_ecg,
            "EOGChannelCount": 0,
            "EMGChannelCount": 0,
            "MISCChannelCount": 0,
            "TriggerChannelCount": 0,
            "RecordingType": "continuous",
            "SubjectArtefactDescription": subject_artefacts,
            "RecordingDuration": data.shape[1] / sfreq,
        },
    )
    _write_tsv(
        eeg_dir / f"{basename}_channels.tsv",
        ["name", "type", "units", "description", "status"],
        [
            [
                name,
                kind.upper(),
                "µV",
                "ElectroCardioGram" if kind == "ecg" else "ElectroEncephaloGram",
                "good",
            ]
            for name, kind in zip(ch_names, ch_types, strict=True)
        ],
    )
    _write_tsv(
        eeg_dir / f"{basename}_events.tsv",
        ["onset", "duration", "trial_type", "value", "sample"],
        [
            [f"{sample / sfreq:.10g}", 0, marker_description(name), name, sample]
            for sample, name, _ in markers
        ],
    )
    levels = {marker_description(name): meaning for _, name, meaning in markers}
    _write_json(
        eeg_dir / f"{basename}_events.json",
        {
            "onset": {"Description": "Marker time from the first EEG sample.", "Units": "s"},
            "duration": {"Description": "Instantaneous marker.", "Units": "s"},
            "trial_type": {
                "Description": "Marker as MNE names it when reading the BrainVision file "
                "(<type>/<description>).",
                "Levels": levels,
            },
            "value": {"Description": "Marker description as written in the .vmrk file."},
            "sample": {"Description": "Zero-based EEG sample of the marker."},
        },
    )
    return eeg_dir / f"{stem}.vhdr"


def nifti_image(data: NDArray, affine: NDArray[np.float64], tr: float | None = None):
    """Build a NIfTI-1 image in MNI152 space (sform and qform code 4), mm and s units.

    Parameters
    ----------
    data : ndarray
        3-D or 4-D array.
    affine : ndarray, shape (4, 4)
        Voxel-to-MNI affine.
    tr : float | None
        Repetition time (s) for 4-D data.

    Returns
    -------
    nibabel.Nifti1Image
    """
    import nibabel as nib

    image = nib.Nifti1Image(data, affine)
    header = image.header
    header.set_xyzt_units("mm", "sec")
    if tr is not None:
        header.set_zooms((*header.get_zooms()[:3], tr))
    image.set_sform(affine, code=4)
    image.set_qform(affine, code=4)
    return image


def write_bold_run(
    func_dir: Path,
    basename: str,
    *,
    volumes: NDArray[np.float32],
    affine: NDArray[np.float64],
    tr: float,
    slice_timing: NDArray[np.float64],
    task: str,
    task_description: str,
    version: str,
) -> Path:
    """Write ``_bold.nii.gz`` and ``_bold.json``.

    Parameters
    ----------
    func_dir : Path
        The ``func/`` folder.
    basename : str
        BIDS file name stem without suffix.
    volumes : ndarray, shape (nx, ny, nz, n_volumes), float32
        BOLD data.
    affine : ndarray, shape (4, 4)
        Voxel-to-MNI affine.
    tr : float
        Repetition time (s).
    slice_timing : ndarray, shape (n_slices,)
        BIDS SliceTiming (s).
    task : str
        Task label.
    task_description : str
        Task description.
    version : str
        bids-neurobolt version.

    Returns
    -------
    Path
        The NIfTI file.
    """
    import nibabel as nib

    func_dir.mkdir(parents=True, exist_ok=True)
    path = func_dir / f"{basename}_bold.nii.gz"
    nib.save(nifti_image(volumes, affine, tr), path)
    _write_json(
        func_dir / f"{basename}_bold.json",
        {
            "TaskName": task,
            "TaskDescription": task_description,
            "RepetitionTime": tr,
            "SliceTiming": [round(float(t), 6) for t in slice_timing],
            "SliceEncodingDirection": "k",
            "EchoTime": 0.03,
            "FlipAngle": 90,
            "MRAcquisitionType": "2D",
            "PulseSequenceType": "Gradient Echo EPI",
            "MagneticFieldStrength": 3,
            "Manufacturer": "bids-neurobolt",
            "ManufacturersModelName": "simulated gradient-echo EPI, in MNI152NLin2009cAsym space",
            "SoftwareVersions": version,
        },
    )
    return path


def write_atlas(
    directory: Path,
    stem: str,
    *,
    labels: NDArray[np.int16],
    affine: NDArray[np.float64],
    names: Sequence[str],
) -> Path:
    """Write a BIDS-style ``<stem>_dseg.nii.gz`` and ``<stem>_dseg.tsv`` (index, name).

    Parameters
    ----------
    directory : Path
        Output folder.
    stem : str
        File name stem, e.g. ``tpl-MNI152NLin2009cAsym_res-4mm_atlas-simulated``.
    labels : ndarray of int16
        Label image (0 is background).
    affine : ndarray, shape (4, 4)
        Voxel-to-MNI affine.
    names : sequence of str
        Name of label ``i + 1`` at position ``i``.

    Returns
    -------
    Path
        The NIfTI file.
    """
    import nibabel as nib

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}_dseg.nii.gz"
    nib.save(nifti_image(labels, affine), path)
    _write_tsv(
        directory / f"{stem}_dseg.tsv",
        ["index", "name"],
        [[i, name] for i, name in enumerate(names, start=1)],
    )
    return path
