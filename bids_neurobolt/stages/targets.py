"""``targets`` stage: ROI BOLD targets of a run, from fMRIPrep, raw MNI BOLD or tables.

With ``--run-fmriprep``, a run whose raw BOLD is not in MNI space and that the fMRIPrep
derivatives (``--fmriprep-dir``, default ``<OUTPUT_DIR>/sourcedata/fmriprep``) lack
makes this stage run fMRIPrep for its participant (once per participant and invocation,
see :mod:`bids_neurobolt.bids.fmriprep_run`), then read the run from its outputs.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

from bids_neurobolt.bids.fmri_io import NIFTI_MNI152
from bids_neurobolt.bids.fmriprep import (
    MNI_SPACE,
    BoldSource,
    choose_bold_source,
    default_fmriprep_dir,
    find_fmriprep_run,
    load_confounds,
    load_fmriprep_layout,
    open_bold,
)
from bids_neurobolt.bids.fmriprep_run import find_fs_license, run_fmriprep
from bids_neurobolt.bids.timeseries_io import check_volume_count, find_timeseries, read_timeseries
from bids_neurobolt.config import Config
from bids_neurobolt.derivatives import naming, writer
from bids_neurobolt.derivatives.targets import write_targets
from bids_neurobolt.errors import ExternalToolError, MissingInputError
from bids_neurobolt.fmri.atlases import Atlas, load_atlas, resample_atlas_cached, resolve_cache_dir
from bids_neurobolt.fmri.targets import TargetsResult, extract_targets, targets_from_table
from bids_neurobolt.report import figures
from bids_neurobolt.stages.context import RunContext, StageResult

logger = logging.getLogger(__name__)

#: Share of a run (from its start) whose statistics scale the targets: the training part
#: of the intra-scan split, so the test part never informs the scaling.
TRAIN_FRACTION = 0.8


def preflight(config: Config) -> None:
    """Load the atlas before any run is processed, so a missing one fails at once.

    Raises
    ------
    MissingInputError
        If the atlas is not cached (the message names the fetch command).
    """
    if config.inputs.targets_dir is None:
        _atlas(config.science.atlas, resolve_cache_dir(config.inputs.atlas_cache))


@functools.lru_cache(maxsize=4)
def _atlas(atlas: str | None, cache: Path) -> Atlas:
    return load_atlas(atlas, cache)


def run(ctx: RunContext) -> StageResult:
    """Extract, clean and scale a run's ROI BOLD targets and write the timeseries table."""
    if ctx.spec.bold is None:
        return StageResult("not applicable", "EEG-only recording: no BOLD run")
    done = existing_targets(ctx)
    if done is not None:
        return StageResult("skipped", outputs=done)
    bold = ctx.bold
    assert bold is not None
    train_mask = np.arange(bold.n_volumes) < int(TRAIN_FRACTION * bold.n_volumes)
    science = ctx.config.science
    if ctx.config.inputs.targets_dir is not None:
        result, label, sources = _from_tables(ctx, train_mask)
    else:
        result, label, sources = _from_images(ctx, train_mask)
    tsv, sidecar = write_targets(
        ctx.output_dir,
        ctx.spec.entities,
        result,
        atlas_label=label,
        repetition_time=bold.repetition_time,
        sources=sources,
        extra=ctx.provenance("targets"),
    )
    _figures(ctx, result, bold.repetition_time)
    logger.debug(
        "%s: %d targets (%s scaling, %s confounds) from %s.",
        ctx.spec.label,
        len(result.names),
        science.scaling,
        science.confounds,
        sources[0],
    )
    return StageResult("done", outputs=[tsv, sidecar])


def _from_images(ctx: RunContext, train_mask: np.ndarray) -> tuple[TargetsResult, str, list[str]]:
    science, inputs = ctx.config.science, ctx.config.inputs
    cache = resolve_cache_dir(inputs.atlas_cache)
    atlas = _atlas(science.atlas, cache)
    source = _bold_source(ctx)
    image = open_bold(source.bold)
    resampled = resample_atlas_cached(
        atlas, image.affine, image.shape[:3], [cache / "resampled", ctx.work_dir / "resampled"]
    )
    mask = None
    if source.mask is not None:
        import nibabel as nib

        mask = nib.load(source.mask)
    result = extract_targets(
        image,
        resampled,
        list(science.rois) or None,
        repetition_time=source.repetition_time or ctx.bold.repetition_time,
        confounds=load_confounds(source, science.confounds),
        mask_img=mask,
        scaling=science.scaling,
        lowpass=science.lowpass,
        train_mask=train_mask,
    )
    return result, resampled.label, [ctx.uri(p) for p in source.sources]


