"""Metrics: Pearson r and MSE per ROI, tables per split and per scan."""

from __future__ import annotations

import numpy as np
import pytest

from bids_neurobolt.train.metrics import grouped_metrics, metrics_table, mse, pearson_r


def test_pearson_r_matches_numpy_per_column():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 3))
    b = a * [1.0, -2.0, 0.0] + rng.normal(size=(50, 3))
    r = pearson_r(a, b)
    expected = [np.corrcoef(a[:, j], b[:, j])[0, 1] for j in range(3)]
    np.testing.assert_allclose(r, expected, rtol=1e-12)
    assert r[0] > 0.5 and r[1] < -0.8 and abs(r[2]) < 0.4


def test_degenerate_inputs_give_nan():
    assert np.isnan(pearson_r(np.ones(5), np.arange(5.0))[0])
    assert np.isnan(pearson_r([1.0], [2.0])[0])
    assert np.isnan(mse(np.zeros((0, 2)), np.zeros((0, 2)))).all()


def test_mse():
    np.testing.assert_allclose(mse([[0.0, 1.0], [2.0, 3.0]], [[1.0, 1.0], [0.0, 3.0]]), [2.5, 0.0])


def test_metrics_table_and_per_scan_metrics():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(30, 2))
    p = y + 0.1 * rng.normal(size=(30, 2))
    table = metrics_table(y, p, {"train": np.arange(20), "val": [], "test": np.arange(20, 30)},
                          ["Thalamus", "Putamen"], prefix="baseline_")  # fmt: skip
    assert list(table.columns) == ["roi", "split", "n", "baseline_pearson_r", "baseline_mse"]
    assert len(table) == 4 and set(table["split"]) == {"train", "test"}
    row = table.query("roi == 'Putamen' and split == 'test'").iloc[0]
    assert row["n"] == 10
    assert row["baseline_pearson_r"] == pytest.approx(pearson_r(y[20:, 1], p[20:, 1])[0])
    groups = np.repeat(["sub-07", "sub-11", "sub-16"], 10)
    per_scan = grouped_metrics(y, p, groups, ["Thalamus", "Putamen"])
    assert len(per_scan) == 6
    first = per_scan.query("group == 'sub-11' and roi == 'Thalamus'").iloc[0]
    assert first["pearson_r"] == pytest.approx(pearson_r(y[10:20, 0], p[10:20, 0])[0])


def test_centring_within_folds_removes_the_anticorrelation_of_fold_intercepts():
    """A model that predicts its training windows' mean correlates negatively when pooled."""
    from bids_neurobolt.train.metrics import centre_within

    rng = np.random.default_rng(0)
    y = np.cumsum(rng.standard_normal(200))
    y = (y - y.mean())[:, None]
    blocks = np.repeat(np.arange(5), 40)
    mean_model = np.array([y[blocks != b].mean() for b in blocks])[:, None]
    assert pearson_r(y, mean_model)[0] < -0.5  # the artifact
    centred = centre_within(mean_model, blocks)
    np.testing.assert_allclose(centred, 0.0, atol=1e-12)
    assert np.isnan(pearson_r(centre_within(y, blocks), centred)[0])
    # a model that follows the series within blocks keeps its correlation
    follower = y + 0.5 * rng.standard_normal(y.shape) + 3.0 * blocks[:, None]
    r = pearson_r(centre_within(y, blocks), centre_within(follower, blocks))[0]
    assert r > 0.8
