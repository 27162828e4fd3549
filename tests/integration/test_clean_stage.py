"""End to end: the ``clean`` stage on simulated recordings, judged by their ground truth.

Thresholds (simulated 1 kHz, 16-channel runs with a 2 s TR; see docs/methods.md):

- slice-frequency harmonics below 100 Hz reduced by at least 30 dB (median over channels);
- beat-locked residual RMS reduced by at least 15 dB (median over EEG channels);
- correlation with the ground-truth clean EEG (1-40 Hz, inside the scan) at least 0.95
  median and 0.9 for the worst channel;
- the cleaned file holds the model channels at 200 Hz with one volume event per BOLD volume.
"""

from __future__ import annotations

import json
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest

from bids_neurobolt.simulate import load_ground_truth

from .conftest import run_cli, tree_digest


def _files(out: Path, subject: str, session: str | None = None) -> dict[str, Path]:
    folder = out / f"sub-{subject}" / (f"ses-{session}" if session else "") / "eeg"
    return {
        suffix: next(folder.glob(f"*_desc-clean_{suffix}"))
        for suffix in ("eeg.vhdr", "eeg.json", "channels.tsv", "events.tsv", "quality.json")
    }


@pytest.fixture(scope="module")
def cleaned(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("clean") / "out"
    work = out.parent / "work"
    before = tree_digest(small_dataset)
    result = run_cli(small_dataset, out, "participant", "-w", work, "--steps", "sync,clean,report")
    assert result.exit_code == 0, result.output
    assert tree_digest(small_dataset) == before, "the input dataset was modified"
    return out, result.output


@pytest.mark.parametrize("subject", ["01", "02"])
def test_artifacts_are_removed_and_the_eeg_recovered(cleaned, small_dataset, subject) -> None:
    out, _ = cleaned
    quality = json.loads(_files(out, subject)["quality.json"].read_text())

    slices = quality["spectral"]["slice_harmonics"]
    below_100 = [
        db for f, db in zip(slices["frequencies_hz"], slices["change_db"], strict=True) if f < 100
    ]
    assert below_100 and max(below_100) <= -30.0, slices
    assert quality["bcg"]["cardiac_reference"] == "ecg"
    assert quality["bcg"]["beat_locked_rms_uv"]["reduction_db"]["median"] <= -15.0
    truth_r = quality["ground_truth"]["interior"]["correlation"]
    assert truth_r["median"] >= 0.95 and truth_r["min"] >= 0.9, truth_r
    assert quality["GroundTruthAvailable"] is True

    truth = load_ground_truth(small_dataset, subject, task="rest")
    heart_rate = 60.0 / np.median(np.diff(truth.beat_times))
    assert quality["bcg"]["heart_rate_bpm"] == pytest.approx(heart_rate, rel=0.05)


def test_cleaned_file_is_the_model_input_at_200_hz(cleaned, small_dataset) -> None:
    out, _ = cleaned
    files = _files(out, "01")
    raw = mne.io.read_raw_brainvision(files["eeg.vhdr"], verbose="error")
    truth = load_ground_truth(small_dataset, "01", task="rest")
    assert raw.info["sfreq"] == 200.0
    assert raw.n_times == pytest.approx(truth.n_samples * 200.0 / truth.sfreq, abs=1)
    channels = pd.read_csv(files["channels.tsv"], sep="\t")
    assert list(channels["name"]) == list(raw.ch_names)
    assert set(channels["type"]) == {"EEG", "ECG"}
    events = pd.read_csv(files["events.tsv"], sep="\t")
    volumes = events[events.trial_type == "volume"]
    assert len(volumes) == truth.n_volumes
    expected = np.round(truth.volume_markers * 200.0 / truth.sfreq).astype(int)
    np.testing.assert_array_equal(volumes["sample"], expected)
    sidecar = json.loads(files["eeg.json"].read_text())
    assert sidecar["SamplingFrequency"] == 200.0
    assert sidecar["Sources"][0] == "bids:raw:sub-01/eeg/sub-01_task-rest_eeg.vhdr"
    assert sidecar["Parameters"]["BCGComponents"] == 4
    assert sidecar["ScienceHash"] and "RandomSeed" in sidecar


def test_report_shows_the_cleaning(cleaned) -> None:
    out, _ = cleaned
    html = (out / "sub-01.html").read_text()
    assert "Artifact cleaning" in html
    for desc in ("spectrum", "traces", "bcg"):
        assert f"desc-{desc}_eeg.svg" in html
        assert next((out / "sub-01" / "figures").glob(f"*_desc-{desc}_eeg.svg")).stat().st_size
    assert "Beat-locked RMS" in html and "Ground truth: correlation" in html
    assert "Niazy" in html  # the methods paragraph cites the OBS method


def test_rerun_skips_and_a_changed_setting_recomputes(cleaned, small_dataset) -> None:
    out, _ = cleaned
    work = out.parent / "work"
    quality = _files(out, "01")["quality.json"]
    mtime = quality.stat().st_mtime_ns

    result = run_cli(small_dataset, out, "participant", "-w", work, "--steps", "sync,clean")
    assert result.exit_code == 0, result.output
    assert "clean 0 done, 2 up to date" in result.output
    assert quality.stat().st_mtime_ns == mtime

    result = run_cli(
        small_dataset, out, "participant", "-w", work, "--steps", "sync,clean",
        "--bcg-components", "2", "--participant-label", "01",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "sync 0 done, 1 up to date" in result.output
    assert "clean 1 done, 0 up to date" in result.output
    assert json.loads(quality.read_text())["Parameters"]["BCGComponents"] == 2


def test_bcg_removal_off_is_recorded(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        small_dataset, out, "participant", "-w", tmp_path / "w", "--steps", "sync,clean",
        "--bcg-removal", "off", "--participant-label", "02",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    files = _files(out, "02")
    quality = json.loads(files["quality.json"].read_text())
    assert quality["bcg"] == {"bcg_corrected": False, "reason": "disabled"}
    removal = json.loads(files["eeg.json"].read_text())["SoftwareFilters"]["MRArtifactRemoval"]
    assert "gradient" in removal and "ballistocardiogram" not in removal
    events = pd.read_csv(files["events.tsv"], sep="\t")
    assert set(events.trial_type) == {"volume"}


def test_eeg_only_recording_is_filtered_without_artifact_removal(
    sessions_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_cli(sessions_dataset, out, "participant", "-w", tmp_path / "w", "--steps", "clean")
    assert result.exit_code == 0, result.output
    files = _files(out, "01", "eegonly")
    quality = json.loads(files["quality.json"].read_text())
    assert quality["in_scanner"] is False
    assert quality["bcg"]["bcg_corrected"] is False
    assert not quality["gradient"]["gradient_corrected"]
    truth_r = quality["ground_truth"]["scan"]["correlation"]  # no volumes: no interior
    assert truth_r["min"] >= 0.95, truth_r  # nothing to remove: only filtering
    assert _files(out, "01", "eegfmri")["quality.json"].is_file()
