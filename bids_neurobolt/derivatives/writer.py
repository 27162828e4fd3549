"""Write derivative files atomically, with sidecars and dataset-level files.

Every file is written to a hidden temporary name in its destination folder, flushed
to disk, then renamed over the final name, so a reader (or a rerun) sees either the
complete file or nothing. Dataset-level files written by every participant job
(``dataset_description.json``, ``.bidsignore``, ``descriptions.tsv``) have the same
content in every job, so concurrent jobs writing them cannot disagree.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from bids_neurobolt import __version__
from bids_neurobolt.derivatives.naming import DESCRIPTIONS
from bids_neurobolt.errors import IOFailure, OutputError

#: BIDS version the derivative dataset declares.
BIDS_VERSION = "1.10.0"

CODE_URL = "https://github.com/bids-neurobolt/bids-neurobolt"

#: Environment variable set in the container images (records the container in provenance).
CONTAINER_ENV = "BIDS_NEUROBOLT_CONTAINER"

#: What the BIDS validator should not judge: outputs BIDS has no place for.
BIDSIGNORE: tuple[str, ...] = (
    # No trailing slashes: bids-validator-deno then ignores the folders themselves (with a
    # slash it reports a top-level models/ or group/ as NOT_INCLUDED) and sub-*/figures.
    "logs",
    "models",
    "group",
    "figures",
    "*.html",
    "*_quality.json",
    # ROI time series and model metrics follow BEP012/BEP017 naming, which the BIDS schema
    # (1.10) does not include yet.
    "*_timeseries.tsv",
    "*_timeseries.json",
    "*_metrics.tsv",
    "*_metrics.json",
)


_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname()) or "host"
_TEMPORARY = re.compile(r"\..+\.(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-f]{8}\.tmp")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temporary file is removed if the block raises.

    Raises
    ------
    OutputError
        If the folder cannot be created or written (permissions, read-only file system).
    IOFailure
        On other operating-system errors (disk full, I/O error).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(exc, path.parent) from None
    tmp = path.with_name(f".{path.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    except OSError as exc:
        _remove_quietly(tmp)
        raise _os_error(exc, path) from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete temporary files left under ``root`` by jobs that were killed.

    A temporary name carries the host and process id of its writer
    (``.<name>.<host>-<pid>-<random>.tmp``). Only files written on this host by a process
    that no longer exists are removed, so jobs running concurrently on this or another
    node keep theirs.

    Returns
    -------
    list of Path
        The files removed.
    """
    removed = []
    for tmp in root.rglob(".*.tmp"):
        match = _TEMPORARY.fullmatch(tmp.name)
        if match is None or match["host"] != _HOST or _alive(int(match["pid"])):
            continue
        _remove_quietly(tmp)
        removed.append(tmp)
    return removed


#: File in a run's own work folder naming the host and process that use it.
OWNER_FILE = "owner.json"
_RUN_FOLDER = re.compile(r"\d{8}-\d{6}-[0-9a-f]{8}")


def claim_folder(folder: Path) -> None:
    """Create a run's work folder, recording the host and process that own it.

    Raises
    ------
    OutputError
        When the folder cannot be created or written (the message says to pass ``-w``).
    """
    owner = {"host": _HOST, "pid": os.getpid()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / OWNER_FILE).write_text(json.dumps(owner), encoding="utf-8")
    except OSError as exc:
        raise OutputError(
            f"cannot create the work folder of this run ({exc.strerror or exc}).",
            path=folder,
            fix="Pass -w/--work-dir with a folder you can write to (e.g. on scratch).",
        ) from None


