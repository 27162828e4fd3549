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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
            "atlas": "The atlas over the MNI template.",
            "rois": "Scaled ROI BOLD targets.",
        },
    ),
    (
        "model",
        "NeuroBOLT model",
        {
            "training": "Training and validation loss per epoch.",
            "prediction": "Predicted and measured BOLD on the test part.",
            "roir": "Test correlation per ROI, NeuroBOLT vs ridge baseline.",
        },
    ),
)

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
    paragraph, references = methods_parts(steps, __version__)
    writer.write_text(
        output_dir / "logs" / "methods.md", f"# Methods\n\n{methods_markdown(steps, __version__)}"
    )
    html = _template("participant.html").render(
        subject=subject,
        version=__version__,
        runs=runs,
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


def collect_runs(output_dir: Path, subject: str) -> list[RunEntry]:
    """Gather the outputs of every run of a subject, in name order."""
    root = output_dir / f"sub-{subject}"
    labels = sorted(
        {p.name.split("_desc-")[0] for p in root.rglob(f"sub-{subject}_*_desc-*") if p.is_file()}
    )
    entries = []
    for label in labels:
        entry = RunEntry(label=label)
        for sidecar in root.rglob(f"{label}_desc-sync_events.json"):
            entry.sync = json.loads(sidecar.read_text(encoding="utf-8"))
        for quality in root.rglob(f"{label}_desc-clean_quality.json"):
            entry.quality = _flatten(json.loads(quality.read_text(encoding="utf-8")))
        for metrics in root.rglob(f"{label}_*desc-neurobolt_metrics.tsv"):
            table = pd.read_csv(metrics, sep="\t")
            entry.metrics = table.to_html(index=False, float_format="%.3f", border=0)
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


def _has(run: RunEntry, section: str) -> bool:
    if section == "sync":
        return run.sync is not None
    if section == "clean":
        return bool(run.quality) or section in run.figures
    if section == "model":
        return run.metrics is not None or section in run.figures
    return section in run.figures


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(_flatten(value, f"{name} / "))
        elif isinstance(value, float):
            rows.append((name, f"{value:.4g}"))
        elif isinstance(value, list) and len(value) > 8:
            rows.append((name, f"{len(value)} values"))
        else:
            rows.append((name, str(value)))
    return rows


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
