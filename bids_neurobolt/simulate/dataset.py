"""Simulate a whole dataset: settings, per-subject models, per-run signals, atomic output.

:func:`simulate_dataset` validates the settings (:class:`SimulationConfig`), draws each
subject's constants (:class:`SubjectModel`), simulates every run
(:func:`simulate_run`), and writes the raw BIDS tree plus the ground truth into a
temporary folder that is renamed into place only once complete, so an interrupted
simulation never looks like a finished one.

Random streams are seeded from ``(seed, stream, subject[, session, run])``, so a subject's
data do not change when more subjects are requested.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bids_neurobolt import __version__
from bids_neurobolt.errors import ConfigError, IOFailure, NeuroboltError, OutputError
from bids_neurobolt.simulate import bidswrite, bold, cardiac, eeg, gradient
from bids_neurobolt.simulate.groundtruth import (
    GROUND_TRUTH_DIR,
    GROUND_TRUTH_KEYS,
    GroundTruth,
    ground_truth_name,
    save_ground_truth,
)

#: Sessions used when EEG-only sessions are requested.
SCANNER_SESSION = "eegfmri"
EEG_ONLY_SESSION = "eegonly"

#: File stem of the planted ROI atlas under ``sourcedata/simulation/``.
ATLAS_STEM = f"tpl-{bold.SPACE}_atlas-simulated"

_LATENT_RATE = 10.0  # Hz
_LATENT_PREROLL = 40.0  # s of latents before the recording (HRF history)
_STREAM_SUBJECT, _STREAM_RUN = 1, 2

_TASK_DESCRIPTION = (
    "Simulated eyes-closed resting state; EEG band power follows slow random latents that "
    "also drive the ROI BOLD signals."
)


@dataclass(frozen=True)
class SimulationConfig:
    """Every setting of a simulation (recorded in ``simulation.json``).

    Attributes
    ----------
    n_subjects : int
        Number of subjects (labelled 01, 02, ...).
    duration : float
        Scan duration in seconds; the run has ``round(duration / tr)`` volumes.
    seed : int
        Non-negative random seed.
    sfreq : float
        EEG sampling rate in Hz.
    tr : float
        Repetition time in seconds.
    n_slices : int | None
        Slices per volume; None uses the grid's number of axial slices.
    n_channels : int
        EEG channels (a prefix of :data:`~bids_neurobolt.simulate.eeg.EEG_CHANNELS`).
    gradient_amplitude : float
        Median over EEG channels of the gradient artifact's peak absolute value (µV).
    bcg_amplitude : float
        Median over EEG channels of the BCG template's peak absolute value (µV).
    volume_marker : str
        Volume trigger marker name (``R128`` is written as a BrainVision Response).
    slice_marker : str | None
        Slice trigger marker name (a Comment), or None to write no slice markers.
    ecg : bool
        Record an ECG channel.
    ecg_inverted : bool
        Invert the ECG polarity.
    eeg_only_sessions : bool
        Add an EEG-only session (outside the scanner: no BOLD, no gradient or BCG
        artifact) per subject; all runs then carry a session entity.
    task : str
        Task label.
    n_runs : int
        Runs per session (a run entity is used when more than one).
    resolution : float
        BOLD voxel size in mm (2 to 6).
    pre_scan, post_scan : float
        EEG recorded before the first volume and after the last (s).
    clock_drift_ppm : float
        Largest scanner-vs-EEG clock rate error (ppm); each run draws one between half
        and all of it, with a random sign.
    gradient_variability : float
        SD of the slow relative change of each channel's gradient artifact.
    latent_timescale : float
        Smoothness of the band-power latents (s, Gaussian kernel SD).
    band_modulation : float
        SD of the natural-log band power driven by the latents.
    roi_amplitude, global_amplitude : float
        SD of the ROI and global BOLD signals (percent signal change).
    roi_eeg_fraction : float
        Share of each ROI signal's variance explained by the EEG latents.
    bold_noise : float
        BOLD noise SD in percent of the baseline.
    """

    n_subjects: int = 2
    duration: float = 300.0
    seed: int = 0
    sfreq: float = 5000.0
    tr: float = 2.0
    n_slices: int | None = None
    n_channels: int = 32
    gradient_amplitude: float = 2000.0
    bcg_amplitude: float = 50.0
    volume_marker: str = "R128"
    slice_marker: str | None = "Slice"
    ecg: bool = True
    ecg_inverted: bool = False
    eeg_only_sessions: bool = False
    task: str = "rest"
    n_runs: int = 1
    resolution: float = 4.0
    pre_scan: float = 5.0
    post_scan: float = 5.0
    clock_drift_ppm: float = 20.0
    gradient_variability: float = 0.01
    latent_timescale: float = 10.0
    band_modulation: float = 0.8
    roi_amplitude: float = 0.5
    global_amplitude: float = 0.25
    roi_eeg_fraction: float = 0.8
    bold_noise: float = 0.7

    @property
    def slices(self) -> int:
        """Slices per volume (``n_slices``, or the grid's axial slice count)."""
        if self.n_slices is not None:
            return self.n_slices
        return bold.mni_grid(self.resolution)[1][2]

    @property
    def n_volumes(self) -> int:
        """Volumes per scanner run."""
        return round(self.duration / self.tr)

    @property
    def n_samples(self) -> int:
        """EEG samples per run."""
        span = self.pre_scan + self.n_volumes * self.tr + self.post_scan
        return round(span * self.sfreq)

    @property
    def subjects(self) -> tuple[str, ...]:
        """Subject labels."""
        width = max(2, len(str(self.n_subjects)))
        return tuple(f"{i:0{width}d}" for i in range(1, self.n_subjects + 1))

    @property
    def sessions(self) -> tuple[str | None, ...]:
        """Session labels (None when the dataset has no sessions)."""
        return (SCANNER_SESSION, EEG_ONLY_SESSION) if self.eeg_only_sessions else (None,)

    @property
    def runs(self) -> tuple[int | None, ...]:
        """Run indices (None when there is one run per session)."""
        return tuple(range(1, self.n_runs + 1)) if self.n_runs > 1 else (None,)

    def validate(self) -> None:
        """Check every setting.

        Raises
        ------
        ConfigError
            Naming the setting, the problem and the accepted values.
        """

        def fail(name: str, problem: str, fix: str) -> None:
            raise ConfigError(f"simulation setting {name}: {problem}", fix=fix)

        if not isinstance(self.seed, int | np.integer) or self.seed < 0:
            fail("seed", f"{self.seed!r} is not a non-negative integer.", "Use e.g. --seed 0.")
        if not 1 <= self.n_subjects <= 999:
            fail("subjects", f"{self.n_subjects} is out of range.", "Use 1 to 999 subjects.")
        if not 1 <= self.n_runs <= 99:
            fail("runs", f"{self.n_runs} is out of range.", "Use 1 to 99 runs.")
        if not 250.0 <= self.sfreq <= 50000.0:
            fail(
                "sfreq",
                f"{self.sfreq} Hz is out of range.",
                "Use 250 to 50000 Hz (5000 is typical).",
            )
        if not 0.3 <= self.tr <= 10.0:
            fail("tr", f"{self.tr} s is out of range.", "Use a repetition time of 0.3 to 10 s.")
        if self.duration < self.tr or self.duration > 7200.0:
            fail(
                "duration",
                f"{self.duration} s gives {self.n_volumes} volumes at TR {self.tr} s.",
                "Use a duration of at least one TR and at most 7200 s.",
            )
        if not 2.0 <= self.resolution <= 6.0:
            fail("resolution", f"{self.resolution} mm is out of range.", "Use 2 to 6 mm.")
        if self.n_slices is not None and self.n_slices < 1:
            fail("slices", f"{self.n_slices} is not positive.", "Use at least one slice.")
        slice_period = self.tr / self.slices
        if slice_period < gradient.MIN_SLICE_PERIOD:
            fail(
                "slices",
                f"{self.slices} slices in a {self.tr} s TR leave {1e3 * slice_period:.1f} ms "
                f"per slice, shorter than the {1e3 * gradient.MIN_SLICE_PERIOD:.0f} ms the "
                "EPI model needs.",
                f"Use at most {int(self.tr / gradient.MIN_SLICE_PERIOD)} slices or a longer TR.",
            )
        if not 1 <= self.n_channels <= len(eeg.EEG_CHANNELS):
            fail(
                "channels",
                f"{self.n_channels} is out of range.",
                f"Use 1 to {len(eeg.EEG_CHANNELS)} EEG channels.",
            )
        for name in ("gradient_amplitude", "bcg_amplitude", "gradient_variability", "bold_noise"):
            if getattr(self, name) < 0:
                fail(name, f"{getattr(self, name)} is negative.", "Use a value >= 0.")
        for name in ("pre_scan", "post_scan", "clock_drift_ppm", "roi_amplitude"):
            if getattr(self, name) < 0:
                fail(name, f"{getattr(self, name)} is negative.", "Use a value >= 0.")
        for name in ("latent_timescale",):
            if getattr(self, name) <= 0:
                fail(name, f"{getattr(self, name)} is not positive.", "Use a value > 0.")
        if self.global_amplitude < 0 or self.band_modulation < 0:
            fail("global_amplitude/band_modulation", "negative.", "Use values >= 0.")
        if not 0.0 <= self.roi_eeg_fraction <= 1.0:
            fail("roi_eeg_fraction", f"{self.roi_eeg_fraction} is not in [0, 1].", "Use 0 to 1.")
        if not self.task.isalnum():
            fail("task", f"{self.task!r} is not a BIDS label.", "Use letters and digits only.")
        markers = [("volume_marker", self.volume_marker), ("slice_marker", self.slice_marker)]
        for name, marker in markers:
            if marker is None:
                continue
            problem = bidswrite.check_marker_name(marker)
            if problem:
                fail(name, f"{marker!r} cannot be a BrainVision marker: {problem}.", "Rename it.")
        if self.slice_marker is not None and bidswrite.marker_description(
            self.slice_marker
        ) == bidswrite.marker_description(self.volume_marker):
            fail(
                "slice_marker",
                f"{self.slice_marker!r} is the volume marker too.",
                "Give slices and volumes different marker names.",
            )


@dataclass(frozen=True)
class SubjectModel:
    """Constants of one subject, shared by all of its runs."""

    eeg: eeg.EEGTraits
    heart: cardiac.HeartTraits
    bcg: cardiac.BCGModel
    gradient_coupling: NDArray[np.float64]
    roi_weights: NDArray[np.float64]
    age: int
    sex: str


def channel_layout(config: SimulationConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Channel names and types (``eeg`` then ``ecg``) of every run."""
    names = eeg.channel_names(config.n_channels)
    if config.ecg:
        return (*names, eeg.ECG_CHANNEL), ("eeg",) * len(names) + ("ecg",)
    return names, ("eeg",) * len(names)


def gradient_ramps(config: SimulationConfig) -> tuple[NDArray[np.float64], float]:
    """Normalised EPI ramp table and smoothing SD (s) of the configured sequence."""
    sigma = 1.0 / config.sfreq
    return gradient.normalise_ramps(gradient.epi_ramps(config.tr / config.slices), sigma), sigma


def subject_model(config: SimulationConfig, subject_index: int) -> SubjectModel:
    """Draw the constants of subject ``subject_index`` (1-based).

    Parameters
    ----------
    config : SimulationConfig
        Validated settings.
    subject_index : int
        1-based subject number.

    Returns
    -------
    SubjectModel
    """
    rng = np.random.default_rng([config.seed, _STREAM_SUBJECT, subject_index])
    names = eeg.channel_names(config.n_channels)
    directions = eeg.electrode_directions(names)
    reference = eeg.electrode_directions([eeg.REFERENCE_CHANNEL])[0]
    n_ecg = int(config.ecg)
    eeg_traits = eeg.eeg_traits(rng, names)
    heart = cardiac.heart_traits(rng, inverted=config.ecg_inverted)
    bcg = cardiac.bcg_model(rng, directions, reference, config.bcg_amplitude, n_ecg)
    ramps, sigma = gradient_ramps(config)
    coupling = gradient.scale_coupling(
        gradient.gradient_coupling(rng, directions, reference, n_ecg),
        ramps,
        sigma,
        config.gradient_amplitude,
        len(names),
    )
    return SubjectModel(
        eeg=eeg_traits,
        heart=heart,
        bcg=bcg,
        gradient_coupling=coupling,
        roi_weights=bold.roi_weights(rng),
        age=int(rng.integers(19, 41)),
        sex=str(rng.choice(["F", "M"])),
    )


@dataclass(frozen=True)
class SimulatedRun:
    """Arrays of one simulated run, ready to write."""

    raw: NDArray[np.float32]
    truth: GroundTruth
    volumes: NDArray[np.float32] | None
    markers: tuple[tuple[int, str, str], ...]


def simulate_run(
    config: SimulationConfig,
    model: SubjectModel,
    rng: np.random.Generator,
    *,
    scanner: bool,
    anatomy: bold.Anatomy | None = None,
    labels: NDArray[np.int16] | None = None,
) -> SimulatedRun:
    """Simulate one run: clean EEG, ECG, artifacts, markers, ROI signals and BOLD.

    Parameters
    ----------
    config : SimulationConfig
        Validated settings.
    model : SubjectModel
        The subject's constants.
    rng : numpy.random.Generator
        The run's random stream.
    scanner : bool
        Recorded during fMRI (gradient and BCG artifacts, markers, BOLD) or outside.
    anatomy, labels : optional
        Grid anatomy and ROI labels, required when ``scanner`` is true.

    Returns
    -------
    SimulatedRun
    """
    sfreq, n_samples, n_volumes = config.sfreq, config.n_samples, config.n_volumes
    ch_names, ch_types = channel_layout(config)
    n_channels = len(ch_names)

    latent_times = np.arange(-_LATENT_PREROLL, n_samples / sfreq + 1.0, 1.0 / _LATENT_RATE)
    latents, vigilance = eeg.band_latents(
        rng, latent_times.size, _LATENT_RATE, config.latent_timescale
    )
    clean = eeg.clean_eeg(
        rng, model.eeg, latents, latent_times, n_samples, sfreq, config.band_modulation
    )
    beats = cardiac.heartbeats(rng, model.heart, 0.0, n_samples / sfreq)
    if config.ecg:
        ecg = cardiac.ecg_signal(rng, model.heart, beats, n_samples, sfreq)
        clean = np.vstack([clean, ecg[None]])

    ramps, sigma = gradient_ramps(config)
    order, timing = gradient.slice_timing(config.slices, config.tr)
    bcg_gains, bcg_delays = cardiac.bcg_beat_variability(
        rng, beats.beat_times.size, model.bcg.atoms.shape[0]
    )
    markers: list[tuple[int, str, str]] = []
    if scanner:
        drift = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0) * config.clock_drift_ppm * 1e-6
        first_volume = config.pre_scan + rng.uniform(0.0, 1.0) / sfreq
        scan = gradient.scanner_timing(
            n_volumes=n_volumes,
            n_slices=config.slices,
            tr=config.tr,
            sfreq=sfreq,
            first_volume=first_volume,
            clock_error=drift,
        )
        gain = gradient.coupling_drift(rng, n_channels, n_volumes, config.gradient_variability)
        coupling, bcg_weights = model.gradient_coupling, model.bcg.weights
        slice_onsets, slice_markers = scan.slice_onsets, scan.slice_markers
        volume_markers = scan.volume_markers
        roi_times = volume_markers / sfreq
        markers = _markers(config, slice_markers)
    else:
        gain = np.ones((n_channels, 0))
        coupling, bcg_weights = np.zeros((n_channels, 3)), np.zeros_like(model.bcg.weights)
        slice_onsets = np.zeros((0, config.slices))
        slice_markers = np.zeros((0, config.slices), dtype=np.int64)
        volume_markers = np.zeros(0, dtype=np.int64)
        roi_times = config.pre_scan + np.arange(n_volumes) * config.tr

    signals = bold.roi_signals(
        rng,
        latents=latents,
        vigilance=vigilance,
        latent_times=latent_times,
        times=roi_times,
        weights=model.roi_weights,
        eeg_fraction=config.roi_eeg_fraction,
        roi_amplitude=config.roi_amplitude,
        global_amplitude=config.global_amplitude,
        timescale=config.latent_timescale,
    )
    truth = GroundTruth(
        sfreq=sfreq,
        ch_names=ch_names,
        ch_types=ch_types,
        clean_eeg=clean,
        has_scanner=scanner,
        volume_markers=volume_markers,
        slice_markers=slice_markers,
        slice_onsets=slice_onsets,
        slice_order=order,
        slice_timing=timing,
        beat_times=beats.beat_times,
        r_peaks=beats.r_peaks(sfreq, n_samples),
        latent_times=latent_times,
        latents=latents,
        latent_names=eeg.BANDS,
        vigilance=vigilance,
        roi_names=bold.ROI_NAMES,
        roi_times=signals.times,
        roi_signals=signals.total,
        roi_eeg_signals=signals.eeg,
        global_signal=signals.global_signal,
        roi_weights=model.roi_weights,
        gradient_ramps=ramps,
        gradient_sigma=sigma,
        gradient_coupling=coupling,
        gradient_gain=gain,
        bcg_atoms=model.bcg.atoms,
        bcg_weights=bcg_weights,
        bcg_beat_gains=bcg_gains,
        bcg_beat_delays=bcg_delays,
    )
    volumes = None
    if scanner:
        raw = truth.raw()
        if anatomy is None or labels is None:
            raise ValueError("a scanner run needs the anatomy and ROI labels")
        volumes = bold.bold_volumes(rng, anatomy, labels, signals, config.bold_noise)
    else:
        raw = clean
    return SimulatedRun(raw=raw, truth=truth, volumes=volumes, markers=tuple(markers))


def _markers(
    config: SimulationConfig, slice_markers: NDArray[np.int64]
) -> list[tuple[int, str, str]]:
    volume_meaning = "MR volume trigger (first slice of each volume)"
    slice_meaning = "MR slice trigger"
    rows: list[tuple[int, int, str, str]] = [
        (int(sample), 0, config.volume_marker, volume_meaning) for sample in slice_markers[:, 0]
    ]
    if config.slice_marker is not None:
        rows += [(int(s), 1, config.slice_marker, slice_meaning) for s in slice_markers.ravel()]
    rows.sort()
    return [(sample, name, meaning) for sample, _, name, meaning in rows]


@dataclass(frozen=True)
class RunSummary:
    """Files and sizes of one simulated run (paths in the final dataset)."""

    subject: str
    session: str | None
    task: str
    run: int | None
    eeg_file: Path
    bold_file: Path | None
    ground_truth_file: Path
    n_samples: int
    n_volumes: int
    n_beats: int
    has_scanner: bool


@dataclass(frozen=True)
class SimulationSummary:
    """What :func:`simulate_dataset` wrote.

    Attributes
    ----------
    bids_root : Path
        The raw BIDS dataset.
    ground_truth_dir : Path
        ``bids_root / "sourcedata" / "simulation"``.
    atlas_file, atlas_labels_file : Path
        The planted ROI atlas (``_dseg.nii.gz``, ``_dseg.tsv``).
    subjects : tuple of str
        Subject labels.
    runs : tuple of RunSummary
        Every run.
    parameters : dict
        The settings (as recorded in ``simulation.json``).
    elapsed : float
        Wall-clock seconds.
    """

    bids_root: Path
    ground_truth_dir: Path
    atlas_file: Path
    atlas_labels_file: Path
    subjects: tuple[str, ...]
    runs: tuple[RunSummary, ...]
    parameters: dict[str, Any]
    elapsed: float


def _basename(subject: str, session: str | None, task: str, run: int | None) -> str:
    parts = [f"sub-{subject}"]
    if session is not None:
        parts.append(f"ses-{session}")
    parts.append(f"task-{task}")
    if run is not None:
        parts.append(f"run-{run}")
    return "_".join(parts)


def _readme(config: SimulationConfig) -> str:
    volume = bidswrite.marker_description(config.volume_marker)
    slice_ = (
        bidswrite.marker_description(config.slice_marker)
        if config.slice_marker is not None
        else "none written"
    )
    return (
        "bids-neurobolt simulated simultaneous EEG-fMRI\n"
        "==============================================\n\n"
        f"Written by bids-neurobolt-simulate {__version__} with seed {config.seed}.\n\n"
        "EEG (BrainVision, float32, µV): physiological EEG whose band power follows slow "
        "random latents, plus MR gradient artifact, ballistocardiogram and an ECG channel.\n"
        f"Volume markers read by MNE as '{volume}', slice markers as '{slice_}'.\n"
        f"BOLD: {config.resolution:g} mm NIfTI in {bold.SPACE} space; six bilateral ROIs "
        "carry HRF-convolved functions of the EEG band-power latents.\n\n"
        "The ground truth (clean EEG, R-peaks, true artifact onsets, noise-free ROI signals, "
        "latents, the ROI atlas and every setting) is in sourcedata/simulation/; read it "
        "with bids_neurobolt.simulate.load_ground_truth.\n"
    )


def simulate_dataset(
    out_dir: str | os.PathLike[str],
    *,
    n_subjects: int = 2,
    duration: float = 300.0,
    seed: int = 0,
    sfreq: float = 5000.0,
    tr: float = 2.0,
    n_slices: int | None = None,
    n_channels: int = 32,
    gradient_amplitude: float = 2000.0,
    bcg_amplitude: float = 50.0,
    volume_marker: str = "R128",
    slice_marker: str | None = "Slice",
    ecg: bool = True,
    ecg_inverted: bool = False,
    eeg_only_sessions: bool = False,
    task: str = "rest",
    n_runs: int = 1,
    resolution: float = 4.0,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    **advanced: Any,
) -> SimulationSummary:
    """Simulate a raw BIDS dataset of simultaneous EEG-fMRI with its ground truth.

    Parameters
    ----------
    out_dir : path-like
        Dataset root to create. It must not exist or be empty unless ``overwrite``.
    n_subjects, duration, seed, sfreq, tr, n_slices, n_channels, gradient_amplitude, \
bcg_amplitude, volume_marker, slice_marker, ecg, ecg_inverted, eeg_only_sessions, task, \
n_runs, resolution
        See :class:`SimulationConfig`.
    overwrite : bool
        Replace the contents of a non-empty ``out_dir``.
    progress : callable | None
        Called with one line of text per finished step.
    **advanced
        Further :class:`SimulationConfig` fields (``pre_scan``, ``post_scan``,
        ``clock_drift_ppm``, ``gradient_variability``, ``latent_timescale``,
        ``band_modulation``, ``roi_amplitude``, ``global_amplitude``,
        ``roi_eeg_fraction``, ``bold_noise``).

    Returns
    -------
    SimulationSummary

    Raises
    ------
    ConfigError
        A setting is invalid.
    OutputError
        ``out_dir`` is not empty (without ``overwrite``), is a file, or cannot be written.
    IOFailure
        Writing failed (e.g. the disk is full); nothing is left at ``out_dir``.
    """
    unknown = sorted(set(advanced) - {f.name for f in dataclasses.fields(SimulationConfig)})
    if unknown:
        raise ConfigError(
            f"unknown simulation setting(s): {', '.join(unknown)}.",
            fix="See bids_neurobolt.simulate.SimulationConfig for the accepted names.",
        )
    config = SimulationConfig(
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
        slice_marker=slice_marker,
        ecg=ecg,
        ecg_inverted=ecg_inverted,
        eeg_only_sessions=eeg_only_sessions,
        task=task,
        n_runs=n_runs,
        resolution=resolution,
        **advanced,
    )
    config.validate()
    out = Path(out_dir).expanduser().absolute()
    _check_output(out, overwrite)
    say = progress or (lambda _message: None)
    start = time.perf_counter()

    with _staging(out) as stage:
        summary = _simulate_into(stage, out, config, say, start)
        say(f"finishing {out}")
    return dataclasses.replace(summary, elapsed=time.perf_counter() - start)


def _simulate_into(
    stage: Path,
    final: Path,
    config: SimulationConfig,
    say: Callable[[str], None],
    start: float,
) -> SimulationSummary:
    anatomy = bold.load_anatomy(config.resolution)
    labels = bold.roi_atlas(anatomy)
    atlas_file = bidswrite.write_atlas(
        stage / GROUND_TRUTH_DIR,
        ATLAS_STEM,
        labels=labels,
        affine=anatomy.affine,
        names=bold.ROI_NAMES,
    )
    models = {s: subject_model(config, i) for i, s in enumerate(config.subjects, start=1)}
    runs: list[RunSummary] = []
    for subject_index, subject in enumerate(config.subjects, start=1):
        for session_index, session in enumerate(config.sessions, start=1):
            for run_index, run in enumerate(config.runs, start=1):
                t0 = time.perf_counter()
                rng = np.random.default_rng(
                    [config.seed, _STREAM_RUN, subject_index, session_index, run_index]
                )
                scanner = session != EEG_ONLY_SESSION
                simulated = simulate_run(
                    config, models[subject], rng, scanner=scanner, anatomy=anatomy, labels=labels
                )
                summary = _write_run(
                    stage, config, simulated, anatomy.affine, subject, session, run
                )
                runs.append(summary)
                say(
                    _basename(subject, session, config.task, run).replace("_", " ")
                    + f": {len(simulated.truth.ch_names)} channels x {summary.n_samples} "
                    f"samples, {simulated.truth.volume_markers.size} volumes, "
                    f"{summary.n_beats} heartbeats ({time.perf_counter() - t0:.1f} s)"
                )

    bidswrite.write_dataset_files(
        stage,
        version=__version__,
        participants=[
            {"participant_id": f"sub-{s}", "age": models[s].age, "sex": models[s].sex}
            for s in config.subjects
        ],
        readme=_readme(config),
    )
    parameters = dataclasses.asdict(config) | {"n_slices": config.slices}
    _write_simulation_json(
        stage / GROUND_TRUTH_DIR / "simulation.json", config, parameters, labels, runs, stage
    )

    def final_path(path: Path) -> Path:
        return final / path.relative_to(stage)

    return SimulationSummary(
        bids_root=final,
        ground_truth_dir=final / GROUND_TRUTH_DIR,
        atlas_file=final_path(atlas_file),
        atlas_labels_file=final / GROUND_TRUTH_DIR / f"{ATLAS_STEM}_dseg.tsv",
        subjects=config.subjects,
        runs=tuple(
            dataclasses.replace(
                r,
                eeg_file=final_path(r.eeg_file),
                bold_file=final_path(r.bold_file) if r.bold_file else None,
                ground_truth_file=final_path(r.ground_truth_file),
            )
            for r in runs
        ),
        parameters=parameters,
        elapsed=time.perf_counter() - start,
    )


def _write_run(
    stage: Path,
    config: SimulationConfig,
    simulated: SimulatedRun,
    affine: NDArray[np.float64],
    subject: str,
    session: str | None,
    run: int | None,
) -> RunSummary:
    """Write one run's EEG, BOLD and ground truth under ``stage``; paths are in ``stage``."""
    truth = simulated.truth
    basename = _basename(subject, session, config.task, run)
    folder = stage / f"sub-{subject}" / (f"ses-{session}" if session else "")
    vhdr = bidswrite.write_eeg_run(
        folder / "eeg",
        basename,
        data=simulated.raw,
        ch_names=truth.ch_names,
        ch_types=truth.ch_types,
        sfreq=config.sfreq,
        reference=eeg.REFERENCE_CHANNEL,
        ground=eeg.GROUND_CHANNEL,
        markers=simulated.markers,
        task=config.task,
        task_description=_TASK_DESCRIPTION
        + ("" if truth.has_scanner else " Recorded outside the scanner."),
        subject_artefacts=(
            "Simulated MR gradient artifact (slice-periodic EPI) and ballistocardiogram; "
            "the ground truth is in sourcedata/simulation."
            if truth.has_scanner
            else "none (simulated outside the scanner)"
        ),
        version=__version__,
    )
    bold_file = None
    if simulated.volumes is not None:
        bold_file = bidswrite.write_bold_run(
            folder / "func",
            basename,
            volumes=simulated.volumes,
            affine=affine,
            tr=config.tr,
            slice_timing=truth.slice_timing,
            task=config.task,
            task_description=_TASK_DESCRIPTION,
            version=__version__,
        )
    truth_file = stage / GROUND_TRUTH_DIR / ground_truth_name(subject, session, config.task, run)
    save_ground_truth(truth_file, truth)
    return RunSummary(
        subject=subject,
        session=session,
        task=config.task,
        run=run,
        eeg_file=vhdr,
        bold_file=bold_file,
        ground_truth_file=truth_file,
        n_samples=truth.n_samples,
        n_volumes=truth.n_volumes,
        n_beats=int(truth.r_peaks.size),
        has_scanner=truth.has_scanner,
    )


def _write_simulation_json(
    path: Path,
    config: SimulationConfig,
    parameters: dict[str, Any],
    labels: NDArray[np.int16],
    runs: list[RunSummary],
    root: Path,
) -> None:
    ch_names, ch_types = channel_layout(config)

    def relative(file: Path | None) -> str | None:
        return None if file is None else file.relative_to(root).as_posix()

    n_lines, echo_spacing = gradient.epi_readout(config.tr / config.slices)
    content = {
        "generator": {"name": "bids-neurobolt-simulate", "version": __version__},
        "numpy_version": np.__version__,
        "parameters": parameters,
        "derived": {
            "n_volumes": config.n_volumes,
            "n_samples": config.n_samples,
            "slice_period_s": config.tr / config.slices,
            "epi_readout_lines": n_lines,
            "epi_echo_spacing_s": echo_spacing,
            "gradient_smoothing_sd_s": 1.0 / config.sfreq,
            "latent_sfreq_hz": _LATENT_RATE,
        },
        "channels": {
            "names": list(ch_names),
            "types": list(ch_types),
            "reference": eeg.REFERENCE_CHANNEL,
            "ground": eeg.GROUND_CHANNEL,
            "units": "µV",
        },
        "markers": {
            "volume": {
                "name": config.volume_marker,
                "mne_description": bidswrite.marker_description(config.volume_marker),
            },
            "slice": None
            if config.slice_marker is None
            else {
                "name": config.slice_marker,
                "mne_description": bidswrite.marker_description(config.slice_marker),
            },
            "rule": "marker sample = ceil(true onset in samples): onsets precede markers by "
            "less than one sample",
        },
        "bands_hz": eeg.BAND_RANGES,
        "atlas": {
            "image": f"{ATLAS_STEM}_dseg.nii.gz",
            "labels": f"{ATLAS_STEM}_dseg.tsv",
            "space": bold.SPACE,
            "resolution_mm": config.resolution,
            "rois": [
                {
                    "index": i,
                    "name": roi.name,
                    "centre_mm": list(roi.centre),
                    "mirrored": True,
                    "radii_mm": list(roi.radii),
                    "band_weights": dict(zip(eeg.BANDS, roi.weights, strict=True)),
                    "n_voxels": int((labels == i).sum()),
                }
                for i, roi in enumerate(bold.ROIS, start=1)
            ],
        },
        "runs": [
            {
                "subject": r.subject,
                "session": r.session,
                "task": r.task,
                "run": r.run,
                "has_scanner": r.has_scanner,
                "eeg": relative(r.eeg_file),
                "bold": relative(r.bold_file),
                "ground_truth": relative(r.ground_truth_file),
                "n_samples": r.n_samples,
                "n_volumes": r.n_volumes,
                "n_r_peaks": r.n_beats,
            }
            for r in runs
        ],
        "ground_truth_keys": GROUND_TRUTH_KEYS,
    }
    path.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_output(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(
            "exists and is not a folder; the simulator writes a dataset folder there.",
            path=out,
            fix="Choose a new or empty folder.",
        )
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(
            "the output folder is not empty; the simulator will not mix a new dataset with "
            "existing files.",
            path=out,
            fix="Choose a new or empty folder, or pass --overwrite (overwrite=True) to "
            "replace its contents.",
        )
    if overwrite and out in (Path(out.anchor), Path.home()):
        raise OutputError(
            "refusing to replace the contents of the file-system root or the home folder.",
            path=out,
            fix="Choose a dedicated output folder.",
        )


@contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """Yield a temporary folder on ``out``'s file system; publish it as ``out`` on success.

    A new ``out`` is created by renaming the temporary sibling folder. An existing
    (empty, or replaced) ``out`` receives the temporary folder's entries one by one,
    ``dataset_description.json`` last, so it is never a complete-looking dataset early.
    On any error the temporary folder is removed and ``out`` is left as it was (unless
    its old contents were already being replaced).
    """
    existing = out.is_dir()
    try:
        if existing:
            stage = Path(tempfile.mkdtemp(prefix=".simulate-partial-", dir=out))
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise OutputError(
            f"cannot create the output folder ({exc.strerror or exc}).",
            path=out,
            fix="Check the path and its permissions.",
        ) from exc
    try:
        yield stage
        if existing:
            _publish_into(stage, out)
        else:
            stage.rename(out)
    except NeuroboltError:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(exc, PermissionError):
            raise OutputError(
                f"cannot write the dataset ({exc}).",
                path=out,
                fix="Check the folder's permissions.",
            ) from exc
        raise IOFailure(
            f"writing the simulated dataset failed ({exc}); nothing was kept.",
            path=out,
            fix="Check the free disk space and retry.",
        ) from exc
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _publish_into(stage: Path, out: Path) -> None:
    for entry in out.iterdir():
        if entry == stage:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    entries = sorted(stage.iterdir(), key=lambda p: p.name == "dataset_description.json")
    for entry in entries:
        entry.rename(out / entry.name)
    stage.rmdir()
