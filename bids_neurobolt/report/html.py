"""Participant report: ``sub-<label>.html`` assembled from what the stages wrote.

Everything shown is read back from OUTPUT_DIR (sidecars, quality files, metrics tables,
figures under ``sub-<label>/figures/``, warnings under ``logs/warnings/``), so a report is
rebuilt identically from the output folder alone and links stay relative: the folder can
be moved or archived.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bids_neurobolt import __version__
from bids_neurobolt.derivatives import naming, writer
from bids_neurobolt.report.methods import methods_markdown, methods_parts

#: Report sections in order, with the figure ``desc-`` labels each one shows and captions.
SECTIONS: tuple[tuple[str, str, dict[str, str]], ...] = (
    (
        "sync",
        "Synchronisation",
        {"syncintervals": "Spacing of consecutive volume markers minus RepetitionTime."},
    ),
    (
        "clean",
        "Artifact cleaning",
        {
            "spectrum": "Power spectra before and after cleaning; slice and volume "
            "harmonics marked.",
            "traces": "A few seconds of raw and cleaned EEG.",
            "bcg": "BCG template and R-peak detection on the ECG.",
        },
    ),
    (
        "targets",
        "ROI targets",
        {
            "atlas": "The atlas over the run's mean BOLD image, on the BOLD voxel grid; the legend "
            "names each ROI's colour.",
            "rois": "Scaled ROI BOLD targets.",
        },
    ),
    (
        "model",
        "NeuroBOLT model",
        {
            "training": "Training and validation loss per epoch.",
            "prediction": "Measured BOLD and out-of-sample predictions (test windows).",
            "roir": "Out-of-sample correlation per ROI with 95 % moving-block bootstrap "
            "CIs, NeuroBOLT vs the HRF and FIR ridges; n/a where the test windows hold "
            "fewer than 10 effective samples (too short to evaluate).",
        },
    ),
)

#: Group figures (``desc-`` label) and their captions.
GROUP_FIGURES: dict[str, str] = {
    "forest": "Mean correlation over held-out subjects per ROI with 95 % CIs (t interval of "
    "Fisher-z values): NeuroBOLT, HRF ridge and FIR ridge.",
    "brainmap": "NeuroBOLT's mean held-out correlation painted on each ROI of the atlas, over "
    "the MNI152 template (absent when the atlas file cannot be found from where the group "
    "level ran).",
    "rmatrix": "Correlation of every held-out run (rows) and ROI (columns): NeuroBOLT and HRF "
    "ridge on one colour scale.",
    "traces": "Measured and predicted BOLD of each held-out run, for the ROI with the highest "
    "and the lowest mean NeuroBOLT r.",
    "curves": "Training and validation loss of every fold and of the model trained on all "
    "subjects (shared loss axis).",
}

_PACKAGES = ("torch", "mne", "mne-bids", "pybids", "nilearn", "nibabel", "numpy", "scipy")


@dataclass
class Figure:
    """One figure of a run: a link relative to the report and its caption."""

    href: str
    caption: str


@dataclass
class RunEntry:
    """What the report shows for one run."""

    label: str
    sync: dict[str, Any] | None = None
    figures: dict[str, list[Figure]] = field(default_factory=dict)
    quality: list[tuple[str, str]] = field(default_factory=list)
    metrics: str | None = None
    warnings: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)


def write_participant_report(output_dir: Path, subject: str) -> Path:
    """Write ``sub-<subject>.html`` from the subject's outputs.

    Parameters
    ----------
    output_dir : Path
        The derivative dataset root.
    subject : str
        Subject label without ``sub-``.

    Returns
    -------
    Path
        The report written.
    """
    runs = collect_runs(output_dir, subject)
    snapshot = _latest_snapshot(output_dir)
    steps = [key for key, _, _ in SECTIONS if any(_has(run, key) for run in runs)]
    sidecars = output_dir.glob(f"sub-{subject}/**/func/*_desc-neurobolt_timeseries.json")
    weights = model_starts(sidecars)
    paragraph, references = methods_parts(steps, __version__, weights=weights)
    methods = methods_markdown(steps, __version__, weights=weights)
    writer.write_text(output_dir / "logs" / "methods.md", f"# Methods\n\n{methods}")
    html = _template("participant.html").render(
        subject=subject,
        version=__version__,
        runs=runs,
        caveats=list(dict.fromkeys(c for run in runs for c in run.caveats)),
        sections=SECTIONS,
        steps=steps,
        snapshot=snapshot,
        command_line=" ".join(snapshot.get("execution", {}).get("command_line", [])),
        seed=snapshot.get("science", {}).get("random_seed"),
        environment=_environment(),
        methods=paragraph,
        references=references,
    )
    return writer.write_text(naming.participant_report_path(output_dir, subject), html)


def r_with_uncertainty(metrics: pd.DataFrame, baseline: bool = False) -> pd.DataFrame:
    """One row per run, one cell per ROI: ``r [CI low, CI high], n_eff N`` (``n/a`` if none).

    Parameters
    ----------
    metrics : pandas.DataFrame
        Test rows with ``run``, ``roi``, ``pearson_r``, its CI columns and ``n_eff`` (and
        ``baseline_r``, when ``baseline``).
    baseline : bool
        Add `` / ridge r`` to each cell (the HRF ridge on the same windows).

    Returns
    -------
    pandas.DataFrame
    """

    def cell(row: pd.Series) -> str:
        r = row.get("pearson_r", np.nan)
        if pd.isna(r):
            text = "n/a"
        else:
            low, high = row.get("pearson_r_ci_low", np.nan), row.get("pearson_r_ci_high", np.nan)
            text = f"{r:.2f}"
            if pd.notna(low) and pd.notna(high):
                text += f" [{low:.2f}, {high:.2f}]"
            if pd.notna(row.get("n_eff", np.nan)):
                text += f", n_eff {row['n_eff']:.0f}"
        if baseline:
            text += f" / {_r(row.get('baseline_r', np.nan))}"
        return text

    cells = metrics.assign(cell=metrics.apply(cell, axis=1))
    table = cells.pivot_table(
        index="run", columns="roi", values="cell", aggfunc="first", sort=False
    )
    table.columns.name = None
    return table.reset_index()


def _r(value: float) -> str:
    """Format a correlation for a table (``n/a`` where it could not be evaluated)."""
    return "n/a" if pd.isna(value) else f"{value:.2f}"


def model_starts(sidecars: Iterable[Path]) -> list[dict[str, str] | None]:
    """How the trained models of these prediction sidecars started (``PretrainedWeights``).

    Sidecars of applied models (``--model``), which trained nothing, are left out.
    """
    starts = []
    for path in sidecars:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if "BestEpoch" in meta:  # written only when the run trained its model
            starts.append(meta.get("PretrainedWeights"))
    return starts


def write_group_report(output_dir: Path) -> Path:
    """Write ``group.html``: inter-subject results, per-run results, cleaning, warnings.

    Parameters
    ----------
    output_dir : Path
        The derivative dataset root.

    Returns
    -------
    Path
        The report written.
    """
    table_style = {"index": False, "float_format": "%.3f", "border": 0, "na_rep": "n/a"}
    folds: dict[str, Any] = {}
    summary = per_run = metrics = None
    group_figures: list[Figure] = []
    for path in sorted((output_dir / "group").glob("group_*_desc-neurobolt_folds.json")):
        folds = json.loads(path.read_text(encoding="utf-8"))
        stem = path.name.removesuffix("_folds.json")
        summary = pd.read_csv(path.with_name(f"{stem}_summary.tsv"), sep="\t").to_html(
            **table_style
        )
        metrics = pd.read_csv(path.with_name(f"{stem}_metrics.tsv"), sep="\t")
        per_run = r_with_uncertainty(metrics).to_html(index=False, border=0)
        group_figures = [
            Figure(p.relative_to(output_dir).as_posix(), caption)
            for desc, caption in GROUP_FIGURES.items()
            for p in sorted(
                (output_dir / "group" / "figures").glob(f"group_*_desc-{desc}_bold.svg")
            )
        ]
    intrascan_rows = []
    unreadable = []
    for path in sorted(output_dir.glob("sub-*/**/func/*_desc-neurobolt_metrics.tsv")):
        try:
            table = pd.read_csv(path, sep="\t")
        except (OSError, ValueError) as exc:
            unreadable.append(f"{path.relative_to(output_dir)}: cannot be read ({exc})")
            continue
        missing = sorted({"split", "roi", "pearson_r"} - set(table.columns))
        if missing:
            unreadable.append(f"{path.relative_to(output_dir)}: no column {', '.join(missing)}")
            continue
        test = table[table["split"] == "test"]
        if test.empty or "baseline_r" not in test:
            continue
        intrascan_rows.append(
            r_with_uncertainty(test.assign(run=path.name.split("_space-")[0]), baseline=True)
        )
    intrascan = pd.concat(intrascan_rows).to_html(index=False, border=0) if intrascan_rows else None
    qualities = {
        path.name.removesuffix("_desc-clean_quality.json"): json.loads(
            path.read_text(encoding="utf-8")
        )
        for path in sorted(output_dir.glob("sub-*/**/eeg/*_desc-clean_quality.json"))
    }
    cleaning = [cleaning_row(label, quality) for label, quality in qualities.items()]
    columns = list(dict.fromkeys(key for row in cleaning for key in row))
    warnings = []
    for path in sorted((output_dir / "logs" / "warnings").glob("*.json")):
        texts = json.loads(path.read_text(encoding="utf-8"))
        if texts:
            warnings.append((path.stem, texts))
    subjects = sorted({p.name[4:] for p in output_dir.glob("sub-*") if p.is_dir()})
    simulated = any(q.get("GroundTruthAvailable") for q in qualities.values())
    caveats = [SIMULATED] if simulated else []
    if folds.get("Sloppy"):
        caveats.append(SLOPPY)
    if metrics is not None:
        for run, part in metrics.groupby("run", sort=False):
            caveats.extend(too_short(part, str(run)))
    steps = ["clean", "targets", "model"] if folds else ["clean", "targets"]
    weights = [folds["PretrainedWeights"]] if "PretrainedWeights" in folds else []
    paragraph, references = methods_parts(steps, __version__, weights=weights)
    snapshot = _latest_snapshot(output_dir)
    html = _template("group.html").render(
        subjects=subjects,
        caveats=caveats,
        folds=folds,
        summary=summary,
        per_run=per_run,
        group_figures=group_figures,
        intrascan=intrascan,
        unreadable=unreadable,
        cleaning=cleaning,
        cleaning_columns=columns,
        warnings=warnings,
        command_line=" ".join(snapshot.get("execution", {}).get("command_line", [])),
        environment=_environment(),
        methods=paragraph,
        references=references,
        version=__version__,
    )
    return writer.write_text(output_dir / "group.html", html)


def cleaning_row(label: str, quality: dict[str, Any]) -> dict[str, str]:
    """One line of the group report's cleaning table from a ``desc-clean_quality.json``."""
    row = {"run": label}
    slices = quality.get("spectral", {}).get("slice_harmonics", {}).get("change_db")
    row["slice harmonics (worst, dB)"] = f"{max(slices):+.1f}" if slices else "-"
    rms = quality.get("bcg", {}).get("beat_locked_rms_uv")
    row["BCG beat-locked RMS (median, dB)"] = (
        f"{rms['reduction_db']['median']:+.1f}" if rms else "-"
    )
    bcg = quality.get("bcg", {})
    row["cardiac reference"] = str(bcg.get("cardiac_reference") or bcg.get("reason", "-"))
    row["heart rate (bpm)"] = str(bcg.get("heart_rate_bpm", "-"))
    row["bad channels"] = str(len(quality.get("bad_channels", {})))
    truth = quality.get("ground_truth", {}).get("interior") or quality.get("ground_truth", {}).get(
        "scan"
    )
    if truth:
        row["ground-truth r (median)"] = f"{truth['correlation']['median']:.3f}"
    return row


