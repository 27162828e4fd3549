"""Tests of the simultaneous EEG-fMRI dataset simulator (bids_neurobolt.simulate)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import mne
import mne_bids
import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from bids_neurobolt.errors import ConfigError, ExitCode, MissingInputError, OutputError
from bids_neurobolt.simulate import (
    GROUND_TRUTH_KEYS,
    ROI_NAMES,
    GroundTruth,
    load_ground_truth,
    main,
    marker_description,
    simulate_dataset,
)
from bids_neurobolt.simulate.bold import canonical_hrf

FS = 1000.0
TR = 2.0
DURATION = 60.0
N_VOLUMES = round(DURATION / TR)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """Two subjects, an EEG-fMRI and an EEG-only session each, 60 s at 1 kHz."""
    out = tmp_path_factory.mktemp("sim") / "ds"
    summary = simulate_dataset(
        out, n_subjects=2, duration=DURATION, sfreq=FS, tr=TR, seed=7, eeg_only_sessions=True
    )
    return summary


@pytest.fixture(scope="module")
def scanner_run(sim):
    """Ground truth and raw EEG (µV, read back with MNE) of sub-01's EEG-fMRI run."""
    truth = load_ground_truth(sim.bids_root, "01", session="eegfmri")
    vhdr = sim.bids_root / "sub-01/ses-eegfmri/eeg/sub-01_ses-eegfmri_task-rest_eeg.vhdr"
    raw = mne.io.read_raw_brainvision(vhdr, preload=True, verbose="error")
    return truth, raw


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# -- layout, sidecars and markers ---------------------------------------------------------


def test_layout_and_summary(sim):
    root = sim.bids_root
    assert sim.subjects == ("01", "02")
    assert len(sim.runs) == 4
    for sub in ("01", "02"):
        stem = root / f"sub-{sub}/ses-eegfmri"
        assert (stem / f"eeg/sub-{sub}_ses-eegfmri_task-rest_eeg.vhdr").is_file()
        assert (stem / f"func/sub-{sub}_ses-eegfmri_task-rest_bold.nii.gz").is_file()
        truth_dir = root / "sourcedata/simulation" / f"sub-{sub}"
        assert (
            truth_dir / f"ses-eegfmri/sub-{sub}_ses-eegfmri_task-rest_groundtruth.npz"
        ).is_file()
    assert (root / "dataset_description.json").is_file()
    assert sim.atlas_file.is_file() and sim.atlas_labels_file.is_file()
    params = json.loads((root / "sourcedata/simulation/simulation.json").read_text())
    assert params["parameters"]["seed"] == 7
    assert params["parameters"]["n_slices"] == 49  # axial slices of the 4 mm grid
    assert set(params["ground_truth_keys"]) == set(GROUND_TRUTH_KEYS)
    # no staging folder is left next to or inside the dataset
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_eeg_sidecars_and_channels(sim):
    eeg_dir = sim.bids_root / "sub-01/ses-eegfmri/eeg"
    sidecar = json.loads((eeg_dir / "sub-01_ses-eegfmri_task-rest_eeg.json").read_text())
    assert sidecar["SamplingFrequency"] == FS
    assert sidecar["PowerLineFrequency"] == 50
    assert sidecar["EEGReference"] == "FCz"
    assert sidecar["EEGChannelCount"] == 32 and sidecar["ECGChannelCount"] == 1
    rows = [
        line.split("\t")
        for line in (eeg_dir / "sub-01_ses-eegfmri_task-rest_channels.tsv").read_text().splitlines()
    ]
    assert rows[0][:3] == ["name", "type", "units"]
    types = {row[0]: row[1] for row in rows[1:]}
    assert types["ECG"] == "ECG"
    assert list(types)[:4] == ["Fp1", "Fp2", "F3", "F4"]
    assert "FCz" not in types  # the reference is not a recorded channel
    raw = mne_bids.read_raw_bids(
        mne_bids.BIDSPath(
            subject="01", session="eegfmri", task="rest", datatype="eeg", root=sim.bids_root
        ),
        verbose="error",
    )
    assert raw.get_channel_types(picks="ECG") == ["ecg"]
    descriptions = set(map(str, raw.annotations.description))
    assert descriptions == {"Response/R128", "Comment/Slice"}


