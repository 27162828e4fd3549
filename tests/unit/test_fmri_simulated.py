"""ROI targets on the simulator: planted signals recovered, planted motion removed, fMRIPrep
discovery, BOLD-source rules and the derivative files.

Thresholds: ROI signals extracted from the simulated BOLD correlate >= 0.9 with the planted
noise-free signals (GroundTruth.bold_roi_signals), and the final targets >= 0.9 with the
planted signals taken through the same detrending and low-pass; with fMRIPrep-style
motion added to every voxel, regressing the 6 motion parameters gives the same targets as
the motion-free BOLD (max |difference| < 1e-3), while skipping the regression leaves at
least one ROI correlating < 0.9 with them.
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_neurobolt.bids.fmri_io import read_bold_info
from bids_neurobolt.bids.fmriprep import (
    choose_bold_source,
    find_fmriprep_run,
    load_confounds,
    load_fmriprep_layout,
)
from bids_neurobolt.bids.layout import RunSpec
from bids_neurobolt.bids.timeseries_io import read_timeseries
from bids_neurobolt.derivatives.targets import write_targets
from bids_neurobolt.errors import ExitCode, MissingInputError
from bids_neurobolt.fmri import GLOBAL_SIGNAL, extract_targets, load_atlas
from bids_neurobolt.fmri.targets import clean_signals, lowpass_filter
from bids_neurobolt.simulate import load_ground_truth, simulate_dataset
from bids_neurobolt.simulate.fmriprep import MOTION_COLUMNS, simulate_fmriprep

TR = 2.0


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmri") / "ds"
    summary = simulate_dataset(
        root, n_subjects=1, duration=200.0, sfreq=250.0, tr=TR, n_channels=4, seed=11
    )
    runs = simulate_fmriprep(root, seed=2)
    bold = summary.runs[0].bold_file
    spec = RunSpec(subject="01", task="rest", eeg=summary.runs[0].eeg_file, bold=bold)
    info = read_bold_info(
        bold, json.loads(bold.with_name("sub-01_task-rest_bold.json").read_text())
    )
    return {
        "root": root,
        "summary": summary,
        "fmriprep": runs[0],
        "spec": spec,
        "info": info,
        "atlas": load_atlas(str(summary.atlas_file), cache_dir=root),
        "truth": load_ground_truth(root, "01"),
    }


@pytest.fixture(scope="module")
def from_raw(sim):
    source = choose_bold_source(
        sim["spec"], sim["info"], bids_dir=sim["root"], output_dir=sim["root"] / "out"
    )
    assert source.kind == "raw-mni"
    return extract_targets(nib.load(source.bold), sim["atlas"], repetition_time=TR)


def test_recovered_rois_match_planted_signals(sim, from_raw):
    truth = sim["truth"]
    planted = truth.bold_roi_signals()
    names = truth.roi_names
    assert from_raw.names == (*names, GLOBAL_SIGNAL)
    for k, name in enumerate(names):
        assert np.corrcoef(from_raw.raw[name], planted[:, k])[0, 1] >= 0.9, name
    processed = lowpass_filter(clean_signals(planted)[0], TR)
    for k, name in enumerate(names):
        assert np.corrcoef(from_raw.table[name], processed[:, k])[0, 1] >= 0.9, name
    assert np.corrcoef(from_raw.raw[GLOBAL_SIGNAL], truth.global_signal)[0, 1] >= 0.9
    assert from_raw.diagnostics["mask"].startswith("nilearn compute_epi_mask")


def test_result_carries_what_figures_need(sim, from_raw):
    shape = sim["info"].shape
    assert from_raw.mean_image.shape == shape
    assert from_raw.atlas_image.shape == shape
    assert set(np.unique(from_raw.atlas_image)) == set(range(7))
    assert from_raw.mask_image.dtype == bool
    assert from_raw.cleaned.shape == from_raw.table.shape == (100, 7)


def test_fmriprep_outputs_are_discovered_with_pybids(sim):
    layout = load_fmriprep_layout(sim["root"] / "derivatives" / "fmriprep")
    source = find_fmriprep_run(layout, sim["spec"].entities)
    assert source.kind == "fmriprep"
    assert source.bold == sim["fmriprep"].preproc_bold
    assert source.mask == sim["fmriprep"].brain_mask
    assert source.confounds == sim["fmriprep"].confounds
    assert source.repetition_time == TR
    chosen = choose_bold_source(
        sim["spec"],
        sim["info"],
        fmriprep_layout=layout,
        bids_dir=sim["root"],
        output_dir=sim["root"],
    )
    assert chosen == source
    confounds = load_confounds(source)
    assert confounds.names == MOTION_COLUMNS
    assert np.allclose(confounds.values, sim["fmriprep"].motion, atol=1e-5)
    table = pd.read_csv(source.confounds, sep="\t", dtype=str, keep_default_na=False)
    assert table["trans_x_derivative1"].iloc[0] == "n/a"  # as fMRIPrep writes it


def test_planted_motion_is_removed(sim):
    run = sim["fmriprep"]
    layout = load_fmriprep_layout(sim["root"] / "derivatives" / "fmriprep")
    source = find_fmriprep_run(layout, sim["spec"].entities)
    confounds = load_confounds(source)
    mask = nib.load(source.mask)
    kwargs = {"repetition_time": TR, "mask_img": mask}
    preproc = nib.load(run.preproc_bold)
    regressed = extract_targets(preproc, sim["atlas"], confounds=confounds, **kwargs)
    clean = extract_targets(nib.load(run.raw_bold), sim["atlas"], confounds=confounds, **kwargs)
    unregressed = extract_targets(preproc, sim["atlas"], **kwargs)
    clean_unregressed = extract_targets(nib.load(run.raw_bold), sim["atlas"], **kwargs)
    assert np.abs(regressed.table - clean.table).to_numpy().max() < 1e-3
    worst = min(
        np.corrcoef(unregressed.table[n], clean_unregressed.table[n])[0, 1] for n in regressed.names
    )
    assert worst < 0.9  # the planted motion is large enough to matter
    assert regressed.parameters["Confounds"] == list(MOTION_COLUMNS)
    assert regressed.diagnostics["mask"].startswith("brain mask given")
    planted = sim["truth"].bold_roi_signals()
    processed = lowpass_filter(clean_signals(planted, confounds.values)[0], TR)
    for k, name in enumerate(sim["truth"].roi_names):
        assert np.corrcoef(regressed.table[name], processed[:, k])[0, 1] >= 0.9, name


def test_raw_bold_not_in_mni_prints_the_fmriprep_command(sim, tmp_path):
    image = nib.load(sim["summary"].runs[0].bold_file)
    native = nib.Nifti1Image(np.asarray(image.dataobj), image.affine)
    native.set_sform(image.affine, code=1)
    native.set_qform(image.affine, code=1)
    path = tmp_path / "sub-01_task-rest_bold.nii.gz"
    nib.save(native, path)
    info = read_bold_info(path, {"RepetitionTime": TR})
    with pytest.raises(MissingInputError) as err:
        choose_bold_source(
            sim["spec"], info, bids_dir=tmp_path / "bids", output_dir=tmp_path / "out"
        )
    message = str(err.value)
    assert "not in MNI space" in message and "'scanner'" in message
    assert "fmriprep-docker" in message
    assert "--participant-label 01 --output-spaces MNI152NLin2009cAsym:res-2" in message
    assert f"--fmriprep-dir {tmp_path / 'out' / 'sourcedata' / 'fmriprep'}" in message
    assert "--run-fmriprep" in message
    assert err.value.exit_code == ExitCode.NOINPUT


def test_fmriprep_without_mni_output_names_the_option(sim, tmp_path):
    copy = tmp_path / "fmriprep"
    shutil.copytree(sim["root"] / "derivatives" / "fmriprep", copy)
    for path in copy.rglob("*space-MNI152NLin2009cAsym*"):
        path.rename(path.with_name(path.name.replace("MNI152NLin2009cAsym", "T1w")))
    layout = load_fmriprep_layout(copy)
    with pytest.raises(MissingInputError, match=r"spaces found: T1w\)") as err:
        find_fmriprep_run(layout, sim["spec"].entities)
    assert "--output-spaces MNI152NLin2009cAsym:res-2" in str(err.value)
    with pytest.raises(MissingInputError, match=r"dataset_description\.json is missing"):
        load_fmriprep_layout(copy / "sub-01")


def test_targets_derivative_round_trip(sim, from_raw, tmp_path):
    entities = sim["spec"].entities
    tsv, sidecar = write_targets(
        tmp_path,
        entities,
        from_raw,
        atlas_label="simulated",
        repetition_time=TR,
        sources=["bids:raw:sub-01/func/sub-01_task-rest_bold.nii.gz"],
        extra={"ConfigHash": "abc"},
    )
    name = "sub-01_task-rest_space-MNI152NLin2009cAsym_atlas-simulated_desc-bold_timeseries.tsv"
    assert tsv == tmp_path / "sub-01" / "func" / name
    meta = json.loads(sidecar.read_text())
    assert meta["SamplingFrequency"] == pytest.approx(1 / TR)
    assert meta["Columns"] == list(from_raw.names)
    assert set(meta["ColumnDescriptions"]) == set(from_raw.names)
    assert meta["Sources"][0].startswith("bids:raw:")
    scaling = meta["Parameters"]["Scaling"]
    assert scaling["Method"] == "absmax" and set(scaling["Center"]) == set(from_raw.names)
    assert meta["Parameters"]["LowPass"]["CutoffHz"] == 0.15
    assert meta["ConfigHash"] == "abc"
    back = read_timeseries(tsv)
    assert back.repetition_time == pytest.approx(TR)
    assert list(back.table.columns) == list(from_raw.names)
    assert np.allclose(back.table.to_numpy(), from_raw.table.to_numpy(), rtol=1e-5, atol=1e-6)
    assert not [p for p in tsv.parent.iterdir() if p.name.startswith(".")]
