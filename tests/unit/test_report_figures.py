"""Report figures and caveats: ROI values on an atlas, every group figure, too-short runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bids_neurobolt.fmri.atlases import Atlas
from bids_neurobolt.report import figures
from bids_neurobolt.report.html import r_with_uncertainty, too_short

AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])


def test_label_atlas_is_painted_with_each_rois_value() -> None:
    labels = np.zeros((6, 6, 6), dtype=np.int16)
    labels[:3], labels[3:, :2] = 1, 2
    atlas = Atlas.from_arrays(labels, AFFINE, ["left", "front"])
    painted = np.asarray(figures.paint_rois(atlas, {"left": 0.5, "front": np.nan}).dataobj)
    assert np.all(painted[:3] == 0.5)
    assert np.all(painted[3:] == 0)  # NaN and background stay blank


def test_maps_atlas_voxels_take_their_strongest_roi_above_a_fifth_of_its_peak() -> None:
    maps = np.zeros((4, 1, 1, 2), dtype=np.float32)
    maps[:, 0, 0, 0] = [1.0, 0.6, 0.1, 0.0]  # ROI a: strong, weaker, below a fifth
    maps[:, 0, 0, 1] = [0.0, 0.7, 0.05, 0.0]  # ROI b wins voxel 1
    atlas = Atlas.from_arrays(maps, AFFINE, ["a", "b"])
    painted = np.asarray(figures.paint_rois(atlas, {"a": -0.3, "b": 0.8}).dataobj)
    assert painted[:, 0, 0].tolist() == pytest.approx([-0.3, 0.8, 0.0, 0.0])


def test_group_figures_render_with_labelled_axes() -> None:
    rois = ["Cuneus", "Thalamus"]
    summary = pd.DataFrame({
        "roi": rois, "n_subjects": 3,
        **{f"mean_{p}r{end}": [0.1 + i / 10, 0.2] for i, p in enumerate(("", "baseline_", "fir_"))
           for end in ("", "_ci_low", "_ci_high")},
    })  # fmt: skip
    metrics = pd.DataFrame({
        "run": np.repeat(["sub-01_task-rest", "sub-02_task-rest"], 2), "roi": rois * 2,
        "pearson_r": [0.1, np.nan, 0.3, -0.2], "baseline_r": [0.4, 0.5, 0.2, 0.1],
    })  # fmt: skip
    history = pd.DataFrame({
        "fold": ["1", "1", "all", "all"], "epoch": [1, 2, 1, 2],
        "train_loss": [0.3, 0.2, 0.3, 0.25], "val_loss": [0.4, 0.35, np.nan, np.nan],
    })  # fmt: skip
    trace = {"volumes": np.arange(10), "measured": np.zeros(10), "neurobolt": np.ones(10),
             "baseline": np.ones(10), "r": 0.2}  # fmt: skip
    traces = [{**trace, "run": "sub-01_task-rest", "roi": r, "which": w}
              for r, w in zip(rois, ("best", "worst"), strict=True)]  # fmt: skip
    labels = np.zeros((6, 6, 6), dtype=np.int16)
    labels[:3], labels[3:] = 1, 2
    atlas = Atlas.from_arrays(labels, AFFINE, rois)

    forest = figures.forest_plot(summary)
    assert "Cuneus" in forest and "mean Pearson r over held-out subjects" in forest
    matrix = figures.r_matrix(metrics)
    assert "n/a" in matrix and "held-out run" in matrix and "Pearson r" in matrix
    assert "time (s)" in figures.heldout_traces(traces, 2.0)
    curves = figures.fold_curves(history)
    assert "all subjects" in curves and "fold 1" in curves and "MSE" in curves
    assert "<svg" in figures.r_brain_map(atlas, {"Cuneus": 0.3}, "mean r")


def test_too_short_test_rows_give_one_caveat_with_advice() -> None:
    table = pd.DataFrame({"roi": ["a", "b", "a"], "split": ["test", "test", "train"],
                          "n_eff": [6.0, 12.0, 40.0], "pearson_r": [np.nan, 0.2, 0.9]})  # fmt: skip
    (caveat,) = too_short(table, "sub-01_task-rest")
    assert caveat.startswith("sub-01_task-rest: 1 of 2 ROIs too short to evaluate")
    assert "Use longer runs" in caveat
    assert too_short(table.fillna(0.1), "x") == []


def test_atlas_overlay_names_every_roi_in_a_legend() -> None:
    atlas = np.zeros((8, 8, 6), dtype=np.int32)
    atlas[1:4, 1:4, 1:5], atlas[5:7, 5:7, 2:4] = 1, 2
    svg = figures.atlas_overlay(np.ones((8, 8, 6)), atlas, ["Cuneus", "Thalamus", "global signal"])
    assert "Cuneus" in svg and "Thalamus" in svg and "global signal" not in svg
    assert "mean BOLD image" in svg
    many = figures.atlas_overlay(np.ones((8, 8, 6)), atlas * 15, [f"r{i}" for i in range(30)],
                                 max_legend=4)  # fmt: skip
    assert "30 ROIs, colours repeat" in many and "r3" in many and "r4" not in many


def test_every_r_in_a_table_carries_its_ci_and_n_eff() -> None:
    metrics = pd.DataFrame({
        "run": ["sub-01_task-rest"] * 2, "roi": ["a", "b"], "pearson_r": [0.2512, np.nan],
        "pearson_r_ci_low": [-0.1, np.nan], "pearson_r_ci_high": [0.55, np.nan],
        "n_eff": [21.7, 6.0], "baseline_r": [0.4, 0.3],
    })  # fmt: skip
    table = r_with_uncertainty(metrics)
    assert list(table.columns) == ["run", "a", "b"]
    assert table.iloc[0].tolist() == ["sub-01_task-rest", "0.25 [-0.10, 0.55], n_eff 22", "n/a"]
    with_ridge = r_with_uncertainty(metrics, baseline=True)
    assert with_ridge.iloc[0, 1].endswith(" / 0.40") and with_ridge.iloc[0, 2] == "n/a / 0.30"
