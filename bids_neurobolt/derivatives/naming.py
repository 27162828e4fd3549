"""Every output file name, built in one place.

Names follow BIDS: ``<entities>_<suffix><extension>`` with entities in the order of
the BIDS schema (``sub, ses, task, acq, run, space, atlas, desc``). Stages never
format names themselves; they ask this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Entity keys in BIDS order, with their file-name prefixes.
ENTITY_ORDER: tuple[tuple[str, str], ...] = (
    ("subject", "sub"),
    ("session", "ses"),
    ("task", "task"),
    ("acquisition", "acq"),
    ("run", "run"),
    ("space", "space"),
    ("atlas", "atlas"),
    ("desc", "desc"),
)

#: Every ``desc-`` label the app writes, with the text for ``descriptions.tsv``.
DESCRIPTIONS: dict[str, str] = {
    "sync": (
        "EEG-fMRI synchronisation table: one row per BOLD volume marker (and per slice "
        "marker when present), with its EEG sample index at the native sampling rate, "
        "checked against RepetitionTime and the number of BOLD volumes."
    ),
}


def bids_name(entities: Mapping[str, str | None], suffix: str, extension: str) -> str:
    """Build a BIDS file name from entities.

    Parameters
    ----------
    entities : mapping
        Entity values keyed by the names in :data:`ENTITY_ORDER` (``subject``,
        ``session``...); ``None`` values are left out.
    suffix : str
        The BIDS suffix, e.g. ``"events"``.
    extension : str
        The extension with its dot, e.g. ``".tsv"``.

    Returns
    -------
    str
        For example ``sub-01_task-rest_run-1_desc-sync_events.tsv``.
    """
    unknown = set(entities) - {key for key, _ in ENTITY_ORDER}
    if unknown:
        raise ValueError(f"unknown BIDS entities {sorted(unknown)}")
    parts = [
        f"{prefix}-{entities[key]}"
        for key, prefix in ENTITY_ORDER
        if entities.get(key) not in (None, "")
    ]
    return "_".join([*parts, suffix]) + extension


def subject_dir(output_dir: Path, subject: str, session: str | None) -> Path:
    """Return ``<output_dir>/sub-<subject>[/ses-<session>]``."""
    folder = output_dir / f"sub-{subject}"
    return folder / f"ses-{session}" if session else folder


def sync_table_path(output_dir: Path, entities: Mapping[str, str | None]) -> Path:
    """Return the path of the synchronisation table of one run.

    Parameters
    ----------
    output_dir : Path
        The derivative dataset root.
    entities : mapping
        The run's entities (``subject``, ``session``, ``task``, ``acquisition``, ``run``).

    Returns
    -------
    Path
        ``<out>/sub-<l>[/ses-<s>]/eeg/<entities>_desc-sync_events.tsv``.
    """
    folder = subject_dir(output_dir, str(entities["subject"]), entities.get("session")) / "eeg"
    return folder / bids_name({**entities, "desc": "sync"}, "events", ".tsv")


def sidecar_path(path: Path) -> Path:
    """Return the JSON sidecar path of a data file (``.tsv``, ``.nii.gz``, ``.vhdr``...)."""
    name = path.name
    for ext in (".nii.gz", ".tsv.gz"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def figure_path(
    output_dir: Path, entities: Mapping[str, str | None], desc: str, suffix: str
) -> Path:
    """Return the path of a report figure of one run.

    Parameters
    ----------
    output_dir : Path
        The derivative dataset root.
    entities : mapping
        The run's entities.
    desc : str
        What the figure shows, e.g. ``"syncintervals"``.
    suffix : str
        ``"eeg"`` or ``"bold"``: the data the figure is about.

    Returns
    -------
    Path
        ``<out>/sub-<l>/figures/<entities>_desc-<desc>_<suffix>.svg`` (figures of every
        session of a subject sit together, as in fMRIPrep).
    """
    folder = output_dir / f"sub-{entities['subject']}" / "figures"
    return folder / bids_name({**entities, "desc": desc}, suffix, ".svg")


def participant_report_path(output_dir: Path, subject: str) -> Path:
    """Return ``<out>/sub-<subject>.html``."""
    return output_dir / f"sub-{subject}.html"


def warnings_path(output_dir: Path, run_label: str) -> Path:
    """Return ``<out>/logs/warnings/<run label>.json``: warnings of a run's last processing."""
    return output_dir / "logs" / "warnings" / f"{run_label}.json"


#: ``desc-bold``: measured ROI BOLD targets (appended with the targets stage).
DESCRIPTIONS["bold"] = (
    "Measured ROI BOLD targets: one row per BOLD volume, one column per atlas ROI (and the "
    "global signal), extracted in MNI152NLin2009cAsym, detrended, confound-regressed, "
    "z-scored, low-passed at 0.15 Hz and scaled as recorded in the JSON sidecar."
)

#: Template space of ROI time series.
TIMESERIES_SPACE = "MNI152NLin2009cAsym"