def test_volume_and_slice_markers(scanner_run):
    truth, raw = scanner_run
    n_slices = truth.slice_onsets.shape[1]
    descriptions = np.array([str(d) for d in raw.annotations.description])
    volumes = raw.annotations.onset[descriptions == "Response/R128"]
    slices = raw.annotations.onset[descriptions == "Comment/Slice"]
    assert volumes.size == N_VOLUMES == truth.volume_markers.size
    assert slices.size == N_VOLUMES * n_slices
    np.testing.assert_array_equal(np.round(volumes * FS).astype(int), truth.volume_markers)
    np.testing.assert_array_equal(np.round(slices * FS).astype(int), truth.slice_markers.ravel())
    # volume spacing is one TR, give or take the one-sample drift of unsynchronised clocks
    spacing = np.diff(truth.volume_markers)
    assert np.all(np.abs(spacing - TR * FS) <= 1)
    # every volume has n_slices slice markers, the first at the volume marker
    per_volume = np.searchsorted(truth.slice_markers.ravel(), truth.volume_markers)
    assert np.all(np.diff(per_volume) == n_slices)
    np.testing.assert_array_equal(truth.slice_markers[:, 0], truth.volume_markers)
    # quiet EEG before the first and after the last volume
    assert truth.volume_markers[0] / FS > 3.0
    assert (truth.n_samples - truth.slice_markers[-1, -1]) / FS - TR / n_slices > 3.0


def test_true_onsets_differ_from_markers_by_a_fraction_of_a_sample(scanner_run):
    truth, _ = scanner_run
    offset = truth.slice_markers - truth.slice_onsets
    assert np.all((offset >= 0) & (offset < 1))
    assert offset.std() > 0.2  # spread over the sample, not one constant phase
    volume_offset = truth.volume_markers - truth.slice_onsets[:, 0]
    assert np.ptp(volume_offset) > 0.05  # the clock drift moves the phase between volumes


def test_gradient_artifact_is_evaluated_at_the_true_onset(scanner_run):
    truth, _ = scanner_run
    # Shifting the onsets by the sub-sample offsets changes the sampled artifact: the
    # jitter is real, not just a label.
    artifact = truth.gradient_artifact()
    shifted = GroundTruth(
        **{
            **{f: getattr(truth, f) for f in truth.__dataclass_fields__ if f != "path"},
            "slice_onsets": truth.slice_markers.astype(float),
        }
    ).gradient_artifact()
    difference = np.abs(artifact - shifted).max()
    assert difference > 0.05 * np.abs(artifact).max()


def test_slice_timing_and_bold_header(sim):
    func = sim.bids_root / "sub-01/ses-eegfmri/func"
    sidecar = json.loads((func / "sub-01_ses-eegfmri_task-rest_bold.json").read_text())
    image = nib.load(func / "sub-01_ses-eegfmri_task-rest_bold.nii.gz")
    assert sidecar["RepetitionTime"] == TR
    assert sidecar["TaskName"] == "rest"
    timing = np.array(sidecar["SliceTiming"])
    assert timing.size == sim.parameters["n_slices"] == image.shape[2]
    assert np.all((timing >= 0) & (timing < TR))
    assert image.shape == (49, 58, 49, N_VOLUMES)
    assert image.get_data_dtype() == np.float32
    assert int(image.header["sform_code"]) == 4 and int(image.header["qform_code"]) == 4
    np.testing.assert_allclose(image.affine[:3, 3], [-96, -132, -78])
    np.testing.assert_allclose(image.header.get_zooms(), (4, 4, 4, TR))
    atlas = nib.load(sim.atlas_file)
    np.testing.assert_allclose(atlas.affine, image.affine)
    assert int(atlas.header["sform_code"]) == 4
    lines = sim.atlas_labels_file.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "index\tname"
    assert [line.split("\t")[1] for line in lines[1:]] == list(ROI_NAMES)
    labels = np.asanyarray(atlas.dataobj)
    assert set(np.unique(labels)) == set(range(len(ROI_NAMES) + 1))


# -- ground truth -------------------------------------------------------------------------


