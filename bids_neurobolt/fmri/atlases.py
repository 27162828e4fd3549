"""Atlases: the registry, the offline cache, user atlases in BIDS form, resampling.

Atlases are never downloaded while the app runs. ``bids-neurobolt-fetch`` (or
:func:`fetch_atlas`) calls nilearn's fetchers once, on a machine with network (the
container build), and stores each atlas in the cache folder in BIDS-Atlas form::

    <cache>/atlases/atlas-<Label>/tpl-<Template>_atlas-<Label>_res-2_dseg.nii.gz   (labels)
    <cache>/atlases/atlas-<Label>/tpl-<Template>_atlas-<Label>_res-2_dseg.tsv      (index, name)
    <cache>/atlases/atlas-<Label>/tpl-<Template>_atlas-<Label>_res-2_probseg.nii.gz (maps)
    <cache>/atlases/atlas-<Label>/atlas-<Label>_description.json

Run time reads those files (:func:`load_atlas`); an atlas that is not there is a
:class:`~bids_neurobolt.errors.MissingInputError` naming the atlas, the cache folder
and the fetch command. The cache folder is the ``--atlas-cache`` option, else the
``BIDS_NEUROBOLT_CACHE`` environment variable, else ``~/.cache/bids-neurobolt``
(:func:`resolve_cache_dir`). A user atlas is a path to a BIDS ``*_dseg.nii[.gz]`` with
its ``*_dseg.tsv`` (columns ``index``, ``name``) beside it, or a 4-D
``*_probseg.nii[.gz]`` with a ``*_probseg.tsv`` (column ``name``, optionally ``index``
giving the volume).

Atlases are resampled to the BOLD grid once (:func:`resample_atlas`: nearest neighbour
for labels, trilinear for probabilistic maps) and the result is cached by grid
(:func:`resample_atlas_cached`), so later runs on the same grid skip it.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from bids_neurobolt.errors import ConfigError, DataError, MissingInputError

logger = logging.getLogger(__name__)

#: Environment variable naming the atlas cache folder.
CACHE_ENV = "BIDS_NEUROBOLT_CACHE"

#: The paper's atlas.
DEFAULT_ATLAS = "difumo64"

#: Command that fills the cache (named in error messages).
FETCH_COMMAND = "bids-neurobolt-fetch"


def _fmriprep_grid_2mm() -> tuple[NDArray[np.float64], tuple[int, int, int]]:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = (-96.0, -132.0, -78.0)
    return affine, (97, 115, 97)


#: fMRIPrep's MNI152NLin2009cAsym ``res-2`` grid (TemplateFlow): affine and shape.
FMRIPREP_GRID_2MM: tuple[NDArray[np.float64], tuple[int, int, int]] = _fmriprep_grid_2mm()

#: Version of the resampled-atlas cache format (bumped when the format changes).
_RESAMPLED_FORMAT = 1

AtlasKind = Literal["labels", "maps"]


# --------------------------------------------------------------------------- atlas objects


@dataclass(frozen=True)
class Atlas:
    """An atlas in MNI space: a label image or a stack of probabilistic maps.

    Attributes
    ----------
    label : str
        BIDS ``atlas-`` label (letters and digits), e.g. ``DiFuMo64``.
    kind : {"labels", "maps"}
        ``labels``: a 3-D integer image (0 is background), summarised by the mean over
        each label's voxels; ``maps``: a 4-D stack of probabilistic maps, summarised by
        least-squares regression of the maps on each volume (nilearn's
        ``NiftiMapsMasker``).
    image : nibabel.Nifti1Image
        The atlas image (data read lazily).
    names : tuple of str
        ROI names.
    indices : tuple of int
        Label value of each ROI (``labels``) or its volume in the 4-D image (``maps``).
    template : str | None
        Template space, e.g. ``MNI152NLin6Asym``; None when the file does not say.
    fingerprint : str
        Identifies the atlas content (file, size and date, or a hash of the arrays) for
        the resampling cache.
    source : str
        Where it came from (file path or description), for provenance.
    """

    label: str
    kind: AtlasKind
    image: Any
    names: tuple[str, ...]
    indices: tuple[int, ...]
    template: str | None
    fingerprint: str
    source: str

    @classmethod
    def from_arrays(
        cls,
        data: NDArray,
        affine: NDArray[np.float64],
        names: Sequence[str],
        *,
        label: str = "custom",
        indices: Sequence[int] | None = None,
        template: str | None = "MNI152NLin2009cAsym",
    ) -> Atlas:
        """Build an atlas from arrays (3-D integer labels or 4-D maps).

        Parameters
        ----------
        data : ndarray
            3-D label image (``indices`` default to 1..n) or 4-D maps (one per name).
        affine : ndarray, shape (4, 4)
            Voxel-to-MNI affine.
        names : sequence of str
            ROI names.
        label : str
            BIDS atlas label.
        indices : sequence of int | None
            Label values (3-D) or volume indices (4-D); default 1..n or 0..n-1.
        template : str | None
            Template space.

        Returns
        -------
        Atlas
        """
        import nibabel as nib

        data = np.asarray(data)
        kind: AtlasKind = "maps" if data.ndim == 4 else "labels"
        if indices is None:
            indices = range(len(names)) if kind == "maps" else range(1, len(names) + 1)
        digest = hashlib.sha1(np.ascontiguousarray(data).tobytes())
        digest.update(np.asarray(affine, dtype=np.float64).tobytes())
        digest.update("\n".join(names).encode())
        image = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
        return cls(
            label=_check_label(label),
            kind=kind,
            image=image,
            names=tuple(str(n) for n in names),
            indices=tuple(int(i) for i in indices),
            template=template,
            fingerprint=f"sha1:{digest.hexdigest()}",
            source=f"in-memory {kind} atlas '{label}'",
        )


@dataclass(frozen=True)
class ResampledAtlas:
    """An atlas on a BOLD grid, stored sparsely over the voxels it covers.

    Attributes
    ----------
    label, kind, names, template, source : see :class:`Atlas`
    affine : ndarray, shape (4, 4)
        The grid's affine.
    shape : tuple of int
        The grid's 3-D shape.
    voxels : ndarray of int64, shape (n_voxels,)
        Flat indices of the grid voxels the atlas covers, in NIfTI (Fortran) order:
        ``i + nx * (j + ny * k)``.
    weights : ndarray of float32, shape (n_voxels, n_rois) | None
        Map values at those voxels (``maps``).
    labels : ndarray of int32, shape (n_voxels,) | None
        Position in :attr:`names` of each voxel's ROI (``labels``).
    native_mass : ndarray, shape (n_rois,)
        Each ROI's size on the atlas's own grid, in voxels of this grid (voxel count for
        labels, summed map values for maps): what full coverage would give.
    fingerprint : str
        Fingerprint of the source atlas.
    """

    label: str
    kind: AtlasKind
    names: tuple[str, ...]
    affine: NDArray[np.float64]
    shape: tuple[int, int, int]
    voxels: NDArray[np.int64]
    weights: NDArray[np.float32] | None
    labels: NDArray[np.int32] | None
    native_mass: NDArray[np.float64]
    fingerprint: str
    template: str | None
    source: str

    def matches(self, affine: NDArray[np.float64], shape: Sequence[int]) -> bool:
        """Return True when this atlas lies on the grid ``(affine, shape)``."""
        return tuple(int(n) for n in shape[:3]) == self.shape and np.allclose(
            np.asarray(affine, dtype=float), self.affine, atol=1e-3
        )

    def mass(self, keep: NDArray[np.bool_] | None = None) -> NDArray[np.float64]:
        """Per-ROI size on this grid (voxels or summed map values), over ``keep`` voxels."""
        keep_mask = np.ones(self.voxels.size, bool) if keep is None else keep
        if self.labels is not None:
            return np.bincount(self.labels[keep_mask], minlength=len(self.names)).astype(float)
        assert self.weights is not None
        return np.abs(self.weights[keep_mask]).sum(axis=0, dtype=np.float64)

    def label_image(self) -> NDArray[np.int32]:
        """3-D image of ROI numbers (position + 1; 0 background), maps by their maximum."""
        image = np.zeros(int(np.prod(self.shape)), dtype=np.int32)
        if self.labels is not None:
            image[self.voxels] = self.labels + 1
        else:
            assert self.weights is not None
            image[self.voxels] = np.argmax(self.weights, axis=1) + 1
        return image.reshape(self.shape, order="F")


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class AtlasSpec:
    """A registry atlas: how to fetch it and how it is named in the cache.

    Attributes
    ----------
    name : str
        Registry name (lower case), e.g. ``difumo64``.
    label : str
        BIDS ``atlas-`` label, e.g. ``DiFuMo64``.
    kind : {"labels", "maps"}
        Label image or probabilistic maps.
    template : str
        Template space of the files nilearn provides.
    title : str
        One-line description.
    fetcher : str
        The nilearn call that downloads it (recorded in the cache's description).
    citation : str
        Reference to cite.
    fetch : callable
        ``fetch(data_dir) -> (image, names, indices)`` through nilearn.
    """

    name: str
    label: str
    kind: AtlasKind
    template: str
    title: str
    fetcher: str
    citation: str
    fetch: Callable[[str], tuple[Any, list[str], list[int]]]

    @property
    def stem(self) -> str:
        """File-name stem in the cache."""
        return f"tpl-{self.template}_atlas-{self.label}_res-2"

    @property
    def suffix(self) -> str:
        """``dseg`` for labels, ``probseg`` for maps."""
        return "dseg" if self.kind == "labels" else "probseg"

    def path(self, cache_dir: Path) -> Path:
        """Return the atlas image's path in the cache."""
        return cache_dir / "atlases" / f"atlas-{self.label}" / f"{self.stem}_{self.suffix}.nii.gz"


_DIFUMO_CITATION = (
    "Dadi K, Varoquaux G, Machlouzarides-Shalit A, Gorgolewski KJ, Wassermann D, Thirion B, "
    "Mensch A (2020). Fine-grain atlases of functional modes for fMRI analysis. "
    "NeuroImage 221:117126."
)
_SCHAEFER_CITATION = (
    "Schaefer A, Kong R, Gordon EM, Laumann TO, Zuo XN, Holmes AJ, Eickhoff SB, Yeo BTT "
    "(2018). Local-global parcellation of the human cerebral cortex from intrinsic "
    "functional connectivity MRI. Cerebral Cortex 28:3095-3114."
)
_HO_CITATION = (
    "Makris N, Goldstein JM, Kennedy D, et al. (2006). Decreased volume of left and total "
    "anterior insular lobule in schizophrenia. Schizophrenia Research 83:155-171; "
    "Desikan RS, et al. (2006). NeuroImage 31:968-980."
)
_AAL_CITATION = (
    "Tzourio-Mazoyer N, Landeau B, Papathanassiou D, et al. (2002). Automated anatomical "
    "labeling of activations in SPM using a macroscopic anatomical parcellation of the MNI "
    "MRI single-subject brain. NeuroImage 15:273-289."
)

#: Subcortical Harvard-Oxford labels left out of the combined atlas (tissue classes).
_HO_SUBCORTICAL_EXCLUDED = ("Cerebral White Matter", "Cerebral Cortex", "Lateral Ventricle")


def _lut_names(lut: pd.DataFrame) -> tuple[list[str], list[int]]:
    rows = lut[(lut["index"] != 0) & (lut["name"].astype(str) != "Background")]
    return [str(n).strip() for n in rows["name"]], [int(i) for i in rows["index"]]


def _fetch_difumo(dimension: int) -> Callable[[str], tuple[Any, list[str], list[int]]]:
    def fetch(data_dir: str) -> tuple[Any, list[str], list[int]]:
        from nilearn.datasets import fetch_atlas_difumo

        bunch = fetch_atlas_difumo(
            dimension=dimension, resolution_mm=2, data_dir=data_dir, verbose=0
        )
        labels = bunch.labels
        names = [str(n).strip() for n in labels["difumo_names"]]
        return _load_image(bunch.maps), names, list(range(len(names)))

    return fetch


def _fetch_schaefer(n_rois: int, networks: int) -> Callable[[str], Any]:
    def fetch(data_dir: str) -> tuple[Any, list[str], list[int]]:
        from nilearn.datasets import fetch_atlas_schaefer_2018

        bunch = fetch_atlas_schaefer_2018(
            n_rois=n_rois, yeo_networks=networks, resolution_mm=2, data_dir=data_dir, verbose=0
        )
        names, indices = _lut_names(bunch.lut)
        return _load_image(bunch.maps), names, indices

    return fetch


def _fetch_harvard_oxford(data_dir: str) -> tuple[Any, list[str], list[int]]:
    import nibabel as nib
    from nilearn.datasets import fetch_atlas_harvard_oxford

    cortical = fetch_atlas_harvard_oxford(
        "cort-maxprob-thr25-2mm", data_dir=data_dir, symmetric_split=True, verbose=0
    )
    subcortical = fetch_atlas_harvard_oxford("sub-maxprob-thr25-2mm", data_dir=data_dir, verbose=0)
    cort_img, sub_img = _load_image(cortical.maps), _load_image(subcortical.maps)
    cort = np.asarray(cort_img.dataobj).astype(np.int32)
    sub = np.asarray(sub_img.dataobj).astype(np.int32)
    names, indices = _lut_names(cortical.lut)
    combined = cort.copy()
    offset = 100 * (1 + max(indices) // 100)
    for name, index in zip(*_lut_names(subcortical.lut), strict=True):
        if any(excluded in name for excluded in _HO_SUBCORTICAL_EXCLUDED):
            continue
        combined[(combined == 0) & (sub == index)] = offset + index
        names.append(name)
        indices.append(offset + index)
    return nib.Nifti1Image(combined.astype(np.int16), cort_img.affine), names, indices


def _fetch_aal(version: str) -> Callable[[str], Any]:
    def fetch(data_dir: str) -> tuple[Any, list[str], list[int]]:
        from nilearn.datasets import fetch_atlas_aal

        bunch = fetch_atlas_aal(version=version, data_dir=data_dir, verbose=0)
        names, indices = _lut_names(bunch.lut)
        return _load_image(bunch.maps), names, indices

    return fetch


def _build_registry() -> dict[str, AtlasSpec]:
    specs: list[AtlasSpec] = []
    for dim in (64, 128, 256, 512, 1024):
        specs.append(
            AtlasSpec(
                name=f"difumo{dim}",
                label=f"DiFuMo{dim}",
                kind="maps",
                template="MNI152NLin6Asym",
                title=f"DiFuMo {dim}-dimension probabilistic functional modes, 2 mm",
                fetcher=f"nilearn.datasets.fetch_atlas_difumo(dimension={dim}, resolution_mm=2)",
                citation=_DIFUMO_CITATION,
                fetch=_fetch_difumo(dim),
            )
        )
    for n_rois in range(100, 1001, 100):
        for networks in (7, 17):
            specs.append(
                AtlasSpec(
                    name=f"schaefer2018-{n_rois}-{networks}",
                    label=f"Schaefer{n_rois}x{networks}",
                    kind="labels",
                    template="MNI152NLin6Asym",
                    title=f"Schaefer 2018, {n_rois} parcels, {networks} networks, 2 mm",
                    fetcher="nilearn.datasets.fetch_atlas_schaefer_2018("
                    f"n_rois={n_rois}, yeo_networks={networks}, resolution_mm=2)",
                    citation=_SCHAEFER_CITATION,
                    fetch=_fetch_schaefer(n_rois, networks),
                )
            )
    specs.append(
        AtlasSpec(
            name="harvardoxford",
            label="HarvardOxford",
            kind="labels",
            template="MNI152NLin6Asym",
            title="Harvard-Oxford cortical (left/right split) and subcortical, max-prob 25 %, 2 mm",
            fetcher="nilearn.datasets.fetch_atlas_harvard_oxford('cort-maxprob-thr25-2mm', "
            "symmetric_split=True) + ('sub-maxprob-thr25-2mm')",
            citation=_HO_CITATION,
            fetch=_fetch_harvard_oxford,
        )
    )
    for name, label, version in (("aal", "AAL", "SPM12"), ("aal3", "AAL3", "3v2")):
        specs.append(
            AtlasSpec(
                name=name,
                label=label,
                kind="labels",
                template="MNI152NLin6Asym",
                title=f"Automated Anatomical Labeling ({version})",
                fetcher=f"nilearn.datasets.fetch_atlas_aal(version='{version}')",
                citation=_AAL_CITATION,
                fetch=_fetch_aal(version),
            )
        )
    return {spec.name: spec for spec in specs}


#: Every registry atlas, by name.
REGISTRY: dict[str, AtlasSpec] = _build_registry()


def atlas_names() -> tuple[str, ...]:
    """Return the registry names (``difumo64``, ``schaefer2018-400-7``, ``harvardoxford``...)."""
    return tuple(REGISTRY)


def registry_spec(name: str) -> AtlasSpec:
    """Return the registry entry for ``name`` (case-insensitive; the BIDS label also works).

    Raises
    ------
    ConfigError
        For an unknown name, suggesting close ones.
    """
    key = name.strip().lower()
    by_label = {spec.label.lower(): spec for spec in REGISTRY.values()}
    if key in REGISTRY:
        return REGISTRY[key]
    if key in by_label:
        return by_label[key]
    close = difflib.get_close_matches(key, [*REGISTRY, *by_label], n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"unknown atlas {name!r}.{hint}",
        fix="Use a registry name (difumo64, difumo128, ..., schaefer2018-<100..1000>-<7|17>, "
        "harvardoxford, aal, aal3) or the path of a BIDS *_dseg.nii.gz / *_probseg.nii.gz "
        "with its .tsv of names.",
    )


# --------------------------------------------------------------------------- cache folder


def resolve_cache_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """Return the atlas cache folder.

    Parameters
    ----------
    option : path-like | None
        The ``--atlas-cache`` option; wins when given.

    Returns
    -------
    Path
        ``option``, else ``$BIDS_NEUROBOLT_CACHE``, else ``$XDG_CACHE_HOME/bids-neurobolt``
        (``~/.cache/bids-neurobolt``).
    """
    if option:
        return Path(option).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bids-neurobolt"


def fetch_command(name: str, cache_dir: Path) -> str:
    """Return the shell command that puts atlas ``name`` into ``cache_dir``."""
    return f"{FETCH_COMMAND} --atlas {name} --cache-dir {cache_dir}"


def load_atlas(atlas: str | os.PathLike[str] | None, cache_dir: Path) -> Atlas:
    """Load a registry atlas from the cache, or a user atlas from its path.

    Never downloads anything.

    Parameters
    ----------
    atlas : str | path-like | None
        A registry name (see :func:`atlas_names`; None means :data:`DEFAULT_ATLAS`), or
        the path of a BIDS ``*_dseg.nii[.gz]`` / ``*_probseg.nii[.gz]``.
    cache_dir : Path
        The atlas cache folder (:func:`resolve_cache_dir`).

    Returns
    -------
    Atlas

    Raises
    ------
    MissingInputError
        If a registry atlas is not in the cache (the message gives the fetch command),
        or a user atlas file or its TSV is missing.
    ConfigError
        For an unknown registry name.
    DataError
        If a user atlas is malformed or declares a non-MNI space.
    """
    text = DEFAULT_ATLAS if atlas is None else str(atlas)
    if _looks_like_path(text):
        return read_bids_atlas(Path(text))
    spec = registry_spec(text)
    path = spec.path(cache_dir)
    if not path.is_file():
        raise MissingInputError(
            f"the atlas '{spec.name}' ({spec.title}) is not in the atlas cache, and "
            "bids-neurobolt never downloads at run time.",
            path=cache_dir,
            fix=f"Fetch it once on a machine with network: '{fetch_command(spec.name, cache_dir)}' "
            f"(container images include the default atlas). Or point --atlas-cache / "
            f"{CACHE_ENV} at a folder that has it, or pass --atlas with the path of a BIDS "
            "*_dseg.nii.gz or *_probseg.nii.gz and its .tsv of names.",
        )
    loaded = read_bids_atlas(path)
    return Atlas(**{**loaded.__dict__, "label": spec.label, "source": f"{spec.fetcher} -> {path}"})


def fetch_atlas(
    name: str,
    cache_dir: Path,
    *,
    fetch: Callable[[str], tuple[Any, list[str], list[int]]] | None = None,
) -> Path:
    """Download a registry atlas with nilearn and store it in the cache in BIDS form.

    Existing nilearn downloads (``NILEARN_SHARED_DATA``, ``NILEARN_DATA``,
    ``~/nilearn_data``) are reused; new ones go to ``<cache_dir>/nilearn``.

    Parameters
    ----------
    name : str
        Registry name.
    cache_dir : Path
        The atlas cache folder.
    fetch : callable | None
        Replaces the registry's nilearn call (for tests): ``fetch(data_dir)`` returns
        ``(image, names, indices)``.

    Returns
    -------
    Path
        The cached atlas image.

    Raises
    ------
    MissingInputError
        If the download fails (no network): names the atlas and what to do.
    """
    spec = registry_spec(name)
    target = spec.path(cache_dir)
    if target.is_file():
        logger.info("atlas %s already cached at %s", spec.name, target)
        return target
    data_dirs = [str(cache_dir / "nilearn")]
    for env in ("NILEARN_SHARED_DATA", "NILEARN_DATA"):
        if os.environ.get(env):
            data_dirs.append(os.environ[env])
    data_dirs.append(str(Path.home() / "nilearn_data"))
    try:
        image, names, indices = (fetch or spec.fetch)(os.pathsep.join(data_dirs))
    except (OSError, ValueError, RuntimeError) as exc:  # requests errors are OSErrors
        raise MissingInputError(
            f"could not download the atlas '{spec.name}' with {spec.fetcher} "
            f"({type(exc).__name__}: {str(exc)[:300]}).",
            path=cache_dir,
            fix="Run the fetch command on a machine with network access and copy the cache "
            f"folder here, or set {CACHE_ENV} to a folder that already has the atlas.",
        ) from None
    write_bids_atlas(
        target,
        image,
        names,
        indices,
        description={
            "Name": spec.title,
            "Template": spec.template,
            "Kind": spec.kind,
            "Fetcher": spec.fetcher,
            "ReferencesAndLinks": [spec.citation],
        },
    )
    logger.info("atlas %s cached at %s", spec.name, target)
    return target


# --------------------------------------------------------------------------- BIDS atlas files


_ENTITY = re.compile(r"(?:^|_)(?P<key>[a-zA-Z]+)-(?P<value>[a-zA-Z0-9+.]+)")


def read_bids_atlas(path: Path) -> Atlas:
    """Read a BIDS atlas: ``*_dseg.nii[.gz]`` + ``*_dseg.tsv``, or ``*_probseg`` + TSV.

    Parameters
    ----------
    path : Path
        The atlas NIfTI. A 3-D integer image is a label atlas (TSV columns ``index``
        and ``name``); a 4-D image is a stack of probabilistic maps (TSV column ``name``
        in volume order, or ``index`` giving each name's volume, counted from 0 or 1).

    Returns
    -------
    Atlas

    Raises
    ------
    MissingInputError
        If the NIfTI or its TSV does not exist.
    DataError
        If the TSV lacks columns, the names do not match the image, or the file names
        a space other than MNI152.
    """
    import nibabel as nib

    if not path.is_file():
        raise MissingInputError(
            "atlas file not found.",
            path=path,
            fix="Pass an existing *_dseg.nii.gz or *_probseg.nii.gz (with its .tsv beside it), "
            "or a registry name such as difumo64.",
        )
    stem = _nifti_stem(path)
    entities = {m["key"]: m["value"] for m in _ENTITY.finditer(stem)}
    template = entities.get("tpl") or entities.get("space")
    if template is not None and not template.upper().startswith("MNI152"):
        raise DataError(
            f"the atlas is in space '{template}', but ROI targets are extracted from BOLD in "
            "MNI152NLin2009cAsym.",
            path=path,
            fix="Use an atlas in an MNI152 template space (tpl-MNI152NLin2009cAsym or "
            "tpl-MNI152NLin6Asym), or transform it to MNI152 first.",
        )
    tsv = path.with_name(stem + ".tsv")
    if not tsv.is_file():
        raise MissingInputError(
            f"the atlas has no table of ROI names: {tsv.name} is missing.",
            path=path,
            fix=f"Write {tsv.name} beside it: tab-separated with columns 'index' and 'name' "
            "(one row per label, or per volume of a 4-D probseg).",
        )
    try:
        image = nib.load(path)
        shape = tuple(int(n) for n in image.shape)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise DataError(
            f"cannot read the atlas image ({type(exc).__name__}: {exc}).", path=path
        ) from None
    if template is None:
        _check_unnamed_space(image, path)
    table = _read_names_table(tsv)
    kind: AtlasKind = "maps" if len(shape) == 4 and shape[3] > 1 else "labels"
    if kind == "labels" and len(shape) == 4:
        image = image.slicer[..., 0]
    names = [str(n).strip() for n in table["name"]]
    if kind == "labels":
        if "index" not in table:
            raise DataError(
                f"the label table has columns {list(table.columns)}; a dseg table needs "
                "'index' and 'name'.",
                path=tsv,
                fix="Add an 'index' column with the label value of each name.",
            )
        indices = [int(i) for i in table["index"]]
    else:
        indices = _volume_indices(table, shape[3], tsv)
    _check_unique(names, tsv)
    stat = path.stat()
    return Atlas(
        label=_check_label(entities.get("atlas") or re.sub(r"[^A-Za-z0-9]", "", stem)[:32]),
        kind=kind,
        image=image,
        names=tuple(names),
        indices=tuple(indices),
        template=template,
        fingerprint=f"file:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}",
        source=str(path),
    )


def write_bids_atlas(
    path: Path,
    image: Any,
    names: Sequence[str],
    indices: Sequence[int],
    *,
    description: dict[str, Any] | None = None,
) -> Path:
    """Write an atlas image with its TSV (``index``, ``name``) and description, atomically.

    Parameters
    ----------
    path : Path
        Destination ``*_dseg.nii.gz`` or ``*_probseg.nii.gz``.
    image : nibabel.Nifti1Image
        Label image or 4-D maps.
    names, indices : sequence
        ROI names and their label values (or volume indices).
    description : dict | None
        Written as ``atlas-<label>_description.json`` in the same folder.

    Returns
    -------
    Path
        ``path``.
    """
    import nibabel as nib

    stem = _nifti_stem(path)
    table = pd.DataFrame({"index": list(indices), "name": list(names)})
    with _atomic(path) as tmp:
        nib.save(image, tmp)
    with _atomic(path.with_name(stem + ".tsv"), suffix=".tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False, lineterminator="\n")
    if description is not None:
        label = dict(m.groups() for m in _ENTITY.finditer(stem)).get("atlas", "custom")
        with _atomic(path.with_name(f"atlas-{label}_description.json"), suffix=".json") as tmp:
            tmp.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return path


#: NIfTI xform codes that name a space other than a standard template.
_NON_TEMPLATE_XFORMS = {1: "scanner", 3: "Talairach"}


def _check_unnamed_space(image: Any, path: Path) -> None:
    """Refuse an atlas whose name gives no template and whose header says scanner/Talairach.

    Without a ``tpl-``/``space-`` entity the atlas is taken to be in MNI space; its NIfTI
    header can still contradict that (sform, else qform, code 1 or 3). Codes 0 (unknown),
    2 (aligned) and 4 (MNI152) are accepted: MNI atlases are written with all three.
    """
    header = image.header
    code = int(header["sform_code"]) or int(header["qform_code"])
    if code in _NON_TEMPLATE_XFORMS:
        raise DataError(
            f"the atlas's NIfTI header places it in {_NON_TEMPLATE_XFORMS[code]} space "
            f"(xform code {code}), but ROI targets are extracted from BOLD in "
            "MNI152NLin2009cAsym.",
            path=path,
            fix="Transform the atlas to MNI152 space; if it already is, name the file "
            "tpl-MNI152NLin2009cAsym_atlas-<label>_... or set its sform code to 4 (MNI152).",
        )


def _read_names_table(tsv: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(tsv, sep="\t", dtype={"name": str}, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read the atlas label table ({exc}).", path=tsv) from None
    if "name" not in table:
        raise DataError(
            f"the atlas label table has columns {list(table.columns)} but no 'name' column.",
            path=tsv,
            fix="Write a tab-separated table with a header row and columns 'index' and 'name'.",
        )
    if table.empty:
        raise DataError("the atlas label table has no rows.", path=tsv)
    return table


def _volume_indices(table: pd.DataFrame, n_volumes: int, tsv: Path) -> list[int]:
    if len(table) != n_volumes:
        raise DataError(
            f"the table names {len(table)} ROIs but the 4-D atlas has {n_volumes} maps.",
            path=tsv,
            fix="Give one row per volume of the probseg image, in volume order.",
        )
    if "index" not in table:
        return list(range(n_volumes))
    values = [int(i) for i in table["index"]]
    if sorted(values) == list(range(n_volumes)):
        return values
    if sorted(values) == list(range(1, n_volumes + 1)):
        return [v - 1 for v in values]
    raise DataError(
        "the 'index' column of a probseg table must number the volumes 0..n-1 or 1..n.",
        path=tsv,
    )


def _check_unique(names: Sequence[str], tsv: Path) -> None:
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DataError(
            f"ROI names must be unique; repeated: {', '.join(duplicates[:10])}.",
            path=tsv,
            fix="Make each name unique, e.g. with a Left/Right prefix.",
        )


def _check_label(label: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9]", "", label)
    return clean or "custom"


def _looks_like_path(text: str) -> bool:
    return text.endswith((".nii", ".nii.gz")) or os.sep in text or text.startswith(".")


def _nifti_stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _load_image(maps: Any) -> Any:
    import nibabel as nib

    return nib.load(maps) if isinstance(maps, str | os.PathLike) else maps


@contextlib.contextmanager
def _atomic(path: Path, suffix: str = ".nii.gz") -> Any:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{suffix}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


# --------------------------------------------------------------------------- resampling


def resample_atlas(
    atlas: Atlas, affine: NDArray[np.float64], shape: Sequence[int]
) -> ResampledAtlas:
    """Put an atlas on a BOLD grid.

    Labels are resampled by nearest neighbour, probabilistic maps by trilinear
    interpolation; only the target voxels inside the atlas's bounding box are computed.

    Parameters
    ----------
    atlas : Atlas
        The atlas.
    affine : ndarray, shape (4, 4)
        The BOLD grid's voxel-to-MNI affine.
    shape : sequence of int
        The BOLD grid's shape (first three values used).

    Returns
    -------
    ResampledAtlas

    Raises
    ------
    DataError
        If no atlas voxel falls inside the BOLD grid (different spaces).
    """
    from scipy.ndimage import map_coordinates

    target_affine = np.asarray(affine, dtype=np.float64)
    target_shape = tuple(int(n) for n in shape[:3])
    src_affine = np.asarray(atlas.image.affine, dtype=np.float64)
    if atlas.kind == "labels":
        src = np.asarray(atlas.image.dataobj)
        src = np.rint(src).astype(np.int64) if src.dtype.kind == "f" else src.astype(np.int64)
        src = src.reshape(src.shape[:3])
        support = src != 0
    else:
        src = np.asarray(atlas.image.dataobj, dtype=np.float32)[..., list(atlas.indices)]
        support = np.any(src != 0, axis=3)
    volume_ratio = abs(np.linalg.det(src_affine[:3, :3]) / np.linalg.det(target_affine[:3, :3]))
    if target_shape == support.shape and np.allclose(src_affine, target_affine, atol=1e-3):
        voxels = np.flatnonzero(support.ravel(order="F"))
        sampled = src.reshape(-1, *src.shape[3:], order="F")[voxels]
    else:
        voxels, coords = _target_voxels(support, src_affine, target_affine, target_shape)
        if atlas.kind == "labels":
            sampled = map_coordinates(src, coords, order=0, mode="constant", cval=0)
        else:
            sampled = np.empty((voxels.size, src.shape[3]), dtype=np.float32)
            for k in range(src.shape[3]):
                sampled[:, k] = map_coordinates(
                    src[..., k], coords, order=1, mode="constant", cval=0.0
                )
    if atlas.kind == "labels":
        labels = _positions(np.asarray(sampled, dtype=np.int64), atlas.indices)
        keep = labels >= 0
        voxels, labels = voxels[keep], labels[keep]
        values, counts = np.unique(src, return_counts=True)
        count_of = dict(zip(values.tolist(), counts.tolist(), strict=True))
        native = np.array([count_of.get(value, 0) for value in atlas.indices], dtype=float)
        weights = None
    else:
        keep = np.any(sampled != 0, axis=1)
        voxels, weights = voxels[keep], np.ascontiguousarray(sampled[keep], dtype=np.float32)
        native = np.abs(src).sum(axis=(0, 1, 2), dtype=np.float64)
        labels = None
    if voxels.size == 0:
        raise DataError(
            f"no voxel of the atlas '{atlas.label}' falls inside the BOLD grid: the atlas and "
            "the BOLD run are not in the same space.",
            path=atlas.source,
            fix="Use BOLD in MNI152NLin2009cAsym (fMRIPrep --output-spaces "
            "MNI152NLin2009cAsym:res-2) and an atlas in an MNI152 space.",
        )
    return ResampledAtlas(
        label=atlas.label,
        kind=atlas.kind,
        names=atlas.names,
        affine=target_affine,
        shape=target_shape,  # type: ignore[arg-type]
        voxels=voxels.astype(np.int64),
        weights=weights,
        labels=labels,
        native_mass=native * volume_ratio,
        fingerprint=atlas.fingerprint,
        template=atlas.template,
        source=atlas.source,
    )


def _target_voxels(
    support: NDArray[np.bool_],
    src_affine: NDArray[np.float64],
    target_affine: NDArray[np.float64],
    target_shape: tuple[int, ...],
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Target voxels inside the atlas support's bounding box, and their source coordinates."""
    if not support.any():
        return np.zeros(0, np.int64), np.zeros((3, 0))
    idx = np.nonzero(support)
    lo = np.array([i.min() for i in idx]) - 1.0
    hi = np.array([i.max() for i in idx]) + 1.0
    corners = np.array(
        [[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    src_to_target = np.linalg.inv(target_affine) @ src_affine
    in_target = corners @ src_to_target.T
    start = np.clip(np.floor(in_target[:, :3].min(axis=0)), 0, None).astype(int)
    stop = np.minimum(np.ceil(in_target[:, :3].max(axis=0)) + 1, target_shape).astype(int)
    if np.any(stop <= start):
        return np.zeros(0, np.int64), np.zeros((3, 0))
    grid = np.mgrid[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]].reshape(3, -1)
    target_to_src = np.linalg.inv(src_affine) @ target_affine
    coords = target_to_src[:3, :3] @ grid + target_to_src[:3, 3:4]
    voxels = np.ravel_multi_index(tuple(grid), target_shape, order="F")
    return voxels.astype(np.int64), coords


def _positions(values: NDArray[np.int64], indices: Sequence[int]) -> NDArray[np.int32]:
    """Position of each label value in ``indices``; -1 for background and unknown values."""
    table = np.asarray(indices, dtype=np.int64)
    order = np.argsort(table)
    where = np.clip(np.searchsorted(table[order], values), 0, table.size - 1)
    found = table[order][where] == values
    return np.where(found, order[where], -1).astype(np.int32)


def resample_atlas_cached(
    atlas: Atlas,
    affine: NDArray[np.float64],
    shape: Sequence[int],
    cache_dirs: Iterable[Path] = (),
) -> ResampledAtlas:
    """Resample an atlas to a grid, reusing a copy cached for that grid.

    Parameters
    ----------
    atlas : Atlas
        The atlas.
    affine, shape
        The BOLD grid.
    cache_dirs : iterable of Path
        Folders searched for a cached copy (e.g. ``<atlas cache>/resampled`` then
        ``<work dir>/resampled``); a new copy is written to the first writable one.

    Returns
    -------
    ResampledAtlas
    """
    folders = [Path(d) for d in cache_dirs]
    key = _resample_key(atlas, affine, shape)
    for folder in folders:
        cached = _read_resampled(folder / f"{key}.npz", atlas)
        if cached is not None:
            logger.debug("resampled atlas %s read from %s", atlas.label, folder)
            return cached
    resampled = resample_atlas(atlas, affine, shape)
    for folder in folders:
        try:
            _write_resampled(folder / f"{key}.npz", resampled)
            break
        except OSError as exc:
            logger.debug("cannot cache the resampled atlas in %s (%s)", folder, exc)
    return resampled


def _resample_key(atlas: Atlas, affine: NDArray[np.float64], shape: Sequence[int]) -> str:
    digest = hashlib.sha1(f"{_RESAMPLED_FORMAT}|{atlas.fingerprint}|{atlas.kind}".encode())
    digest.update("\n".join(atlas.names).encode())
    digest.update(np.round(np.asarray(affine, dtype=np.float64), 4).tobytes())
    digest.update(np.asarray(shape[:3], dtype=np.int64).tobytes())
    return f"atlas-{atlas.label}_{digest.hexdigest()[:20]}"


def _write_resampled(path: Path, atlas: ResampledAtlas) -> None:
    arrays: dict[str, Any] = {
        "voxels": atlas.voxels,
        "native_mass": atlas.native_mass,
        "affine": atlas.affine,
        "shape": np.asarray(atlas.shape),
    }
    if atlas.weights is not None:
        arrays["weights"] = atlas.weights
    if atlas.labels is not None:
        arrays["labels"] = atlas.labels
    with _atomic(path, suffix=".npz") as tmp, tmp.open("wb") as fh:
        np.savez(fh, **arrays)


def _read_resampled(path: Path, atlas: Atlas) -> ResampledAtlas | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, KeyError) as exc:
        logger.debug("ignoring unreadable resampled atlas %s (%s)", path, exc)
        return None
    return ResampledAtlas(
        label=atlas.label,
        kind=atlas.kind,
        names=atlas.names,
        affine=arrays["affine"],
        shape=tuple(int(n) for n in arrays["shape"]),  # type: ignore[arg-type]
        voxels=arrays["voxels"],
        weights=arrays.get("weights"),
        labels=arrays.get("labels"),
        native_mass=arrays["native_mass"],
        fingerprint=atlas.fingerprint,
        template=atlas.template,
        source=atlas.source,
    )
