"""Named pre-trained weights: registry, cache, download, and ``--pretrained NAME``.

``--pretrained`` takes either the path of a LaBraM checkpoint or the name of a registry
entry (:data:`REGISTRY`; today only ``labram-base``). A name is looked up in the cache
that atlases use (``--atlas-cache``, else ``$BIDS_NEUROBOLT_CACHE``, else
``~/.cache/bids-neurobolt``; see :func:`bids_neurobolt.fmri.atlases.resolve_cache_dir`),
under ``<cache>/weights/``. Runs never download: ``bids-neurobolt-fetch --weights
labram-base`` does, once, on a machine with network (:func:`fetch_weights`).

**Checksums.** An entry whose ``sha256`` is pinned is verified after every download and
whenever a run resolves it. ``labram-base`` is **not pinned** (``sha256=None``): the
SHA-256 of LaBraM's ``checkpoints/labram-base.pth`` is published nowhere that could be
checked when this registry was written (the LaBraM repository stores the file as a
plain git blob, whose SHA-1 object id is not a content SHA-256). Unpinned entries are
trust-on-first-use: the first download (or the first file found in the cache) has its
SHA-256 written to ``<file>.sha256`` beside it, and that record is then verified like a
pinned checksum by every later fetch and run. Pin it (``sha256="..."``) once the value
is confirmed from a trusted copy.

Downloads are atomic: the file is written to a temporary name in the same folder,
hashed while written, checked (checksum, and that it reads as a LaBraM checkpoint), and
only then renamed into place; a file that fails a check is deleted and never replaces
what the cache holds.

Errors: a name that is not in the cache is a
:class:`~bids_neurobolt.errors.MissingInputError` (exit code 66) naming the missing
file and the fetch command; a failed download is one too (no network); a checksum
mismatch or a download that is not a checkpoint is a
:class:`~bids_neurobolt.errors.DataError` (65); a cache that cannot be written is an
:class:`~bids_neurobolt.errors.IOFailure` (74).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bids_neurobolt.checksums import file_sha256
from bids_neurobolt.errors import ConfigError, DataError, IOFailure, MissingInputError
from bids_neurobolt.fmri.atlases import CACHE_ENV, resolve_cache_dir
from bids_neurobolt.model.weights import read_labram_state

logger = logging.getLogger(__name__)

#: Sub-folder of the cache that holds pre-trained weights.
WEIGHTS_SUBDIR = "weights"
#: Console script that downloads registry weights.
FETCH_COMMAND = "bids-neurobolt-fetch"
#: Seconds without data before a download is abandoned.
DOWNLOAD_TIMEOUT = 60.0

#: Opens a URL for reading: ``opener(url)`` returns a binary file object.
Opener = Callable[[str], BinaryIO]


@dataclass(frozen=True)
class WeightsSpec:
    """One named set of pre-trained weights.

    Attributes
    ----------
    name : str
        Registry name, the value of ``--pretrained`` and ``--weights``.
    filename : str
        File name in ``<cache>/weights/``.
    url : str
        Where :func:`fetch_weights` downloads it from.
    sha256 : str | None
        Pinned SHA-256 (hex) of the file, or None for trust-on-first-use (the first
        download's checksum is recorded in ``<filename>.sha256`` and verified after).
    title : str
        One line for listings.
    licence : str
        Licence of the weights.
    """

    name: str
    filename: str
    url: str
    sha256: str | None
    title: str
    licence: str

    def path(self, cache_dir: Path) -> Path:
        """Where the weights live in the cache folder ``cache_dir``."""
        return cache_dir / WEIGHTS_SUBDIR / self.filename

    def record_path(self, cache_dir: Path) -> Path:
        """Return the trust-on-first-use checksum record beside the weights."""
        return cache_dir / WEIGHTS_SUBDIR / f"{self.filename}.sha256"


#: Named weights known to ``--pretrained`` and ``bids-neurobolt-fetch --weights``.
REGISTRY: dict[str, WeightsSpec] = {
    "labram-base": WeightsSpec(
        name="labram-base",
        filename="labram-base.pth",
        url="https://github.com/935963004/LaBraM/raw/main/checkpoints/labram-base.pth",
        # Not pinned: no published SHA-256 of this file could be found and confirmed
        # offline. Trust-on-first-use: the first download records its checksum in
        # labram-base.pth.sha256 and later fetches and runs verify against it.
        sha256=None,
        title="LaBraM-Base encoder (Jiang et al., ICLR 2024), official checkpoint",
        licence="MIT",
    ),
}


def weights_names() -> tuple[str, ...]:
    """Return the registry names, sorted."""
    return tuple(sorted(REGISTRY))


def weights_spec(name: str) -> WeightsSpec:
    """Return the registry entry ``name`` (case-insensitive).

    Raises
    ------
    ConfigError
        For an unknown name, suggesting close ones.
    """
    key = name.strip().lower()
    if key in REGISTRY:
        return REGISTRY[key]
    close = difflib.get_close_matches(key, REGISTRY, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"unknown pre-trained weights {name!r}.{hint}",
        fix=f"Use a registry name ({', '.join(weights_names())}) or the path of a LaBraM "
        "checkpoint (.pth).",
    )


def fetch_command(name: str, cache_dir: Path) -> str:
    """Return the shell command that puts weights ``name`` into ``cache_dir``."""
    return f"{FETCH_COMMAND} --weights {name} --cache-dir {cache_dir}"


def _looks_like_name(text: str) -> bool:
    """Tell whether ``text`` is a bare word: no folder separator, no file extension."""
    return "/" not in text and os.sep not in text and not Path(text).suffix


def resolve_pretrained(value: str | os.PathLike[str], cache_dir: Path | None) -> Path:
    """Turn the value of ``--pretrained`` into the path of a checkpoint.

    A registry name (e.g. ``labram-base``) gives its file in ``<cache>/weights/``,
    checked against its pinned or recorded checksum; anything else is a path, returned
    as given (a file that exists always wins over a name).

    Parameters
    ----------
    value : str | path-like
        The ``--pretrained`` value.
    cache_dir : Path | None
        The cache folder option (``--atlas-cache``); None for the default
        (:func:`~bids_neurobolt.fmri.atlases.resolve_cache_dir`).

    Returns
    -------
    Path
        The checkpoint to read.

    Raises
    ------
    MissingInputError
        When ``value`` names registry weights that are not in the cache (the message
        gives the fetch command).
    ConfigError
        When ``value`` is a bare word close to a registry name but not one (a typo).
    DataError
        When the cached file does not match its pinned or recorded checksum.
    """
    text = os.fspath(value).strip()
    path = Path(text).expanduser()
    if path.exists() or not _looks_like_name(text):
        return path
    key = text.lower()
    if key not in REGISTRY:
        if difflib.get_close_matches(key, REGISTRY, n=1, cutoff=0.6):
            weights_spec(text)  # raises, suggesting the close name
        return path
    spec = REGISTRY[key]
    cache = resolve_cache_dir(cache_dir)
    target = spec.path(cache)
    if not target.is_file():
        raise MissingInputError(
            f"the pre-trained weights '{spec.name}' ({spec.title}) are not in the cache "
            f"folder ({target.name} is missing), and bids-neurobolt never downloads at run "
            "time.",
            path=target,
            fix=f"Fetch them once on a machine with network: "
            f"'{fetch_command(spec.name, cache)}', then copy the cache folder here if "
            f"needed. Or point --atlas-cache / {CACHE_ENV} at a cache folder that has "
            f"{WEIGHTS_SUBDIR}/{spec.filename}, or pass --pretrained the path of the "
            "checkpoint.",
        )
    _verify(spec, target, cache)
    return target


def expected_sha256(spec: WeightsSpec, cache_dir: Path) -> str | None:
    """Return the checksum the cached file must have: pinned, else recorded, else None.

    Raises
    ------
    DataError
        When the record exists but does not hold a SHA-256.
    """
    if spec.sha256:
        return spec.sha256.lower()
    record = spec.record_path(cache_dir)
    if not record.is_file():
        return None
    text = record.read_text(encoding="utf-8").split()
    digest = text[0].lower() if text else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise DataError(
            "the checksum record does not hold a SHA-256.",
            path=record,
            fix=f"Delete it and the weights beside it, then run "
            f"'{fetch_command(spec.name, cache_dir)}' again.",
        )
    return digest


def _verify(spec: WeightsSpec, target: Path, cache_dir: Path) -> None:
    expected = expected_sha256(spec, cache_dir)
    if expected is None:
        return
    seen = file_sha256(target)
    if seen != expected:
        origin = "pinned in bids-neurobolt" if spec.sha256 else f"recorded in {target.name}.sha256"
        raise DataError(
            f"the cached weights '{spec.name}' do not match their checksum ({origin}: "
            f"{expected}; the file has {seen}): modified, truncated or replaced.",
            path=target,
            fix=f"Delete the file and fetch it again: '{fetch_command(spec.name, cache_dir)}'.",
        )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _is_checkpoint(path: Path) -> bool:
    try:
        read_labram_state(path)
    except DataError:
        logger.warning("%s is not a readable LaBraM checkpoint; downloading it again", path)
        return False
    return True


def _write_record(spec: WeightsSpec, cache_dir: Path, digest: str) -> None:
    record = spec.record_path(cache_dir)
    tmp = record.with_name(f".{record.name}.tmp")
    try:
        tmp.write_text(f"{digest}  {spec.filename}\n", encoding="utf-8")
        tmp.replace(record)
    except OSError as exc:
        raise IOFailure(
            f"cannot record the checksum of the weights ({exc.strerror or exc}).",
            path=record,
            fix=f"Pass --cache-dir (or set {CACHE_ENV}) to a writable folder.",
        ) from None
    logger.info(
        "weights %s: no pinned checksum; recorded SHA-256 %s in %s (trust on first use)",
        spec.name,
        digest,
        record,
    )


def _urlopen(url: str) -> BinaryIO:
    return urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT)


def fetch_weights(
    name: str,
    cache_dir: Path,
    *,
    url: str | None = None,
    opener: Opener | None = None,
) -> Path:
    """Download registry weights into ``<cache_dir>/weights/``, atomically and verified.

    Weights already cached and matching their checksum are kept (nothing is
    downloaded). Otherwise the file is downloaded to a temporary name in the same
    folder, hashed, checked against the pinned or recorded checksum and read as a
    LaBraM checkpoint; only then is it renamed into place. Without a pinned or recorded
    checksum, the checksum of the file kept is recorded in ``<file>.sha256``
    (trust-on-first-use).

    Parameters
    ----------
    name : str
        Registry name (:data:`REGISTRY`).
    cache_dir : Path
        The cache folder (:func:`~bids_neurobolt.fmri.atlases.resolve_cache_dir`).
    url : str | None
        Download from here instead of the registry URL (a mirror, or a ``file://`` URL).
    opener : callable | None
        Replaces :func:`urllib.request.urlopen` (for tests): ``opener(url)`` returns a
        binary file object.

    Returns
    -------
    Path
        The cached weights.

    Raises
    ------
    ConfigError
        For an unknown name.
    MissingInputError
        When the download fails (no network, HTTP error).
    DataError
        When the download does not match the pinned or recorded checksum, or is not a
        LaBraM checkpoint; the cache is left as it was.
    IOFailure
        When the cache folder cannot be written.
    """
    spec = weights_spec(name)
    target = spec.path(cache_dir)
    expected = expected_sha256(spec, cache_dir)
    if target.is_file():
        seen = file_sha256(target)
        if expected is None:
            if _is_checkpoint(target):
                _write_record(spec, cache_dir, seen)  # a file put there by hand: trusted now
                return target
        elif seen == expected:
            logger.info("weights %s already cached at %s", spec.name, target)
            return target
        else:
            logger.warning(
                "weights %s at %s do not match their checksum; downloading them again",
                spec.name,
                target,
            )
    source = url or spec.url
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{spec.filename}.", suffix=".part", dir=target.parent
        )
    except OSError as exc:
        raise IOFailure(
            f"cannot write to the weights cache ({exc.strerror or exc}).",
            path=target.parent,
            fix=f"Pass --cache-dir (or set {CACHE_ENV}) to a writable folder.",
        ) from None
    tmp = Path(tmp_name)
    try:
        digest = _download(source, fd, opener or _urlopen, spec)
        if expected is not None and digest != expected:
            origin = "pinned in bids-neurobolt" if spec.sha256 else "recorded at the first download"
            raise DataError(
                f"the download of '{spec.name}' from {source} does not match its checksum "
                f"({origin}: {expected}; the download has {digest}); it was deleted and the "
                "cache left as it was.",
                path=target,
                fix="Try again later or from another network; if the upstream file really "
                f"changed, delete {target.name} and {target.name}.sha256 to accept the new "
                "one, after checking where it comes from.",
            )
        _check_checkpoint(tmp, spec, source, target)
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; a cache is shared
        tmp.replace(target)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    if expected is None:
        _write_record(spec, cache_dir, digest)
    logger.info("weights %s cached at %s (SHA-256 %s)", spec.name, target, digest)
    return target


def _download(source: str, fd: int, opener: Opener, spec: WeightsSpec) -> str:
    """Copy ``source`` into the open file ``fd``, returning its SHA-256."""
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, contextlib.closing(opener(source)) as response:
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
    except (
        urllib.error.URLError,
        http.client.HTTPException,
        TimeoutError,
        ConnectionError,
        ValueError,
    ) as exc:
        raise MissingInputError(
            f"could not download the pre-trained weights '{spec.name}' from {source} "
            f"({type(exc).__name__}: {str(exc)[:300]}).",
            fix="Run the fetch command on a machine with network access and copy the cache "
            f"folder here, or set {CACHE_ENV} to a folder that already has "
            f"{WEIGHTS_SUBDIR}/{spec.filename}.",
        ) from None
    except OSError as exc:
        raise IOFailure(
            f"writing the download of '{spec.name}' failed ({exc.strerror or exc}).",
            fix="Free disk space or choose another --cache-dir.",
        ) from None
    return digest.hexdigest()


def _check_checkpoint(tmp: Path, spec: WeightsSpec, source: str, target: Path) -> None:
    """Refuse a download that is not a readable LaBraM checkpoint (e.g. an HTML page)."""
    try:
        read_labram_state(tmp)
    except DataError as exc:
        raise DataError(
            f"the download of '{spec.name}' from {source} is not a usable LaBraM checkpoint "
            f"({exc.problem.rstrip('.')}); it was deleted and the cache left as it was.",
            path=target,
            fix="Check the URL, or download labram-base.pth by hand and pass its path to "
            "--pretrained.",
        ) from None