def timeseries_path(
    output_dir: Path, entities: Mapping[str, str | None], atlas: str, desc: str = "bold"
) -> Path:
    """Return the path of an ROI time-series table of one run.

    Parameters
    ----------
    output_dir : Path
        The derivative dataset root.
    entities : mapping
        The run's entities (``subject``, ``session``, ``task``, ``acquisition``, ``run``).
    atlas : str
        BIDS atlas label (letters and digits), e.g. ``DiFuMo64``.
    desc : str
        ``bold`` for measured targets (``neurobolt`` for predictions).

    Returns
    -------
    Path
        ``<out>/sub-<l>[/ses-<s>]/func/<entities>_space-MNI152NLin2009cAsym_atlas-<A>_desc-<desc>_timeseries.tsv``.
    """
    folder = subject_dir(output_dir, str(entities["subject"]), entities.get("session")) / "func"
    name = bids_name(
        {**entities, "space": TIMESERIES_SPACE, "atlas": atlas, "desc": desc}, "timeseries", ".tsv"
    )
    return folder / name


#: ``desc-clean``: EEG after MR-artifact removal (appended with the clean stage).
DESCRIPTIONS["clean"] = (
    "EEG after MR gradient artifact removal (slice-triggered average artifact subtraction "
    "at the native rate with sub-sample alignment and an optimal-basis-set fit of the "
    "residuals) and ballistocardiogram removal (R-peak-locked optimal basis sets), "
    "low-passed and resampled to the model rate; channel names mapped to 10-20 labels. "
    "Every parameter is in the run's desc-clean_quality.json."
)


def clean_eeg_path(
    output_dir: Path, entities: Mapping[str, str | None], suffix: str, ext: str
) -> Path:
    """Return the path of a cleaned-EEG derivative file of one run.

    Parameters
    ----------
    output_dir : Path
        The derivative dataset root.
    entities : mapping
        The run's entities (``subject``, ``session``, ``task``, ``acquisition``, ``run``).
    suffix : str
        ``eeg``, ``channels``, ``events`` or ``quality``.
    ext : str
        ``.vhdr``, ``.vmrk``, ``.eeg``, ``.json`` or ``.tsv``.

    Returns
    -------
    Path
        ``<out>/sub-<l>[/ses-<s>]/eeg/<entities>_desc-clean_<suffix><ext>``.
    """
    folder = subject_dir(output_dir, str(entities["subject"]), entities.get("session")) / "eeg"
    return folder / bids_name({**entities, "desc": "clean"}, suffix, ext)


#: ``desc-neurobolt``: ROI BOLD predicted by NeuroBOLT (appended with the model stage).
DESCRIPTIONS["neurobolt"] = (
    "ROI BOLD predicted from the 16 s of cleaned EEG that end at each volume by NeuroBOLT "
    "(Li et al., NeurIPS 2024), in the scaled units of the run's desc-bold targets; the "
    "model, its training split and metrics are described in the sidecar and in models/."
)


#: ``desc-neuroboltpsc``: the same predictions mapped back to BOLD units.
DESCRIPTIONS["neuroboltpsc"] = (
    "The desc-neurobolt predictions mapped back to percent signal change of each ROI's mean "
    "BOLD by inverting the targets' scaling (trend, confounds and frequencies above the "
    "low-pass are not restored)."
)


def metrics_path(output_dir: Path, entities: Mapping[str, str | None], atlas: str) -> Path:
    """Return the path of the per-ROI metrics table of a run's predictions.

    Returns
    -------
    Path
        ``<out>/sub-<l>[/ses-<s>]/func/<entities>_space-MNI152NLin2009cAsym_atlas-<A>_desc-neurobolt_metrics.tsv``.
    """
    predictions = timeseries_path(output_dir, entities, atlas, desc="neurobolt")
    return predictions.with_name(predictions.name.replace("_timeseries.tsv", "_metrics.tsv"))


def model_stem(output_dir: Path, entities: Mapping[str, str | None], atlas: str) -> Path:
    """Return the stem of a run's trained model (``.safetensors`` + ``.json``).

    Returns
    -------
    Path
        ``<out>/models/<entities>_atlas-<A>_desc-neurobolt_model`` (one model per run for
        the intra-scan split; the group level writes ``group_...``).
    """
    return (
        output_dir
        / "models"
        / bids_name({**entities, "atlas": atlas, "desc": "neurobolt"}, "model", "")
    )


def history_path(model_stem: Path) -> Path:
    """Return the training history beside a model: ``..._model`` -> ``..._history.tsv``."""
    return model_stem.with_name(model_stem.name.removesuffix("_model") + "_history.tsv")