def remove_abandoned_folders(work_dir: Path) -> list[Path]:
    """Delete the per-run work folders (``<run id>/``) left by killed jobs.

    A run removes its own work folder when it ends, also on errors, Ctrl-C and SIGTERM;
    only a killed process (SIGKILL, a node crash) leaves one. As for temporaries, a folder
    is removed only when its :data:`OWNER_FILE` names this host and a process that no
    longer exists: concurrent jobs, here or on other nodes sharing the folder, keep theirs.

    Returns
    -------
    list of Path
        The folders removed.
    """
    removed = []
    for folder in sorted(work_dir.iterdir()) if work_dir.is_dir() else []:
        if not (_RUN_FOLDER.fullmatch(folder.name) and folder.is_dir()):
            continue
        try:
            owner = json.loads((folder / OWNER_FILE).read_text(encoding="utf-8"))
            host, pid = str(owner["host"]), int(owner["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if host != _HOST or _alive(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (flushed to disk before the rename)."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def write_text(path: Path, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write a JSON document (indented, keys in insertion order) atomically."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_tsv(path: Path, table: pd.DataFrame, float_format: str | None = None) -> Path:
    """Write a BIDS TSV (tab separated, header row, ``n/a`` for missing values) atomically.

    ``float_format`` (e.g. ``"%.6g"``) rounds the floats, as for ROI time series.
    """
    text = table.to_csv(
        sep="\t", index=False, na_rep="n/a", float_format=float_format, lineterminator="\n"
    )
    return write_text(path, text)


def dataset_description(bids_dir: Path, source_description: Mapping[str, Any]) -> dict[str, Any]:
    """Build the derivative ``dataset_description.json``.

    Parameters
    ----------
    bids_dir : Path
        The input dataset (linked as ``raw`` for BIDS URIs such as ``bids:raw:sub-01/...``).
    source_description : mapping
        The input's own ``dataset_description.json`` (for its DOI, version, licence).

    Returns
    -------
    dict
        DatasetType ``derivative``, GeneratedBy (with the container when run in one),
        SourceDatasets and DatasetLinks.
    """
    generated: dict[str, Any] = {
        "Name": "bids-neurobolt",
        "Version": __version__,
        "Description": "EEG-to-fMRI synthesis from simultaneous EEG-fMRI (NeuroBOLT).",
        "CodeURL": CODE_URL,
    }
    container = os.environ.get(CONTAINER_ENV)
    if container:
        kind, _, tag = container.partition(":")
        generated["Container"] = {"Type": kind or "docker", "Tag": tag or container}
    source: dict[str, Any] = {"URL": bids_dir.resolve().as_uri()}
    if source_description.get("DatasetDOI"):
        doi = str(source_description["DatasetDOI"])
        source = {"DOI": doi, "URL": doi if doi.startswith("http") else f"https://doi.org/{doi}"}
    if source_description.get("DatasetVersion") or source_description.get("Version"):
        source["Version"] = str(
            source_description.get("DatasetVersion") or source_description.get("Version")
        )
    description: dict[str, Any] = {
        "Name": f"bids-neurobolt derivatives of {source_description.get('Name', bids_dir.name)}",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [source],
        "DatasetLinks": {"raw": bids_dir.resolve().as_uri()},
    }
    if source_description.get("License"):
        description["License"] = source_description["License"]
    return description


def write_dataset_files(
    output_dir: Path,
    bids_dir: Path,
    source_description: Mapping[str, Any],
    desc_labels: tuple[str, ...],
) -> None:
    """Write ``dataset_description.json``, ``.bidsignore`` and ``descriptions.tsv``.

    ``descriptions.tsv`` keeps the labels already listed by earlier runs and adds
    ``desc_labels``. Several jobs may share one output folder (a SLURM array with one
    participant per task): the read-merge-write happens under :func:`output_lock`.
    """
    with output_lock(output_dir):
        _write_dataset_files(output_dir, bids_dir, source_description, desc_labels)


@contextlib.contextmanager
def output_lock(output_dir: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on the output folder's shared files.

    The lock file is ``logs/.lock`` (``logs/`` is listed in ``.bidsignore``). ``flock``
    locks are released by the kernel when a job dies, so a killed job never leaves a
    stale lock behind.
    """
    lock_path = output_dir / "logs" / ".lock"
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = lock_path.open("a")
    except OSError as exc:
        raise _os_error(exc, lock_path) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_dataset_files(
    output_dir: Path,
    bids_dir: Path,
    source_description: Mapping[str, Any],
    desc_labels: tuple[str, ...],
) -> None:
    write_json(
        output_dir / "dataset_description.json", dataset_description(bids_dir, source_description)
    )
    write_text(output_dir / ".bidsignore", "\n".join(BIDSIGNORE) + "\n")
    path = output_dir / "descriptions.tsv"
    known: dict[str, str] = {}
    if path.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError):
            old = pd.read_csv(path, sep="\t", dtype=str)
            known = dict(zip(old["desc_id"], old["description"], strict=True))
    known.update({f"desc-{label}": DESCRIPTIONS[label] for label in desc_labels})
    table = pd.DataFrame({"desc_id": list(known), "description": list(known.values())})
    write_tsv(path, table.sort_values("desc_id", kind="stable"))


def bids_uri(bids_dir: Path, path: Path) -> str:
    """Return the BIDS URI (``bids:raw:<relative path>``) of an input file."""
    return f"bids:raw:{path.resolve().relative_to(bids_dir.resolve()).as_posix()}"


def derivative_uri(output_dir: Path, path: Path) -> str:
    """Return the BIDS URI (``bids::<relative path>``) of a file of this derivative dataset."""
    return f"bids::{path.relative_to(output_dir).as_posix()}"


def _os_error(exc: OSError, path: Path) -> OutputError | IOFailure:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(
            f"cannot write here ({exc.strerror}).",
            path=path,
            fix="Choose an output folder you can write to, or fix its permissions "
            "(in a container, check that the output mount is not read-only).",
        )
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return IOFailure(
            f"no space left to write this file ({exc.strerror}).",
            path=path,
            fix="Free disk space or quota, or choose another output folder, then run again: "
            "finished outputs are kept and reused.",
        )
    return IOFailure(
        f"writing failed ({exc.strerror or exc}).",
        path=path,
        fix="Check the file system, then run again.",
    )


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