def test_raw_minus_clean_is_the_injected_artifact(scanner_run):
    truth, raw = scanner_run
    data = raw.get_data() * 1e6
    assert raw.ch_names == list(truth.ch_names)
    assert data.shape == truth.clean_eeg.shape
    gradient, bcg = truth.gradient_artifact(), truth.bcg_artifact()
    np.testing.assert_allclose(data - truth.clean_eeg, gradient + bcg, atol=1e-2)
    # gradient artifact only while scanning, and of the configured size
    first, last = truth.volume_markers[0], truth.slice_markers[-1, -1]
    assert np.abs(gradient[:, : first - 10]).max() == 0
    assert np.abs(gradient[:, last + int(0.1 * FS) :]).max() == 0
    assert 500 < np.median(np.abs(gradient[:32]).max(axis=1)) < 3000
    # BCG on EEG channels only, tens of µV, also outside the scan
    ecg = truth.ch_names.index("ECG")
    assert np.abs(bcg[ecg]).max() == 0
    assert 20 < np.median(np.abs(bcg[:32, :first]).max(axis=1)) < 150
    # clean EEG amplitude is physiological
    rms = np.sqrt((truth.clean_eeg[:32] ** 2).mean(axis=1))
    assert 5 < np.median(rms) < 30


def test_r_peaks_are_physiological_and_at_ecg_maxima(scanner_run):
    truth, _ = scanner_run
    rr = np.diff(truth.beat_times)
    assert np.all((rr > 0.33) & (rr < 2.0))
    assert 0.7 < rr.mean() < 1.2
    assert rr.std() > 0.01  # heart-rate variability
    ecg = truth.clean_eeg[truth.ch_names.index("ECG")]
    half = int(0.1 * FS)
    for peak in truth.r_peaks[(truth.r_peaks > half) & (truth.r_peaks < ecg.size - half)]:
        window = ecg[peak - half : peak + half]
        assert abs(int(np.argmax(window)) - half) <= 0.003 * FS


def test_bold_roi_means_follow_the_ground_truth(tmp_path):
    summary = simulate_dataset(
        tmp_path / "bold", n_subjects=1, duration=180.0, sfreq=250.0, n_channels=4, seed=1
    )
    run = summary.runs[0]
    truth = load_ground_truth(summary.bids_root, "01")
    data = np.asanyarray(nib.load(run.bold_file).dataobj)
    labels = np.asanyarray(nib.load(summary.atlas_file).dataobj)
    assert data.shape[-1] == truth.n_volumes == 90
    for index, name in enumerate(truth.roi_names):
        series = data[labels == index + 1].mean(axis=0)
        percent = 100 * (series / series.mean() - 1)
        r = np.corrcoef(percent, truth.bold_roi_signals()[:, index])[0, 1]
        assert r > 0.9, f"{name}: r = {r:.3f}"
    np.testing.assert_allclose(truth.roi_times, truth.volume_markers / truth.sfreq)


def test_ground_truth_contents(scanner_run):
    truth, _ = scanner_run
    assert truth.clean_eeg.dtype == np.float32
    assert truth.roi_signals.shape == truth.roi_eeg_signals.shape == (N_VOLUMES, 6)
    assert truth.global_signal.shape == (N_VOLUMES,)
    assert truth.latents.shape == (truth.latent_times.size, 4)
    assert truth.latent_names == ("delta", "theta", "alpha", "beta")
    assert truth.latent_times[0] < -30 and truth.latent_times[-1] >= truth.n_samples / FS
    assert truth.roi_names == ROI_NAMES
    assert 0.2 < truth.roi_signals.std() < 1.0  # percent signal change
    with np.load(truth.path) as npz:
        assert set(npz.files) == set(GROUND_TRUTH_KEYS)


def test_load_ground_truth_errors(sim):
    with pytest.raises(MissingInputError, match="several ground truths"):
        load_ground_truth(sim.bids_root, "01")  # two sessions
    with pytest.raises(MissingInputError, match="no simulation ground truth"):
        load_ground_truth(sim.bids_root, "sub-09", session="eegfmri")
    truth = load_ground_truth(sim.bids_root, "sub-02", session="ses-eegonly")
    assert truth.path.name == "sub-02_ses-eegonly_task-rest_groundtruth.npz"


