"""ROI BOLD targets: choose ROIs, extract, clean, low-pass and scale as in NeuroBOLT.

The pipeline follows the NeuroBOLT paper (Li et al. 2024) and its code:

1. **Extraction** (nilearn masker semantics): a probabilistic atlas is summarised by
   least-squares regression of its maps on each volume (``NiftiMapsMasker``), a label
   atlas by the mean over each label's voxels (``NiftiLabelsMasker``); the **global
   signal** is the mean over the EPI brain mask. Atlas voxels outside the mask are left
   out. The atlas is resampled to the BOLD grid once (see
   :func:`~bids_neurobolt.fmri.atlases.resample_atlas_cached`).
2. **Cleaning** (the masker's ``detrend=True, standardize=True,
   standardize_confounds=True, confounds=<6 motion parameters>``): each signal is
   regressed on a constant, a linear trend and the confounds, and the residual is
   z-scored (``ddof=1``).
3. **Low-pass**: 5th-order Butterworth at 0.15 Hz, zero-phase (``scipy.signal.filtfilt``).
4. **Scaling** ("absmax", the paper's default): subtract the mean and divide by the 95th
   percentile of the absolute value (plus 1e-8); "zscore" is the alternative. Unlike the
   paper, which uses the whole scan, statistics come from the training volumes only
   when a split is given, and they are returned so that predictions can be mapped back
   to BOLD units.

Everything here takes arrays or in-memory images and returns arrays plus diagnostics;
no function reads or writes files.

References
----------
.. [1] Li Y, Lou A, Xu Z, Zhang S, Wang S, Englot DJ, Kolouri S, Moyer D, Bayrak RG,
       Chang C (2024). NeuroBOLT: Resting-state EEG-to-fMRI synthesis with multi-dimensional
       feature mapping. Advances in Neural Information Processing Systems 37.
.. [2] Dadi K, et al. (2020). Fine-grain atlases of functional modes for fMRI analysis.
       NeuroImage 221:117126.
.. [3] Friston KJ, Williams S, Howard R, Frackowiak RS, Turner R (1996). Movement-related
       effects in fMRI time-series. Magnetic Resonance in Medicine 35:346-355.
"""

from __future__ import annotations

import difflib
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bids_neurobolt.errors import ConfigError, DataError
from bids_neurobolt.fmri.atlases import Atlas, ResampledAtlas, resample_atlas
from bids_neurobolt.fmri.confounds import Confounds, check_confound_matrix

logger = logging.getLogger(__name__)

#: Name of the global-signal target column.
GLOBAL_SIGNAL = "global signal"

#: Other spellings accepted for the global signal (the NeuroBOLT release's column name...).
GLOBAL_SIGNAL_ALIASES: tuple[str, ...] = ("global signal clean", "global_signal", "gs")

#: The ROIs of the NeuroBOLT paper (DiFuMo-64 names; the apostrophe is U+2019).
PAPER_ROIS: tuple[str, ...] = (
    "Cuneus",
    "Heschl’s gyrus",
    "Middle frontal gyrus anterior",
    "Precuneus anterior",
    "Putamen",
    "Thalamus",
    GLOBAL_SIGNAL,
)

#: Named ROI sets accepted by ``--rois``.
PRESETS: dict[str, tuple[str, ...]] = {"paper": PAPER_ROIS}

#: Scaling methods: the paper's 95th-percentile "absmax", z-score, or none.
SCALINGS: tuple[str, ...] = ("absmax", "zscore", "none")

#: The paper's low-pass cutoff (Hz), filter order and absmax percentile.
LOWPASS_HZ = 0.15
FILTER_ORDER = 5
ABSMAX_PERCENTILE = 95.0
_ABSMAX_EPSILON = 1e-8

#: Fewest volumes accepted (the zero-phase filter pads 3 x its order + 1 samples).
MIN_VOLUMES = 20

