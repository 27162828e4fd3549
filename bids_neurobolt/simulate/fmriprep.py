"""fMRIPrep-style derivatives for a simulated dataset, with planted head motion.

:func:`simulate_fmriprep` reads every BOLD run of a dataset written by
:func:`~bids_neurobolt.simulate.simulate_dataset` (already in MNI152NLin2009cAsym) and
writes what fMRIPrep would give for it::

    <out>/dataset_description.json
    <out>/sub-<l>/[ses-<s>/]func/<run>_space-MNI152NLin2009cAsym_desc-preproc_bold.nii.gz|.json
    <out>/sub-<l>/[ses-<s>/]func/<run>_space-MNI152NLin2009cAsym_desc-brain_mask.nii.gz|.json
    <out>/sub-<l>/[ses-<s>/]func/<run>_desc-confounds_timeseries.tsv|.json

The preprocessed BOLD is the raw BOLD plus the intensity change that the planted head
motion would cause to first order: a voxel at ``r`` moved by ``t + w x r`` (translation
``t`` in mm, small rotation ``w`` in rad about the grid centre) sees
``dI = -grad(I) . (t + w x r) = -grad(I) . t - (r x grad(I)) . w``. That is linear in the
six motion parameters with a fixed map per parameter, so regressing the confounds
table's motion columns out of any ROI signal removes it exactly, which is what a test
can check. The confounds table carries the motion parameters (``trans_x/y/z`` mm,
``rot_x/y/z`` rad) with fMRIPrep's derivatives and squares, ``framewise_displacement``,
and mean ``global_signal``, ``white_matter`` and ``csf`` signals (tissues approximated
by intensity classes of the mean image).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter1d

from bids_neurobolt import __version__
from bids_neurobolt.errors import MissingInputError, OutputError
from bids_neurobolt.simulate.bidswrite import nifti_image
from bids_neurobolt.simulate.bold import SPACE, load_anatomy, mni_grid, voxel_coordinates

#: Motion columns in fMRIPrep's order and units (mm, rad).
MOTION_COLUMNS: tuple[str, ...] = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")

_RUN = re.compile(
    r"^(?P<stem>sub-[^_]+(?:_ses-[^_]+)?_task-[^_]+(?:_[a-z]+-[^_]+)*)_bold\.nii(\.gz)?$"
)
_HEAD_RADIUS_MM = 50.0  # converts rotations to displacement for framewise displacement


@dataclass(frozen=True)
class FmriprepRunSimulation:
    """One simulated fMRIPrep run.

    Attributes
    ----------
    raw_bold : Path
        The raw BOLD it was made from.
    preproc_bold, brain_mask, confounds : Path
        The files written.
    motion : ndarray, shape (n_volumes, 6)
        Planted motion (mm, rad), as in the confounds table.
    """

    raw_bold: Path
    preproc_bold: Path
    brain_mask: Path
    confounds: Path
    motion: NDArray[np.float64]


def simulate_fmriprep(
    bids_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    translation_mm: float = 0.3,
    rotation_deg: float = 0.3,
    overwrite: bool = False,
) -> list[FmriprepRunSimulation]:
    """Write fMRIPrep-style derivatives (with planted motion) for a simulated dataset.

    Parameters
    ----------
    bids_root : path-like
        A dataset written by :func:`~bids_neurobolt.simulate.simulate_dataset`.
    out_dir : path-like | None
        Derivatives folder; default ``<bids_root>/derivatives/fmriprep``.
    seed : int
        Seed of the motion.
    translation_mm, rotation_deg : float
        Typical size (SD) of the planted translations and rotations.
    overwrite : bool
        Replace an existing ``out_dir``.

    Returns
    -------
    list of FmriprepRunSimulation
        One per BOLD run, in file-name order.

    Raises
    ------
    MissingInputError
        If the dataset has no BOLD run.
    OutputError
        If ``out_dir`` exists and ``overwrite`` is false.
    """
    import nibabel as nib

    root = Path(bids_root)
    out = Path(out_dir) if out_dir is not None else root / "derivatives" / "fmriprep"
    runs = sorted(p for p in root.glob("sub-*/**/func/*_bold.nii*") if _RUN.match(p.name))
    if not runs:
        raise MissingInputError(
            "no BOLD run (sub-*/[ses-*/]func/*_bold.nii.gz) in the dataset.",
            path=root,
            fix="Simulate a dataset with bids-neurobolt-simulate first.",
        )
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputError(
                "the fMRIPrep derivatives folder exists and is not empty.",
                path=out,
                fix="Choose another folder or pass overwrite=True.",
            )
        shutil.rmtree(out)
    _write_json(
        out / "dataset_description.json",
        {
            "Name": "Simulated fMRIPrep derivatives",
            "BIDSVersion": "1.10.0",
            "DatasetType": "derivative",
            "GeneratedBy": [
                {
                    "Name": "bids-neurobolt-simulate",
                    "Version": __version__,
                    "Description": "fMRIPrep-style outputs with planted head motion "
                    "(bids_neurobolt.simulate.fmriprep).",
                }
            ],
        },
    )
    results = []
    for index, raw_path in enumerate(runs):
        rng = np.random.default_rng([seed, 3, index])
        image = nib.load(raw_path)
        tr = float(json.loads(_sidecar(raw_path).read_text(encoding="utf-8"))["RepetitionTime"])
        raw = np.asarray(image.dataobj, dtype=np.float32)
        motion = planted_motion(rng, raw.shape[3], tr, translation_mm, np.deg2rad(rotation_deg))
        mean = raw.mean(axis=3)
        coefficients = motion_maps(mean, image.affine)
        preproc = raw + np.tensordot(coefficients, motion.T, axes=(0, 0)).astype(np.float32)
        brain = brain_mask(image.affine, mean)
        stem = _RUN.match(raw_path.name)["stem"]  # type: ignore[index]
        func = out / raw_path.parent.relative_to(root)
        bold_path = func / f"{stem}_space-{SPACE}_desc-preproc_bold.nii.gz"
        mask_path = func / f"{stem}_space-{SPACE}_desc-brain_mask.nii.gz"
        conf_path = func / f"{stem}_desc-confounds_timeseries.tsv"
        func.mkdir(parents=True, exist_ok=True)
        nib.save(nifti_image(preproc, image.affine, tr), bold_path)
        _write_json(
            bold_path.with_name(bold_path.name.replace(".nii.gz", ".json")),
            {"RepetitionTime": tr, "SkullStripped": False, "TaskName": _task(stem)},
        )
        nib.save(nifti_image(brain.astype(np.uint8), image.affine), mask_path)
        _write_json(
            mask_path.with_name(mask_path.name.replace(".nii.gz", ".json")),
            {"Type": "Brain", "RawSources": [str(raw_path.relative_to(root))]},
        )
        table = confounds_table(motion, preproc, brain, mean)
        table.to_csv(conf_path, sep="\t", index=False, na_rep="n/a", lineterminator="\n")
        _write_json(conf_path.with_suffix(".json"), _confounds_sidecar(table))
        results.append(FmriprepRunSimulation(raw_path, bold_path, mask_path, conf_path, motion))
    return results


def brain_mask(affine: NDArray[np.float64], mean: NDArray[np.floating]) -> NDArray[np.bool_]:
    """Brain mask of a simulated run: the simulator's own when the grid is its MNI grid.

    Parameters
    ----------
    affine : ndarray, shape (4, 4)
        The run's affine.
    mean : ndarray, shape (nx, ny, nz)
        Mean image (thresholded at half its median when the grid is not the simulator's).

    Returns
    -------
    ndarray of bool
    """
    resolution = float(abs(affine[0, 0]))
    grid_affine, grid_shape = mni_grid(resolution)
    if tuple(mean.shape) == tuple(grid_shape) and np.allclose(grid_affine, affine, atol=1e-3):
        return load_anatomy(resolution).brain.copy()
    inside = mean[mean > 0]
    return mean > 0.5 * np.median(inside) if inside.size else mean > 0


def planted_motion(
    rng: np.random.Generator, n_volumes: int, tr: float, translation_mm: float, rotation_rad: float
) -> NDArray[np.float64]:
    """Draw head motion: a slow drift plus a few abrupt shifts, per parameter.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random generator.
    n_volumes : int
        Number of volumes.
    tr : float
        Repetition time (s).
    translation_mm, rotation_rad : float
        SD of the translations and rotations.

    Returns
    -------
    ndarray, shape (n_volumes, 6)
        ``trans_x, trans_y, trans_z`` (mm) and ``rot_x, rot_y, rot_z`` (rad).
    """
    drift = gaussian_filter1d(rng.standard_normal((n_volumes, 6)).cumsum(axis=0), 20.0 / tr, axis=0)
    jumps = np.zeros((n_volumes, 6))
    for _ in range(max(1, n_volumes // 60)):
        at = int(rng.integers(1, n_volumes))
        jumps[at:] += rng.standard_normal(6)
    motion = drift - drift.mean(axis=0) + 0.5 * (jumps - jumps.mean(axis=0))
    motion /= np.where(motion.std(axis=0) > 0, motion.std(axis=0), 1.0)
    return motion * np.array([translation_mm] * 3 + [rotation_rad] * 3)


def motion_maps(mean: NDArray[np.floating], affine: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-voxel intensity change per unit of each motion parameter (first order).

    Parameters
    ----------
    mean : ndarray, shape (nx, ny, nz)
        Mean BOLD image.
    affine : ndarray, shape (4, 4)
        Voxel-to-world affine (axis-aligned).

    Returns
    -------
    ndarray, shape (6, nx, ny, nz)
        ``-dI/dx, -dI/dy, -dI/dz`` (per mm) and ``-(r x grad I)`` (per rad), with ``r`` the
        position relative to the grid centre.
    """
    sizes = np.abs(np.diag(np.asarray(affine)[:3, :3]))
    grad = np.stack(np.gradient(np.asarray(mean, dtype=np.float64), *sizes))
    xyz = voxel_coordinates(np.asarray(affine, dtype=float), mean.shape)
    centre = xyz.reshape(3, -1).mean(axis=1).reshape(3, 1, 1, 1)
    torque = np.cross(xyz - centre, grad, axis=0)
    return -np.concatenate([grad, torque])


def confounds_table(
    motion: NDArray[np.float64],
    bold: NDArray[np.float32],
    brain: NDArray[np.bool_],
    mean: NDArray[np.floating],
) -> pd.DataFrame:
    """Build an fMRIPrep-style confounds table.

    Parameters
    ----------
    motion : ndarray, shape (n_volumes, 6)
        Motion parameters (mm, rad).
    bold : ndarray, shape (nx, ny, nz, n_volumes)
        Preprocessed BOLD.
    brain : ndarray of bool
        Brain mask.
    mean : ndarray
        Mean image, whose brightest and darkest brain voxels stand for white matter and CSF.

    Returns
    -------
    pandas.DataFrame
        Columns ``global_signal, csf, white_matter``, the motion parameters with
        ``_derivative1``, ``_power2`` and ``_derivative1_power2`` columns (first-row
        derivatives ``NaN``), and ``framewise_displacement`` (Power et al. 2012).
    """
    flat = bold.reshape(-1, bold.shape[3])
    inside = mean[brain]
    wm = brain & (mean >= np.percentile(inside, 85))
    csf = brain & (mean <= np.percentile(inside, 10))
    table: dict[str, Any] = {
        "global_signal": flat[brain.ravel()].mean(axis=0),
        "csf": flat[csf.ravel()].mean(axis=0),
        "white_matter": flat[wm.ravel()].mean(axis=0),
    }
    for column, values in zip(MOTION_COLUMNS, motion.T, strict=True):
        derivative = np.concatenate([[np.nan], np.diff(values)])
        table[column] = values
        table[f"{column}_derivative1"] = derivative
        table[f"{column}_power2"] = values**2
        table[f"{column}_derivative1_power2"] = derivative**2
    step = np.abs(np.diff(motion, axis=0))
    fd = step[:, :3].sum(axis=1) + _HEAD_RADIUS_MM * step[:, 3:].sum(axis=1)
    table["framewise_displacement"] = np.concatenate([[np.nan], fd])
    return pd.DataFrame(table)


def _confounds_sidecar(table: pd.DataFrame) -> dict[str, Any]:
    units = {"trans": "mm", "rot": "rad"}
    sidecar: dict[str, Any] = {}
    for column in table.columns:
        kind = column.split("_")[0]
        sidecar[column] = {
            "Description": f"simulated {column.replace('_', ' ')}",
            **({"Units": units[kind]} if kind in units and "power2" not in column else {}),
        }
    return sidecar


def _sidecar(path: Path) -> Path:
    name = path.name
    stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else path.stem
    return path.with_name(stem + ".json")


def _task(stem: str) -> str:
    match = re.search(r"_task-([^_]+)", stem)
    return match.group(1) if match else ""


def _write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
