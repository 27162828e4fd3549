"""Where the BOLD for ROI targets comes from: fMRIPrep derivatives, or raw BOLD already in MNI.

In order of preference:

1. fMRIPrep derivatives (``--fmriprep-dir``), indexed with PyBIDS: the run's
   ``space-MNI152NLin2009cAsym[_res-2]_desc-preproc_bold.nii.gz``, its
   ``desc-brain_mask`` and its ``desc-confounds_timeseries.tsv``;
2. the raw BOLD itself, only when its NIfTI header says it is in MNI152 space (sform or
   qform code 4, as the simulator writes it); it has no motion parameters, so no
   confounds are regressed.

Anything else is a :class:`~bids_neurobolt.errors.MissingInputError` whose message
gives the ``fmriprep-docker`` command to run, unless ``--run-fmriprep`` asks the
``targets`` stage to run it (:mod:`bids_neurobolt.bids.fmriprep_run`). (Precomputed
ROI tables, ``--targets-dir``, are read by :mod:`bids_neurobolt.bids.timeseries_io`.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from bids_neurobolt.bids.fmri_io import NIFTI_MNI152, BoldInfo
from bids_neurobolt.bids.layout import RunSpec, check_file_present
from bids_neurobolt.errors import DataError, MissingInputError
from bids_neurobolt.fmri.confounds import DEFAULT_STRATEGY, Confounds, select_confounds

logger = logging.getLogger(__name__)

#: The template space targets are extracted in.
MNI_SPACE = "MNI152NLin2009cAsym"

#: fMRIPrep ``--output-spaces`` value that produces it at 2 mm.
FMRIPREP_OUTPUT_SPACE = f"{MNI_SPACE}:res-2"

#: Where fMRIPrep's derivatives go when this app runs fMRIPrep (``--run-fmriprep``) or
#: prints the command to run, unless ``--fmriprep-dir`` says otherwise: a nested
#: source dataset of the output derivative (BIDS puts input datasets in ``sourcedata/``),
#: which stays inside the one output folder a container mounts.
DEFAULT_FMRIPREP_SUBFOLDER = Path("sourcedata") / "fmriprep"

_XFORM_NAMES = {
    0: "unknown",
    1: "scanner",
    2: "aligned",
    3: "Talairach",
    4: "MNI152",
    5: "template",
}


@dataclass(frozen=True)
class BoldSource:
    """The BOLD run to extract ROI targets from.

    Attributes
    ----------
    kind : {"fmriprep", "raw-mni"}
        fMRIPrep derivatives, or raw BOLD already in MNI space.
    bold : Path
        4-D BOLD NIfTI.
    mask : Path | None
        EPI brain mask (None: computed from the mean image).
    confounds : Path | None
        Confounds TSV (None: no confound regression).
    repetition_time : float | None
        From the BOLD's sidecar, when it has one.
    """

    kind: Literal["fmriprep", "raw-mni"]
    bold: Path
    mask: Path | None = None
    confounds: Path | None = None
    repetition_time: float | None = None

    @property
    def sources(self) -> tuple[Path, ...]:
        """Every input file, for the derivative's ``Sources``."""
        return tuple(p for p in (self.bold, self.mask, self.confounds) if p is not None)


