"""ROI choice, extraction, cleaning, filtering and scaling (bids_neurobolt.fmri.targets).

Extraction and cleaning are checked against nilearn's own maskers on the same data
(the paper used them); filtering and scaling against the NeuroBOLT definitions.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.signal import butter, freqz

from bids_neurobolt.errors import ConfigError, DataError, ExitCode
from bids_neurobolt.fmri import Atlas, extract_targets, resample_atlas, select_confounds
from bids_neurobolt.fmri.targets import (
    GLOBAL_SIGNAL,
    PAPER_ROIS,
    clean_signals,
    lowpass_filter,
    normalise_name,
    scale_targets,
    select_rois,
    targets_from_table,
)

SHAPE = (20, 24, 20)
N_VOLUMES = 80
TR = 2.0


def _affine(resolution: float = 3.0) -> np.ndarray:
    affine = np.diag([resolution, resolution, resolution, 1.0])
    affine[:3, 3] = -np.array(SHAPE) * resolution / 2
    return affine


def _maps(n: int = 5) -> np.ndarray:
    ijk = np.indices(SHAPE).reshape(3, -1).T
    rng = np.random.default_rng(0)
    maps = np.zeros((*SHAPE, n), dtype=np.float32)
    for k in range(n):
        centre = rng.uniform(5, np.array(SHAPE) - 5)
        d2 = ((ijk - centre) ** 2).sum(axis=1).reshape(SHAPE)
        maps[..., k] = np.where(d2 < 30, np.exp(-d2 / 10), 0.0)
    return maps


@pytest.fixture(scope="module")
def synthetic():
    """A 4-D run whose voxels follow known map signals plus linear motion effects and noise."""
    rng = np.random.default_rng(42)
    maps = _maps()
    ijk = np.indices(SHAPE).reshape(3, -1).T
    brain = (((ijk - np.array(SHAPE) / 2) / (np.array(SHAPE) / 2.4)) ** 2).sum(axis=1) < 1
    brain = brain.reshape(SHAPE)
    signals = rng.standard_normal((N_VOLUMES, maps.shape[3])).cumsum(axis=0)
    motion = rng.standard_normal((N_VOLUMES, 6)).cumsum(axis=0) * 0.1
    coupling = rng.standard_normal((*SHAPE, 6)).astype(np.float32)
    data = 1000.0 * brain[..., None] + np.tensordot(maps, signals.T, axes=(3, 0))
    data += np.tensordot(coupling, motion.T, axes=(3, 0)) * brain[..., None]
    data += rng.standard_normal(data.shape) * 0.5 * brain[..., None]
    img = nib.Nifti1Image(data.astype(np.float32), _affine())
    mask = nib.Nifti1Image(brain.astype(np.uint8), _affine())
    columns = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]
    confounds = select_confounds(pd.DataFrame(motion, columns=columns))
    return {"img": img, "mask": mask, "maps": maps, "confounds": confounds, "motion": motion}


# --------------------------------------------------------------------------- ROI choice


def test_default_is_every_roi_plus_global_signal():
    assert select_rois(["a", "b"]) == ("a", "b", GLOBAL_SIGNAL)


def test_names_are_case_and_apostrophe_insensitive():
    names = ["Cuneus", "Heschl’s gyrus", "Thalamus"]
    chosen = select_rois(names, ["HESCHL'S GYRUS", "heschl`s  gyrus", "thalamus", "Global Signal"])
    assert chosen == ("Heschl’s gyrus", "Thalamus", GLOBAL_SIGNAL)
    assert normalise_name("Heschl’s Gyrus") == normalise_name("heschl's gyrus")
    assert select_rois(names, "cuneus, thalamus") == ("Cuneus", "Thalamus")


def test_paper_preset_resolves_difumo_names():
    difumo = ["Cuneus", "Heschl’s gyrus", "Middle frontal gyrus anterior", "Precuneus anterior"]
    difumo += ["Putamen", "Thalamus", "Insula antero-superior"]
    assert select_rois(difumo, "paper") == PAPER_ROIS
    assert select_rois(difumo, ["paper", "insula antero-superior"])[-1] == "Insula antero-superior"


def test_unknown_roi_suggests_close_matches():
    with pytest.raises(ConfigError, match=r"'Thalamos' \(did you mean 'Thalamus'\?\)") as info:
        select_rois(["Cuneus", "Thalamus"], ["Thalamos"])
    assert info.value.exit_code == ExitCode.USAGE
    with pytest.raises(ConfigError, match="global signal"):
        select_rois(["Cuneus"], ["global signal"], global_signal=False)


# --------------------------------------------------------------------------- extraction vs nilearn


def test_maps_extraction_matches_nilearn_maps_masker(synthetic):
    from nilearn.maskers import NiftiMapsMasker

    maps = synthetic["maps"]
    names = [f"m{k}" for k in range(maps.shape[3])]
    atlas = Atlas.from_arrays(maps, _affine(), names)
    result = extract_targets(
        synthetic["img"],
        atlas,
        names,
        repetition_time=TR,
        confounds=synthetic["confounds"],
        mask_img=synthetic["mask"],
    )
    masker = NiftiMapsMasker(
        nib.Nifti1Image(maps, _affine()),
        mask_img=synthetic["mask"],
        detrend=True,
        standardize="zscore_sample",
        standardize_confounds=True,
        t_r=TR,
    )
    expected = masker.fit_transform(synthetic["img"], confounds=synthetic["confounds"].values)
    ours = result.cleaned.to_numpy()
    # nilearn works in float32 (|error| ~1e-3 on a 1000 baseline); the float64 reference
    # (least squares of the maps over the mask, then the same cleaning) is matched tightly.
    assert np.abs(ours - expected).max() < 3e-3
    assert min(np.corrcoef(ours[:, k], expected[:, k])[0, 1] for k in range(5)) > 0.99999
    inside = synthetic["mask"].get_fdata() > 0
    weights = maps[inside].astype(float)
    used = np.any(weights != 0, axis=1)
    voxels = synthetic["img"].get_fdata()[inside][used]
    beta = np.linalg.lstsq(weights[used], voxels, rcond=None)[0].T
    reference, _, _ = clean_signals(beta, synthetic["confounds"].values)
    assert np.abs(ours - reference).max() < 1e-5


def test_label_extraction_and_global_signal_match_nilearn(synthetic):
    from nilearn.maskers import NiftiLabelsMasker

    labels = np.argmax(synthetic["maps"], axis=3) + 1
    labels[synthetic["maps"].max(axis=3) < 0.3] = 0
    atlas = Atlas.from_arrays(labels.astype(np.int16), _affine(), [f"L{k}" for k in range(5)])
    result = extract_targets(
        synthetic["img"], atlas, repetition_time=TR, mask_img=synthetic["mask"], lowpass=None
    )
    kwargs = {"detrend": True, "standardize": "zscore_sample", "t_r": TR}
    rois = NiftiLabelsMasker(
        nib.Nifti1Image(labels.astype(np.int16), _affine()),
        mask_img=synthetic["mask"],
        **kwargs,
    ).fit_transform(synthetic["img"])
    gs = NiftiLabelsMasker(synthetic["mask"], **kwargs).fit_transform(synthetic["img"])
    expected = np.column_stack([rois, gs])
    assert result.names == (*atlas.names, GLOBAL_SIGNAL)
    assert np.abs(result.cleaned.to_numpy() - expected).max() < 1e-3  # nilearn is float32
    assert result.diagnostics["extent"][GLOBAL_SIGNAL] == int(synthetic["mask"].get_fdata().sum())


def test_clean_signals_matches_nilearn_signal_clean():
    from nilearn.signal import clean

    rng = np.random.default_rng(3)
    y = rng.standard_normal((100, 4)).cumsum(axis=0) + np.linspace(0, 5, 100)[:, None]
    c = rng.standard_normal((100, 3)).cumsum(axis=0)
    ours, std, r2 = clean_signals(y, c)
    expected = clean(
        y,
        confounds=c,
        detrend=True,
        standardize="zscore_sample",
        standardize_confounds=True,
        t_r=TR,
        filter=False,
    )
    assert np.allclose(ours, expected, atol=1e-8)
    assert np.all((r2 > 0) & (r2 < 1)) and np.all(std > 0)


def test_motion_planted_in_voxels_is_removed(synthetic):
    maps = synthetic["maps"]
    names = [f"m{k}" for k in range(maps.shape[3])]
    atlas = Atlas.from_arrays(maps, _affine(), names)
    kwargs = {"repetition_time": TR, "mask_img": synthetic["mask"], "lowpass": None}
    with_regression = extract_targets(
        synthetic["img"], atlas, names, confounds=synthetic["confounds"], **kwargs
    )
    without = extract_targets(synthetic["img"], atlas, names, **kwargs)
    motion = synthetic["motion"]

    def motion_r2(values: np.ndarray) -> float:
        design = np.column_stack([np.ones(N_VOLUMES), motion])
        residual = values - design @ np.linalg.lstsq(design, values, rcond=None)[0]
        return 1 - (residual**2).sum() / ((values - values.mean()) ** 2).sum()

    assert max(motion_r2(without.table[n].to_numpy()) for n in names) > 0.3
    assert max(motion_r2(with_regression.table[n].to_numpy()) for n in names) < 1e-6
    assert min(with_regression.diagnostics["confound_r2"].values()) > 0


def test_resampled_atlas_can_be_passed_in(synthetic):
    maps = synthetic["maps"]
    atlas = Atlas.from_arrays(maps, _affine(), [f"m{k}" for k in range(5)])
    direct = extract_targets(
        synthetic["img"], atlas, repetition_time=TR, mask_img=synthetic["mask"]
    )
    resampled = resample_atlas(atlas, _affine(), SHAPE)
    reused = extract_targets(
        synthetic["img"], resampled, repetition_time=TR, mask_img=synthetic["mask"]
    )
    assert np.allclose(direct.table, reused.table)
    other = resample_atlas(atlas, _affine(2.0), SHAPE)
    with pytest.raises(DataError, match="resampled to a"):
        extract_targets(synthetic["img"], other, repetition_time=TR)


# --------------------------------------------------------------------------- filter and scaling


def test_lowpass_is_the_papers_zero_phase_butterworth():
    tr = 2.1
    b, a = butter(5, 0.15 / (0.5 / tr), btype="low")
    _, response = freqz(b, a, worN=[0.05, 0.15, 0.22], fs=1 / tr)
    gain = np.abs(response) ** 2  # forward-backward squares the magnitude
    t = np.arange(575) * tr
    slow, fast = np.sin(2 * np.pi * 0.05 * t), np.sin(2 * np.pi * 0.22 * t)
    filtered = lowpass_filter(np.column_stack([slow, fast]), tr)
    core = slice(50, -50)
    assert np.std(filtered[core, 0]) / np.std(slow[core]) == pytest.approx(gain[0], abs=0.01)
    assert np.std(filtered[core, 1]) / np.std(fast[core]) == pytest.approx(gain[2], abs=0.01)
    assert gain[1] == pytest.approx(0.5, abs=0.01)  # -6 dB at the cutoff after filtfilt
    lag = np.argmax(np.correlate(filtered[core, 0], slow[core], "full")) - (len(slow[core]) - 1)
    assert lag == 0  # zero phase


def test_absmax_scaling_uses_training_rows_only():
    rng = np.random.default_rng(5)
    table = pd.DataFrame(rng.standard_normal((200, 3)), columns=["a", "b", "c"])
    train = np.zeros(200, bool)
    train[:150] = True
    scaled, params = scale_targets(table, repetition_time=TR, lowpass=None, train_mask=train)
    fit = scaled.to_numpy()[train]
    assert np.allclose(fit.mean(axis=0), 0, atol=1e-12)
    assert np.allclose(np.percentile(np.abs(fit), 95, axis=0), 1, atol=1e-6)
    changed = table.copy()
    changed.iloc[150:] *= 100  # test rows do not move the statistics
    _, params_changed = scale_targets(changed, repetition_time=TR, lowpass=None, train_mask=train)
    assert np.allclose(params.center, params_changed.center)
    assert np.allclose(params.scale, params_changed.scale)
    assert np.allclose(params.to_cleaned(scaled.to_numpy()), table.to_numpy())
    assert params.to_dict()["StatisticsFrom"] == "training volumes 0-149 (150 of 200)"


def test_zscore_scaling_option():
    rng = np.random.default_rng(6)
    table = pd.DataFrame(rng.standard_normal((100, 2)) * 3 + 1, columns=["a", "b"])
    scaled, params = scale_targets(table, repetition_time=TR, scaling="zscore")
    assert np.allclose(scaled.std(ddof=1), 1) and np.allclose(scaled.mean(), 0, atol=1e-12)
    assert params.lowpass == 0.15
    with pytest.raises(ConfigError, match="scaling must be one of"):
        scale_targets(table, repetition_time=TR, scaling="minmax")


def test_no_lowpass_above_nyquist():
    table = pd.DataFrame(np.random.default_rng(0).standard_normal((60, 1)), columns=["a"])
    _, params = scale_targets(table, repetition_time=4.0)
    assert params.lowpass is None


def test_targets_from_table_aliases_and_missing_columns():
    rng = np.random.default_rng(7)
    table = pd.DataFrame(
        rng.standard_normal((100, 3)), columns=["Cuneus", "x", "global signal clean"]
    )
    result = targets_from_table(table, ["cuneus", "global signal"], repetition_time=2.1)
    assert result.names == ("Cuneus", GLOBAL_SIGNAL)
    with pytest.raises(DataError, match="lacks requested column") as info:
        targets_from_table(table, "paper", repetition_time=2.1)
    assert "Heschl’s gyrus" in str(info.value)
    assert info.value.exit_code == ExitCode.DATAERR


# --------------------------------------------------------------------------- bad inputs


def test_three_d_bold_is_refused(synthetic):
    atlas = Atlas.from_arrays(synthetic["maps"], _affine(), [f"m{k}" for k in range(5)])
    single = synthetic["img"].slicer[..., 0]
    with pytest.raises(DataError, match=r"3-D with shape .* need a 4-D run") as info:
        extract_targets(single, atlas, repetition_time=TR)
    assert info.value.exit_code == ExitCode.DATAERR


def test_too_short_run_is_refused(synthetic):
    atlas = Atlas.from_arrays(synthetic["maps"], _affine(), [f"m{k}" for k in range(5)])
    with pytest.raises(DataError, match="at least 20"):
        extract_targets(synthetic["img"].slicer[..., :10], atlas, repetition_time=TR)


def test_atlas_too_coarse_for_a_roi(synthetic):
    labels = np.zeros(SHAPE, np.int16)
    labels[8:16, 8:16, 8:16] = 1
    labels[5, 5, 5] = 2  # a 1-voxel ROI at 1 mm between the 3 mm grid's samples vanishes
    fine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine[:3, 3] = _affine()[:3, 3] + 20
    atlas = Atlas.from_arrays(labels, fine, ["big", "tiny"])
    with pytest.raises(DataError, match=r"no voxel inside the brain mask .*: tiny\.") as info:
        extract_targets(synthetic["img"], atlas, repetition_time=TR, mask_img=synthetic["mask"])
    assert "too small for this resolution" in str(info.value)


def test_confounds_with_nan_rows_are_refused(synthetic):
    atlas = Atlas.from_arrays(synthetic["maps"], _affine(), [f"m{k}" for k in range(5)])
    confounds = synthetic["motion"].copy()
    confounds[[4, 5], 2] = np.nan
    with pytest.raises(DataError, match=r"2 row\(s\) \(volumes 4, 5\)"):
        extract_targets(synthetic["img"], atlas, repetition_time=TR, confounds=confounds)
    with pytest.raises(DataError, match="rows but the BOLD run has 80"):
        extract_targets(
            synthetic["img"], atlas, repetition_time=TR, confounds=synthetic["motion"][:50]
        )


def test_unknown_rois_and_mask_grid(synthetic):
    atlas = Atlas.from_arrays(synthetic["maps"], _affine(), [f"m{k}" for k in range(5)])
    with pytest.raises(ConfigError, match="did you mean 'm1'"):
        extract_targets(synthetic["img"], atlas, ["m11"], repetition_time=TR)
    other_mask = nib.Nifti1Image(np.ones((5, 5, 5), np.uint8), np.eye(4))
    with pytest.raises(DataError, match="brain mask grid"):
        extract_targets(synthetic["img"], atlas, repetition_time=TR, mask_img=other_mask)


def test_nan_voxels_in_the_mask_are_refused(synthetic):
    atlas = Atlas.from_arrays(synthetic["maps"], _affine(), [f"m{k}" for k in range(5)])
    data = np.asarray(synthetic["img"].dataobj).copy()
    data[10, 12, 10, 40] = np.nan
    img = nib.Nifti1Image(data, _affine())
    with pytest.raises(DataError, match=r"NaN or infinite values in 1 voxel\(s\)"):
        extract_targets(img, atlas, repetition_time=TR, mask_img=synthetic["mask"])
