"""Read ROI time-series tables (``*_timeseries.tsv``): precomputed targets and our own outputs.

A table has a header row of ROI names, one row per BOLD volume and ``n/a`` for missing
values; its JSON sidecar (optional for inputs) gives ``SamplingFrequency`` (Hz) or
``RepetitionTime`` (s). :func:`find_timeseries` pairs a run with its table in a
``--targets-dir`` folder by the entities in the file names; the NeuroBOLT release's
``scan-<n>`` (not a BIDS entity) is read as ``run-<n>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_neurobolt.bids.layout import check_file_present
from bids_neurobolt.errors import DataError, MissingInputError

_ENTITY = re.compile(r"(?:^|_)(?P<key>[a-zA-Z]+)-(?P<value>[a-zA-Z0-9]+)")

#: RunSpec entity -> file-name keys that may hold it.
_KEYS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("subject", ("sub",)),
    ("session", ("ses",)),
    ("task", ("task",)),
    ("acquisition", ("acq",)),
    ("run", ("run", "scan")),
)


@dataclass(frozen=True)
class TimeseriesTable:
    """An ROI time-series table read from disk.

    Attributes
    ----------
    path : Path
        The TSV.
    table : pandas.DataFrame
        One row per volume, one float column per ROI (NaN for ``n/a``).
    repetition_time : float
        Seconds between rows.
    metadata : dict
        The JSON sidecar (empty if none).
    entities : dict
        Entities parsed from the file name.
    """

    path: Path
    table: pd.DataFrame
    repetition_time: float
    metadata: dict[str, Any] = field(default_factory=dict)
    entities: dict[str, str] = field(default_factory=dict)

    @property
    def atlas(self) -> str | None:
        """The ``atlas-`` entity of the file name, if any."""
        return self.entities.get("atlas")


def parse_entities(name: str) -> dict[str, str]:
    """Return the ``key-value`` pairs of a file name (``sub-01_scan-01_atlas-X_...``)."""
    stem = name.split(".")[0]
    return {m["key"]: m["value"] for m in _ENTITY.finditer(stem)}


def find_timeseries(
    targets_dir: Path, entities: Mapping[str, str | None], *, atlas: str | None = None
) -> Path:
    """Find the precomputed ROI table of a run in a ``--targets-dir`` folder.

    A file matches unless an entity that both it and the run have differs (numbers are
    compared as numbers, so ``run-1`` matches ``run-01``). Among several matches the
    files naming the most entities win; a tie is an error. So
    ``sub-01_atlas-X_timeseries.tsv`` serves every run of sub-01, and
    ``sub-01_scan-01_...`` serves a run without a run entity if it is the only one.

    Parameters
    ----------
    targets_dir : Path
        Folder searched recursively for ``*_timeseries.tsv``.
    entities : mapping
        The run's entities (``subject``, ``session``, ``task``, ``acquisition``, ``run``).
    atlas : str | None
        Keep only files whose ``atlas-`` entity equals this (case-insensitive).

    Returns
    -------
    Path

    Raises
    ------
    MissingInputError
        No file matches (the message lists the subject's files).
    DataError
        Several files match.
    """
    if not targets_dir.is_dir():
        raise MissingInputError(
            "the precomputed targets folder does not exist.",
            path=targets_dir,
            fix="Check --targets-dir (in a container, mount it too).",
        )
    subject = str(entities.get("subject"))
    files = sorted(targets_dir.rglob(f"sub-{subject}_*timeseries.tsv"))
    matches = [f for f in files if _matches(parse_entities(f.name), entities, atlas)]
    if len(matches) > 1:
        most = max(_specificity(parse_entities(f.name)) for f in matches)
        matches = [f for f in matches if _specificity(parse_entities(f.name)) == most]
    if len(matches) == 1:
        return matches[0]
    label = "_".join(
        f"{keys[0]}-{entities[entity]}" for entity, keys in _KEYS if entities.get(entity)
    )
    if not matches:
        shown = ", ".join(f.name for f in files[:6]) or "none"
        raise MissingInputError(
            f"no precomputed ROI table for {label}"
            + (f" with atlas-{atlas}" if atlas else "")
            + f" (files of sub-{subject}: {shown}).",
            path=targets_dir,
            fix="Name the tables sub-<label>[_ses-<label>]_task-<label>[_run-<index>]"
            "_atlas-<label>_timeseries.tsv, one per BOLD run.",
        )
    raise DataError(
        f"several precomputed ROI tables match {label}: {', '.join(f.name for f in matches)}.",
        path=targets_dir,
        fix="Give each run its own table with run-<index> (or ses-) in the name, or select "
        "one run with --bids-filter-file.",
    )


def read_timeseries(
    path: Path, *, repetition_time: float | None = None, allow_missing: bool = False
) -> TimeseriesTable:
    """Read and check an ROI time-series TSV and its optional JSON sidecar.

    Parameters
    ----------
    path : Path
        The ``*_timeseries.tsv``.
    repetition_time : float | None
        The run's TR (from the BOLD sidecar or the sync table); used when the sidecar
        gives none, and checked against it otherwise.
    allow_missing : bool
        Accept ``n/a`` values (predictions have none for the first window); targets
        must be complete.

    Returns
    -------
    TimeseriesTable

    Raises
    ------
    MissingInputError
        If the file is missing, or no TR is known.
    DataError
        No header, duplicate or empty column names, text in a numeric column, missing
        values, or a sidecar TR that contradicts ``repetition_time``.
    """
    check_file_present(path)
    try:
        header = pd.read_csv(path, sep="\t", nrows=0).columns
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read the ROI table ({type(exc).__name__}: {exc}).",
            path=path,
            fix="Write a tab-separated table with a header row of ROI names.",
        ) from None
    _check_header(list(header), path)
    if table.empty:
        raise DataError("the ROI table has a header but no rows.", path=path)
    table.columns = [str(c) for c in header]
    values = _numeric(table, path)
    missing = np.flatnonzero(values.isna().any(axis=1).to_numpy())
    if missing.size and not allow_missing:
        columns = [c for c in values.columns if values[c].isna().any()]
        raise DataError(
            f"the ROI table has n/a values in {missing.size} row(s) (rows "
            f"{', '.join(str(int(r)) for r in missing[:8])}{', ...' if missing.size > 8 else ''}"
            f"; columns {', '.join(columns[:5])}{', ...' if len(columns) > 5 else ''}).",
            path=path,
            fix="Targets need a value for every volume: regenerate the table, or drop the "
            "incomplete columns.",
        )
    metadata = _sidecar(path)
    return TimeseriesTable(
        path=path,
        table=values,
        repetition_time=_tr(path, metadata, repetition_time),
        metadata=metadata,
        entities=parse_entities(path.name),
    )


def check_volume_count(table: TimeseriesTable, n_volumes: int) -> None:
    """Check that a table has one row per BOLD volume.

    Raises
    ------
    DataError
        On a mismatch.
    """
    if len(table.table) != n_volumes:
        raise DataError(
            f"the ROI table has {len(table.table)} rows but the run has {n_volumes} BOLD "
            "volumes (one row per volume expected).",
            path=table.path,
            fix="Use the table of this very run, computed from all its volumes (dummy scans "
            "included or skipped the same way as the volume markers: see --skip-markers).",
        )


def _matches(found: Mapping[str, str], wanted: Mapping[str, str | None], atlas: str | None) -> bool:
    if atlas is not None and "atlas" in found and found["atlas"].lower() != atlas.lower():
        return False
    for entity, keys in _KEYS:
        present = [k for k in keys if k in found]
        if not present:
            continue
        value = wanted.get(entity)
        if value not in (None, "") and not _same(found[present[0]], str(value)):
            return False
    return True


def _specificity(found: Mapping[str, str]) -> int:
    return sum(any(k in found for k in keys) for _, keys in _KEYS)


def _same(a: str, b: str) -> bool:
    if a.isdigit() and b.isdigit():
        return int(a) == int(b)
    return a == b


def _check_header(columns: list[str], path: Path) -> None:
    problems = []
    if any(not str(c).strip() or str(c).startswith("Unnamed:") for c in columns):
        problems.append("empty column names")
    if all(_is_number(c) for c in columns):
        problems.append("no header row (the first row holds numbers)")
    seen = [c.split(".")[0] for c in columns if re.fullmatch(r".+\.\d+", c)]
    if any(s in columns for s in seen):
        problems.append("duplicate column names")
    if problems:
        raise DataError(
            f"the ROI table has {' and '.join(problems)}.",
            path=path,
            fix="The first row must name each ROI column once.",
        )


def _numeric(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    out = {}
    for column in table.columns:
        text = table[column].str.strip()
        missing = text.isin(["n/a", ""])
        values = pd.to_numeric(text.where(~missing), errors="coerce")
        bad = values.isna() & ~missing
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"the ROI column '{column}' holds text that is not a number (row {row}: "
                f"{table[column].iloc[row]!r}).",
                path=path,
                fix="Write numbers, with n/a for missing values.",
            )
        out[column] = values.astype(np.float64)
    return pd.DataFrame(out)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sidecar(path: Path) -> dict[str, Any]:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the JSON sidecar ({exc}).", path=sidecar) from None
    return data if isinstance(data, dict) else {}


def _tr(path: Path, metadata: Mapping[str, Any], given: float | None) -> float:
    sidecar_tr: float | None = None
    if isinstance(metadata.get("RepetitionTime"), int | float):
        sidecar_tr = float(metadata["RepetitionTime"])
    elif (
        isinstance(metadata.get("SamplingFrequency"), int | float)
        and metadata["SamplingFrequency"] > 0
    ):
        sidecar_tr = 1.0 / float(metadata["SamplingFrequency"])
    if (
        sidecar_tr is not None
        and given is not None
        and not np.isclose(sidecar_tr, given, rtol=0.01)
    ):
        raise DataError(
            f"the sidecar says one row every {sidecar_tr:.4g} s but the run's TR is {given:.4g} s.",
            path=path.with_suffix(".json"),
            fix="Check that the table belongs to this run, or correct SamplingFrequency.",
        )
    tr = sidecar_tr if sidecar_tr is not None else given
    if tr is None or not tr > 0:
        raise MissingInputError(
            "the ROI table's sampling interval is unknown: it has no JSON sidecar with "
            "SamplingFrequency or RepetitionTime, and the run gives no TR.",
            path=path,
            fix=f"Write {path.with_suffix('.json').name} with "
            '{"SamplingFrequency": <1/TR in Hz>}.',
        )
    return float(tr)