def load_fmriprep_layout(fmriprep_dir: Path, database_dir: Path | None = None) -> Any:
    """Index an fMRIPrep derivatives folder with PyBIDS.

    Parameters
    ----------
    fmriprep_dir : Path
        The fMRIPrep output folder (holding ``dataset_description.json`` and ``sub-*``).
    database_dir : Path | None
        Where PyBIDS keeps its index (rebuilt on each call); None keeps it in memory.

    Returns
    -------
    bids.BIDSLayout

    Raises
    ------
    MissingInputError
        If the folder or its ``dataset_description.json`` is missing.
    """
    from bids import BIDSLayout

    if not fmriprep_dir.is_dir():
        raise MissingInputError(
            "the fMRIPrep derivatives folder does not exist.",
            path=fmriprep_dir,
            fix="Check --fmriprep-dir (in a container, mount it too, e.g. -v /host/fmriprep:"
            "/fmriprep:ro).",
        )
    if not (fmriprep_dir / "dataset_description.json").is_file():
        raise MissingInputError(
            "is not a derivatives dataset: dataset_description.json is missing.",
            path=fmriprep_dir,
            fix="Pass the fMRIPrep output folder itself (the one with dataset_description.json "
            "and the sub-* folders), e.g. <bids>/derivatives/fmriprep.",
        )
    kwargs: dict[str, Any] = {"validate": False, "config": ["bids", "derivatives"]}
    if database_dir is not None:
        kwargs.update(database_path=database_dir, reset_database=True)
    try:
        return BIDSLayout(fmriprep_dir, **kwargs)
    except (ValueError, OSError) as exc:
        raise DataError(
            f"PyBIDS could not index the fMRIPrep derivatives ({exc}).", path=fmriprep_dir
        ) from None


def find_fmriprep_run(
    layout: Any, entities: Mapping[str, str | None], *, space: str = MNI_SPACE
) -> BoldSource:
    """Find a run's preprocessed BOLD, brain mask and confounds in fMRIPrep derivatives.

    Parameters
    ----------
    layout : bids.BIDSLayout
        From :func:`load_fmriprep_layout`.
    entities : mapping
        The run's entities (``subject``, ``session``, ``task``, ``acquisition``, ``run``),
        e.g. :attr:`RunSpec.entities`.
    space : str
        Template space.

    Returns
    -------
    BoldSource
        ``kind="fmriprep"``; ``mask`` or ``confounds`` is None when fMRIPrep did not
        write it (a warning is logged).

    Raises
    ------
    MissingInputError
        If the run has no preprocessed BOLD in ``space`` (the message lists the spaces
        it has and the fMRIPrep option to add).
    DataError
        If several candidates remain (e.g. two resolutions other than 2 mm).
    """
    query = _query(entities)
    bolds = layout.get(
        suffix="bold", desc="preproc", extension=[".nii.gz", ".nii"], space=space, **query
    )
    if not bolds:
        others = sorted(
            {
                str(f.get_entities().get("space", "native"))
                for f in layout.get(suffix="bold", desc="preproc", **query)
            }
        )
        raise MissingInputError(
            f"fMRIPrep has no preprocessed BOLD in {space} for {_label(entities)}"
            + (f" (spaces found: {', '.join(others)})." if others else " (no run found)."),
            path=layout.root,
            fix=f"Run fMRIPrep with --output-spaces {FMRIPREP_OUTPUT_SPACE} for this participant, "
            "or check the entities of the run.",
        )
    bold = _choose(bolds, entities)
    resolution = bold.get_entities().get("res")
    masks = layout.get(
        suffix="mask",
        desc="brain",
        extension=[".nii.gz", ".nii"],
        space=space,
        res=resolution if resolution is not None else _none(),
        **query,
    )
    confounds = layout.get(
        suffix=["timeseries", "regressors"], desc="confounds", extension=".tsv", **query
    )
    if not masks:
        logger.warning(
            "%s: fMRIPrep brain mask not found; an EPI mask is computed from the mean image.",
            _label(entities),
        )
    if not confounds:
        logger.warning("%s: fMRIPrep confounds TSV not found.", _label(entities))
    metadata = bold.get_metadata()
    tr = metadata.get("RepetitionTime")
    return BoldSource(
        kind="fmriprep",
        bold=Path(bold.path),
        mask=Path(masks[0].path) if masks else None,
        confounds=Path(confounds[0].path) if confounds else None,
        repetition_time=float(tr) if tr is not None else None,
    )