def collect_runs(output_dir: Path, subject: str) -> list[RunEntry]:
    """Gather the outputs of every run of a subject, in name order."""
    root = output_dir / f"sub-{subject}"
    labels = sorted(
        {
            re.sub(r"_(space|atlas)-[^_]+", "", p.name.split("_desc-")[0])
            for p in root.rglob(f"sub-{subject}_*_desc-*")
            if p.is_file()
        }
    )
    entries = []
    for label in labels:
        entry = RunEntry(label=label)
        for sidecar in root.rglob(f"{label}_desc-sync_events.json"):
            entry.sync = json.loads(sidecar.read_text(encoding="utf-8"))
        for quality in root.rglob(f"{label}_desc-clean_quality.json"):
            values = json.loads(quality.read_text(encoding="utf-8"))
            entry.quality = quality_rows(values)
            if values.get("GroundTruthAvailable"):
                entry.caveats.append(SIMULATED)
        for sidecar in root.rglob(f"{label}_*desc-neurobolt_timeseries.json"):
            if json.loads(sidecar.read_text(encoding="utf-8")).get("Sloppy"):
                entry.caveats.append(SLOPPY)
        for metrics in root.rglob(f"{label}_*desc-neurobolt_metrics.tsv"):
            table = pd.read_csv(metrics, sep="\t")
            entry.caveats.extend(too_short(table, label))
            shown = table[table["split"].isin(["test", "all"])]  # every set is in the TSV
            entry.metrics = shown.to_html(index=False, float_format="%.3f", border=0, na_rep="n/a")
        for key, _, captions in SECTIONS:
            figures = [
                Figure(svg.relative_to(output_dir).as_posix(), captions[desc])
                for desc in captions
                for svg in sorted((root / "figures").glob(f"{label}_*desc-{desc}_*.svg"))
            ]
            if figures:
                entry.figures[key] = figures
        warnings_file = naming.warnings_path(output_dir, label)
        if warnings_file.is_file():
            entry.warnings = json.loads(warnings_file.read_text(encoding="utf-8"))
        entries.append(entry)
    return entries


