"""``bids-neurobolt-simulate``: write a simulated EEG-fMRI BIDS dataset from the shell."""

from __future__ import annotations

from pathlib import Path

import click

from bids_neurobolt import __version__
from bids_neurobolt.errors import NeuroboltError

_EPILOG = (
    "Writes OUT_DIR as a raw BIDS dataset (EEG BrainVision with gradient and BCG artifacts, "
    "ECG, volume/slice markers; BOLD NIfTI in MNI152NLin2009cAsym) and its ground truth in "
    "OUT_DIR/sourcedata/simulation/. Exit codes: 0 ok, 2 bad option, 73 OUT_DIR not "
    "usable, 74 write failure."
)


@click.command(
    name="bids-neurobolt-simulate",
    epilog=_EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--subjects", "n_subjects", type=int, default=2, show_default=True, help="Number of subjects."
)
@click.option(
    "--duration",
    type=float,
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="Scan duration per run; volumes = round(duration / TR).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (>= 0).")
@click.option(
    "--sfreq",
    type=float,
    default=5000.0,
    show_default=True,
    metavar="HZ",
    help="EEG sampling rate.",
)
@click.option(
    "--tr", type=float, default=2.0, show_default=True, metavar="SECONDS", help="Repetition time."
)
@click.option(
    "--slices",
    "n_slices",
    type=int,
    default=None,
    help="Slices per volume  [default: axial slices of the BOLD grid, 49 at 4 mm]",
)
@click.option(
    "--channels",
    "n_channels",
    type=int,
    default=32,
    show_default=True,
    help="EEG channels (10-20/10-10 names; an ECG channel is added).",
)
@click.option(
    "--gradient-amplitude",
    type=float,
    default=2000.0,
    show_default=True,
    metavar="UV",
    help="Median channel peak of the gradient artifact (µV).",
)
@click.option(
    "--bcg-amplitude",
    type=float,
    default=50.0,
    show_default=True,
    metavar="UV",
    help="Median channel peak of the BCG template (µV).",
)
@click.option(
    "--volume-marker",
    default="R128",
    show_default=True,
    help="Volume marker (R<n>: Response, S<n>: Stimulus, else a Comment).",
)
@click.option(
    "--slice-marker", default="Slice", show_default=True, help="Slice marker (a Comment)."
)
@click.option("--no-slice-markers", is_flag=True, help="Write no slice markers.")
@click.option("--no-ecg", is_flag=True, help="Record no ECG channel.")
@click.option("--ecg-inverted", is_flag=True, help="Invert the ECG polarity.")
@click.option(
    "--eeg-only-sessions",
    is_flag=True,
    help="Add an EEG-only session per subject (ses-eegonly; the scanner runs go to ses-eegfmri).",
)
@click.option("--task", default="rest", show_default=True, help="Task label.")
@click.option("--runs", "n_runs", type=int, default=1, show_default=True, help="Runs per session.")
@click.option(
    "--resolution",
    type=float,
    default=4.0,
    show_default=True,
    metavar="MM",
    help="BOLD voxel size (2 to 6 mm).",
)
@click.option(
    "--clock-drift-ppm",
    type=float,
    default=20.0,
    show_default=True,
    help="Largest scanner-vs-EEG clock rate error (0: triggers keep one sub-sample "
    "phase per slice).",
)
@click.option("--overwrite", is_flag=True, help="Replace the contents of a non-empty OUT_DIR.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.version_option(__version__, "--version", prog_name="bids-neurobolt-simulate")
@click.pass_context
def main(
    ctx: click.Context,
    out_dir: Path,
    n_subjects: int,
    duration: float,
    seed: int,
    sfreq: float,
    tr: float,
    n_slices: int | None,
    n_channels: int,
    gradient_amplitude: float,
    bcg_amplitude: float,
    volume_marker: str,
    slice_marker: str,
    no_slice_markers: bool,
    no_ecg: bool,
    ecg_inverted: bool,
    eeg_only_sessions: bool,
    task: str,
    n_runs: int,
    resolution: float,
    clock_drift_ppm: float,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Simulate simultaneous EEG-fMRI as a BIDS dataset with ground truth in OUT_DIR."""
    from bids_neurobolt.simulate.dataset import simulate_dataset

    def progress(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    try:
        summary = simulate_dataset(
            out_dir,
            n_subjects=n_subjects,
            duration=duration,
            seed=seed,
            sfreq=sfreq,
            tr=tr,
            n_slices=n_slices,
            n_channels=n_channels,
            gradient_amplitude=gradient_amplitude,
            bcg_amplitude=bcg_amplitude,
            volume_marker=volume_marker,
            slice_marker=None if no_slice_markers else slice_marker,
            ecg=not no_ecg,
            ecg_inverted=ecg_inverted,
            eeg_only_sessions=eeg_only_sessions,
            task=task,
            n_runs=n_runs,
            resolution=resolution,
            clock_drift_ppm=clock_drift_ppm,
            overwrite=overwrite,
            progress=progress,
        )
    except NeuroboltError as error:
        click.echo(f"bids-neurobolt-simulate: error: {error.message}", err=True)
        ctx.exit(int(error.exit_code))
    progress(
        f"wrote {len(summary.runs)} run(s) of {len(summary.subjects)} subject(s) to "
        f"{summary.bids_root} in {summary.elapsed:.1f} s; ground truth in "
        f"{summary.ground_truth_dir}"
    )