def choose_bold_source(
    spec: RunSpec,
    bold_info: BoldInfo | None,
    *,
    fmriprep_layout: Any = None,
    bids_dir: Path,
    output_dir: Path,
) -> BoldSource:
    """Pick the BOLD to extract targets from: fMRIPrep if given, else raw BOLD in MNI space.

    Parameters
    ----------
    spec : RunSpec
        The run.
    bold_info : BoldInfo | None
        Header information of the raw BOLD (:func:`~bids_neurobolt.bids.fmri_io.read_bold_info`),
        None for EEG-only runs.
    fmriprep_layout : bids.BIDSLayout | None
        fMRIPrep derivatives (``--fmriprep-dir``), if given.
    bids_dir, output_dir : Path
        For the fMRIPrep command printed when the raw BOLD is not in MNI space.

    Returns
    -------
    BoldSource

    Raises
    ------
    MissingInputError
        The run has no BOLD, or its raw BOLD is not in MNI space and no fMRIPrep
        derivatives were given (the message prints the fmriprep-docker command).
    """
    if fmriprep_layout is not None:
        return find_fmriprep_run(fmriprep_layout, spec.entities)
    if bold_info is None:
        raise MissingInputError(
            f"{spec.label} has no BOLD run, so it has no ROI targets.",
            path=spec.eeg,
            fix="EEG-only recordings need a trained model (--model) to predict BOLD.",
        )
    if bold_info.xform_code != NIFTI_MNI152:
        target = default_fmriprep_dir(output_dir)
        command = " ".join(fmriprep_command(bids_dir, target, spec.subject))
        code = bold_info.xform_code
        raise MissingInputError(
            f"the raw BOLD is not in MNI space (its NIfTI sform/qform code is {code}, "
            f"'{_XFORM_NAMES.get(code, 'unknown')}'), and no fMRIPrep derivatives were given.",
            path=bold_info.path,
            fix=f"Preprocess the run with fMRIPrep, then pass --fmriprep-dir {target}:  "
            f"{command}  (or rerun with --run-fmriprep, which runs this command for you: "
            "it needs Docker and a FreeSurfer license, --fs-license-file or $FS_LICENSE).",
        )
    return BoldSource(
        kind="raw-mni", bold=bold_info.path, repetition_time=bold_info.repetition_time
    )


def fmriprep_command(
    bids_dir: Path, fmriprep_dir: Path, participant: str, *, fs_license: str = "$FS_LICENSE"
) -> list[str]:
    """Build the ``fmriprep-docker`` command that makes the derivatives this app needs.

    Parameters
    ----------
    bids_dir : Path
        The raw dataset.
    fmriprep_dir : Path
        Where fMRIPrep should write.
    participant : str
        Subject label.
    fs_license : str
        FreeSurfer licence file (fMRIPrep requires one).

    Returns
    -------
    list of str
        ``fmriprep-docker BIDS OUT participant --participant-label L --output-spaces
        MNI152NLin2009cAsym:res-2 --fs-license-file LICENSE``.
    """
    return [
        "fmriprep-docker",
        str(bids_dir),
        str(fmriprep_dir),
        "participant",
        "--participant-label",
        participant,
        "--output-spaces",
        FMRIPREP_OUTPUT_SPACE,
        "--fs-license-file",
        fs_license,
    ]


def open_bold(path: Path) -> Any:
    """Open a 4-D BOLD NIfTI lazily, keeping the file open so it is read in one pass.

    :func:`~bids_neurobolt.fmri.targets.extract_targets` reads the run a few volumes at a
    time; with the file kept open a ``.nii.gz`` is decompressed once (a 575-volume 2 mm
    run: about 5 s and 0.3 GiB instead of 12 s and 4.7 GiB for a whole read).

    Raises
    ------
    MissingInputError
        If the file is missing.
    DataError
        If it cannot be read as NIfTI.
    """
    import nibabel as nib

    check_file_present(path)
    try:
        return nib.load(path, keep_file_open=True)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for bad files
        raise DataError(
            f"cannot read this NIfTI file ({type(exc).__name__}: {exc}).",
            path=path,
            fix="Check that the file is a complete, uncorrupted .nii or .nii.gz.",
        ) from None