def _bold_source(ctx: RunContext) -> BoldSource:
    """Choose the run's BOLD; with ``--run-fmriprep``, run fMRIPrep when it is missing."""
    inputs = ctx.config.inputs
    db_dir = ctx.work_dir / "fmriprep_db" / ctx.spec.label
    raw_in_mni = ctx.bold is not None and ctx.bold.xform_code == NIFTI_MNI152
    if not ctx.config.execution.run_fmriprep or (inputs.fmriprep_dir is None and raw_in_mni):
        layout = None
        if inputs.fmriprep_dir is not None:
            layout = load_fmriprep_layout(inputs.fmriprep_dir, db_dir)
        return choose_bold_source(
            ctx.spec,
            ctx.bold,
            fmriprep_layout=layout,
            bids_dir=ctx.bids_dir,
            output_dir=ctx.output_dir,
        )
    folder = inputs.fmriprep_dir or default_fmriprep_dir(ctx.output_dir)
    source = _find_fmriprep(folder, ctx, db_dir)
    if source is not None:
        return source
    subject = ctx.spec.subject
    # Once per participant and invocation: the marker lives in this invocation's work folder.
    marker = ctx.work_dir / "fmriprep_ran" / f"sub-{subject}"
    log_path = ctx.output_dir / "logs" / f"fmriprep-docker-sub-{subject}-{ctx.work_dir.name}.log"
    if marker.is_file():
        failure = marker.read_text(encoding="utf-8")
        if failure:  # it failed for an earlier run of this participant: do not run it again
            raise ExternalToolError(failure)
    else:
        license_file = find_fs_license(inputs.fs_license_file)
        marker.parent.mkdir(parents=True, exist_ok=True)
        try:
            run_fmriprep(
                ctx.bids_dir,
                folder,
                subject,
                fs_license=license_file,
                work_dir=ctx.work_dir.parent / "fmriprep",
                log_path=log_path,
            )
        except ExternalToolError as exc:
            marker.write_text(exc.message, encoding="utf-8")
            raise
        marker.write_text("", encoding="utf-8")
    source = _find_fmriprep(folder, ctx, db_dir)
    if source is None:
        raise MissingInputError(
            f"fMRIPrep ran for sub-{subject} but wrote no preprocessed BOLD in {MNI_SPACE} "
            f"for {ctx.spec.label}.",
            path=folder,
            fix=f"Read fMRIPrep's output in {log_path} and its report in {folder}; check that "
            "fMRIPrep selects this run (e.g. its BIDS filters).",
        )
    return source


def _find_fmriprep(folder: Path, ctx: RunContext, db_dir: Path) -> BoldSource | None:
    """Find the run in fMRIPrep derivatives; None when the folder or the run is missing."""
    if not (folder / "dataset_description.json").is_file():
        return None
    layout = load_fmriprep_layout(folder, db_dir)
    try:
        return find_fmriprep_run(layout, ctx.spec.entities)
    except MissingInputError:
        return None


def _from_tables(ctx: RunContext, train_mask: np.ndarray) -> tuple[TargetsResult, str, list[str]]:
    science, bold = ctx.config.science, ctx.bold
    path = find_timeseries(ctx.config.inputs.targets_dir, ctx.spec.entities, atlas=science.atlas)
    table = read_timeseries(path, repetition_time=bold.repetition_time)
    check_volume_count(table, bold.n_volumes)
    label = table.atlas or "custom"
    result = targets_from_table(
        table.table,
        list(science.rois) or None,
        repetition_time=table.repetition_time,
        scaling=science.scaling,
        lowpass=science.lowpass,
        train_mask=train_mask,
        atlas_label=label,
    )
    return result, label, [ctx.uri(path)]


def existing_targets(ctx: RunContext) -> list[Path] | None:
    """Return the run's targets ``[tsv, sidecar]`` if made with the current settings (any atlas)."""
    probe = naming.timeseries_path(ctx.output_dir, ctx.spec.entities, "X")
    pattern = probe.name.replace("atlas-X", "atlas-*").replace(".tsv", ".json")
    for sidecar in sorted(probe.parent.glob(pattern)):
        tsv = sidecar.with_suffix(".tsv")
        if ctx.up_to_date("targets", tsv, sidecar):
            return [tsv, sidecar]
    return None


def _figures(ctx: RunContext, result: TargetsResult, repetition_time: float) -> None:
    entities = ctx.spec.entities
    writer.write_text(
        naming.figure_path(ctx.output_dir, entities, "rois", "bold"),
        figures.roi_traces(result.table, repetition_time),
    )
    if result.mean_image is not None and result.atlas_image is not None:
        writer.write_text(
            naming.figure_path(ctx.output_dir, entities, "atlas", "bold"),
            figures.atlas_overlay(result.mean_image, result.atlas_image, result.names),
        )
