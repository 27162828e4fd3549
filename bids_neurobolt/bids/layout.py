"""Discover the runs to process: one :class:`RunSpec` per EEG recording.

The input dataset is indexed with PyBIDS (database under the work folder, ``eeg/``
indexed, ``derivatives/``, ``sourcedata/`` and friends left out). Each EEG recording
(BrainVision, EDF, BDF or EEGLAB) is paired with the BOLD run that has the same
subject, session, task and run; EEG recorded without a BOLD run (outside the scanner,
or a session meant for prediction) is kept with ``bold=None``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bids_neurobolt.config import Selection
from bids_neurobolt.errors import (
    ConfigError,
    DataError,
    MissingInputError,
    OutputError,
    SelectionError,
)

logger = logging.getLogger(__name__)

#: EEG file extensions read by the app (the header file for split formats).
EEG_EXTENSIONS: tuple[str, ...] = (".vhdr", ".edf", ".bdf", ".set")
BOLD_EXTENSIONS: tuple[str, ...] = (".nii", ".nii.gz")

#: Folders of a raw dataset that hold no raw data to index.
_IGNORED = (re.compile(r"^/(code|derivatives|models|sourcedata|stimuli)"), re.compile(r"/\."))

_MOUNT_HINT = (
    "If you run the app in a container, check that the dataset is mounted "
    "(docker -v /host/path:/bids:ro, or apptainer -B)."
)


@dataclass(frozen=True)
class RunSpec:
    """One EEG recording to process, with its paired BOLD run if there is one.

    Attributes
    ----------
    subject, session, task, acquisition, run : str | None
        BIDS entities of the EEG file (``session``, ``acquisition`` and ``run`` may be
        None). ``run`` keeps its zero padding as written in the file name.
    eeg : Path
        The EEG file (the ``.vhdr`` header for BrainVision, ``.set`` for EEGLAB).
    bold : Path | None
        The paired BOLD NIfTI, or None for EEG-only recordings.
    """

    subject: str
    task: str
    eeg: Path
    session: str | None = None
    acquisition: str | None = None
    run: str | None = None
    bold: Path | None = None

    @property
    def entities(self) -> dict[str, str | None]:
        """Entities for :mod:`bids_neurobolt.derivatives.naming`."""
        return {
            "subject": self.subject,
            "session": self.session,
            "task": self.task,
            "acquisition": self.acquisition,
            "run": self.run,
        }

    @property
    def label(self) -> str:
        """A short name for logs, e.g. ``sub-01_ses-1_task-rest_run-1``."""
        keys = (
            ("sub", self.subject),
            ("ses", self.session),
            ("task", self.task),
            ("acq", self.acquisition),
            ("run", self.run),
        )
        return "_".join(f"{k}-{v}" for k, v in keys if v)


def load_layout(bids_dir: Path, database_dir: Path) -> Any:
    """Index a BIDS dataset with PyBIDS.

    Parameters
    ----------
    bids_dir : Path
        The raw dataset.
    database_dir : Path
        Where PyBIDS keeps its SQLite index. It is rebuilt on each call so an index
        never goes stale; give each concurrent job its own folder.

    Returns
    -------
    bids.BIDSLayout
        The layout.

    Raises
    ------
    MissingInputError
        If ``bids_dir`` does not exist or lacks ``dataset_description.json``.
    """
    from bids import BIDSLayout, BIDSLayoutIndexer

    if not bids_dir.is_dir():
        raise MissingInputError(
            "the BIDS dataset folder does not exist.", path=bids_dir, fix=_MOUNT_HINT
        )
    if not (bids_dir / "dataset_description.json").is_file():
        raise MissingInputError(
            "is not a BIDS dataset: dataset_description.json is missing at its top level.",
            path=bids_dir,
            fix="Pass the dataset's root folder (the one holding dataset_description.json "
            "and the sub-* folders). " + _MOUNT_HINT,
        )
    try:
        database_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the folder for the PyBIDS index ({exc.strerror or exc}).",
            path=database_dir,
            fix="Pass -w/--work-dir with a folder you can write to (e.g. on scratch).",
        ) from None
    indexer = BIDSLayoutIndexer(validate=False, ignore=list(_IGNORED), index_metadata=True)
    try:
        return BIDSLayout(
            bids_dir,
            validate=False,
            database_path=database_dir,
            reset_database=True,
            indexer=indexer,
        )
    except (ValueError, OSError) as exc:
        raise DataError(
            f"PyBIDS could not index the dataset ({exc}).",
            path=bids_dir,
            fix="Run bids-validator-deno on the dataset and fix what it reports.",
        ) from None


def discover_runs(layout: Any, selection: Selection) -> list[RunSpec]:
    """List the EEG recordings selected for processing, paired with their BOLD runs.

    Parameters
    ----------
    layout : bids.BIDSLayout
        The indexed input dataset.
    selection : Selection
        Labels and PyBIDS filters.

    Returns
    -------
    list of RunSpec
        Sorted by subject, session, task, acquisition and run.

    Raises
    ------
    SelectionError
        If a requested label does not exist, or the selection matches no EEG file.
    DataError
        If several BOLD files match one EEG recording and nothing tells them apart.
    """
    from bids.layout import Query

    _check_labels_exist(layout, selection)
    eeg_filters = dict(selection.bids_filters.get("eeg", {}))
    query: dict[str, Any] = {
        "datatype": "eeg",
        "suffix": "eeg",
        "extension": list(EEG_EXTENSIONS),
        "return_type": "object",
    }
    for key, values in (
        ("subject", selection.participant_label),
        ("session", selection.session_label),
        ("task", selection.task),
    ):
        if values:
            query[key] = list(values)
    query.update(_pybids_filters(eeg_filters, Query))
    try:
        eeg_files = layout.get(**query)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"the EEG filters {eeg_filters} are not valid PyBIDS filters ({exc})."
        ) from None
    if not eeg_files:
        raise SelectionError(
            "no EEG recording (.vhdr, .edf, .bdf or .set under sub-*/[ses-*/]eeg/) matches "
            f"the selection {_describe(selection)}.",
            path=layout.root,
            fix="Check the labels and --bids-filter-file against the dataset. " + _MOUNT_HINT,
        )
    bold_filters = _pybids_filters(dict(selection.bids_filters.get("bold", {})), Query)
    runs = [_pair(layout, f, bold_filters, Query) for f in eeg_files]
    return sorted(runs, key=lambda r: tuple(v or "" for v in r.entities.values()))


def _pair(layout: Any, eeg_file: Any, bold_filters: Mapping[str, Any], query_cls: Any) -> RunSpec:
    ent = eeg_file.get_entities()
    eeg_path = Path(eeg_file.path)
    run = ent.get("run")
    spec = RunSpec(
        subject=str(ent["subject"]),
        session=_str_or_none(ent.get("session")),
        task=str(ent.get("task", "")),
        acquisition=_str_or_none(ent.get("acquisition")),
        run=None if run is None else str(run),
        eeg=eeg_path,
    )
    if not spec.task:
        raise DataError(
            "the EEG file name has no task entity.",
            path=eeg_path,
            fix="BIDS requires task-<label> in EEG file names; rename the file.",
        )
    candidates = layout.get(
        datatype="func",
        suffix="bold",
        extension=list(BOLD_EXTENSIONS),
        subject=spec.subject,
        session=spec.session if spec.session else query_cls.NONE,
        task=spec.task,
        run=run if run is not None else query_cls.NONE,
        return_type="object",
        **bold_filters,
    )
    if not candidates:
        logger.info("%s: no BOLD run with the same entities; EEG-only recording.", spec.label)
        return spec
    bold = _choose_bold(candidates, eeg_path)
    return RunSpec(**{**spec.__dict__, "bold": bold})


def _choose_bold(candidates: list[Any], eeg_path: Path) -> Path:
    if len(candidates) == 1:
        return Path(candidates[0].path)
    echoes = [c.get_entities().get("echo") for c in candidates]
    if all(e is not None for e in echoes) and len({str(e) for e in echoes}) == len(echoes):
        first = min(candidates, key=lambda c: int(c.get_entities()["echo"]))
        logger.info(
            "%s: multi-echo BOLD, using echo %s for the volume count and timing.",
            eeg_path.name,
            first.get_entities()["echo"],
        )
        return Path(first.path)
    names = ", ".join(sorted(Path(c.path).name for c in candidates))
    raise DataError(
        f"{len(candidates)} BOLD runs match this EEG recording ({names}).",
        path=eeg_path,
        fix='Select one with --bids-filter-file, e.g. {"bold": {"acquisition": "<label>"}}.',
    )


def _check_labels_exist(layout: Any, selection: Selection) -> None:
    for key, values, prefix in (
        ("subject", selection.participant_label, "sub-"),
        ("session", selection.session_label, "ses-"),
        ("task", selection.task, "task-"),
    ):
        if not values:
            continue
        available = sorted(str(v) for v in layout.get(return_type="id", target=key))
        missing = [v for v in values if v not in available]
        if missing:
            shown = ", ".join(prefix + v for v in available[:20]) or "none"
            raise SelectionError(
                f"{', '.join(prefix + m for m in missing)} not found in the dataset "
                f"(available: {shown}).",
                path=layout.root,
                fix="Check the labels (with or without the prefix). " + _MOUNT_HINT,
            )


def _pybids_filters(filters: Mapping[str, Any], query_cls: Any) -> dict[str, Any]:
    """Translate fMRIPrep-style filter values: ``null`` -> Query.NONE, ``"*"`` -> Query.ANY."""
    out: dict[str, Any] = {}
    for key, value in filters.items():
        if value is None:
            out[key] = query_cls.NONE
        elif value == "*":
            out[key] = query_cls.ANY
        else:
            out[key] = value
    return out


def _describe(selection: Selection) -> str:
    parts = [
        f"{k}={list(v)}"
        for k, v in (
            ("participant", selection.participant_label),
            ("session", selection.session_label),
            ("task", selection.task),
        )
        if v
    ]
    if selection.bids_filters:
        parts.append(f"filters={dict(selection.bids_filters)}")
    return "(" + ", ".join(parts) + ")" if parts else "(everything)"


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def check_file_present(path: Path) -> None:
    """Fail clearly when a data file is a dangling link (e.g. an unfetched git-annex file).

    Raises
    ------
    MissingInputError
        If ``path`` does not exist or is a broken symbolic link.
    """
    if path.is_symlink() and not path.exists():
        raise MissingInputError(
            "is a symbolic link to a file that does not exist (an unfetched git-annex "
            "or DataLad file?).",
            path=path,
            fix="Fetch the content first, e.g. 'datalad get <file>', or copy the real file.",
        )
    if not path.exists():
        raise MissingInputError("does not exist.", path=path, fix=_MOUNT_HINT)
    if not os.access(path, os.R_OK):
        raise unreadable(path)


def unreadable(path: str | os.PathLike[str]) -> MissingInputError:
    """Return the error for an input file the app is not allowed to read (exit 66)."""
    return MissingInputError(
        "cannot be read: permission denied.",
        path=path,
        fix="Make the dataset readable by the user running the app (e.g. chmod -R a+rX), "
        "or in a container run as a user that may read it (docker run -u).",
    )
