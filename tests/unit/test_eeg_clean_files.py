"""Tests of the cleaned-EEG derivative files (bids_neurobolt.derivatives.clean)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest

from bids_neurobolt.derivatives import naming, writer
from bids_neurobolt.derivatives.clean import write_clean
from bids_neurobolt.eeg import clean_recording
from bids_neurobolt.errors import IOFailure
from bids_neurobolt.simulate import load_ground_truth, simulate_dataset

ENTITIES = {"subject": "01", "session": None, "task": "rest", "acquisition": None, "run": None}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("eeg-files") / "sim"
    simulate_dataset(
        root, n_subjects=1, duration=20.0, sfreq=2000.0, n_channels=8, seed=5, resolution=6.0
    )
    truth = load_ground_truth(root, "01")
    data = truth.raw()
    names = list(truth.ch_names)
    names[0] = "FP1"  # mapped to Fp1
    result = clean_recording(
        data, truth.sfreq, names, truth.ch_types, truth.volume_markers,
        slice_samples=truth.slice_markers.ravel(), repetition_time=2.0,
    )  # fmt: skip
    return root, truth, result


@pytest.fixture(scope="module")
def written(sim, tmp_path_factory):
    root, _, result = sim
    out = tmp_path_factory.mktemp("eeg-files-out") / "derivatives"
    source = json.loads((root / "dataset_description.json").read_text())
    writer.write_dataset_files(out, root, source, ("clean",))
    sidecar = json.loads((root / "sub-01/eeg/sub-01_task-rest_eeg.json").read_text())
    files = write_clean(
        out, ENTITIES, result, source_sidecar=sidecar,
        sources=["bids:raw:sub-01/eeg/sub-01_task-rest_eeg.vhdr"], extra={"RandomSeed": 0},
    )  # fmt: skip
    return out, files


def test_file_names(written):
    out, files = written
    folder = out / "sub-01" / "eeg"
    expected = {
        f"sub-01_task-rest_desc-clean_{name}"
        for name in (
            "eeg.vhdr", "eeg.vmrk", "eeg.eeg", "eeg.json", "channels.tsv", "events.tsv",
            "events.json", "quality.json",
        )
    }  # fmt: skip
    assert {p.name for p in files} == expected
    assert {p.name for p in folder.iterdir()} == expected  # no temporary leftovers
    assert files[-1].name.endswith("_quality.json") and files[-2].suffix == ".vhdr"
    assert files[0] == naming.clean_eeg_path(out, ENTITIES, "eeg", ".json")


def test_brainvision_round_trip(written, sim):
    out, _ = written
    _, _, result = sim
    vhdr = naming.clean_eeg_path(out, ENTITIES, "eeg", ".vhdr")
    raw = mne.io.read_raw_brainvision(vhdr, preload=True, verbose="error")
    assert raw.info["sfreq"] == 200.0
    assert raw.ch_names[0] == "Fp1"
    np.testing.assert_allclose(raw.get_data() * 1e6, result.data, rtol=1e-5, atol=1e-3)
    descriptions = set(raw.annotations.description)
    assert {"Comment/Volume", "Comment/R-peak"} <= descriptions


def test_channels_and_events_tables(written, sim):
    out, _ = written
    _, truth, result = sim
    channels = pd.read_csv(naming.clean_eeg_path(out, ENTITIES, "channels", ".tsv"), sep="\t")
    assert list(channels.columns[:3]) == ["name", "type", "units"]
    assert channels["type"].tolist() == ["EEG"] * 8 + ["ECG"]
    assert channels.loc[8, "status_description"].startswith("not EEG")
    events = pd.read_csv(naming.clean_eeg_path(out, ENTITIES, "events", ".tsv"), sep="\t")
    volumes = events[events.trial_type == "volume"]
    assert len(volumes) == truth.volume_markers.size
    np.testing.assert_allclose(volumes.onset, truth.volume_markers / truth.sfreq, atol=0.005)
    assert (events.trial_type == "R-peak").sum() == result.beats.size
    assert np.all(np.diff(events["sample"]) >= 0)


def test_sidecar_and_quality(written):
    out, _ = written
    sidecar = json.loads(naming.clean_eeg_path(out, ENTITIES, "eeg", ".json").read_text())
    assert sidecar["SamplingFrequency"] == 200.0
    assert sidecar["EEGChannelCount"] == 8 and sidecar["ECGChannelCount"] == 1
    assert sidecar["TaskName"] == "rest"
    quality = json.loads(naming.clean_eeg_path(out, ENTITIES, "quality", ".json").read_text())
    assert quality["RandomSeed"] == 0
    assert quality["gradient"]["gradient_corrected"] is True
    assert quality["bcg"]["cardiac_reference"] == "ecg"
    assert "desc-clean" in (out / "descriptions.tsv").read_text()


@pytest.mark.validator
def test_bids_validator_accepts_the_derivative(written):
    out, _ = written
    exe = shutil.which("bids-validator-deno")
    if exe is None:
        pytest.skip("bids-validator-deno is not installed")
    done = subprocess.run([exe, str(out), "--format", "json"], capture_output=True, text=True)
    issues = json.loads(done.stdout)["issues"]["issues"]
    errors = [i for i in issues if i["severity"] == "error"]
    assert errors == []


def test_failed_write_leaves_no_partial_header(sim, tmp_path, monkeypatch):
    _, _, result = sim
    import pybv

    def broken(**kwargs):  # pybv wrote part of the header, then the disk failed
        header = Path(kwargs["folder_out"]) / f"{kwargs['fname_base']}.vhdr"
        header.write_text("Brain Vision Data Exchange Header File Version 1.0\n")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(pybv, "write_brainvision", broken)
    with pytest.raises(IOFailure):
        write_clean(tmp_path / "out", ENTITIES, result, source_sidecar={"TaskName": "rest"})
    folder = tmp_path / "out" / "sub-01" / "eeg"
    assert not list(folder.glob("*.vhdr")) and not list(folder.glob(".*tmp"))


def test_raw_rows_reads_blocks_equal_to_the_file(sim, monkeypatch):
    """The chunk reader of the clean stage returns the file's samples in µV, block by block."""
    from bids_neurobolt.stages import clean as clean_stage

    root, _, _ = sim
    raw = mne.io.read_raw_brainvision(
        root / "sub-01/eeg/sub-01_task-rest_eeg.vhdr", verbose="error"
    )
    monkeypatch.setattr(clean_stage, "READ_BLOCK_BYTES", 8 * 3 * 1000)  # 1000-sample blocks
    rows = clean_stage.RawRows(raw)
    assert rows.shape == (len(raw.ch_names), raw.n_times)
    expected = raw.get_data(verbose="error") * 1e6
    np.testing.assert_allclose(rows[2:5], expected[2:5], rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(rows[0:1, 123:4567], expected[0:1, 123:4567], rtol=1e-6, atol=1e-3)
    assert rows[1:3].dtype == np.float32
    with pytest.raises(TypeError):
        rows[[0, 1]]
