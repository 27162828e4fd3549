"""Ground truth of a simulated run: what was simulated, saved next to the raw dataset.

Each run's ground truth is one ``.npz`` file under ``sourcedata/simulation/`` (the BIDS
validator ignores ``sourcedata/``). :class:`GroundTruth` holds its arrays and recomputes
the gradient and BCG artifacts from the stored parameters, so that
``raw == clean_eeg + gradient_artifact() + bcg_artifact()`` sample for sample (in float32,
µV) without storing two more copies of the recording.
"""

from __future__ import annotations

import dataclasses
import io
import re
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bids_neurobolt.errors import DataError, MissingInputError
from bids_neurobolt.simulate.cardiac import bcg_artifact
from bids_neurobolt.simulate.gradient import gradient_artifact

#: Folder, relative to the dataset root, holding the simulation's ground truth.
GROUND_TRUTH_DIR = Path("sourcedata") / "simulation"

#: Description of every array in a ground-truth ``.npz`` (also written to simulation.json).
GROUND_TRUTH_KEYS: dict[str, str] = {
    "sfreq": "EEG sampling rate (Hz), 0-d",
    "ch_names": "channel names, same order as the raw EEG",
    "ch_types": "channel types ('eeg' or 'ecg')",
    "clean_eeg": "(n_channels, n_samples) float32 µV: the raw EEG without gradient and BCG "
    "artifacts (the ECG row is the clean ECG)",
    "has_scanner": "0-d bool: the run was recorded during fMRI (gradient and BCG artifacts, "
    "markers, BOLD)",
    "volume_markers": "(n_volumes,) int64 sample of each volume trigger (empty without scanner)",
    "slice_markers": "(n_volumes, n_slices) int64 sample of each slice trigger, acquisition "
    "order (filled even when slice markers were not written)",
    "slice_onsets": "(n_volumes, n_slices) float64 true slice artifact onsets in fractional "
    "samples (onset <= marker < onset + 1)",
    "slice_order": "(n_slices,) spatial slice index acquired at each acquisition position",
    "slice_timing": "(n_slices,) BIDS SliceTiming (s) of each spatial slice",
    "beat_times": "(n_beats,) R-peak times (s from the first sample; a first beat may lie "
    "just before the recording)",
    "r_peaks": "(n_r,) int64 R-peak samples inside the recording",
    "latent_times": "(n_t,) times (s) of the latents (starting before the recording)",
    "latents": "(n_t, 4) band log-power latents (delta, theta, alpha, beta), unit variance "
    "in expectation",
    "latent_names": "names of the latent columns",
    "vigilance": "(n_t,) vigilance latent, unit variance in expectation (drives the global signal)",
    "roi_names": "ROI names, label order of the atlas",
    "roi_times": "(n_volumes,) times (s) of the ROI samples: volume marker times, or a "
    "virtual TR grid for EEG-only runs",
    "roi_signals": "(n_volumes, n_rois) noise-free ROI BOLD (percent signal change) without "
    "the global signal",
    "roi_eeg_signals": "(n_volumes, n_rois) the part of roi_signals driven by the EEG latents",
    "global_signal": "(n_volumes,) global BOLD signal (percent) added to every brain voxel",
    "roi_weights": "(n_rois, 4) coupling of each ROI to the band latents",
    "gradient_ramps": "(n_ramps, 4) EPI gradient ramps of one slice: axis, start (s), end "
    "(s), normalised slope",
    "gradient_sigma": "0-d SD (s) of the Gaussian smoothing of dG/dt",
    "gradient_coupling": "(n_channels, 3) µV per unit dG/dt of the x, y, z axes",
    "gradient_gain": "(n_channels, n_volumes) slow gain of each channel's artifact",
    "bcg_atoms": "(n_atoms, 4) BCG Gabor atoms: latency (s), width (s), frequency (Hz), "
    "phase (rad)",
    "bcg_weights": "(n_channels, n_atoms) µV weight of each atom per channel",
    "bcg_beat_gains": "(n_beats, n_atoms) beat-to-beat gains",
    "bcg_beat_delays": "(n_beats,) beat-to-beat BCG latency shifts (s)",
}


