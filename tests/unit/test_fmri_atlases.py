"""Atlas registry, offline cache, BIDS atlas files and resampling (bids_neurobolt.fmri.atlases)."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
import requests
from click.testing import CliRunner

from bids_neurobolt.errors import ConfigError, DataError, ExitCode, MissingInputError
from bids_neurobolt.fetch import main as fetch_main
from bids_neurobolt.fmri import atlases
from bids_neurobolt.fmri.atlases import (
    Atlas,
    fetch_atlas,
    load_atlas,
    read_bids_atlas,
    resample_atlas,
    resample_atlas_cached,
    resolve_cache_dir,
    write_bids_atlas,
)


def _grid(resolution: float, shape: tuple[int, int, int]) -> np.ndarray:
    affine = np.diag([resolution, resolution, resolution, 1.0])
    affine[:3, 3] = -np.array(shape) * resolution / 2
    return affine


def _label_image(shape=(20, 24, 20)) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.int16)
    labels[2:8, 3:10, 4:9] = 3
    labels[10:17, 12:20, 8:15] = 7
    return labels


def _maps(shape=(20, 24, 20), n=3) -> np.ndarray:
    ijk = np.indices(shape).reshape(3, -1).T
    rng = np.random.default_rng(0)
    maps = np.zeros((*shape, n), dtype=np.float32)
    for k in range(n):
        centre = rng.uniform(4, np.array(shape) - 4)
        d2 = ((ijk - centre) ** 2).sum(axis=1).reshape(shape)
        maps[..., k] = np.where(d2 < 25, np.exp(-d2 / 8), 0.0)
    return maps


@pytest.fixture
def dseg(tmp_path):
    path = tmp_path / "tpl-MNI152NLin2009cAsym_atlas-Test_dseg.nii.gz"
    write_bids_atlas(
        path, nib.Nifti1Image(_label_image(), _grid(2.0, (20, 24, 20))), ["A", "B"], [3, 7]
    )
    return path


def test_read_dseg_atlas(dseg):
    atlas = read_bids_atlas(dseg)
    assert atlas.kind == "labels"
    assert atlas.label == "Test"
    assert atlas.names == ("A", "B")
    assert atlas.indices == (3, 7)
    assert atlas.template == "MNI152NLin2009cAsym"
    assert load_atlas(str(dseg), cache_dir=dseg.parent).names == ("A", "B")


def test_read_probseg_atlas_with_one_based_index(tmp_path):
    path = tmp_path / "atlas-Maps_probseg.nii.gz"
    nib.save(nib.Nifti1Image(_maps(), _grid(2.0, (20, 24, 20))), path)
    (tmp_path / "atlas-Maps_probseg.tsv").write_text("index\tname\n1\tx\n2\ty\n3\tz\n")
    atlas = read_bids_atlas(path)
    assert atlas.kind == "maps"
    assert atlas.indices == (0, 1, 2)
    assert atlas.template is None


def test_atlas_without_tsv_names_the_missing_file(tmp_path):
    path = tmp_path / "tpl-MNI152NLin6Asym_atlas-X_dseg.nii.gz"
    nib.save(nib.Nifti1Image(_label_image(), np.eye(4)), path)
    with pytest.raises(MissingInputError, match=r"tpl-MNI152NLin6Asym_atlas-X_dseg\.tsv") as info:
        read_bids_atlas(path)
    assert info.value.exit_code == ExitCode.NOINPUT


def test_atlas_tsv_missing_columns(tmp_path):
    path = tmp_path / "atlas-X_dseg.nii.gz"
    nib.save(nib.Nifti1Image(_label_image(), np.eye(4)), path)
    (tmp_path / "atlas-X_dseg.tsv").write_text("label\tregion\n3\tA\n")
    with pytest.raises(DataError, match="no 'name' column") as info:
        read_bids_atlas(path)
    assert info.value.exit_code == ExitCode.DATAERR
    (tmp_path / "atlas-X_dseg.tsv").write_text("name\nA\n")
    with pytest.raises(DataError, match="'index' and 'name'"):
        read_bids_atlas(path)


def test_atlas_in_another_space_is_refused(tmp_path):
    path = tmp_path / "tpl-fsaverage_atlas-X_dseg.nii.gz"
    write_bids_atlas(path, nib.Nifti1Image(_label_image(), np.eye(4)), ["A", "B"], [3, 7])
    with pytest.raises(DataError, match="space 'fsaverage'"):
        read_bids_atlas(path)


@pytest.mark.parametrize("code", [0, 1, 2, 3, 4])
def test_unnamed_atlas_in_scanner_or_talairach_space_is_refused(tmp_path, code):
    image = nib.Nifti1Image(_label_image(), np.eye(4))
    image.set_sform(np.eye(4), code=code)
    image.set_qform(np.eye(4), code=0)
    path = tmp_path / "atlas-X_dseg.nii.gz"
    write_bids_atlas(path, image, ["A", "B"], [3, 7])
    named = tmp_path / "tpl-MNI152NLin2009cAsym_atlas-Y_dseg.nii.gz"
    write_bids_atlas(named, image, ["A", "B"], [3, 7])
    assert read_bids_atlas(named).names == ("A", "B")  # the file name wins
    if code in (1, 3):
        with pytest.raises(DataError, match=f"xform code {code}") as info:
            read_bids_atlas(path)
        assert "sform code to 4" in str(info.value) and "atlas-X_dseg.nii.gz" in str(info.value)
    else:
        assert read_bids_atlas(path).names == ("A", "B")


def test_duplicate_roi_names_are_refused(tmp_path):
    path = tmp_path / "atlas-X_dseg.nii.gz"
    write_bids_atlas(path, nib.Nifti1Image(_label_image(), np.eye(4)), ["A", "A"], [3, 7])
    with pytest.raises(DataError, match="repeated: A"):
        read_bids_atlas(path)


def test_registry_atlas_not_cached_offline_names_atlas_cache_and_command(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(MissingInputError) as info:
        load_atlas("DiFuMo64", cache)
    message = str(info.value)
    assert "'difumo64'" in message
    assert str(cache) in message
    assert f"bids-neurobolt-fetch --atlas difumo64 --cache-dir {cache}" in message
    assert "never downloads" in message
    assert info.value.exit_code == ExitCode.NOINPUT


def test_default_atlas_is_difumo64(tmp_path):
    with pytest.raises(MissingInputError, match="difumo64"):
        load_atlas(None, tmp_path)


def test_unknown_registry_name_suggests_close_ones(tmp_path):
    with pytest.raises(ConfigError, match="difumo64") as info:
        load_atlas("difumo46", tmp_path)
    assert info.value.exit_code == ExitCode.USAGE


def test_registry_covers_the_issue_atlases():
    names = atlases.atlas_names()
    for name in ("difumo64", "difumo1024", "schaefer2018-400-7", "harvardoxford", "aal"):
        assert name in names
    assert atlases.REGISTRY["difumo64"].kind == "maps"
    assert atlases.REGISTRY["schaefer2018-100-17"].kind == "labels"


def test_resolve_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(atlases.CACHE_ENV, str(tmp_path / "env"))
    assert resolve_cache_dir(tmp_path / "opt") == tmp_path / "opt"
    assert resolve_cache_dir(None) == tmp_path / "env"
    monkeypatch.delenv(atlases.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir(None) == tmp_path / "xdg" / "bids-neurobolt"


def _fake_difumo(data_dir: str):
    image = nib.Nifti1Image(_maps(n=4), _grid(2.0, (20, 24, 20)))
    return image, ["Cuneus", "Heschl’s gyrus", "Putamen", "Thalamus"], [0, 1, 2, 3]


def test_fetch_stores_bids_atlas_that_loads_offline(tmp_path):
    cache = tmp_path / "cache"
    path = fetch_atlas("difumo64", cache, fetch=_fake_difumo)
    assert path.name == "tpl-MNI152NLin6Asym_atlas-DiFuMo64_res-2_probseg.nii.gz"
    description = json.loads((path.parent / "atlas-DiFuMo64_description.json").read_text())
    assert description["Kind"] == "maps"
    atlas = load_atlas("difumo64", cache)
    assert atlas.label == "DiFuMo64"
    assert atlas.names[1] == "Heschl’s gyrus"
    assert not list(path.parent.glob(".*"))  # no temporary files left


def test_fetch_failure_is_a_clear_error(tmp_path):
    def offline(data_dir: str):
        raise requests.ConnectionError("Failed to resolve 'osf.io'")

    with pytest.raises(MissingInputError, match="could not download the atlas 'difumo64'"):
        fetch_atlas("difumo64", tmp_path, fetch=offline)


def test_fetch_command_line(tmp_path, monkeypatch):
    spec = atlases.REGISTRY["difumo64"]
    monkeypatch.setitem(atlases.REGISTRY, "difumo64", dataclasses.replace(spec, fetch=_fake_difumo))
    runner = CliRunner()
    result = runner.invoke(fetch_main, ["--atlas", "difumo64", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert spec.path(tmp_path).is_file()
    assert len(list((tmp_path / "resampled").glob("*.npz"))) == 1
    listing = runner.invoke(fetch_main, ["--list", "--cache-dir", str(tmp_path)])
    assert "difumo64" in listing.output and "cached" in listing.output

    def offline(data_dir: str):
        raise requests.ConnectionError("no network")

    aal = atlases.REGISTRY["aal"]
    monkeypatch.setitem(atlases.REGISTRY, "aal", dataclasses.replace(aal, fetch=offline))
    failed = runner.invoke(fetch_main, ["--atlas", "aal", "--cache-dir", str(tmp_path / "x")])
    assert failed.exit_code == ExitCode.NOINPUT
    assert "could not download" in failed.output


def test_resample_labels_same_grid_is_exact():
    labels = _label_image()
    atlas = Atlas.from_arrays(labels, _grid(2.0, labels.shape), ["A", "B"], indices=[3, 7])
    resampled = resample_atlas(atlas, _grid(2.0, labels.shape), labels.shape)
    image = resampled.label_image()
    assert np.array_equal(image == 1, labels == 3)
    assert np.array_equal(image == 2, labels == 7)
    assert np.allclose(resampled.mass(), resampled.native_mass)


def test_resample_to_coarser_grid_keeps_roi_extent():
    labels = _label_image()
    atlas = Atlas.from_arrays(labels, _grid(2.0, labels.shape), ["A", "B"], indices=[3, 7])
    resampled = resample_atlas(atlas, _grid(4.0, (10, 12, 10)), (10, 12, 10))
    ratio = resampled.mass() / resampled.native_mass
    assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio


def test_resample_maps_and_cache(tmp_path, monkeypatch):
    maps = _maps()
    atlas = Atlas.from_arrays(maps, _grid(2.0, maps.shape[:3]), ["x", "y", "z"])
    target = _grid(3.0, (14, 16, 14))
    first = resample_atlas_cached(atlas, target, (14, 16, 14), [tmp_path])
    assert first.kind == "maps" and first.weights.shape[1] == 3
    assert np.allclose(first.mass() / first.native_mass, 1.0, atol=0.1)

    def fail(*args, **kwargs):
        raise AssertionError("should come from the cache")

    monkeypatch.setattr(atlases, "resample_atlas", fail)
    second = resample_atlas_cached(atlas, target, (14, 16, 14), [tmp_path])
    assert np.array_equal(first.voxels, second.voxels)
    assert np.array_equal(first.weights, second.weights)


def test_atlas_outside_bold_grid_is_another_space():
    labels = _label_image()
    shifted = _grid(2.0, labels.shape)
    shifted[:3, 3] += 500.0
    atlas = Atlas.from_arrays(labels, shifted, ["A", "B"], indices=[3, 7])
    with pytest.raises(DataError, match="not in the same space"):
        resample_atlas(atlas, _grid(2.0, labels.shape), labels.shape)


def test_nilearn_glue_difumo_and_harvard_oxford(tmp_path, monkeypatch):
    """The registry's nilearn calls turn fetcher results into names, indices and images."""
    import nilearn.datasets
    import pandas as pd
    from sklearn.utils import Bunch

    maps_path = tmp_path / "maps.nii.gz"
    nib.save(nib.Nifti1Image(_maps(n=2), np.eye(4)), maps_path)
    labels = pd.DataFrame({"component": [1, 2], "difumo_names": ["Cuneus ", "Putamen"]})
    monkeypatch.setattr(
        nilearn.datasets,
        "fetch_atlas_difumo",
        lambda **kw: Bunch(maps=str(maps_path), labels=labels),
    )
    image, names, indices = atlases.REGISTRY["difumo64"].fetch(str(tmp_path))
    assert names == ["Cuneus", "Putamen"] and indices == [0, 1]
    assert image.shape[3] == 2

    cort = np.zeros((6, 6, 6), np.int16)
    cort[0:2] = 1
    cort[2:3] = 2
    sub = np.zeros((6, 6, 6), np.int16)
    sub[2:4] = 1  # white matter: left out
    sub[4:6] = 4  # thalamus: kept, cortex wins where both are labelled
    luts = {
        "cort": pd.DataFrame(
            {"index": [0, 1, 2], "name": ["Background", "Left Cuneal", "Right Cuneal"]}
        ),
        "sub": pd.DataFrame(
            {
                "index": [0, 1, 4],
                "name": ["Background", "Left Cerebral White Matter", "Left Thalamus"],
            }
        ),
    }

    def fake_ho(atlas_name, **kwargs):
        key = "cort" if atlas_name.startswith("cort") else "sub"
        data = cort if key == "cort" else sub
        return Bunch(maps=nib.Nifti1Image(data, np.eye(4)), lut=luts[key])

    monkeypatch.setattr(nilearn.datasets, "fetch_atlas_harvard_oxford", fake_ho)
    image, names, indices = atlases.REGISTRY["harvardoxford"].fetch(str(tmp_path))
    assert names == ["Left Cuneal", "Right Cuneal", "Left Thalamus"]
    assert indices == [1, 2, 104]
    combined = np.asarray(image.dataobj)
    assert set(np.unique(combined)) == {0, 1, 2, 104}
    assert (combined[4:6] == 104).all() and (combined[3] == 0).all()
