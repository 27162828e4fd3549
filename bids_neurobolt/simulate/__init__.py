"""Simulated simultaneous EEG-fMRI BIDS datasets with ground truth.

:func:`simulate_dataset` writes a raw BIDS dataset (BrainVision EEG with MR gradient and
ballistocardiogram artifacts, an ECG channel, scanner volume/slice markers, and BOLD
NIfTI runs in MNI152NLin2009cAsym space whose ROI signals are driven by the EEG's band
power) plus everything needed to score a pipeline against it under
``sourcedata/simulation/``: the clean EEG, R-peaks, true artifact onsets, noise-free ROI
signals, the latents, the ROI atlas and every setting. :func:`load_ground_truth` reads a
run's ground truth back. The same is available on the command line as
``bids-neurobolt-simulate`` (:func:`main`).

Layout of ``OUT_DIR`` (``[ses-<s>_]`` and ``ses-<s>/`` only with EEG-only sessions, which
are then ``ses-eegfmri`` and ``ses-eegonly``; ``[_run-<n>]`` only with several runs)::

    dataset_description.json  README  participants.tsv  participants.json
    sub-01/[ses-<s>/]eeg/sub-01[_ses-<s>]_task-rest[_run-<n>]_eeg.vhdr|.vmrk|.eeg|.json
                         ..._channels.tsv  ..._events.tsv  ..._events.json
    sub-01/[ses-<s>/]func/sub-01[_ses-<s>]_task-rest[_run-<n>]_bold.nii.gz|.json
    sourcedata/simulation/simulation.json
    sourcedata/simulation/tpl-MNI152NLin2009cAsym_atlas-simulated_dseg.nii.gz|.tsv
    sourcedata/simulation/sub-01/[ses-<s>/]sub-01[_ses-<s>]_task-rest[_run-<n>]_groundtruth.npz

MNE reads the markers back (``read_raw_brainvision`` and ``mne_bids.read_raw_bids``) with
the descriptions :func:`marker_description` gives: by default ``Response/R128`` for
volumes and ``Comment/Slice`` for slices (``S128`` gives ``Stimulus/S128``, any other
name ``Comment/<name>``). Marker samples are ``ceil`` of the true artifact onsets, which
the ground truth keeps in fractional samples.

Modules, in the order the data flow through them: :mod:`.noise` (smooth processes),
:mod:`.eeg` (channels, band-power latents, clean EEG), :mod:`.cardiac` (R-peaks, ECG,
BCG), :mod:`.gradient` (scanner timing, gradient artifact), :mod:`.bold` (grid, atlas,
HRF, ROI signals, volumes), :mod:`.groundtruth` (the ground-truth container),
:mod:`.bidswrite` (files), :mod:`.dataset` (orchestration) and :mod:`.cli` (command line).

Examples
--------
>>> from bids_neurobolt.simulate import simulate_dataset, load_ground_truth
>>> summary = simulate_dataset("/tmp/sim", n_subjects=1, duration=60.0)  # doctest: +SKIP
>>> gt = load_ground_truth(summary.bids_root, "01")  # doctest: +SKIP
>>> gt.raw().shape == gt.clean_eeg.shape  # doctest: +SKIP
True
"""

from bids_neurobolt.simulate.bidswrite import marker_description
from bids_neurobolt.simulate.bold import ROI_NAMES, ROIS
from bids_neurobolt.simulate.cli import main
from bids_neurobolt.simulate.dataset import (
    RunSummary,
    SimulationConfig,
    SimulationSummary,
    simulate_dataset,
)
from bids_neurobolt.simulate.eeg import EEG_CHANNELS, REFERENCE_CHANNEL
from bids_neurobolt.simulate.groundtruth import (
    GROUND_TRUTH_DIR,
    GROUND_TRUTH_KEYS,
    GroundTruth,
    load_ground_truth,
)

__all__ = [
    "EEG_CHANNELS",
    "GROUND_TRUTH_DIR",
    "GROUND_TRUTH_KEYS",
    "REFERENCE_CHANNEL",
    "ROIS",
    "ROI_NAMES",
    "GroundTruth",
    "RunSummary",
    "SimulationConfig",
    "SimulationSummary",
    "load_ground_truth",
    "main",
    "marker_description",
    "simulate_dataset",
]