#: Volumes read and projected at a time.
_CHUNK_VOLUMES = 32


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ScalingParams:
    """How the targets were scaled, to map predictions back to BOLD units.

    For target column ``j``: ``target = (lowpass(cleaned) - center[j]) / scale[j]`` and
    ``cleaned = (bold - fit) / bold_std[j]``, where ``fit`` is the trend + confound fit.

    Attributes
    ----------
    method : {"absmax", "zscore", "none"}
        Scaling method.
    names : tuple of str
        Target columns.
    center, scale : ndarray, shape (n_targets,)
        Subtracted mean and divisor.
    bold_mean : ndarray, shape (n_targets,)
        Mean of the extracted signal (BOLD units); NaN for precomputed tables.
    bold_std : ndarray, shape (n_targets,)
        SD of the cleaned signal before z-scoring (BOLD units); NaN for precomputed tables.
    lowpass : float | None
        Low-pass cutoff (Hz) applied, None if none.
    filter_order : int
        Butterworth order.
    train_mask : ndarray of bool | None
        Volumes the statistics came from; None means every volume.
    """

    method: str
    names: tuple[str, ...]
    center: NDArray[np.float64]
    scale: NDArray[np.float64]
    bold_mean: NDArray[np.float64]
    bold_std: NDArray[np.float64]
    lowpass: float | None
    filter_order: int
    train_mask: NDArray[np.bool_] | None = None

    def to_cleaned(self, values: NDArray[np.floating]) -> NDArray[np.float64]:
        """Undo the scaling: targets (or predictions) back to z-scored cleaned units."""
        return np.asarray(values, dtype=np.float64) * self.scale + self.center

    def to_percent(self, values: NDArray[np.floating]) -> NDArray[np.float64]:
        """Map targets (or predictions) to percent signal change of the ROI's mean BOLD."""
        return 100.0 * self.to_cleaned(values) * self.bold_std / self.bold_mean

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as JSON-ready data, per column."""

        def per_column(values: NDArray[np.float64]) -> dict[str, float | None]:
            return {
                n: (None if not np.isfinite(v) else float(v))
                for n, v in zip(self.names, values, strict=True)
            }

        return {
            "Method": self.method,
            "Percentile": ABSMAX_PERCENTILE if self.method == "absmax" else None,
            "Epsilon": _ABSMAX_EPSILON if self.method == "absmax" else None,
            "StatisticsFrom": _describe_rows(self.train_mask),
            "Center": per_column(self.center),
            "Scale": per_column(self.scale),
            "BoldMean": per_column(self.bold_mean),
            "BoldStd": per_column(self.bold_std),
        }


@dataclass(frozen=True)
class TargetsResult:
    """ROI targets of one run, with what a report figure needs.

    Attributes
    ----------
    table : pandas.DataFrame
        Final targets, one row per BOLD volume, one column per ROI (global signal last).
    names : tuple of str
        Target column names.
    scaling : ScalingParams
        Scaling statistics (to map predictions back).
    cleaned : pandas.DataFrame
        Detrended, confound-regressed, z-scored signals (before low-pass and scaling).
    raw : pandas.DataFrame
        Extracted signals in BOLD units (before cleaning); for precomputed tables, the
        table as read.
    parameters : dict
        Every setting, ready for the JSON sidecar.
    diagnostics : dict
        ``extent`` (voxels in the mask per ROI; summed map values for maps), ``coverage``
        (that extent over the atlas's own, below 0.5 listed in ``low_coverage``),
        ``confound_r2`` per target, mask and filter details.
    mean_image : ndarray | None
        Mean BOLD volume (for the atlas-overlay figure).
    atlas_image : ndarray of int32 | None
        Atlas on the BOLD grid, ROI number ``position + 1`` per voxel (maps by maximum).
    mask_image : ndarray of bool | None
        Brain mask used.
    affine : ndarray | None
        Affine of those images.
    """

    table: pd.DataFrame
    names: tuple[str, ...]
    scaling: ScalingParams
    cleaned: pd.DataFrame
    raw: pd.DataFrame
    parameters: dict[str, Any]
    diagnostics: dict[str, Any] = field(default_factory=dict)
    mean_image: NDArray[np.float32] | None = None
    atlas_image: NDArray[np.int32] | None = None
    mask_image: NDArray[np.bool_] | None = None
    affine: NDArray[np.float64] | None = None


# --------------------------------------------------------------------------- ROI choice


def normalise_name(name: str) -> str:
    """Return a matching key for an ROI name: case-folded, apostrophes and spaces unified.

    ``"Heschl’s  Gyrus"``, ``"heschl's gyrus"`` and ``"HESCHL`S GYRUS"`` give the same key.
    """
    text = unicodedata.normalize("NFKC", str(name))
    text = re.sub(r"[\u2018\u2019\u201b\u2032\u00b4`]", "'", text)
    return re.sub(r"\s+", " ", text).strip().casefold()


def select_rois(
    available: Sequence[str],
    requested: Sequence[str] | str | None = None,
    *,
    global_signal: bool = True,
) -> tuple[str, ...]:
    """Resolve ``--rois`` against an atlas's ROI names.

    Parameters
    ----------
    available : sequence of str
        The atlas's ROI names (without the global signal).
    requested : sequence of str | str | None
        ROI names (case-insensitive; any apostrophe style), the preset ``paper`` (the
        NeuroBOLT ROIs and the global signal), ``all`` (every atlas ROI) or
        ``global signal``. A string may hold several names separated by commas. None or
        empty means every atlas ROI plus the global signal.
    global_signal : bool
        Whether the global signal is available.

    Returns
    -------
    tuple of str
        Names as the atlas spells them (``GLOBAL_SIGNAL`` for the global signal), in the
        requested order, without duplicates.

    Raises
    ------
    ConfigError
        For unknown names, suggesting close matches.
    """
    items = _split_request(requested)
    if not items:
        return (*available, GLOBAL_SIGNAL) if global_signal else tuple(available)
    by_key = {normalise_name(n): n for n in available}
    if global_signal:
        for alias in (GLOBAL_SIGNAL, *GLOBAL_SIGNAL_ALIASES):
            by_key.setdefault(normalise_name(alias), GLOBAL_SIGNAL)
    chosen: list[str] = []
    unknown: list[str] = []
    for item in items:
        key = normalise_name(item)
        if key in PRESETS:
            expanded: Sequence[str] = PRESETS[key]
        elif key == "all":
            expanded = available
        else:
            expanded = (item,)
        for name in expanded:
            found = by_key.get(normalise_name(name))
            if found is None:
                unknown.append(name)
            elif found not in chosen:
                chosen.append(found)
    if unknown:
        raise ConfigError(
            "unknown ROI name(s): "
            + "; ".join(_suggest(name, by_key) for name in unknown)
            + f". The atlas has {len(available)} ROIs"
            + (f" (e.g. {', '.join(repr(n) for n in list(available)[:5])})." if available else "."),
            fix="Check the spelling (case and apostrophe style do not matter), use the preset "
            "'paper' with the DiFuMo-64 atlas, or leave --rois out for every ROI.",
        )
    return tuple(chosen)


def _split_request(requested: Sequence[str] | str | None) -> list[str]:
    if requested is None:
        return []
    values = [requested] if isinstance(requested, str) else list(requested)
    items: list[str] = []
    for value in values:
        items.extend(part.strip() for part in str(value).split(",") if part.strip())
    return items


def _suggest(name: str, by_key: dict[str, str]) -> str:
    close = difflib.get_close_matches(normalise_name(name), list(by_key), n=3, cutoff=0.6)
    if not close:
        return repr(name)
    return f"{name!r} (did you mean {' or '.join(repr(by_key[c]) for c in close)}?)"


# --------------------------------------------------------------------------- extraction


def extract_targets(
    bold_img: Any,
    atlas: Atlas | ResampledAtlas,
    rois: Sequence[str] | str | None = None,
    *,
    repetition_time: float,
    confounds: Confounds | NDArray[np.floating] | pd.DataFrame | None = None,
    mask_img: Any = None,
    scaling: str = "absmax",
    lowpass: float | None = LOWPASS_HZ,
    filter_order: int = FILTER_ORDER,
    train_mask: NDArray[np.bool_] | Sequence[bool] | None = None,
    detrend: bool = True,
    standardize: bool = True,
) -> TargetsResult:
    """Compute the ROI targets of one BOLD run.

    Parameters
    ----------
    bold_img : nibabel.Nifti1Image
        4-D BOLD in MNI space (fMRIPrep ``desc-preproc_bold``, or raw BOLD whose header
        says MNI152).
    atlas : Atlas | ResampledAtlas
        The atlas; a :class:`ResampledAtlas` on the BOLD grid skips resampling.
    rois : sequence of str | str | None
        See :func:`select_rois`; None means every ROI and the global signal.
    repetition_time : float
        Seconds between volumes (from the BOLD sidecar or the sync table).
    confounds : Confounds | ndarray | DataFrame | None
        Nuisance regressors, one row per volume (see
        :func:`~bids_neurobolt.fmri.confounds.select_confounds`).
    mask_img : nibabel.Nifti1Image | None
        EPI brain mask on the BOLD grid (fMRIPrep ``desc-brain_mask``); None computes one
        from the mean image with nilearn's ``compute_epi_mask``.
    scaling : {"absmax", "zscore", "none"}
        Final scaling (see :func:`scale_targets`).
    lowpass : float | None
        Low-pass cutoff in Hz (None: no filter).
    filter_order : int
        Butterworth order.
    train_mask : array of bool | None
        Volumes of the training part: scaling statistics come from them only.
    detrend, standardize : bool
        Masker cleaning steps (both on in the paper).

    Returns
    -------
    TargetsResult

    Raises
    ------
    DataError
        3-D or too-short BOLD, atlas not overlapping the BOLD or losing ROIs on its grid,
        confounds of the wrong length or with missing values, constant ROI signals.
    ConfigError
        Unknown ROI names or scaling.

    References
    ----------
    .. [1] Li Y, et al. (2024). NeuroBOLT: Resting-state EEG-to-fMRI synthesis with
           multi-dimensional feature mapping. NeurIPS 37.
    .. [2] Dadi K, et al. (2020). Fine-grain atlases of functional modes for fMRI
           analysis. NeuroImage 221:117126.
    """
    _check_scaling(scaling)
    shape, affine = _bold_geometry(bold_img)
    n_volumes = shape[3]
    _check_timing(repetition_time, n_volumes)
    resampled = _on_grid(atlas, affine, shape)
    selected = select_rois(resampled.names, rois)
    confound_matrix, confound_names, strategy = _confound_matrix(confounds, n_volumes)

    if mask_img is None:  # the EPI mask needs the mean image first: read everything
        data = np.asarray(bold_img.dataobj, dtype=np.float32)
        mean = data.mean(axis=3, dtype=np.float64).astype(np.float32)
        mask, mask_origin = (
            _epi_mask(mean, affine),
            "nilearn compute_epi_mask of the mean BOLD image",
        )
        chunks: Iterator[NDArray[np.float32]] = (
            data[..., i : i + _CHUNK_VOLUMES] for i in range(0, n_volumes, _CHUNK_VOLUMES)
        )
    else:
        mask = _given_mask(mask_img, shape[:3], affine)
        mask_origin = "brain mask given with the BOLD (fMRIPrep desc-brain_mask)"
        chunks = _volume_chunks(bold_img, n_volumes)
    mask_flat = mask.ravel(order="F")
    mask_voxels = np.flatnonzero(mask_flat)
    if mask_voxels.size == 0:
        raise DataError(
            "the brain mask is empty on the BOLD grid.",
            path=_image_path(mask_img) if mask_img is not None else None,
            fix="Check that the mask belongs to this run and space (fMRIPrep "
            "space-MNI152NLin2009cAsym desc-brain_mask).",
        )
    projection, kept_rois, coverage = _projection(resampled, mask_flat, mask_voxels, selected)
    raw_values, mean_image = _project(chunks, mask_voxels, projection, shape, bold_img)
    raw = pd.DataFrame(raw_values, columns=[*kept_rois, GLOBAL_SIGNAL])[list(selected)]

    cleaned, bold_std, r2 = clean_signals(
        raw.to_numpy(), confound_matrix, detrend=detrend, standardize=standardize
    )
    _check_constant(selected, bold_std)
    cleaned_df = pd.DataFrame(cleaned, columns=list(selected))
    table, params = scale_targets(
        cleaned_df,
        repetition_time=repetition_time,
        scaling=scaling,
        lowpass=lowpass,
        filter_order=filter_order,
        train_mask=train_mask,
        bold_mean=raw.mean(axis=0).to_numpy(),
        bold_std=bold_std,
    )
    extent = {
        name: round(float(coverage["extent"][name]), 2)
        for name in selected
        if name != GLOBAL_SIGNAL
    }
    extent[GLOBAL_SIGNAL] = float(mask_voxels.size)
    diagnostics = {
        "n_volumes": n_volumes,
        "extent": extent,
        "coverage": {k: round(float(v), 4) for k, v in coverage["fraction"].items()},
        "low_coverage": [k for k, v in coverage["fraction"].items() if v < 0.5],
        "confound_r2": {n: round(float(v), 4) for n, v in zip(selected, r2, strict=True)},
        "mask": mask_origin,
        "mask_voxels": int(mask_voxels.size),
        "lowpass_applied": params.lowpass is not None,
    }
    if diagnostics["low_coverage"]:
        logger.warning(
            "ROI(s) with less than half of their atlas extent inside the brain mask: %s",
            ", ".join(diagnostics["low_coverage"]),
        )
    parameters = _parameters(
        resampled,
        selected,
        mask_origin=mask_origin,
        strategy=strategy,
        confound_names=confound_names,
        detrend=detrend,
        standardize=standardize,
        params=params,
        repetition_time=repetition_time,
        requested_lowpass=lowpass,
    )
    return TargetsResult(
        table=table,
        names=tuple(selected),
        scaling=params,
        cleaned=cleaned_df,
        raw=raw,
        parameters=parameters,
        diagnostics=diagnostics,
        mean_image=mean_image,
        atlas_image=resampled.label_image(),
        mask_image=mask,
        affine=affine,
    )


def _bold_geometry(bold_img: Any) -> tuple[tuple[int, ...], NDArray[np.float64]]:
    shape = tuple(int(n) for n in bold_img.shape)
    if len(shape) != 4 or shape[3] < 2:
        raise DataError(
            f"the BOLD image is {len(shape)}-D with shape {shape}; ROI targets need a 4-D "
            "run (x, y, z, volumes).",
            path=_image_path(bold_img),
            fix="Pass the preprocessed 4-D time series (fMRIPrep desc-preproc_bold), not a "
            "single volume, mean or reference image.",
        )
    return shape, np.asarray(bold_img.affine, dtype=np.float64)


def _volume_chunks(bold_img: Any, n_volumes: int) -> Iterator[NDArray[np.float32]]:
    """Yield the run a few volumes at a time, reading the file once.

    Consecutive slices of a file proxy continue where the previous one stopped when the
    image keeps its file open (``nibabel.load(path, keep_file_open=True)``, as
    :func:`bids_neurobolt.bids.fmriprep.open_bold` does); otherwise a compressed file
    would be decompressed from its start for every slice, so it is read whole instead.
    """
    proxy = bold_img.dataobj
    streaming = not isinstance(proxy, np.ndarray) and (
        getattr(proxy, "_keep_file_open", False)
        or not str(_image_path(bold_img) or "").endswith(".gz")
    )
    if not streaming:
        proxy = np.asarray(proxy, dtype=np.float32)
    for start in range(0, n_volumes, _CHUNK_VOLUMES):
        yield np.asarray(proxy[..., start : start + _CHUNK_VOLUMES], dtype=np.float32)


def _image_path(img: Any) -> str | None:
    try:
        name = img.get_filename()
    except AttributeError:
        return None
    return str(name) if name else None


def _check_scaling(scaling: str) -> None:
    if scaling not in SCALINGS:
        raise ConfigError(
            f"scaling must be one of {', '.join(SCALINGS)}. Got {scaling!r}.",
            fix="'absmax' (the paper's: divide by the 95th percentile of |x|) is the default.",
        )


def _check_timing(repetition_time: float, n_volumes: int) -> None:
    if not np.isfinite(repetition_time) or repetition_time <= 0:
        raise DataError(
            f"the repetition time must be a positive number of seconds. Got {repetition_time!r}."
        )
    if n_volumes < MIN_VOLUMES:
        raise DataError(
            f"the BOLD run has {n_volumes} volumes; ROI targets need at least {MIN_VOLUMES} "
            "(detrending, confound regression and the zero-phase low-pass filter).",
            fix="Use a longer run.",
        )


def _on_grid(
    atlas: Atlas | ResampledAtlas, affine: NDArray[np.float64], shape: Sequence[int]
) -> ResampledAtlas:
    if isinstance(atlas, ResampledAtlas):
        if not atlas.matches(affine, shape):
            raise DataError(
                f"the atlas '{atlas.label}' was resampled to a {atlas.shape} grid, but the "
                f"BOLD grid is {tuple(shape[:3])} with another affine.",
                path=atlas.source,
                fix="Resample the atlas to this run's grid (resample_atlas_cached).",
            )
        return atlas
    return resample_atlas(atlas, affine, shape)


def _confound_matrix(
    confounds: Confounds | NDArray[np.floating] | pd.DataFrame | None, n_volumes: int
) -> tuple[NDArray[np.float64], tuple[str, ...], str]:
    if confounds is None:
        return np.zeros((n_volumes, 0)), (), "none"
    if isinstance(confounds, Confounds):
        matrix = check_confound_matrix(confounds.values, n_volumes)
        return matrix, confounds.names, confounds.strategy
    if isinstance(confounds, pd.DataFrame):
        matrix = check_confound_matrix(confounds.to_numpy(dtype=float), n_volumes)
        return matrix, tuple(str(c) for c in confounds.columns), "custom"
    matrix = check_confound_matrix(np.asarray(confounds, dtype=float), n_volumes)
    return matrix, tuple(f"confound_{i}" for i in range(matrix.shape[1])), "custom"


def _epi_mask(mean: NDArray[np.float32], affine: NDArray[np.float64]) -> NDArray[np.bool_]:
    import nibabel as nib
    from nilearn.masking import compute_epi_mask

    image = nib.Nifti1Image(np.nan_to_num(mean), affine)
    return (np.asarray(compute_epi_mask(image).dataobj) > 0) & np.isfinite(mean)


def _given_mask(
    mask_img: Any, shape: Sequence[int], affine: NDArray[np.float64]
) -> NDArray[np.bool_]:
    mask_data = np.asarray(mask_img.dataobj)
    if mask_data.ndim == 4 and mask_data.shape[3] == 1:
        mask_data = mask_data[..., 0]
    if mask_data.shape != tuple(shape) or not np.allclose(
        np.asarray(mask_img.affine), affine, atol=1e-3
    ):
        raise DataError(
            f"the brain mask grid {mask_data.shape} does not match the BOLD grid "
            f"{tuple(shape)} (or their affines differ).",
            path=_image_path(mask_img),
            fix="Use the desc-brain_mask written by fMRIPrep for this run, in the same space "
            "and resolution as the BOLD.",
        )
    return mask_data > 0


def _projection(
    atlas: ResampledAtlas,
    mask_flat: NDArray[np.bool_],
    mask_voxels: NDArray[np.int64],
    selected: Sequence[str],
) -> tuple[Any, list[str], dict[str, dict[str, float]]]:
    """Matrix (n_rois + 1, n_mask_voxels) giving ROI signals and the global signal.

    Maps: rows of the pseudo-inverse of the maps restricted to the mask (least squares,
    as nilearn's NiftiMapsMasker). Labels: 1/n over each label's voxels. Last row: 1/n
    over the mask (the global signal).
    """
    from scipy import sparse
    from scipy.linalg import pinvh

    inside = mask_flat[atlas.voxels]
    columns = np.searchsorted(mask_voxels, atlas.voxels[inside])
    mass = atlas.mass(inside)
    fraction = np.divide(
        mass, atlas.native_mass, out=np.zeros_like(mass), where=atlas.native_mass > 0
    )
    empty = [n for n, m in zip(atlas.names, mass, strict=True) if m <= 0]
    lost = [n for n in empty if n in selected]
    if lost:
        raise DataError(
            f"{len(lost)} ROI(s) of the atlas '{atlas.label}' have no voxel inside the brain "
            f"mask on the BOLD grid ({atlas.shape}, voxel "
            f"{_voxel_size(atlas.affine)} mm): {', '.join(lost[:10])}"
            f"{', ...' if len(lost) > 10 else ''}. The atlas is in another space or its ROIs "
            "are too small for this resolution.",
            path=atlas.source,
            fix="Use an MNI152 atlas whose ROIs are larger than a few BOLD voxels, or leave "
            "these ROIs out with --rois.",
        )
    keep = [i for i, n in enumerate(atlas.names) if n not in empty]
    n_mask = mask_voxels.size
    if atlas.kind == "maps":
        assert atlas.weights is not None
        maps = atlas.weights[inside][:, keep].astype(np.float64)
        # pinv(M) = pinv(M'M) M': a 64 x 64 problem instead of an SVD of the tall M.
        pinv = pinvh(maps.T @ maps) @ maps.T  # (n_rois, n_inside)
        rows = np.zeros((len(keep) + 1, n_mask), dtype=np.float32)
        rows[: len(keep), columns] = pinv
        rows[-1] = 1.0 / n_mask
        projection: Any = rows
    else:
        assert atlas.labels is not None
        position = {old: new for new, old in enumerate(keep)}
        labels = np.array([position[int(v)] for v in atlas.labels[inside]], dtype=np.int64)
        counts = np.bincount(labels, minlength=len(keep)).astype(float)
        row_index = np.concatenate([labels, np.full(n_mask, len(keep))])
        col_index = np.concatenate([columns, np.arange(n_mask)])
        values = np.concatenate([1.0 / counts[labels], np.full(n_mask, 1.0 / n_mask)])
        projection = sparse.csc_matrix(
            (values, (row_index, col_index)), shape=(len(keep) + 1, n_mask)
        )
    names = [atlas.names[i] for i in keep]
    coverage = {
        "extent": dict(zip(atlas.names, mass, strict=True)),
        "fraction": {n: f for n, f in zip(atlas.names, fraction, strict=True) if n in selected},
    }
    return projection, names, coverage


def _project(
    chunks: Iterable[NDArray[np.float32]],
    mask_voxels: NDArray[np.int64],
    projection: Any,
    shape: Sequence[int],
    bold_img: Any,
) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
    """Apply the projection to the masked BOLD, a chunk of volumes at a time.

    Each voxel's level in the first chunk is removed before the float32 product and
    added back in float64, so the product keeps full precision for small fluctuations.

    Returns
    -------
    signals : ndarray, shape (n_volumes, n_rois + 1)
    mean_image : ndarray, shape (nx, ny, nz)
    """
    n_volumes = int(shape[3])
    out = np.empty((projection.shape[0], n_volumes), dtype=np.float64)
    total = np.zeros(int(np.prod(shape[:3])), dtype=np.float64)
    level: NDArray[np.float64] | None = None
    start = 0
    for chunk in chunks:
        flat = chunk.reshape(-1, chunk.shape[3], order="F")
        total += flat.sum(axis=1, dtype=np.float64)
        block = flat[mask_voxels]
        if not np.isfinite(block).all():
            bad = int((~np.isfinite(block).all(axis=1)).sum())
            raise DataError(
                f"the BOLD run has NaN or infinite values in {bad} voxel(s) inside the brain mask.",
                path=_image_path(bold_img),
                fix="Check the preprocessing output; fMRIPrep writes finite values.",
            )
        if level is None:
            level = block.mean(axis=1, dtype=np.float64)
        centred = block - level.astype(np.float32)[:, None]
        stop = start + chunk.shape[3]
        out[:, start:stop] = projection @ centred
        start = stop
    assert level is not None
    out += np.asarray(projection @ level, dtype=np.float64).reshape(-1, 1)
    mean_image = (total / n_volumes).astype(np.float32).reshape(tuple(shape[:3]), order="F")
    return out.T, mean_image


def _voxel_size(affine: NDArray[np.float64]) -> str:
    sizes = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return "x".join(f"{s:g}" for s in np.round(sizes, 2))


def _check_constant(names: Sequence[str], bold_std: NDArray[np.float64]) -> None:
    flat = [n for n, s in zip(names, bold_std, strict=True) if not s > 0]
    if flat:
        raise DataError(
            f"the signal of {', '.join(flat)} is constant after detrending and confound "
            "regression (ROI outside the brain or field of view, or BOLD without variance?).",
            fix="Check the BOLD run and the atlas, or leave these ROIs out with --rois.",
        )


# --------------------------------------------------------------------------- cleaning


def clean_signals(
    signals: NDArray[np.floating],
    confounds: NDArray[np.floating] | None = None,
    *,
    detrend: bool = True,
    standardize: bool = True,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Detrend, regress out confounds and z-score ROI signals (nilearn masker semantics).

    Each column is regressed jointly on a constant, a linear trend (``detrend``) and the
    confounds; by the Frisch-Waugh-Lovell theorem this equals nilearn's ``signal.clean``
    with ``detrend=True, standardize_confounds=True`` (detrend signals and confounds,
    then project out the confounds). The residual is z-scored with ``ddof=1``.

    Parameters
    ----------
    signals : ndarray, shape (n_volumes, n_signals)
        Extracted ROI signals.
    confounds : ndarray, shape (n_volumes, n_confounds) | None
        Nuisance regressors (finite).
    detrend : bool
        Remove a linear trend (the mean is always removed).
    standardize : bool
        Divide by the residual SD.

    Returns
    -------
    cleaned : ndarray, shape (n_volumes, n_signals)
        The cleaned signals.
    residual_std : ndarray, shape (n_signals,)
        SD of the residual before z-scoring (BOLD units), to map back.
    confound_r2 : ndarray, shape (n_signals,)
        Share of the detrended signal's variance explained by the confounds.

    References
    ----------
    .. [1] Friston KJ, et al. (1996). Movement-related effects in fMRI time-series.
           Magnetic Resonance in Medicine 35:346-355.
    """
    y = np.asarray(signals, dtype=np.float64)
    n = y.shape[0]
    base = [np.ones(n)]
    if detrend:
        base.append(np.linspace(-1.0, 1.0, n))
    trend = np.column_stack(base)
    detrended = y - trend @ np.linalg.lstsq(trend, y, rcond=None)[0]
    residual = detrended
    if confounds is not None and np.asarray(confounds).size:
        c = np.asarray(confounds, dtype=np.float64)
        c_sd = c.std(axis=0)
        c = (c - c.mean(axis=0)) / np.where(c_sd > 0, c_sd, 1.0)
        design = np.column_stack([trend, c])
        residual = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
    ss_detrended = (detrended**2).sum(axis=0)
    r2 = 1.0 - np.divide(
        (residual**2).sum(axis=0),
        ss_detrended,
        out=np.ones_like(ss_detrended),
        where=ss_detrended > 0,
    )
    std = residual.std(axis=0, ddof=1)
    scale = np.where(std > 0, std, 1.0) if standardize else np.ones_like(std)
    return residual / scale, std, r2


# --------------------------------------------------------------------------- filtering and scaling


def lowpass_filter(
    values: NDArray[np.floating],
    repetition_time: float,
    cutoff: float = LOWPASS_HZ,
    order: int = FILTER_ORDER,
) -> NDArray[np.float64]:
    """Zero-phase Butterworth low-pass along the first axis (the NeuroBOLT targets' filter).

    Parameters
    ----------
    values : ndarray, shape (n_volumes, ...)
        Signals, one row per volume.
    repetition_time : float
        Seconds between rows.
    cutoff : float
        Cutoff in Hz (0.15 in the paper).
    order : int
        Filter order (5 in the paper).

    Returns
    -------
    ndarray
        Filtered forward and backward (``scipy.signal.filtfilt``, odd padding).

    References
    ----------
    .. [1] Li Y, et al. (2024). NeuroBOLT. NeurIPS 37 (code: ``preproc.py``).
    """
    from scipy.signal import butter, filtfilt

    nyquist = 0.5 / repetition_time
    b, a = butter(order, cutoff / nyquist, btype="low")
    return filtfilt(b, a, np.asarray(values, dtype=np.float64), axis=0)


def scale_targets(
    table: pd.DataFrame,
    *,
    repetition_time: float,
    scaling: str = "absmax",
    lowpass: float | None = LOWPASS_HZ,
    filter_order: int = FILTER_ORDER,
    train_mask: NDArray[np.bool_] | Sequence[bool] | None = None,
    bold_mean: NDArray[np.floating] | None = None,
    bold_std: NDArray[np.floating] | None = None,
) -> tuple[pd.DataFrame, ScalingParams]:
    """Low-pass and scale cleaned ROI signals into NeuroBOLT targets.

    Parameters
    ----------
    table : pandas.DataFrame
        Cleaned signals, one row per volume (e.g. a precomputed z-scored ROI table).
    repetition_time : float
        Seconds between rows.
    scaling : {"absmax", "zscore", "none"}
        ``absmax``: ``(x - mean) / (P95(|x - mean|) + 1e-8)`` (the paper's default);
        ``zscore``: ``(x - mean) / sd``; ``none``: unchanged.
    lowpass : float | None
        Cutoff in Hz; None (or a cutoff at or above Nyquist) skips the filter.
    filter_order : int
        Butterworth order.
    train_mask : array of bool | None
        Rows the statistics come from (the training part of a split); None: all rows.
    bold_mean, bold_std : array | None
        Per-column extraction mean and cleaning SD, stored for mapping back.

    Returns
    -------
    targets : pandas.DataFrame
        Same shape and columns.
    params : ScalingParams

    Raises
    ------
    DataError
        On missing values in the table or a bad ``train_mask``.

    References
    ----------
    .. [1] Li Y, et al. (2024). NeuroBOLT. NeurIPS 37 (code: ``preproc.normalize_data``,
           mode ``absmax``).
    """
    _check_scaling(scaling)
    values = table.to_numpy(dtype=np.float64)
    n_rows, n_cols = values.shape
    bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
    if bad.size:
        raise DataError(
            f"the ROI table has missing values in {bad.size} row(s) (rows "
            f"{', '.join(str(int(r)) for r in bad[:8])}{', ...' if bad.size > 8 else ''}).",
            fix="Targets need a value for every volume; regenerate the table.",
        )
    mask = _train_mask(train_mask, n_rows)
    applied: float | None = None
    if lowpass is not None:
        if n_rows < MIN_VOLUMES:
            raise DataError(
                f"the ROI table has {n_rows} rows; filtering needs at least {MIN_VOLUMES}."
            )
        if lowpass < 0.5 / repetition_time:
            values = lowpass_filter(values, repetition_time, lowpass, filter_order)
            applied = float(lowpass)
        else:
            logger.warning(
                "low-pass cutoff %.3g Hz is at or above the Nyquist frequency %.3g Hz "
                "(TR %.3g s): no low-pass filter applied.",
                lowpass,
                0.5 / repetition_time,
                repetition_time,
            )
    fit = values[mask]
    if scaling == "none":
        center, scale = np.zeros(n_cols), np.ones(n_cols)
    else:
        center = fit.mean(axis=0)
        if scaling == "absmax":
            scale = np.percentile(np.abs(fit - center), ABSMAX_PERCENTILE, axis=0) + _ABSMAX_EPSILON
        else:
            sd = fit.std(axis=0, ddof=1)
            scale = np.where(sd > 0, sd, 1.0)
    names = tuple(str(c) for c in table.columns)
    params = ScalingParams(
        method=scaling,
        names=names,
        center=center,
        scale=scale,
        bold_mean=_per_column(bold_mean, n_cols),
        bold_std=_per_column(bold_std, n_cols),
        lowpass=applied,
        filter_order=filter_order,
        train_mask=None if train_mask is None else mask,
    )
    scaled = pd.DataFrame((values - center) / scale, columns=list(names), index=table.index)
    return scaled, params


def targets_from_table(
    table: pd.DataFrame,
    rois: Sequence[str] | str | None = None,
    *,
    repetition_time: float,
    scaling: str = "absmax",
    lowpass: float | None = LOWPASS_HZ,
    filter_order: int = FILTER_ORDER,
    train_mask: NDArray[np.bool_] | Sequence[bool] | None = None,
    atlas_label: str | None = None,
) -> TargetsResult:
    """Targets from a precomputed, already cleaned ROI table (``--targets-dir``).

    The table's columns are the ROIs (the NeuroBOLT release's ``global signal clean`` is
    read as the global signal); only the low-pass filter and the scaling are applied.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per volume, one column per ROI (e.g. z-scored DiFuMo-64 signals).
    rois : sequence of str | str | None
        See :func:`select_rois`; None keeps every column.
    repetition_time : float
        Seconds between rows.
    scaling, lowpass, filter_order, train_mask
        See :func:`scale_targets`.
    atlas_label : str | None
        Recorded in the parameters.

    Returns
    -------
    TargetsResult
        Without images (none exist for a precomputed table).

    Raises
    ------
    DataError
        Requested ROIs missing from the table (the "missing columns" case), missing values.
    """
    renamed = _alias_global(table)
    has_global = GLOBAL_SIGNAL in renamed.columns
    available = [str(c) for c in renamed.columns if c != GLOBAL_SIGNAL]
    try:
        selected = select_rois(available, rois, global_signal=has_global)
    except ConfigError as exc:
        raise DataError(
            f"the precomputed ROI table lacks requested column(s): {exc.problem}",
            fix="Choose ROIs among the table's columns with --rois, or use a table that has them.",
        ) from None
    cleaned = renamed[list(selected)].apply(pd.to_numeric, errors="coerce")
    targets, params = scale_targets(
        cleaned,
        repetition_time=repetition_time,
        scaling=scaling,
        lowpass=lowpass,
        filter_order=filter_order,
        train_mask=train_mask,
    )
    parameters = {
        "Atlas": atlas_label,
        "Input": "precomputed ROI table (already extracted and cleaned)",
        "LowPass": _lowpass_parameters(params, lowpass, filter_order),
        "Scaling": params.to_dict(),
    }
    return TargetsResult(
        table=targets,
        names=selected,
        scaling=params,
        cleaned=cleaned.reset_index(drop=True),
        raw=renamed,
        parameters=parameters,
        diagnostics={"n_volumes": len(table), "lowpass_applied": params.lowpass is not None},
    )


def _alias_global(table: pd.DataFrame) -> pd.DataFrame:
    if GLOBAL_SIGNAL in table.columns:
        return table
    keys = {normalise_name(a) for a in GLOBAL_SIGNAL_ALIASES}
    for column in table.columns:
        if normalise_name(column) in keys:
            return table.rename(columns={column: GLOBAL_SIGNAL})
    return table


def _train_mask(
    train_mask: NDArray[np.bool_] | Sequence[bool] | None, n_rows: int
) -> NDArray[np.bool_]:
    if train_mask is None:
        return np.ones(n_rows, dtype=bool)
    mask = np.asarray(train_mask)
    if mask.dtype != bool or mask.shape != (n_rows,):
        raise DataError(
            f"the training mask must be {n_rows} booleans (one per volume); got "
            f"{mask.dtype} with shape {mask.shape}."
        )
    if mask.sum() < 10:
        raise DataError(
            f"the training part has {int(mask.sum())} volumes; scaling statistics need at least 10."
        )
    return mask


def _per_column(values: NDArray[np.floating] | None, n: int) -> NDArray[np.float64]:
    if values is None:
        return np.full(n, np.nan)
    return np.asarray(values, dtype=np.float64).reshape(n)


def _describe_rows(mask: NDArray[np.bool_] | None) -> str:
    if mask is None:
        return "all volumes"
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    ranges = [f"{a}-{b - 1}" for a, b in zip(edges[::2], edges[1::2], strict=True)]
    return f"training volumes {', '.join(ranges)} ({int(mask.sum())} of {mask.size})"


def _lowpass_parameters(
    params: ScalingParams, requested: float | None, order: int
) -> dict[str, Any]:
    return {
        "Filter": "Butterworth low-pass, zero-phase (scipy.signal.filtfilt, odd padding)",
        "CutoffHz": requested,
        "Order": order,
        "Applied": params.lowpass is not None,
    }


def _parameters(
    atlas: ResampledAtlas,
    selected: Sequence[str],
    *,
    mask_origin: str,
    strategy: str,
    confound_names: Sequence[str],
    detrend: bool,
    standardize: bool,
    params: ScalingParams,
    repetition_time: float,
    requested_lowpass: float | None,
) -> dict[str, Any]:
    summary = (
        "least-squares regression of the probabilistic maps on each volume "
        "(nilearn NiftiMapsMasker semantics), maps restricted to the brain mask"
        if atlas.kind == "maps"
        else "mean over each label's voxels inside the brain mask (NiftiLabelsMasker semantics)"
    )
    return {
        "Atlas": atlas.label,
        "AtlasSource": atlas.source,
        "AtlasTemplate": atlas.template,
        "AtlasKind": atlas.kind,
        "AtlasResampling": "nearest neighbour" if atlas.kind == "labels" else "trilinear",
        "ROISummary": summary,
        "GlobalSignal": "mean over the brain mask, cleaned like the ROIs",
        "Mask": mask_origin,
        "RepetitionTime": repetition_time,
        "Detrend": "linear" if detrend else "mean only",
        "ConfoundStrategy": strategy,
        "Confounds": list(confound_names),
        "StandardizeConfounds": True,
        "Standardize": "zscore (ddof=1)" if standardize else False,
        "LowPass": _lowpass_parameters(params, requested_lowpass, params.filter_order),
        "Scaling": params.to_dict(),
        "ROIs": list(selected),
    }