#: Column descriptions of the result tables (metrics, summary, history), written into
#: their JSON sidecars as BIDS data dictionaries.
TABLE_COLUMNS: dict[str, str] = {
    "fold": "Cross-validation fold (1, 2, ...); 'all' for the model trained on every subject.",
    "subject": "Participant label of the held-out subject.",
    "run": "The held-out run (its BIDS entities).",
    "roi": "Region of interest (atlas label, or the global signal).",
    "split": "Windows scored: test (out of sample: every window under blocked-cv, the last "
    "tenth under --split paper), train (in sample), val (paper split), or all (applied model).",
    "n": "Number of windows (volumes) scored.",
    "pearson_r": "Pearson correlation of NeuroBOLT's prediction with the measured target.",
    "mse": "Mean squared error of NeuroBOLT's prediction, in target units.",
    "baseline_r": "Pearson correlation of the ridge baseline (HRF-convolved EEG band power).",
    "baseline_mse": "Mean squared error of the ridge baseline, in target units.",
    "n_eff": "Effective number of independent windows of the correlation (Bartlett: from "
    "the autocorrelation of the measured and the predicted series).",
    "pearson_r_ci_low": "Lower end of the 95 % moving-block bootstrap CI of pearson_r.",
    "pearson_r_ci_high": "Upper end of the 95 % moving-block bootstrap CI of pearson_r.",
    "p_value": "One-sided p-value of r > 0 against phase-randomised surrogates of the "
    "measured series (1000; group summary: sign-flip test across subjects).",
    "q_value": "Benjamini-Hochberg q-value of p_value across the ROIs of the run and split "
    "(group summary: across ROIs).",
    "baseline_r_ci_low": "Lower end of the 95 % bootstrap CI of baseline_r.",
    "baseline_r_ci_high": "Upper end of the 95 % bootstrap CI of baseline_r.",
    "baseline_p_value": "One-sided p-value of baseline_r > 0 (phase-randomised surrogates).",
    "p_value_vs_baseline": "One-sided p-value of NeuroBOLT r > HRF ridge r on the same "
    "windows (paired moving-block bootstrap; group summary: sign-flip test across subjects).",
    "fir_r": "Pearson correlation of the FIR ridge (EEG band power at every 1 s lag of the "
    "window, no assumed HRF).",
    "fir_mse": "Mean squared error of the FIR ridge, in target units.",
    "fir_r_ci_low": "Lower end of the 95 % bootstrap CI of fir_r.",
    "fir_r_ci_high": "Upper end of the 95 % bootstrap CI of fir_r.",
    "fir_p_value": "One-sided p-value of fir_r > 0 (phase-randomised surrogates).",
    "p_value_vs_fir": "One-sided p-value of NeuroBOLT r > FIR ridge r on the same windows "
    "(paired; group summary: across subjects).",
    "n_subjects": "Number of held-out subjects (the unit of the group-level statistics).",
    "n_runs": "Number of held-out runs.",
    "mean_r": "Mean over held-out subjects of NeuroBOLT's test Pearson r (each subject's r "
    "averaged over its runs).",
    "mean_r_ci_low": "Lower end of the 95 % CI of mean_r (t interval of Fisher-z values).",
    "mean_r_ci_high": "Upper end of the 95 % CI of mean_r.",
    "sd_r": "Standard deviation over held-out subjects of NeuroBOLT's test Pearson r.",
    "median_r": "Median over held-out subjects of NeuroBOLT's test Pearson r.",
    "mean_baseline_r": "Mean over held-out subjects of the HRF ridge's test Pearson r.",
    "mean_baseline_r_ci_low": "Lower end of the 95 % CI of mean_baseline_r.",
    "mean_baseline_r_ci_high": "Upper end of the 95 % CI of mean_baseline_r.",
    "mean_fir_r": "Mean over held-out subjects of the FIR ridge's test Pearson r.",
    "mean_fir_r_ci_low": "Lower end of the 95 % CI of mean_fir_r.",
    "mean_fir_r_ci_high": "Upper end of the 95 % CI of mean_fir_r.",
    "q_value_vs_baseline": "Benjamini-Hochberg q-value of p_value_vs_baseline across ROIs.",
    "p_value_below_baseline": "One-sided p-value of HRF ridge r > NeuroBOLT r across "
    "subjects (sign-flip test): small values mean NeuroBOLT is below the ridge.",
    "epoch": "Training epoch (1-based).",
    "lr": "Learning rate of the top layers at the epoch's last step.",
    "train_loss": "Mean training MSE over the epoch's batches.",
    "val_loss": "MSE on the validation windows after the epoch (n/a without them).",
    "val_pearson_r": "Mean over ROIs of the validation Pearson r after the epoch.",
    "seconds": "Wall time of the epoch, validation included (s).",
    "windows_per_second": "Training windows processed per second of the epoch.",
}


def table_sidecar(columns: Sequence[str], **extra: Any) -> dict[str, Any]:
    """JSON sidecar of a result table: a description per known column, then ``extra``."""
    described = {c: {"Description": TABLE_COLUMNS[c]} for c in columns if c in TABLE_COLUMNS}
    return {**described, **extra}
