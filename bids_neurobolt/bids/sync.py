"""Align EEG samples with BOLD volumes from the scanner's markers.

Every later stage asks one question of a simultaneous recording: at which EEG sample
did BOLD volume *k* start? The scanner answers it with a marker per volume (``R128``
on Brain Products systems, ``S128`` in EEGLAB conversions, ``Scanner/Scan Start`` in
BrainVision Analyzer exports...), and often a marker per slice. This module finds
those markers, checks them against the BOLD run, and returns the per-volume table:

1. **find** the volume markers by name (:data:`~bids_neurobolt.config.DEFAULT_VOLUME_MARKERS`
   or ``--volume-marker``), in ``events.tsv`` first and in the raw file otherwise;
2. drop the first ``skip_markers`` (dummy scans the scanner triggered but did not save);
3. check that the spacing equals ``RepetitionTime`` (for most gaps: else the sidecar
   or the marker name is wrong);
4. check every gap: a duplicate, a missing marker or an irregular gap is an error;
5. check that there is one marker per BOLD volume;
6. attach slice markers, when present, to their volumes.

A spacing is regular when it differs from ``RepetitionTime`` by at most
``max(tolerance_samples / sfreq, tolerance_fraction * RepetitionTime)``
(by default 2 samples or 1 % of TR, whichever is larger).

References
----------
.. [1] Mandelkow H, Halder P, Boesiger P, Brandeis D (2006). Synchronization
   facilitates removal of MRI artefacts from concurrent EEG recordings and increases
   usable bandwidth. NeuroImage 32(3):1120-1126.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_neurobolt.bids.eeg_io import EEGHeader, Markers
from bids_neurobolt.bids.fmri_io import BoldInfo
from bids_neurobolt.config import SyncConfig
from bids_neurobolt.errors import NeuroboltWarning, SyncError

logger = logging.getLogger(__name__)

_MAX_LISTED = 5


@dataclass(frozen=True)
class SyncResult:
    """The EEG-fMRI alignment of one run.

    Attributes
    ----------
    volume_samples : numpy.ndarray of int
        EEG sample index (native rate, zero-based) of the marker of each BOLD volume.
    slice_samples : numpy.ndarray of int, shape (n_slice_markers,)
        Sample index of each slice marker kept (empty when there are none).
    slice_volume : numpy.ndarray of int
        The volume each slice marker belongs to.
    sfreq : float
        EEG sampling rate (Hz).
    marker : str
        The volume-marker name found, as MNE reads it (e.g. ``"Response/R128"``).
    slice_marker : str | None
        The slice-marker name found, if any.
    marker_source : str
        ``"events.tsv"`` or ``"raw file"``.
    n_skipped : int
        Leading volume markers ignored (``skip_markers``).
    repetition_time : float | None
        ``RepetitionTime`` of the paired BOLD run (None for EEG-only recordings).
    measured_tr : float
        Median marker spacing (s).
    tolerance : float
        The spacing tolerance applied (s).
    """

    volume_samples: np.ndarray
    sfreq: float
    marker: str
    marker_source: str
    measured_tr: float
    tolerance: float
    n_skipped: int = 0
    repetition_time: float | None = None
    slice_marker: str | None = None
    slice_samples: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))
    slice_volume: np.ndarray = field(default_factory=lambda: np.array([], dtype=np.int64))

    @property
    def n_volumes(self) -> int:
        """Number of volumes aligned."""
        return len(self.volume_samples)

    @property
    def slices_per_volume(self) -> int | None:
        """The most common number of slice markers per volume, or None without slices."""
        if len(self.slice_samples) == 0:
            return None
        counts = np.bincount(self.slice_volume, minlength=self.n_volumes)
        return int(np.bincount(counts).argmax())

    def to_events(self) -> pd.DataFrame:
        """Return the table as BIDS events: one row per volume (and per slice marker).

        Columns are ``onset`` and ``duration`` (s, from the first EEG sample),
        ``trial_type`` (``volume`` or ``slice``), ``sample`` (zero-based, native rate),
        ``volume`` (zero-based BOLD volume index) and ``slice`` (rank of the slice
        marker within its volume; ``n/a`` on volume rows).
        """
        volumes = pd.DataFrame(
            {
                "sample": self.volume_samples,
                "trial_type": "volume",
                "volume": np.arange(self.n_volumes),
                "slice": pd.array([pd.NA] * self.n_volumes, dtype="Int64"),
            }
        )
        frames = [volumes]
        if len(self.slice_samples):
            rank = _rank_within(self.slice_volume)
            frames.append(
                pd.DataFrame(
                    {
                        "sample": self.slice_samples,
                        "trial_type": "slice",
                        "volume": self.slice_volume,
                        "slice": pd.array(rank, dtype="Int64"),
                    }
                )
            )
        table = pd.concat(frames, ignore_index=True)
        table = table.sort_values(
            ["sample", "trial_type"], ascending=[True, False], kind="stable"
        ).reset_index(drop=True)
        table.insert(0, "onset", table["sample"] / self.sfreq)
        table.insert(1, "duration", 0.0)
        return table

    def describe(self) -> dict[str, Any]:
        """Return the facts recorded in the sidecar of the table."""
        return {
            "VolumeMarker": self.marker,
            "SliceMarker": self.slice_marker,
            "MarkerSource": self.marker_source,
            "NumberOfVolumes": self.n_volumes,
            "SkippedVolumeMarkers": self.n_skipped,
            "SlicesPerVolume": self.slices_per_volume,
            "RepetitionTime": self.repetition_time,
            "MeasuredRepetitionTime": round(self.measured_tr, 9),
            "SpacingTolerance": round(self.tolerance, 9),
            "EEGSamplingFrequency": self.sfreq,
        }


def synchronise(header: EEGHeader, bold: BoldInfo | None, config: SyncConfig) -> SyncResult | None:
    """Find and check the volume markers of a run.

    Parameters
    ----------
    header : EEGHeader
        The EEG recording's rate, length and markers.
    bold : BoldInfo | None
        The paired BOLD run, or None for an EEG-only recording (then the spacing is
        checked against its own median and there is no count check).
    config : SyncConfig
        Marker names, markers to skip and the spacing tolerance.

    Returns
    -------
    SyncResult | None
        The alignment, or None for an EEG-only recording without volume markers.

    Raises
    ------
    SyncError
        If the markers are missing, ambiguous, irregular, spaced unlike
        ``RepetitionTime``, or not one per BOLD volume. The message names the files,
        the counts and the fix.
    """
    expected = None if bold is None else bold.n_volumes + config.skip_markers
    found = find_markers(header.markers, config.volume_markers, expected=expected, path=header.path)
    if found is None:
        if bold is None:
            logger.info(
                "%s: no volume markers; EEG-only recording without scanner timing.",
                header.path.name,
            )
            return None
        short = ""
        if header.duration < bold.duration:
            short = (
                f" The EEG lasts {header.duration:.1f} s, less than the {bold.duration:.1f} s "
                "BOLD run: the recording is incomplete (markers past its end are ignored)."
            )
        raise SyncError(
            f"no volume marker named {_quote(config.volume_markers)} in this EEG recording "
            f"(paired with {bold.path.name}). Markers present: {_summarise(header.markers)}."
            + short,
            path=header.path,
            fix="Use the complete EEG recording of this run."
            if short
            else "Name the scanner's volume marker with --volume-marker, e.g. "
            "--volume-marker 'Response/R128'.",
        )
    source, name, samples = found
    check_sources_agree(header, name, samples)
    if bold is None:
        warnings.warn(
            f"{header.path.name}: {len(samples)} scanner volume markers ('{name}') but no BOLD "
            "run pairs with this recording, so it is processed as EEG recorded in the scanner "
            "without fMRI targets. If the BOLD run exists, give it the same subject, session, "
            "task and run entities as the EEG.",
            NeuroboltWarning,
            stacklevel=2,
        )
    if config.skip_markers >= len(samples):
        raise SyncError(
            f"--skip-markers {config.skip_markers} skips every one of the {len(samples)} "
            f"'{name}' markers.",
            path=header.path,
            fix="Use a smaller --skip-markers.",
        )
    samples = samples[config.skip_markers :]
    tr = None if bold is None else bold.repetition_time
    measured, tolerance = check_spacing(
        samples, header.sfreq, tr, config, header=header, bold=bold, name=name
    )
    if bold is not None:
        check_count(len(samples), bold, header, name, config.skip_markers, measured)
    slice_name, slice_samples, slice_volume = _attach_slices(header, config, samples, measured)
    return SyncResult(
        volume_samples=samples.astype(np.int64),
        sfreq=header.sfreq,
        marker=name,
        marker_source=source,
        measured_tr=measured,
        tolerance=tolerance,
        n_skipped=config.skip_markers,
        repetition_time=tr,
        slice_marker=slice_name,
        slice_samples=slice_samples,
        slice_volume=slice_volume,
    )


def marker_matches(description: str, name: str) -> bool:
    """Tell whether a marker description matches a configured marker name.

    Whitespace and case are ignored; a name without ``/`` also matches the part of a
    ``<type>/<name>`` description after the slash, so ``R128`` matches
    ``Response/R128`` and ``s`` matches ``Scanner/s``.
    """
    want = _norm(name)
    if _norm(description) == want:
        return True
    return "/" not in name and "/" in description and _norm(description.rsplit("/", 1)[1]) == want


def find_markers(
    sources: tuple[Markers, ...],
    names: tuple[str, ...],
    *,
    expected: int | None = None,
    path: Path | None = None,
) -> tuple[str, str, np.ndarray] | None:
    """Find the markers matching any of ``names`` in the first source that has some.

    Parameters
    ----------
    sources : tuple of Markers
        Marker sources in order of preference.
    names : tuple of str
        Accepted marker names (see :func:`marker_matches`).
    expected : int | None
        The expected count, used to choose between several matching names.
    path : Path | None
        The EEG file, named in the error message.

    Returns
    -------
    tuple | None
        ``(source, description, sorted samples)``, or None when nothing matches.

    Raises
    ------
    SyncError
        If several distinct marker names match and the count does not single one out.
    """
    for markers in sources:
        matched: dict[str, list[int]] = {}
        for desc, sample in zip(markers.description, markers.sample, strict=True):
            if any(marker_matches(str(desc), n) for n in names):
                matched.setdefault(str(desc), []).append(int(sample))
        if not matched:
            continue
        if len(matched) > 1 and expected is not None:
            exact = {k: v for k, v in matched.items() if len(v) == expected}
            matched = exact or matched
        if len(matched) > 1:
            listing = ", ".join(f"'{k}' x{len(v)}" for k, v in matched.items())
            raise SyncError(
                f"several markers could be the volume marker ({listing}, in the {markers.source}).",
                path=path,
                fix="Name the right one with --volume-marker.",
            )
        ((desc, values),) = matched.items()
        return markers.source, desc, np.sort(np.asarray(values, dtype=np.int64))
    return None


#: Largest difference (samples) allowed between events.tsv and the file's own markers: the
#: onsets in events.tsv are seconds with a few decimals, so they round to a sample or two.
MARKER_AGREEMENT_SAMPLES = 2


def check_sources_agree(header: EEGHeader, name: str, samples: np.ndarray) -> None:
    """Refuse volume markers whose events.tsv and raw-file copies disagree.

    BIDS makes ``events.tsv`` the dataset's record of events and it is read first; the
    recording's own marker file (``.vmrk``, EDF annotations...) was written by the
    acquisition software. When both hold the same number of ``name`` markers but at
    different samples, one was edited or belongs to another recording, and the artifact
    templates would be built at the wrong places: the run stops.

    Raises
    ------
    SyncError
        When the same count of markers differs by more than
        :data:`MARKER_AGREEMENT_SAMPLES` samples somewhere (a different count is logged:
        events.tsv may have been curated).
    """
    if len(header.markers) < 2 or header.markers[0].source != "events.tsv":
        return
    raw = header.markers[1]
    in_file = np.sort(
        np.asarray([s for d, s in zip(raw.description, raw.sample, strict=True) if str(d) == name],
                   dtype=np.int64)
    )  # fmt: skip
    if in_file.size == 0:
        return
    if in_file.size != samples.size:
        logger.info(
            "%s: events.tsv has %d '%s' markers, the %s %d; events.tsv is used.",
            header.path.name, samples.size, name, raw.source, in_file.size,
        )  # fmt: skip
        return
    offset = samples - in_file
    worst = int(np.abs(offset).max())
    if worst > MARKER_AGREEMENT_SAMPLES:
        raise SyncError(
            f"the '{name}' markers of events.tsv and of the recording's own marker file "
            f"disagree by up to {worst} samples ({worst / header.sfreq:.3f} s; median offset "
            f"{float(np.median(offset)):+.0f} samples), so the scanner timing is not known.",
            path=header.path,
            fix="Regenerate events.tsv from the recording (e.g. with mne-bids), or correct "
            "the marker file if events.tsv is the corrected record.",
        )


def check_spacing(
    samples: np.ndarray,
    sfreq: float,
    tr: float | None,
    config: SyncConfig,
    *,
    header: EEGHeader,
    bold: BoldInfo | None,
    name: str,
) -> tuple[float, float]:
    """Check that volume markers are evenly spaced by ``RepetitionTime``.

    When most gaps disagree with ``RepetitionTime`` the sidecar (or the marker choice)
    is wrong; when a few do, markers are missing, duplicated or irregular.

    Returns
    -------
    measured_tr : float
        The median spacing (s).
    tolerance : float
        The tolerance applied (s).

    Raises
    ------
    SyncError
        On fewer than two markers, a spacing unlike ``RepetitionTime`` for most gaps,
        or any duplicate, missing or irregular gap.
    """
    if len(samples) < 2:
        raise SyncError(
            f"only {len(samples)} '{name}' marker(s); at least two are needed to check the timing.",
            path=header.path,
            fix="Check --volume-marker and --skip-markers, and that the recording is complete.",
        )
    gaps = np.diff(samples) / sfreq
    measured = float(np.median(gaps))
    reference = tr if tr is not None else measured
    tolerance = max(config.tolerance_samples / sfreq, config.tolerance_fraction * reference)
    bad = np.flatnonzero(np.abs(gaps - reference) > tolerance)
    if tr is not None and len(bad) > len(gaps) / 2:
        raise SyncError(
            f"the '{name}' markers are {measured:.4f} s apart (median) but the BOLD run "
            f"{bold.path.name if bold else ''} has RepetitionTime {tr} s (tolerance "
            f"{tolerance * 1000:.1f} ms).",
            path=header.path,
            fix="If these are slice markers, name the volume marker with --volume-marker; "
            "otherwise correct RepetitionTime in the BOLD sidecar.",
        )
    if len(bad):
        raise SyncError(
            f"{len(bad)} irregular gap(s) between '{name}' markers (expected "
            f"{reference:.4f} s ± {tolerance * 1000:.1f} ms): "
            + _explain_gaps(
                bad, gaps, samples, sfreq, reference, tolerance, skip=config.skip_markers
            )
            + ".",
            path=header.path,
            fix=_gap_fix(gaps[bad], reference, tolerance),
        )
    return measured, tolerance


def check_count(
    n_markers: int, bold: BoldInfo, header: EEGHeader, name: str, skipped: int, tr: float
) -> None:
    """Check that there is exactly one volume marker per BOLD volume.

    Raises
    ------
    SyncError
        With the counts, the durations and the likely fix.
    """
    if n_markers == bold.n_volumes:
        return
    counts = (
        f"{n_markers} '{name}' markers"
        + (f" (after skipping {skipped})" if skipped else "")
        + f" in the EEG but {bold.n_volumes} volumes in {bold.path.name}"
    )
    if n_markers > bold.n_volumes:
        extra = n_markers - bold.n_volumes
        raise SyncError(
            f"{counts}.",
            path=header.path,
            fix=f"If the scanner triggered {extra} dummy scan(s) that were not saved in the "
            f"BOLD file, pass --skip-markers {skipped + extra}. If the EEG spans several "
            "scans, split it or select the matching BOLD run.",
        )
    raise SyncError(
        f"{counts}: the EEG covers {n_markers * tr:.1f} s of a {bold.duration:.1f} s scan "
        f"(EEG length {header.duration:.1f} s).",
        path=header.path,
        fix="The recording probably started after the scan began or stopped before it "
        "ended. Use the complete EEG recording, or trim the BOLD run to the volumes the "
        "EEG covers (and check --skip-markers).",
    )


# --------------------------------------------------------------------------- helpers


def _attach_slices(
    header: EEGHeader, config: SyncConfig, volumes: np.ndarray, tr: float
) -> tuple[str | None, np.ndarray, np.ndarray]:
    empty = np.array([], dtype=np.int64)
    if not config.slice_markers:
        return None, empty, empty
    found = find_markers(header.markers, config.slice_markers, path=header.path)
    if found is None:
        return None, empty, empty
    _, name, samples = found
    end = volumes[-1] + round(tr * header.sfreq)
    keep = (samples >= volumes[0]) & (samples < end)
    samples = samples[keep]
    owner = np.searchsorted(volumes, samples, side="right") - 1
    counts = np.bincount(owner, minlength=len(volumes))
    if counts.min() != counts.max():
        logger.warning(
            "%s: %d to %d '%s' markers per volume (expected the same number in each).",
            header.path.name,
            counts.min(),
            counts.max(),
            name,
        )
    return name, samples.astype(np.int64), owner.astype(np.int64)


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """Rank of each element within its (sorted, contiguous) group."""
    if len(groups) == 0:
        return groups
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    rank = np.arange(len(groups))
    rank -= np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    return rank


def _explain_gaps(
    bad: np.ndarray,
    gaps: np.ndarray,
    samples: np.ndarray,
    sfreq: float,
    reference: float,
    tolerance: float,
    *,
    skip: int,
) -> str:
    notes = []
    for i in bad[:_MAX_LISTED]:
        gap = gaps[i]
        where = f"after marker {i + 1 + skip} (t={samples[i] / sfreq:.3f} s)"
        ratio = round(gap / reference)
        if gap <= tolerance:
            notes.append(f"duplicate marker {where}")
        elif ratio >= 2 and abs(gap - ratio * reference) <= tolerance:
            notes.append(f"{ratio - 1} missing marker(s) {where}")
        else:
            notes.append(f"gap of {gap:.4f} s {where}")
    if len(bad) > _MAX_LISTED:
        notes.append(f"and {len(bad) - _MAX_LISTED} more")
    return "; ".join(notes)


def _gap_fix(bad_gaps: np.ndarray, reference: float, tolerance: float) -> str:
    if np.all(bad_gaps <= tolerance):
        return (
            "Remove the duplicated markers from the events file or the marker file "
            "(the input stays untouched: fix a copy)."
        )
    return (
        "Markers are missing or the recording was interrupted. Check that these are "
        "the scanner's volume markers (--volume-marker), that the EEG recorded a single "
        "continuous scan, and repair the marker file if triggers were lost."
    )


def _norm(name: str) -> str:
    return re.sub(r"\s+", "", name).lower()


def _quote(names: tuple[str, ...]) -> str:
    return " or ".join(f"'{n}'" for n in names)


def _summarise(sources: tuple[Markers, ...]) -> str:
    parts = []
    for markers in sources:
        counts = markers.counts()
        if not counts:
            parts.append(f"none in the {markers.source}")
            continue
        shown = ", ".join(f"'{k}' x{v}" for k, v in list(counts.items())[:8])
        more = f" and {len(counts) - 8} more names" if len(counts) > 8 else ""
        parts.append(f"{shown}{more} in the {markers.source}")
    return "; ".join(parts)