def test_eeg_only_session(sim):
    session = sim.bids_root / "sub-02/ses-eegonly"
    assert (session / "eeg/sub-02_ses-eegonly_task-rest_eeg.vhdr").is_file()
    assert not (session / "func").exists()
    run = next(r for r in sim.runs if r.subject == "02" and r.session == "eegonly")
    assert run.bold_file is None and not run.has_scanner
    truth = load_ground_truth(sim.bids_root, "02", session="eegonly")
    assert not truth.has_scanner and truth.volume_markers.size == 0
    assert truth.n_volumes == N_VOLUMES  # ROI truth on a virtual TR grid
    raw = mne.io.read_raw_brainvision(run.eeg_file, preload=True, verbose="error")
    assert len(raw.annotations) == 0
    np.testing.assert_allclose(raw.get_data() * 1e6, truth.clean_eeg, atol=1e-3)


# -- options ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def variant(tmp_path_factory):
    """No ECG, a Comment volume marker, no slice markers, 8 channels, 20 slices, 6 mm."""
    return simulate_dataset(
        tmp_path_factory.mktemp("variant") / "ds",
        n_subjects=1,
        duration=20.0,
        sfreq=500.0,
        n_channels=8,
        n_slices=20,
        ecg=False,
        volume_marker="TR",
        slice_marker=None,
        resolution=6.0,
        n_runs=2,
    )


def test_no_ecg_option(variant):
    truth = load_ground_truth(variant.bids_root, "01", run=2)
    assert "ECG" not in truth.ch_names and set(truth.ch_types) == {"eeg"}
    assert len(truth.ch_names) == 8
    channels = (variant.bids_root / "sub-01/eeg/sub-01_task-rest_run-1_channels.tsv").read_text()
    assert "ECG" not in channels
    assert truth.r_peaks.size > 10  # the heart still beats: BCG without ECG
    assert np.abs(truth.bcg_artifact()).max() > 1


def test_marker_names_and_no_slice_markers(variant):
    raw = mne.io.read_raw_brainvision(variant.runs[0].eeg_file, verbose="error")
    descriptions = {str(d) for d in raw.annotations.description}
    assert descriptions == {"Comment/TR"}
    assert len(raw.annotations) == 10
    sidecar = json.loads(
        (variant.bids_root / "sub-01/func/sub-01_task-rest_run-1_bold.json").read_text()
    )
    assert len(sidecar["SliceTiming"]) == 20
    assert nib.load(variant.runs[0].bold_file).shape == (33, 39, 33, 10)


@pytest.mark.parametrize(
    ("name", "description"),
    [
        ("R128", "Response/R128"),
        ("S128", "Stimulus/S128"),
        ("R1", "Response/R  1"),
        ("Scan Start", "Comment/Scan Start"),
        ("TR", "Comment/TR"),
    ],
)
def test_marker_description(name, description):
    assert marker_description(name) == description


def _small(out: Path, **kwargs) -> object:
    settings = {"n_subjects": 1, "duration": 10.0, "sfreq": 500.0, "n_channels": 4} | kwargs
    return simulate_dataset(out, **settings)


def test_determinism(tmp_path):
    options = {"ecg_inverted": True, "volume_marker": "S128", "n_slices": 10, "seed": 3}
    first = _small(tmp_path / "a", **options)
    second = _small(tmp_path / "b", **options)
    other = _small(tmp_path / "c", **(options | {"seed": 4}))
    assert _tree_digest(first.bids_root) == _tree_digest(second.bids_root)
    a = load_ground_truth(first.bids_root, "01")
    c = load_ground_truth(other.bids_root, "01")
    assert not np.array_equal(a.clean_eeg, c.clean_eeg)
    assert not np.array_equal(a.slice_onsets, c.slice_onsets)
    eeg = "sub-01/eeg/sub-01_task-rest_eeg.eeg"
    assert (first.bids_root / eeg).read_bytes() != (other.bids_root / eeg).read_bytes()
    # inverted ECG: R-peaks are minima; S128 is a Stimulus marker
    ecg = a.clean_eeg[a.ch_names.index("ECG")]
    peaks = a.r_peaks[(a.r_peaks > 50) & (a.r_peaks < ecg.size - 50)]
    assert np.all(ecg[peaks] < -200)
    raw = mne.io.read_raw_brainvision(first.runs[0].eeg_file, verbose="error")
    assert {str(d) for d in raw.annotations.description} == {"Stimulus/S128", "Comment/Slice"}


