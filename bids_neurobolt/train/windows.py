"""EEG windows paired with BOLD volumes.

NeuroBOLT predicts the ROI BOLD value of volume *k* from the 16 s of cleaned EEG that
end at volume *k*'s marker: samples ``[m_k - n, m_k)`` at 200 Hz, where ``m_k`` is the
marker's sample index and ``n = 3200``. No haemodynamic delay is applied; the window
spans it. Each window has every channel's mean over the window removed and is divided by
100 (EEG in µV becomes units of 100 µV, as LaBraM was trained on). Volumes whose window
would start before the recording (the first 16 s) or end after it get no window; they
are listed in :attr:`Windows.excluded`.

:class:`WindowCache` keeps windows as ``.npy`` files in a folder the caller chooses (the
work directory) and opens them memory-mapped, so the group level and repeated runs
reuse them without recomputing or holding them all in memory.

References
----------
.. [1] Li Y, Lou A, Xu Z, et al. (2024). NeuroBOLT: Resting-state EEG-to-fMRI synthesis
   with multi-dimensional feature mapping. NeurIPS 2024. arXiv:2410.05341.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bids_neurobolt.errors import DataError, IOFailure

logger = logging.getLogger(__name__)

#: Sampling rate of the windows (Hz).
WINDOW_SFREQ = 200.0
#: Window length (s).
WINDOW_SECONDS = 16.0
#: EEG in µV is divided by this (LaBraM's unit of 100 µV).
EEG_SCALE = 100.0

_CHUNK = 64  # windows per vectorised extraction step


@dataclass(frozen=True)
class Windows:
    """EEG windows of one run (or several concatenated), each paired with a volume.

    Attributes
    ----------
    data : numpy.ndarray, shape (n_windows, n_channels, n_times)
        float32 windows in units of 100 µV, channel means removed (possibly a read-only
        memory map).
    volumes : numpy.ndarray of int, shape (n_windows,)
        The volume (row of the run's target table) each window predicts.
    ends : numpy.ndarray of int, shape (n_windows,)
        Exclusive end sample of each window at :attr:`sfreq` (the volume's marker).
    excluded : numpy.ndarray of int
        Volumes without a full window.
    sfreq : float
        Sampling rate (Hz).
    ch_names : tuple of str
        Channel names, in the order of the channel axis.
    """

    data: NDArray[np.float32]
    volumes: NDArray[np.int64]
    ends: NDArray[np.int64]
    excluded: NDArray[np.int64]
    sfreq: float
    ch_names: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.volumes.size)

    @property
    def n_times(self) -> int:
        """Samples per window."""
        return int(self.data.shape[2])


def markers_to_rate(
    samples: ArrayLike, sfreq_in: float, sfreq_out: float = WINDOW_SFREQ
) -> NDArray[np.int64]:
    """Convert marker sample indices from one sampling rate to another (nearest sample).

    Parameters
    ----------
    samples : array-like of int
        Marker samples at ``sfreq_in`` (e.g. ``SyncResult.volume_samples``), relative to
        the first sample of the recording.
    sfreq_in, sfreq_out : float
        Sampling rates (Hz) of the markers and of the resampled EEG.

    Returns
    -------
    numpy.ndarray of int
        ``round(samples * sfreq_out / sfreq_in)``.
    """
    samples = np.asarray(samples, dtype=np.float64)
    return np.round(samples * (sfreq_out / sfreq_in)).astype(np.int64)


def regular_markers(
    n_samples: int,
    sfreq: float,
    tr: float,
    *,
    window: float = WINDOW_SECONDS,
    first: float | None = None,
) -> NDArray[np.int64]:
    """Window ends on a regular grid, for EEG recorded without scanner markers.

    Parameters
    ----------
    n_samples : int
        Samples in the recording at ``sfreq``.
    sfreq : float
        Sampling rate (Hz).
    tr : float
        Grid step (s), e.g. the ``--tr`` of an EEG-only prediction.
    window : float
        Window length (s); the first end is at ``window`` unless ``first`` is given.
    first : float | None
        Time (s) of the first end.

    Returns
    -------
    numpy.ndarray of int
        End samples ``round((first + k * tr) * sfreq)`` that lie within the recording.
    """
    if tr <= 0:
        raise DataError(f"the prediction grid step must be positive; got {tr} s.")
    start = window if first is None else first
    times = np.arange(start, n_samples / sfreq + 1e-9, tr)
    ends = np.round(times * sfreq).astype(np.int64)
    return ends[ends <= n_samples]


def make_windows(
    eeg: ArrayLike,
    markers: ArrayLike,
    *,
    ch_names: Sequence[str],
    sfreq: float = WINDOW_SFREQ,
    window: float = WINDOW_SECONDS,
    scale: float = EEG_SCALE,
    out: NDArray[np.float32] | None = None,
) -> Windows:
    """Cut the EEG window that ends at each volume marker.

    Parameters
    ----------
    eeg : array-like, shape (n_channels, n_samples)
        Cleaned EEG in µV at ``sfreq``.
    markers : array-like of int, shape (n_volumes,)
        Sample index at ``sfreq`` of each volume's marker (see :func:`markers_to_rate`).
    ch_names : sequence of str
        Channel names of ``eeg``'s rows.
    sfreq : float
        Sampling rate (Hz).
    window : float
        Window length (s).
    scale : float
        Divisor applied after removing each channel's window mean (100: µV to 100 µV).
    out : numpy.ndarray | None
        Array of shape ``(n_kept, n_channels, n_times)`` to write into (e.g. a memory
        map); allocated when None.

    Returns
    -------
    Windows
        One window per volume whose span ``[marker - n_times, marker)`` lies in the
        recording, in volume order.

    Raises
    ------
    DataError
        When the shapes disagree or no volume has a full window.

    References
    ----------
    .. [1] Li Y, Lou A, Xu Z, et al. (2024). NeuroBOLT. NeurIPS 2024.
    """
    eeg = np.asarray(eeg)
    markers = np.asarray(markers, dtype=np.int64).reshape(-1)
    if eeg.ndim != 2 or eeg.shape[0] != len(ch_names):
        raise DataError(
            f"EEG of shape {eeg.shape} does not match its {len(ch_names)} channel names."
        )
    n_times = round(window * sfreq)
    n_samples = eeg.shape[1]
    full = (markers - n_times >= 0) & (markers <= n_samples)
    volumes = np.flatnonzero(full)
    excluded = np.flatnonzero(~full)
    if volumes.size == 0:
        raise DataError(
            f"no volume has {window:g} s of EEG before its marker ({markers.size} markers, "
            f"{n_samples / sfreq:.1f} s of EEG).",
            fix="Check that the EEG covers the scan and the markers are in its time base.",
        )
    if excluded.size:
        logger.info(
            "%d of %d volumes have no full %g s EEG window and are excluded (volumes %s)",
            excluded.size,
            markers.size,
            window,
            _ranges(excluded),
        )
    ends = markers[volumes]
    shape = (volumes.size, eeg.shape[0], n_times)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    offsets = np.arange(-n_times, 0)
    for start in range(0, volumes.size, _CHUNK):
        idx = ends[start : start + _CHUNK, None] + offsets  # (chunk, n_times)
        chunk = eeg[:, idx].astype(np.float64).transpose(1, 0, 2)  # (chunk, ch, n_times)
        chunk -= chunk.mean(axis=2, keepdims=True)
        out[start : start + _CHUNK] = chunk / scale
    return Windows(
        data=out,
        volumes=volumes.astype(np.int64),
        ends=ends,
        excluded=excluded.astype(np.int64),
        sfreq=float(sfreq),
        ch_names=tuple(ch_names),
    )


def _ranges(values: NDArray[np.int64]) -> str:
    """Compact text of sorted integers: ``0-7, 574``."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)


def cache_key(**parts: object) -> str:
    """Hash describing how windows were made (inputs and settings), for :class:`WindowCache`.

    Parameters
    ----------
    **parts
        JSON-serialisable values that identify the windows, e.g. the run name, the hash
        of the cleaned EEG file or of the science configuration, the window length.

    Returns
    -------
    str
        24 hex digits of the SHA-256 of the canonical JSON of ``parts``.
    """
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def array_digest(array: ArrayLike) -> str:
    """SHA-256 of an array's shape, dtype and bytes (e.g. the cleaned EEG), 24 hex digits."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.shape}|{array.dtype.str}|".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:24]


class WindowCache:
    """Windows stored as ``.npy`` in a folder and reopened memory-mapped.

    Each entry is ``<key>.windows.npy`` (the data) plus ``<key>.windows.json`` (volumes,
    ends, excluded volumes, sampling rate, channels); the JSON is written last, so an
    entry without it is incomplete and ignored.

    Parameters
    ----------
    directory : path-like
        Cache folder (created when needed), e.g. ``<work_dir>/windows``.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def _paths(self, key: str) -> tuple[Path, Path]:
        return (
            self.directory / f"{key}.windows.npy",
            self.directory / f"{key}.windows.json",
        )

    def get(self, key: str) -> Windows | None:
        """Return the cached windows for ``key`` (memory-mapped, read-only), or None."""
        data_path, meta_path = self._paths(key)
        if not (data_path.is_file() and meta_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            data = np.load(data_path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable window cache entry %s (%s)", data_path, exc)
            return None
        return Windows(
            data=data,
            volumes=np.asarray(meta["volumes"], dtype=np.int64),
            ends=np.asarray(meta["ends"], dtype=np.int64),
            excluded=np.asarray(meta["excluded"], dtype=np.int64),
            sfreq=float(meta["sfreq"]),
            ch_names=tuple(meta["ch_names"]),
        )

    def put(self, key: str, windows: Windows) -> Windows:
        """Store ``windows`` under ``key`` and return them memory-mapped from the cache.

        Raises
        ------
        IOFailure
            When the folder or files cannot be written.
        """
        data_path, meta_path = self._paths(key)
        meta = {
            "volumes": windows.volumes.tolist(),
            "ends": windows.ends.tolist(),
            "excluded": windows.excluded.tolist(),
            "sfreq": windows.sfreq,
            "ch_names": list(windows.ch_names),
            "shape": list(windows.data.shape),
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = _temporary(data_path)
            target = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.float32, shape=windows.data.shape
            )
            for start in range(0, len(windows), 1024):
                target[start : start + 1024] = windows.data[start : start + 1024]
            target.flush()
            del target
            tmp.replace(data_path)
            tmp = _temporary(meta_path)
            tmp.write_text(json.dumps(meta), encoding="utf-8")
            tmp.replace(meta_path)
        except OSError as exc:
            raise IOFailure(f"cannot write the window cache ({exc}).", path=data_path) from exc
        cached = self.get(key)
        if cached is None:
            raise IOFailure("the window cache entry just written cannot be read.", path=data_path)
        return cached

    def get_or_make(self, key: str, make: Callable[[], Windows]) -> Windows:
        """Return cached windows for ``key``, made with ``make`` and stored if absent."""
        cached = self.get(key)
        if cached is not None:
            logger.debug("window cache hit %s", key)
            return cached
        return self.put(key, make())


def _temporary(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(name)


class WindowStack:
    """Several runs' windows seen as one array without copying them (memory maps stay maps).

    Supports ``len``, ``shape``, ``dtype``, :meth:`take` and ``numpy.asarray`` (which
    copies everything into memory).

    Parameters
    ----------
    arrays : sequence of numpy.ndarray
        Arrays of shape ``(n_i, n_channels, n_times)``.
    """

    def __init__(self, arrays: Sequence[NDArray[np.float32]]) -> None:
        if not arrays:
            raise DataError("no windows to combine.")
        self.arrays = list(arrays)
        self.offsets = np.cumsum([0] + [len(a) for a in self.arrays])
        self.shape = (int(self.offsets[-1]), *self.arrays[0].shape[1:])
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, indices: ArrayLike) -> NDArray[np.float32]:
        """Copy the windows at ``indices`` (any order) into a new float32 array."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError("window index out of range")
        out = np.empty((indices.size, *self.shape[1:]), dtype=np.float32)
        part = np.searchsorted(self.offsets, indices, side="right") - 1
        for p in np.unique(part):
            rows = np.flatnonzero(part == p)
            out[rows] = self.arrays[p][indices[rows] - self.offsets[p]]
        return out

    def __array__(self, dtype: object = None, copy: object = None) -> NDArray[np.float32]:
        data = np.concatenate([np.asarray(a) for a in self.arrays], axis=0)
        return data if dtype is None else data.astype(dtype)


def take_windows(data: ArrayLike | WindowStack, indices: ArrayLike) -> NDArray[np.float32]:
    """Copy the windows at ``indices`` of an array, memory map or :class:`WindowStack`."""
    if isinstance(data, WindowStack):
        return data.take(indices)
    return np.asarray(np.asarray(data)[np.asarray(indices, dtype=np.int64)], dtype=np.float32)


def concatenate(parts: Sequence[Windows]) -> tuple[WindowStack, NDArray[np.int64]]:
    """Combine the windows of several runs, returning them and each window's run index.

    Parameters
    ----------
    parts : sequence of Windows
        Runs with the same channels, sampling rate and window length.

    Returns
    -------
    data : WindowStack
        All windows, run after run, without copying (``numpy.asarray`` copies).
    run : numpy.ndarray of int, shape (n_total,)
        Index into ``parts`` of each window (e.g. to map subjects for splits).

    Raises
    ------
    DataError
        When the runs' channels, rates or window lengths differ.
    """
    if not parts:
        raise DataError("no windows to combine.")
    first = parts[0]
    for part in parts[1:]:
        if part.ch_names != first.ch_names or part.sfreq != first.sfreq:
            raise DataError(
                "runs have different EEG channels or sampling rates; group training needs "
                f"the same montage ({list(first.ch_names)} at {first.sfreq} Hz vs "
                f"{list(part.ch_names)} at {part.sfreq} Hz).",
                fix="Restrict the group run to participants with the same EEG montage.",
            )
        if part.n_times != first.n_times:
            raise DataError("runs have different window lengths.")
    run = np.concatenate([np.full(len(p), i, dtype=np.int64) for i, p in enumerate(parts)])
    return WindowStack([p.data for p in parts]), run
