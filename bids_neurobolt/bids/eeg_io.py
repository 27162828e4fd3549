"""Read EEG recordings through MNE-BIDS and collect their markers.

MNE-BIDS gives channel types from ``channels.tsv`` (so ECG is typed ECG) and replaces
the file's own markers with the rows of ``events.tsv`` when that file exists. Scanner
triggers are often missing from a curated ``events.tsv`` while still in the raw file
(``.vmrk``, EDF annotations, EEGLAB events), so both sources are kept:
:func:`read_markers` returns the ``events.tsv`` markers and the raw-file markers, and
the synchronisation step picks whichever holds the volume markers.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bids_neurobolt.bids.layout import RunSpec, check_file_present, unreadable
from bids_neurobolt.errors import DataError

logger = logging.getLogger(__name__)

#: Channel names treated as ECG when no channels.tsv says otherwise.
ECG_NAME = re.compile(r"^(ecg|ekg)[\s_-]?\d*$", re.IGNORECASE)


@dataclass(frozen=True)
class Markers:
    """Markers (annotations) of one EEG recording.

    Attributes
    ----------
    description : numpy.ndarray of object (str)
        Marker names as MNE reads them, e.g. ``"Response/R128"``.
    sample : numpy.ndarray of int
        Zero-based sample index of each marker at the recording's sampling rate.
    source : str
        ``"events.tsv"`` or ``"raw file"``.
    """

    description: np.ndarray
    sample: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.sample)

    def counts(self) -> dict[str, int]:
        """Return the number of markers of each name, most frequent first."""
        names, counts = np.unique(self.description, return_counts=True)
        order = np.argsort(-counts, kind="stable")
        return {str(names[i]): int(counts[i]) for i in order}


@dataclass(frozen=True)
class EEGHeader:
    """What the synchronisation step needs to know about a recording.

    Attributes
    ----------
    path : Path
        The EEG file.
    sfreq : float
        Sampling rate (Hz).
    n_samples : int
        Number of samples.
    ch_names : tuple of str
        Channel names.
    ch_types : tuple of str
        MNE channel types (``"eeg"``, ``"ecg"``...).
    markers : tuple of Markers
        The ``events.tsv`` markers first (if that file exists), then the raw file's.
    """

    path: Path
    sfreq: float
    n_samples: int
    ch_names: tuple[str, ...]
    ch_types: tuple[str, ...]
    markers: tuple[Markers, ...]

    @property
    def duration(self) -> float:
        """Recording length in seconds."""
        return self.n_samples / self.sfreq


def open_raw(spec: RunSpec, *, preload: bool = False) -> Any:
    """Open a run's EEG through MNE-BIDS, with ECG channels typed as ECG.

    Parameters
    ----------
    spec : RunSpec
        The run.
    preload : bool
        Load the data into memory (otherwise only the header is read).

    Returns
    -------
    mne.io.BaseRaw
        The recording, in volts as MNE stores it.

    Raises
    ------
    MissingInputError
        If the file (or a BrainVision companion file) is missing or a broken link.
    DataError
        If MNE cannot read the file.
    """
    import mne_bids

    check_file_present(spec.eeg)
    check_channel_names(spec.eeg)
    bids_path = mne_bids.get_bids_path_from_fname(spec.eeg)
    try:
        with warnings.catch_warnings():
            # MNE-BIDS warns about every optional sidecar it does not find.
            warnings.simplefilter("ignore", RuntimeWarning)
            raw = mne_bids.read_raw_bids(bids_path, verbose="error")
        if preload:
            raw.load_data(verbose="error")
    except PermissionError as exc:
        raise unreadable(exc.filename or spec.eeg) from None
    except FileNotFoundError as exc:
        missing = Path(exc.filename) if exc.filename else None
        if missing is not None:
            check_file_present(missing)
        raise DataError(
            f"MNE could not read this EEG file: {exc}",
            path=spec.eeg,
            fix="Check that the header and its data/marker files belong together.",
        ) from None
    except RuntimeError as exc:
        if "mismatch" in str(exc).lower():
            _raise_channel_mismatch(spec.eeg)
        raise DataError(
            f"MNE could not read this EEG file ({type(exc).__name__}: {exc}).",
            path=spec.eeg,
            fix="Check that the file is complete and not corrupt (open it in the recording "
            "software or with mne.io.read_raw), then run again.",
        ) from None
    except (
        ValueError,
        OSError,
        KeyError,
        IndexError,
        UnicodeDecodeError,
        TypeError,
        AssertionError,
    ) as exc:
        raise DataError(
            f"MNE could not read this EEG file ({type(exc).__name__}: {exc}).",
            path=spec.eeg,
            fix="Check that the file is complete and not corrupt (open it in the recording "
            "software or with mne.io.read_raw), then run again.",
        ) from None
    _check_data_size(raw, spec.eeg)
    check_sidecar_sfreq(spec.eeg, float(raw.info["sfreq"]))
    _type_ecg_by_name(raw)
    return raw


def check_sidecar_sfreq(eeg_path: Path, header_sfreq: float) -> None:
    """Refuse a recording whose ``_eeg.json`` gives another sampling rate than its header.

    BIDS requires ``SamplingFrequency`` in the sidecar and expects it to describe the data
    file; a disagreement means one of them was edited or copied from another recording.
    Neither can be trusted to be the right one, so the run stops (exit 65) naming both.

    Raises
    ------
    DataError
        When the sidecar next to the file states a ``SamplingFrequency`` that is not a
        positive number, or differs from the header's rate by more than 0.01 %.
    """
    sidecar = eeg_path.with_name(eeg_path.name.rsplit("_eeg.", 1)[0] + "_eeg.json")
    try:
        stated = json.loads(sidecar.read_text(encoding="utf-8")).get("SamplingFrequency")
    except (OSError, ValueError, AttributeError):
        return  # no sidecar here (inherited, or missing: the validator reports it)
    if stated is None:
        return
    if isinstance(stated, bool) or not isinstance(stated, int | float) or stated <= 0:
        raise DataError(
            f"SamplingFrequency is {stated!r}, not a positive number of Hz.",
            path=sidecar,
            fix=f'Write the rate of the recording as a number, e.g. "SamplingFrequency": '
            f"{header_sfreq:g}.",
        )
    if abs(float(stated) - header_sfreq) > 1e-4 * header_sfreq:
        raise DataError(
            f"SamplingFrequency is {stated:g} Hz, but the header of {eeg_path.name} gives "
            f"{header_sfreq:g} Hz (BrainVision SamplingInterval, EDF record length...). "
            "One of them is wrong and the EEG would be read at the wrong rate.",
            path=sidecar,
            fix="Correct the sidecar if the header is right (the usual case: the acquisition "
            "software wrote the header), or re-export the recording if the header is wrong.",
        )


def check_channel_names(eeg_path: Path) -> None:
    """Refuse duplicate channel names in a BrainVision header or in ``channels.tsv``.

    MNE renames duplicates (``Fp1-0``, ``Fp1-1``), after which nothing matches
    ``channels.tsv`` and the error no longer says why; this check names them first.

    Raises
    ------
    DataError
        If a channel name appears twice in the header or in ``channels.tsv``.
    """
    if eeg_path.suffix.lower() == ".vhdr":
        names = _vhdr_channel_names(eeg_path)
        twice = _duplicates(names)
        if twice:
            raise DataError(
                f"declares the channel name(s) {', '.join(map(repr, twice))} more than once "
                "([Channel Infos]).",
                path=eeg_path,
                fix="Give every channel a unique name in the header (and in channels.tsv).",
            )
    tsv = _channels_tsv(eeg_path)
    if tsv is not None:
        names = _tsv_channel_names(tsv)
        twice = _duplicates(names)
        if twice:
            raise DataError(
                f"lists the channel name(s) {', '.join(map(repr, twice))} more than once.",
                path=tsv,
                fix="List each channel of the recording once, in the order of the EEG file.",
            )


def _raise_channel_mismatch(eeg_path: Path) -> None:
    """Raise a :class:`DataError` that lists the names channels.tsv and the file disagree on."""
    import mne

    tsv = _channels_tsv(eeg_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            in_file = list(mne.io.read_raw(eeg_path, preload=False, verbose="error").ch_names)
        in_tsv = _tsv_channel_names(tsv) if tsv is not None else []
    except Exception:  # noqa: BLE001 - fall back to a message without the names
        in_file, in_tsv = [], []
    only_tsv = [n for n in in_tsv if n not in in_file]
    only_file = [n for n in in_file if n not in in_tsv]
    details = []
    if only_tsv:
        details.append(f"not in the EEG file: {', '.join(only_tsv[:10])}")
    if only_file:
        details.append(f"missing from channels.tsv: {', '.join(only_file[:10])}")
    if not details and in_tsv:
        details.append("the same names in another order")
    raise DataError(
        f"the channel names of channels.tsv do not match those of {eeg_path.name} "
        f"({'; '.join(details) or 'names differ'}).",
        path=tsv if tsv is not None else eeg_path,
        fix="Make channels.tsv list the channels of the EEG file, with the same names and "
        "in the same order.",
    )


def _check_data_size(raw: Any, eeg_path: Path) -> None:
    """Refuse a BrainVision data file whose size is not a whole number of samples.

    MNE divides the data file's size by the bytes per sample the header declares and
    silently drops the remainder, so a header that declares the wrong number of channels
    or the wrong binary format would give scrambled signals.
    """
    extras = getattr(raw, "_raw_extras", None)
    if type(raw).__name__ != "RawBrainVision" or not extras:
        return
    fmt, n_channels = extras[0].get("fmt"), extras[0].get("orig_nchan")
    n_bytes = {"short": 2, "int": 4, "single": 4}.get(fmt) if isinstance(fmt, str) else None
    if n_bytes is None or not n_channels:
        return
    data_path = Path(raw.filenames[0])
    try:
        size = data_path.stat().st_size
    except OSError:
        return
    per_sample = n_bytes * int(n_channels)
    if size % per_sample:
        raise DataError(
            f"holds {size} bytes, not a whole number of samples: the header "
            f"{eeg_path.name} declares {n_channels} channels of {n_bytes}-byte values "
            f"({per_sample} bytes per sample, {size / per_sample:.2f} samples).",
            path=data_path,
            fix="The header's NumberOfChannels or BinaryFormat does not match the data, or "
            "the data file is truncated; export the recording again.",
        )


def _vhdr_channel_names(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return []
    section = re.search(r"^\[Channel Infos\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if section is None:
        return []
    found = re.findall(r"^Ch(\d+)=([^,\r\n]*)", section.group(1), re.M)
    return [name.replace("\\1", ",").strip() for _, name in found]


def _channels_tsv(eeg_path: Path) -> Path | None:
    stem = eeg_path.name.rsplit("_", 1)[0]
    candidate = eeg_path.with_name(f"{stem}_channels.tsv")
    return candidate if candidate.is_file() else None


def _tsv_channel_names(tsv: Path) -> list[str]:
    import pandas as pd

    try:
        table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError):
        return []
    if "name" not in table:
        return []
    return [str(n).strip() for n in table["name"]]


def _duplicates(names: list[str]) -> list[str]:
    seen: set[str] = set()
    twice: list[str] = []
    for name in names:
        if name in seen and name not in twice:
            twice.append(name)
        seen.add(name)
    return twice


def read_header(spec: RunSpec) -> EEGHeader:
    """Read a run's EEG header and markers without loading the signals.

    Parameters
    ----------
    spec : RunSpec
        The run.

    Returns
    -------
    EEGHeader
        Sampling rate, length, channels and markers.
    """
    raw = open_raw(spec, preload=False)
    sources = []
    events_tsv = _events_tsv(spec.eeg)
    if events_tsv is not None:
        sources.append(_markers_from_annotations(raw, "events.tsv"))
    sources.append(_file_markers(spec.eeg))
    header = EEGHeader(
        path=spec.eeg,
        sfreq=float(raw.info["sfreq"]),
        n_samples=int(raw.n_times),
        ch_names=tuple(raw.ch_names),
        ch_types=tuple(raw.get_channel_types()),
        markers=tuple(sources),
    )
    if header.n_samples < 2:
        raise DataError(
            "holds no samples.",
            path=spec.eeg,
            fix="The recording is empty; re-export it from the acquisition software.",
        )
    return header


def _file_markers(eeg_path: Path) -> Markers:
    """Read markers straight from the raw file, bypassing events.tsv."""
    import mne

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            raw = mne.io.read_raw(eeg_path, preload=False, verbose="error")
    except Exception as exc:  # noqa: BLE001 - any reader failure is reported the same way
        raise DataError(
            f"MNE could not read the markers of this EEG file ({type(exc).__name__}: {exc}).",
            path=eeg_path,
            fix="Check that the file is complete and not corrupt.",
        ) from None
    return _markers_from_annotations(raw, "raw file")


def _markers_from_annotations(raw: Any, source: str) -> Markers:
    annotations = raw.annotations
    if len(annotations) == 0:
        return Markers(np.array([], dtype=object), np.array([], dtype=np.int64), source)
    samples = raw.time_as_index(annotations.onset, use_rounding=True, origin=annotations.orig_time)
    samples = np.asarray(samples, dtype=np.int64) + 0
    keep = (samples >= 0) & (samples < raw.n_times)
    return Markers(
        description=np.array([str(d) for d in annotations.description], dtype=object)[keep],
        sample=samples[keep],
        source=source,
    )


def _events_tsv(eeg_path: Path) -> Path | None:
    stem = eeg_path.name.rsplit("_", 1)[0]
    candidate = eeg_path.with_name(f"{stem}_events.tsv")
    return candidate if candidate.is_file() else None


def _type_ecg_by_name(raw: Any) -> None:
    """Type channels named ECG/EKG as ECG when no channels.tsv did it."""
    types = raw.get_channel_types()
    if "ecg" in types:
        return
    mapping = {name: "ecg" for name in raw.ch_names if ECG_NAME.match(name.strip())}
    if mapping:
        logger.debug("%s: typing %s as ECG by name.", raw.filenames[0], sorted(mapping))
        raw.set_channel_types(mapping, verbose="error")