def test_subject_data_do_not_depend_on_subject_count(tmp_path, sim):
    one = simulate_dataset(
        tmp_path / "one", n_subjects=1, duration=DURATION, sfreq=FS, tr=TR, seed=7,
        eeg_only_sessions=True,
    )  # fmt: skip
    a = load_ground_truth(one.bids_root, "01", session="eegfmri")
    b = load_ground_truth(sim.bids_root, "01", session="eegfmri")
    np.testing.assert_array_equal(a.clean_eeg, b.clean_eeg)


def test_invalid_settings(tmp_path):
    with pytest.raises(ConfigError, match="slices"):
        simulate_dataset(tmp_path / "x", n_slices=500, duration=10.0)
    with pytest.raises(ConfigError, match="volume marker too"):
        simulate_dataset(tmp_path / "x", volume_marker="Slice", duration=10.0)
    with pytest.raises(ConfigError, match="unknown simulation setting"):
        simulate_dataset(tmp_path / "x", bogus=1)
    assert not (tmp_path / "x").exists()


def test_interrupted_simulation_leaves_nothing(tmp_path):
    def interrupt(message: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _small(tmp_path / "ds", progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    # into an existing empty folder (e.g. a mount point): it stays empty
    (tmp_path / "empty").mkdir()
    with pytest.raises(KeyboardInterrupt):
        _small(tmp_path / "empty", progress=interrupt)
    assert list((tmp_path / "empty").iterdir()) == []


def test_refuses_non_empty_output_without_overwrite(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError) as error:
        _small(out)
    assert str(out) in error.value.message and "--overwrite" in error.value.message
    assert error.value.exit_code == ExitCode.CANTCREAT
    assert (out / "keep.txt").read_text() == "mine"
    summary = _small(out, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert (summary.bids_root / "dataset_description.json").is_file()


# -- command line -------------------------------------------------------------------------


def test_cli(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = [str(out), "--subjects", "1", "--duration", "10", "--sfreq", "500", "--channels", "4"]
    result = runner.invoke(main, [*args, "--no-slice-markers", "--no-ecg", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote 1 run(s)" in result.output
    truth = load_ground_truth(out, "01")
    assert truth.ch_names == ("Fp1", "Fp2", "F3", "F4")

    refused = runner.invoke(main, args)
    assert refused.exit_code == ExitCode.CANTCREAT
    assert str(out) in refused.output and "not empty" in refused.output
    assert "--overwrite" in refused.output and "Traceback" not in refused.output

    replaced = runner.invoke(main, [*args, "--overwrite", "--quiet", "--volume-marker", "S1"])
    assert replaced.exit_code == 0, replaced.output
    assert replaced.output == ""
    raw = mne.io.read_raw_brainvision(out / "sub-01/eeg/sub-01_task-rest_eeg.vhdr", verbose="error")
    assert "Stimulus/S  1" in {str(d) for d in raw.annotations.description}

    bad = runner.invoke(main, [str(tmp_path / "bad"), "--channels", "0"])
    assert bad.exit_code == ExitCode.USAGE
    assert "channels" in bad.output
    version = runner.invoke(main, ["--version"])
    assert version.exit_code == 0 and "bids-neurobolt-simulate" in version.output


# -- BIDS validity ------------------------------------------------------------------------


@pytest.mark.validator
@pytest.mark.skipif(
    shutil.which("bids-validator-deno") is None,
    reason="bids-validator-deno is not on PATH (pip install bids-validator-deno)",
)
@pytest.mark.parametrize("dataset", ["sim", "variant"])
def test_bids_validator_reports_no_errors(dataset, request):
    root = request.getfixturevalue(dataset).bids_root
    result = subprocess.run(
        ["bids-validator-deno", str(root), "--format", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    report = json.loads(result.stdout)
    errors = [i for i in report["issues"]["issues"] if i["severity"] == "error"]
    assert errors == [], errors
    assert result.returncode == 0


def test_canonical_hrf_shape():
    hrf = canonical_hrf(0.1)
    assert hrf.size == 320
    assert 4.5 <= np.argmax(hrf) * 0.1 <= 5.5  # peak near 5 s
    assert hrf.min() < 0 and 13 <= np.argmin(hrf) * 0.1 <= 17  # undershoot near 15 s
    np.testing.assert_allclose(hrf.sum(), 1.0)
