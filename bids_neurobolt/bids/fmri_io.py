"""Read what the app needs to know about a BOLD run: volumes, timing, space."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bids_neurobolt.bids.layout import check_file_present, unreadable
from bids_neurobolt.errors import DataError

logger = logging.getLogger(__name__)

#: NIfTI xform code for MNI152 space.
NIFTI_MNI152 = 4


@dataclass(frozen=True)
class BoldInfo:
    """Timing and geometry of a BOLD run.

    Attributes
    ----------
    path : Path
        The NIfTI file.
    n_volumes : int
        Number of volumes (4th dimension).
    repetition_time : float
        ``RepetitionTime`` (s) from the sidecar (with BIDS inheritance).
    slice_timing : tuple of float
        ``SliceTiming`` (s), empty when the sidecar has none.
    shape : tuple of int
        The 3-D grid shape.
    zooms : tuple of float
        Voxel sizes (mm).
    xform_code : int
        The NIfTI sform code (or the qform code when the sform is unset); 4 means MNI152.
    """

    path: Path
    n_volumes: int
    repetition_time: float
    slice_timing: tuple[float, ...]
    shape: tuple[int, int, int]
    zooms: tuple[float, float, float]
    xform_code: int

    @property
    def duration(self) -> float:
        """Acquisition length in seconds (volumes x TR)."""
        return self.n_volumes * self.repetition_time


def read_bold_info(path: Path, metadata: dict[str, Any]) -> BoldInfo:
    """Read the header and sidecar of a BOLD run without loading its data.

    Parameters
    ----------
    path : Path
        The BOLD NIfTI.
    metadata : dict
        Its sidecar metadata with BIDS inheritance applied (``layout.get_metadata``).

    Returns
    -------
    BoldInfo
        Volumes, timing and grid.

    Raises
    ------
    MissingInputError
        If the file is missing or a broken link.
    DataError
        If the NIfTI is unreadable or not 4-D, or RepetitionTime is missing or invalid.
    """
    import nibabel as nib

    check_file_present(path)
    try:
        img = nib.load(path)
        header = img.header
        shape = tuple(int(n) for n in img.shape)
        sform_code = int(header["sform_code"])
        qform_code = int(header["qform_code"])
        zooms = tuple(float(z) for z in header.get_zooms())
        # nibabel resets the header copy's vox_offset; the data's real offset is here.
        offset = int(getattr(img.dataobj, "offset", header["vox_offset"]))
    except PermissionError:
        raise unreadable(path) from None
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise DataError(
            f"cannot read this NIfTI file ({type(exc).__name__}: {exc}).",
            path=path,
            fix="Check that the file is a complete, uncorrupted .nii or .nii.gz "
            "(e.g. with nib-ls or fslinfo).",
        ) from None
    if len(shape) != 4 or shape[3] < 1:
        raise DataError(
            f"is {len(shape)}-D with shape {shape}; a BOLD run must be 4-D (x, y, z, volumes).",
            path=path,
            fix="Pass the 4-D time series, not a single volume or a reference image.",
        )
    if min(shape) < 1:
        raise DataError(
            f"its header declares the dimensions {shape}; every dimension must be at least 1 "
            "(the header is corrupt).",
            path=path,
            fix="Convert the run from the scanner data again (e.g. with dcm2niix).",
        )
    _check_complete(path, header, shape, offset)
    tr = _repetition_time(path, metadata, zooms)
    slice_timing = _slice_timing(path, metadata, shape, tr)
    return BoldInfo(
        path=path,
        n_volumes=int(shape[3]),
        repetition_time=tr,
        slice_timing=slice_timing,
        shape=(shape[0], shape[1], shape[2]),
        zooms=(zooms[0], zooms[1], zooms[2]),
        xform_code=sform_code if sform_code > 0 else qform_code,
    )


def _check_complete(path: Path, header: Any, shape: tuple[int, ...], offset: int) -> None:
    """Refuse a NIfTI whose data block is shorter than its header promises.

    Reading the header alone does not notice a truncated file, which would then fail deep
    inside a later stage. For ``.nii`` the file size tells; for ``.nii.gz`` the gzip trailer
    stores the uncompressed size modulo 2**32 (RFC 1952), so no decompression is needed
    unless the trailer disagrees (multi-member files), in which case the stream is counted.
    """
    expected = offset + int(np.prod(shape)) * header.get_data_dtype().itemsize
    if path.name.endswith(".gz"):
        with path.open("rb") as stream:
            stream.seek(0, 2)
            size = stream.tell()
            if size >= 18:
                stream.seek(-4, 2)
                if int.from_bytes(stream.read(4), "little") == expected % 2**32:
                    return
        actual = _gzip_length(path)
    else:
        actual = path.stat().st_size
    if actual < expected:
        raise DataError(
            f"is truncated: its header promises {expected} bytes of image data and "
            f"header, but the file holds {actual}.",
            path=path,
            fix="The copy is incomplete (interrupted download or transfer, or a git-annex "
            "file not fetched); copy or convert it again.",
        )


def _gzip_length(path: Path) -> int:
    """Uncompressed length of a gzip file, or the length readable before it breaks."""
    import gzip
    import zlib

    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 24):
                total += len(chunk)
    except (OSError, EOFError, zlib.error):
        pass
    return total


def _slice_timing(
    path: Path, metadata: dict[str, Any], shape: tuple[int, ...], tr: float
) -> tuple[float, ...]:
    """Return ``SliceTiming`` checked: finite numbers in [0, TR), one per slice."""
    values = metadata.get("SliceTiming") or ()
    sidecar = sidecar_of(path)
    if not isinstance(values, list | tuple) or any(
        isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v) for v in values
    ):
        raise DataError(
            f"SliceTiming must be a list of numbers (seconds); got {values!r}.",
            path=sidecar,
            fix="Correct SliceTiming (one onset in seconds per slice), or remove it.",
        )
    if values and (min(values) < 0 or max(values) >= tr):
        raise DataError(
            f"SliceTiming values must lie in [0, RepetitionTime={tr} s); got "
            f"[{min(values)}, {max(values)}].",
            path=sidecar,
            fix="Correct SliceTiming (seconds from the volume onset) in the JSON sidecar.",
        )
    axis = {"i": 0, "j": 1, "k": 2}.get(str(metadata.get("SliceEncodingDirection", "k"))[:1], 2)
    if values and len(values) != shape[axis]:
        raise DataError(
            f"SliceTiming has {len(values)} values but the BOLD image has {shape[axis]} slices "
            f"along {'ijk'[axis]} (SliceEncodingDirection).",
            path=sidecar,
            fix="Use the SliceTiming of this run's acquisition (one value per slice), or "
            "remove it.",
        )
    return tuple(float(v) for v in values)


def _repetition_time(path: Path, metadata: dict[str, Any], zooms: tuple[float, ...]) -> float:
    value = metadata.get("RepetitionTime")
    if value is None:
        raise DataError(
            "has no RepetitionTime in its JSON sidecar (required by BIDS for BOLD).",
            path=path,
            fix=f'Add "RepetitionTime": <seconds> to {sidecar_of(path).name} or to an '
            "inherited task-<label>_bold.json.",
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(
            f"RepetitionTime must be a JSON number of seconds; got {value!r} "
            f"({type(value).__name__}).",
            path=sidecar_of(path),
            fix='Write it without quotes, e.g. "RepetitionTime": 2.0.',
        )
    tr = float(value)
    if np.isfinite(tr) and tr > 100:
        raise DataError(
            f"RepetitionTime is {value!r} s, which looks like milliseconds: BIDS gives it in "
            "seconds.",
            path=sidecar_of(path),
            fix=f'Write it in seconds, e.g. "RepetitionTime": {tr / 1000:g}.',
        )
    if not np.isfinite(tr) or tr <= 0:
        raise DataError(
            f"RepetitionTime must be a positive number of seconds; got {value!r}.",
            path=sidecar_of(path),
            fix="Correct RepetitionTime in the JSON sidecar.",
        )
    if len(zooms) > 3 and zooms[3] > 0 and not np.isclose(zooms[3], tr, rtol=1e-3):
        logger.warning(
            "%s: the NIfTI header says TR=%.4g s but the sidecar says RepetitionTime=%.4g s; "
            "using the sidecar (BIDS makes it authoritative).",
            path.name,
            zooms[3],
            tr,
        )
    return tr


def sidecar_of(path: Path) -> Path:
    """Return the JSON sidecar next to a NIfTI file (``.nii`` or ``.nii.gz``)."""
    name = path.name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else path.stem
    return path.with_name(stem + ".json")