#: Caveats shown in a box at the top of a report.
SIMULATED = (
    "Simulated data: the EEG and BOLD were written by bids-neurobolt-simulate, with a planted "
    "EEG-BOLD coupling; no result here says anything about real brains."
)
SLOPPY = (
    "--sloppy: a tiny NeuroBOLT trained for two epochs, to test the pipeline quickly. It is "
    "not expected to learn; do not read its correlations as results."
)


def too_short(metrics: pd.DataFrame, label: str) -> list[str]:
    """Return a caveat when test rows of a metrics table are too short to evaluate."""
    if "n_eff" not in metrics:
        return []
    test = metrics[metrics["split"] == "test"]
    missing = test["pearson_r"].isna()
    if not missing.any():
        return []
    return [
        f"{label}: {int(missing.sum())} of {len(test)} ROIs too short to evaluate (fewer "
        "than 10 effective samples on the test windows): their r, CI and p are n/a. Use "
        "longer runs, or train across subjects at the group level."
    ]


def _has(run: RunEntry, section: str) -> bool:
    if section == "sync":
        return run.sync is not None
    if section == "clean":
        return bool(run.quality) or section in run.figures
    if section == "model":
        return run.metrics is not None or section in run.figures
    return section in run.figures


def quality_rows(quality: dict[str, Any]) -> list[tuple[str, str]]:
    """Pick the metrics a reader checks first from a ``desc-clean_quality.json``.

    Every metric stays in the file; the report shows the ones that tell whether the
    cleaning worked: what was removed, how much of each artifact is left, the cardiac
    reference, and the agreement with the ground truth of a simulation.
    """

    def get(*keys: str) -> Any:
        value: Any = quality
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value

    def db(values: list[float] | None) -> str | None:
        return None if not values else ", ".join(f"{v:+.1f}" for v in values) + " dB"

    gradient, bcg = get("gradient") or {}, get("bcg") or {}
    rows: list[tuple[str, str | None]] = [
        (
            "Recording",
            f"{get('n_channels')} channels, {get('duration_s')} s at "
            f"{get('sampling_frequency'):g} Hz",
        ),
        (
            "Bad channels",
            ", ".join(f"{k} ({v})" for k, v in (get("bad_channels") or {}).items()) or "none",
        ),
    ]
    if gradient.get("gradient_corrected"):
        rows.append(
            (
                "Gradient artifact",
                f"{gradient['n_epochs']} {gradient['epoch_kind']}-"
                f"triggered epochs ({gradient.get('trigger_source', 'markers')}), "
                f"template of {gradient.get('template_window')} artifacts",
            )
        )
    else:
        rows.append(("Gradient artifact", str(gradient.get("reason", "not removed"))))
    rows.append(
        ("Slice harmonics, cleaned vs raw", db(get("spectral", "slice_harmonics", "change_db")))
    )
    rows.append(
        ("Volume harmonics, cleaned vs raw", db(get("spectral", "volume_harmonics", "change_db")))
    )
    if bcg.get("bcg_corrected"):
        rows.append(
            (
                "Cardiac reference",
                f"{bcg.get('cardiac_reference')}: {bcg.get('n_beats')} "
                f"beats, {bcg.get('heart_rate_bpm')} bpm",
            )
        )
        rms = get("bcg", "beat_locked_rms_uv")
        if rms:
            rows.append(
                (
                    "Beat-locked RMS, before → after (median)",
                    f"{rms['before']['median']:.2f} → {rms['after']['median']:.2f} µV "
                    f"({rms['reduction_db']['median']:+.1f} dB; EEG floor "
                    f"{rms['eeg_floor']['median']:.2f} µV)",
                )
            )
    else:
        rows.append(("BCG", str(bcg.get("reason", "not removed"))))
    bands = get("spectral", "allen_bands_uv2") or {}
    for name, band in bands.items():
        low, high = band["range_hz"]
        rows.append(
            (
                f"{name} power ({low:g}-{high:g} Hz), raw → cleaned",
                f"{band['raw']:.3g} → {band['cleaned']:.3g} µV²",
            )
        )
    truth = get("ground_truth", "interior")
    if truth:
        rows.append(
            (
                "Ground truth: correlation (median, min)",
                f"{truth['correlation']['median']:.3f}, {truth['correlation']['min']:.3f}",
            )
        )
        rows.append(("Ground truth: RMS error (median)", f"{truth['rmse_uv']['median']:.2f} µV"))
    if get("real_time_factor"):
        rows.append(("Speed", f"{get('seconds')} s, {get('real_time_factor')}x real time"))
    return [(name, value) for name, value in rows if value is not None]


def _latest_snapshot(output_dir: Path) -> dict[str, Any]:
    snapshots = sorted((output_dir / "logs").glob("config-*.toml"))
    if not snapshots:
        return {}
    with snapshots[-1].open("rb") as stream:
        return tomllib.load(stream)


def _environment() -> list[tuple[str, str]]:
    rows = [("bids-neurobolt", __version__), ("python", platform.python_version())]
    for package in _PACKAGES:
        try:
            rows.append((package, importlib.metadata.version(package)))
        except importlib.metadata.PackageNotFoundError:
            continue
    return rows


def _template(name: str) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bids_neurobolt.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(name)