@dataclass(frozen=True)
class GroundTruth:
    """Everything simulated in one run (see :data:`GROUND_TRUTH_KEYS` for each field).

    Use :meth:`gradient_artifact`, :meth:`bcg_artifact`, :meth:`artifacts` and
    :meth:`raw` to recompute what was added to :attr:`clean_eeg`; with the raw EEG read
    from disk in µV, ``raw - gt.clean_eeg`` is the total artifact.
    """

    sfreq: float
    ch_names: tuple[str, ...]
    ch_types: tuple[str, ...]
    clean_eeg: NDArray[np.float32]
    has_scanner: bool
    volume_markers: NDArray[np.int64]
    slice_markers: NDArray[np.int64]
    slice_onsets: NDArray[np.float64]
    slice_order: NDArray[np.int64]
    slice_timing: NDArray[np.float64]
    beat_times: NDArray[np.float64]
    r_peaks: NDArray[np.int64]
    latent_times: NDArray[np.float64]
    latents: NDArray[np.float64]
    latent_names: tuple[str, ...]
    vigilance: NDArray[np.float64]
    roi_names: tuple[str, ...]
    roi_times: NDArray[np.float64]
    roi_signals: NDArray[np.float64]
    roi_eeg_signals: NDArray[np.float64]
    global_signal: NDArray[np.float64]
    roi_weights: NDArray[np.float64]
    gradient_ramps: NDArray[np.float64]
    gradient_sigma: float
    gradient_coupling: NDArray[np.float64]
    gradient_gain: NDArray[np.float64]
    bcg_atoms: NDArray[np.float64]
    bcg_weights: NDArray[np.float64]
    bcg_beat_gains: NDArray[np.float64]
    bcg_beat_delays: NDArray[np.float64]
    path: Path | None = dataclasses.field(default=None, compare=False)

    @property
    def n_samples(self) -> int:
        """Number of EEG samples."""
        return int(self.clean_eeg.shape[1])

    @property
    def n_volumes(self) -> int:
        """Number of ROI samples (BOLD volumes, or virtual TRs in an EEG-only run)."""
        return int(self.roi_times.size)

    @property
    def times(self) -> NDArray[np.float64]:
        """EEG sample times in seconds."""
        return np.arange(self.n_samples) / self.sfreq

    def gradient_artifact(self) -> NDArray[np.float32]:
        """Recompute the gradient artifact, ``(n_channels, n_samples)`` float32 µV."""
        if not self.has_scanner:
            return np.zeros_like(self.clean_eeg)
        return gradient_artifact(
            self.n_samples,
            self.sfreq,
            self.slice_onsets,
            self.gradient_ramps,
            self.gradient_sigma,
            self.gradient_coupling,
            self.gradient_gain,
        )

    def bcg_artifact(self) -> NDArray[np.float32]:
        """Recompute the BCG artifact, ``(n_channels, n_samples)`` float32 µV."""
        if not self.has_scanner:
            return np.zeros_like(self.clean_eeg)
        return bcg_artifact(
            self.n_samples,
            self.sfreq,
            self.beat_times,
            self.bcg_atoms,
            self.bcg_weights,
            self.bcg_beat_gains,
            self.bcg_beat_delays,
        )

    def artifacts(self) -> NDArray[np.float32]:
        """Gradient plus BCG artifact, exactly as added to the clean EEG (float32 µV)."""
        return self.gradient_artifact() + self.bcg_artifact()

    def raw(self) -> NDArray[np.float32]:
        """Recompute the raw EEG as written to the BrainVision file (float32 µV)."""
        return self.clean_eeg + self.artifacts()

    def bold_roi_signals(self) -> NDArray[np.float64]:
        """Noise-free ROI BOLD including the global signal, ``(n_volumes, n_rois)`` percent."""
        return self.roi_signals + self.global_signal[:, None]

    @classmethod
    def from_npz(cls, path: str | Path) -> GroundTruth:
        """Read a ground-truth ``.npz`` written by :func:`save_ground_truth`.

        Parameters
        ----------
        path : path-like
            The ``.npz`` file.

        Returns
        -------
        GroundTruth
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(
                f"cannot read the simulation ground truth ({exc}).",
                path=path,
                fix="Re-run bids-neurobolt-simulate to regenerate the dataset.",
            ) from exc
        missing = [f.name for f in fields(cls) if f.name != "path" and f.name not in arrays]
        if missing:
            raise DataError(
                f"the simulation ground truth lacks {', '.join(missing)}; it was written by "
                "another version of bids-neurobolt.",
                path=path,
                fix="Re-run bids-neurobolt-simulate to regenerate the dataset.",
            )
        values: dict[str, object] = {}
        for f in fields(cls):
            if f.name == "path":
                continue
            value = arrays[f.name]
            if f.name in ("ch_names", "ch_types", "latent_names", "roi_names"):
                value = tuple(str(v) for v in value)
            elif f.name in ("sfreq", "gradient_sigma"):
                value = float(value)
            elif f.name == "has_scanner":
                value = bool(value)
            values[f.name] = value
        return cls(path=path, **values)  # type: ignore[arg-type]


def save_ground_truth(path: Path, truth: GroundTruth) -> None:
    """Write ``truth`` as an uncompressed ``.npz`` with fixed timestamps.

    The zip entries carry a constant date so that the same simulation gives
    byte-identical files.

    Parameters
    ----------
    path : Path
        Output file (parent folders are created).
    truth : GroundTruth
        The arrays to save.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for f in fields(truth):
            if f.name == "path":
                continue
            value = getattr(truth, f.name)
            array = np.asarray(value, dtype=str) if isinstance(value, tuple) else np.asarray(value)
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{f.name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getbuffer(), compress_type=zipfile.ZIP_STORED)