def read_confounds_tsv(path: Path) -> pd.DataFrame:
    """Read an fMRIPrep confounds TSV (``n/a`` as missing).

    Raises
    ------
    MissingInputError
        If the file does not exist.
    DataError
        If it cannot be parsed or has no rows.
    """
    check_file_present(path)
    try:
        table = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(
            f"cannot read the confounds table ({exc}).",
            path=path,
            fix="It must be tab-separated with a header row (fMRIPrep desc-confounds_timeseries).",
        ) from None
    if table.empty:
        raise DataError("the confounds table has no rows.", path=path)
    return table


def load_confounds(source: BoldSource, strategy: str = DEFAULT_STRATEGY) -> Confounds | None:
    """Read and select a run's confounds, or None when there are none to regress.

    Parameters
    ----------
    source : BoldSource
        The run's inputs.
    strategy : str
        Confound strategy (:data:`~bids_neurobolt.fmri.confounds.CONFOUND_STRATEGIES`).

    Returns
    -------
    Confounds | None
        None for strategy ``none`` or raw MNI BOLD (no motion parameters).

    Raises
    ------
    MissingInputError
        fMRIPrep derivatives without a confounds file while the strategy needs one.
    DataError
        Missing columns or missing values (see
        :func:`~bids_neurobolt.fmri.confounds.select_confounds`).
    """
    if strategy == "none":
        return None
    if source.kind == "raw-mni":
        logger.info(
            "%s: raw BOLD in MNI space has no motion parameters; no confound regression.",
            source.bold.name,
        )
        return None
    if source.confounds is None:
        raise MissingInputError(
            f"no fMRIPrep confounds file for this run, and the confound strategy '{strategy}' "
            "needs one.",
            path=source.bold,
            fix="Pass the complete fMRIPrep output folder, or --confounds none.",
        )
    return select_confounds(read_confounds_tsv(source.confounds), strategy, source=source.confounds)


def _query(entities: Mapping[str, str | None]) -> dict[str, Any]:
    query: dict[str, Any] = {}
    for key in ("subject", "session", "task", "acquisition", "run"):
        value = entities.get(key)
        if value in (None, ""):
            query[key] = _none()
        elif key == "run":
            query[key] = int(value) if str(value).isdigit() else value
        else:
            query[key] = value
    return query


def _none() -> Any:
    from bids.layout import Query

    return Query.NONE


def _choose(files: list[Any], entities: Mapping[str, str | None]) -> Any:
    if len(files) == 1:
        return files[0]
    by_res = {str(f.get_entities().get("res")): f for f in files}
    for preferred in ("2", "None"):
        if preferred in by_res and len(by_res) == len(files):
            logger.info(
                "%s: several fMRIPrep resolutions; using res-%s.", _label(entities), preferred
            )
            return by_res[preferred]
    names = ", ".join(sorted(Path(f.path).name for f in files))
    raise DataError(
        f"several fMRIPrep BOLD files match {_label(entities)}: {names}.",
        path=Path(files[0].path).parent,
        fix="Keep one preprocessed BOLD per run and space in --fmriprep-dir (res-2 is "
        "preferred when several resolutions exist).",
    )


def _label(entities: Mapping[str, str | None]) -> str:
    keys = (
        ("subject", "sub"),
        ("session", "ses"),
        ("task", "task"),
        ("acquisition", "acq"),
        ("run", "run"),
    )
    return "_".join(f"{p}-{entities[k]}" for k, p in keys if entities.get(k))


def default_fmriprep_dir(output_dir: Path) -> Path:
    """Return ``<output_dir>/sourcedata/fmriprep``, where fMRIPrep writes by default."""
    return output_dir / DEFAULT_FMRIPREP_SUBFOLDER
