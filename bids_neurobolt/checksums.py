"""Identity of input files: content hashes, and records that tell whether files changed.

A derivative is fresh only if the files it was made from are the ones it recorded. A record
holds each file's size, modification time and SHA-256; a later check trusts the hash when
size and time are unchanged and hashes the file again otherwise, so a file rewritten with
the same bytes (a re-simulated dataset, a copy) is still recognised, at the cost of reading
it once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Return the SHA-256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_files(files: Mapping[str, Path]) -> dict[str, dict[str, Any]]:
    """Return ``{name: {"size", "mtime_ns", "sha256"}}`` for the files named."""
    record = {}
    for name, path in sorted(files.items()):
        stat = path.stat()
        record[name] = {
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "sha256": file_sha256(path),
        }
    return record


def files_match(recorded: Any, files: Mapping[str, Path]) -> bool:
    """Tell whether ``files`` are those of an earlier :func:`record_files` (same names, bytes).

    A file whose size and modification time are those recorded is taken as unchanged;
    any other is hashed and compared.
    """
    if not isinstance(recorded, Mapping) or set(recorded) != set(files):
        return False
    for name, path in files.items():
        entry = recorded[name]
        try:
            stat = path.stat()
        except OSError:
            return False
        if not isinstance(entry, Mapping) or entry.get("size") != stat.st_size:
            return False
        if entry.get("mtime_ns") == stat.st_mtime_ns:
            continue
        if entry.get("sha256") != file_sha256(path):
            return False
    return True


def run_files(eeg: Path, others: Iterable[Path | None] = ()) -> dict[str, Path]:
    """Return the files of one EEG recording (header, data, markers, sidecars) and ``others``.

    Files in the recording's folder named ``<prefix>_<suffix>.<ext>`` with no further
    entity (``sub-01_task-rest_eeg.vhdr``, ``..._eeg.eeg``, ``..._events.tsv``,
    ``..._channels.tsv``...), keyed by file name.
    """
    prefix = eeg.name.rsplit("_eeg.", 1)[0] + "_"
    files = {
        p.name: p
        for p in eeg.parent.glob(prefix + "*")
        if p.is_file() and "-" not in p.name[len(prefix) :].split(".")[0]
    }
    for path in others:
        if path is not None and path.is_file():
            files[path.name] = path
    return files
