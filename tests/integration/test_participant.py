"""End to end: simulated raw BIDS dataset -> ``bids-neurobolt ... participant`` -> derivatives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.signal import detrend

from bids_neurobolt import __version__
from bids_neurobolt.fmri.targets import lowpass_filter
from bids_neurobolt.simulate import load_ground_truth

from .conftest import atlas_args, run_cli, tree_digest, validator_errors


def _sync_table(out: Path, subject: str, session: str | None = None) -> pd.DataFrame:
    folder = out / f"sub-{subject}" / (f"ses-{session}" if session else "") / "eeg"
    (path,) = folder.glob("*_desc-sync_events.tsv")
    return pd.read_csv(path, sep="\t", na_values="n/a")


def test_participant_level_writes_sync_tables_matching_the_ground_truth(
    small_dataset: Path, tmp_path: Path
) -> None:
    before = tree_digest(small_dataset)
    out, work = tmp_path / "out", tmp_path / "work"

    result = run_cli(small_dataset, out, "participant", "-w", work, *atlas_args(small_dataset))

    assert result.exit_code == 0, result.output
    assert tree_digest(small_dataset) == before, "the input dataset was modified"
    for subject in ("01", "02"):
        truth = load_ground_truth(small_dataset, subject, task="rest")
        table = _sync_table(out, subject)
        volumes = table[table.trial_type == "volume"]
        slices = table[table.trial_type == "slice"]
        np.testing.assert_array_equal(volumes["sample"], truth.volume_markers)
        np.testing.assert_array_equal(volumes["volume"], np.arange(truth.n_volumes))
        np.testing.assert_array_equal(slices["sample"], truth.slice_markers.ravel())
        sidecar = json.loads(
            next((out / f"sub-{subject}" / "eeg").glob("*_desc-sync_events.json")).read_text()
        )
        assert sidecar["NumberOfVolumes"] == truth.n_volumes
        assert sidecar["VolumeMarker"] == "Response/R128"
        assert sidecar["MeasuredRepetitionTime"] == pytest.approx(2.0, abs=1e-3)

        _check_targets_recover_planted_signals(out, subject, truth)

    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "bids-neurobolt"
    assert description["GeneratedBy"][0]["Version"] == __version__
    assert len(list((out / "logs").glob("config-*.toml"))) == 1
    assert len(list((out / "logs").glob("bids-neurobolt-*.log"))) == 1
    assert not list(out.rglob("*.tmp")), "temporary files left behind"


def _check_targets_recover_planted_signals(out: Path, subject: str, truth) -> None:
    """The ROI targets follow the planted noise-free ROI signals (same detrend + low-pass)."""
    (path,) = (out / f"sub-{subject}" / "func").glob("*_atlas-simulated_desc-bold_timeseries.tsv")
    table = pd.read_csv(path, sep="\t")
    assert list(table.columns) == [*truth.roi_names, "global signal"]
    reference = lowpass_filter(detrend(truth.bold_roi_signals(), axis=0), 2.0)
    r = [np.corrcoef(reference[:, i], table.iloc[:, i])[0, 1] for i in range(reference.shape[1])]
    assert np.median(r) >= 0.9 and min(r) >= 0.75, r
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["SamplingFrequency"] == pytest.approx(0.5)
    assert sidecar["ScienceHash"] and sidecar["RandomSeed"] == 0


def test_rerun_skips_runs_that_are_up_to_date(small_dataset: Path, tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    atlas = atlas_args(small_dataset)
    assert run_cli(small_dataset, out, "participant", "-w", work, *atlas).exit_code == 0
    table = next(out.rglob("sub-01_*_desc-sync_events.tsv"))
    first_mtime = table.stat().st_mtime_ns

    result = run_cli(small_dataset, out, "participant", "-w", work, "-v", *atlas)

    assert result.exit_code == 0, result.output
    assert "sync 0 done, 2 up to date" in result.output
    assert "targets 0 done, 2 up to date" in result.output
    assert table.stat().st_mtime_ns == first_mtime

    # A science setting that changes the result is not "up to date".
    result = run_cli(
        small_dataset, out, "participant", "-w", work, "--volume-marker", "R128", *atlas
    )
    assert "sync 2 done, 0 up to date" in result.output
    assert "targets 0 done, 2 up to date" in result.output  # markers do not change targets


def test_rerun_recomputes_what_a_changed_input_feeds(dataset_copy: Path, tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    args = ("participant", "-w", work, "--steps", "sync,clean", *atlas_args(dataset_copy))
    assert run_cli(dataset_copy, out, *args).exit_code == 0
    events = dataset_copy / "sub-01" / "eeg" / "sub-01_task-rest_events.tsv"
    sidecar = next(out.rglob("sub-01_*_desc-sync_events.json"))
    assert "sub-01_task-rest_events.tsv" in json.loads(sidecar.read_text())["RawInputs"]

    # same bytes, new modification time (a copy, a re-simulation): still up to date
    events.write_bytes(events.read_bytes())
    result = run_cli(dataset_copy, out, *args)
    assert "sync 0 done, 2 up to date" in result.output, result.output

    # other bytes in one subject's input: that run (and only it) is recomputed
    events.write_text(events.read_text() + "\n", "utf-8")
    result = run_cli(dataset_copy, out, *args)
    assert result.exit_code == 0, result.output
    assert "sync 1 done, 1 up to date" in result.output, result.output
    assert "clean 1 done, 1 up to date" in result.output, result.output


def test_participant_label_selects_one_subject(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        small_dataset,
        out,
        "participant",
        "-w",
        tmp_path / "w",
        "--participant-label",
        "sub-02",
        *atlas_args(small_dataset),
    )
    assert result.exit_code == 0, result.output
    assert not (out / "sub-01").exists()
    assert list((out / "sub-02" / "eeg").glob("*_desc-sync_events.tsv"))


def test_eeg_only_sessions_are_kept_without_a_sync_table(
    sessions_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"

    result = run_cli(
        sessions_dataset, out, "participant", "-w", tmp_path / "w", *atlas_args(sessions_dataset)
    )

    assert result.exit_code == 0, result.output
    assert "1 with BOLD, 1 EEG-only" in result.output
    assert not _sync_table(out, "01", "eegfmri").empty
    eeg_only = out / "sub-01" / "ses-eegonly"
    assert list((eeg_only / "eeg").glob("*_desc-clean_eeg.vhdr"))
    assert not list(eeg_only.rglob("*_desc-sync_events.tsv"))
    assert not (eeg_only / "func").exists()


def test_group_level_with_two_subjects_tests_each_on_the_other(
    small_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = run_cli(
        small_dataset, out, "participant", "-w", tmp_path / "w", "--steps",
        "sync,clean,targets", *atlas_args(small_dataset),
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    result = run_cli(small_dataset, out, "group", "-w", tmp_path / "w", "--sloppy")

    assert result.exit_code == 0, result.output
    assert "group fold 1/2: train 02 | validate - | test 01" in result.output
    assert "group fold 2/2: epoch 2/2: train loss" in result.output
    assert "group model: training on 01,02 (" in result.output
    assert "group model: epoch 1/2: train loss" in result.output
    assert (out / "group.html").is_file()


def test_group_level_without_participant_outputs_is_missing_input(
    small_dataset: Path, tmp_path: Path
) -> None:
    result = run_cli(small_dataset, tmp_path / "out", "group", "-w", tmp_path / "w")
    assert result.exit_code == 66
    assert "participant" in result.output


def test_read_only_input_is_processed(dataset_copy: Path, tmp_path: Path, make_readonly) -> None:
    make_readonly(dataset_copy)
    before = tree_digest(dataset_copy)

    result = run_cli(
        dataset_copy,
        tmp_path / "out",
        "participant",
        "-w",
        tmp_path / "w",
        *atlas_args(dataset_copy),
    )

    assert result.exit_code == 0, result.output
    assert tree_digest(dataset_copy) == before


@pytest.mark.validator
@pytest.mark.skipif(shutil.which("bids-validator-deno") is None, reason="validator absent")
def test_input_and_output_pass_the_bids_validator(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        small_dataset, out, "participant", "-w", tmp_path / "w", *atlas_args(small_dataset)
    )
    assert result.exit_code == 0, result.output
    for root in (small_dataset, out):
        errors = validator_errors(root)
        assert errors == [], f"{root}: {errors}"


def test_scanner_eeg_without_its_bold_is_processed_with_a_warning(
    dataset_copy: Path, tmp_path: Path
) -> None:
    for path in (dataset_copy / "sub-01" / "func").glob("sub-01_task-rest_bold.*"):
        path.unlink()
    out = tmp_path / "out"
    result = run_cli(
        dataset_copy, out, "participant", "-w", tmp_path / "w", "--steps", "sync",
        "--participant-label", "01", "--skip-bids-validation", *atlas_args(dataset_copy),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "scanner volume markers ('Response/R128') but no BOLD run pairs" in result.output
    warned = json.loads((out / "logs/warnings/sub-01_task-rest.json").read_text())
    assert any("give it the same subject, session, task and run" in w for w in warned)