def ground_truth_name(subject: str, session: str | None, task: str, run: int | None) -> Path:
    """Path of a run's ground truth relative to :data:`GROUND_TRUTH_DIR`."""
    parts = [f"sub-{subject}"]
    folder = Path(f"sub-{subject}")
    if session is not None:
        parts.append(f"ses-{session}")
        folder = folder / f"ses-{session}"
    parts.append(f"task-{task}")
    if run is not None:
        parts.append(f"run-{run}")
    return folder / ("_".join(parts) + "_groundtruth.npz")


_NAME = re.compile(
    r"sub-(?P<sub>[^_]+)(?:_ses-(?P<ses>[^_]+))?_task-(?P<task>[^_]+)(?:_run-(?P<run>\d+))?"
    r"_groundtruth\.npz$"
)


def _strip(label: str | int | None, prefix: str) -> str | None:
    if label is None:
        return None
    text = str(label)
    return text[len(prefix) :] if text.startswith(prefix) else text


def load_ground_truth(
    bids_root: str | Path,
    subject: str,
    *,
    session: str | None = None,
    task: str = "rest",
    run: int | str | None = None,
) -> GroundTruth:
    """Load the ground truth of one simulated run.

    Parameters
    ----------
    bids_root : path-like
        Root of a dataset written by :func:`~bids_neurobolt.simulate.simulate_dataset`.
    subject : str
        Subject label, with or without ``sub-``.
    session : str | None
        Session label (with or without ``ses-``); may be omitted when it is unambiguous.
    task : str
        Task label.
    run : int | str | None
        Run index; may be omitted when it is unambiguous.

    Returns
    -------
    GroundTruth

    Raises
    ------
    MissingInputError
        No ground truth matches, or several do (the message lists them).
    """
    root = Path(bids_root) / GROUND_TRUTH_DIR
    subject = _strip(subject, "sub-") or ""
    session = _strip(session, "ses-")
    run_label = _strip(run, "run-")
    candidates = []
    for path in sorted((root / f"sub-{subject}").rglob("*_groundtruth.npz")):
        match = _NAME.match(path.name)
        if match is None or match["sub"] != subject or match["task"] != task:
            continue
        if session is not None and match["ses"] != session:
            continue
        if run_label is not None and (match["run"] is None or int(match["run"]) != int(run_label)):
            continue
        candidates.append(path)
    if len(candidates) == 1:
        return GroundTruth.from_npz(candidates[0])
    available = sorted(p.name for p in root.rglob("*_groundtruth.npz")) if root.is_dir() else []
    wanted = f"sub-{subject}" + (f" ses-{session}" if session else "") + f" task-{task}"
    wanted += f" run-{run_label}" if run_label is not None else ""
    if not candidates:
        raise MissingInputError(
            f"no simulation ground truth for {wanted}"
            + (f" (available: {', '.join(available)})." if available else "."),
            path=root,
            fix="Check the labels, or point at the folder given to bids-neurobolt-simulate.",
        )
    raise MissingInputError(
        f"several ground truths match {wanted}: {', '.join(p.name for p in candidates)}.",
        path=root,
        fix="Give the session and/or run.",
    )
