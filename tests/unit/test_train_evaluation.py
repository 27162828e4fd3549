"""Evaluation of one run: blocked cross-validation assembles out-of-sample predictions."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bids_neurobolt.train.evaluation import evaluate_run, make_run_splits, too_short
from bids_neurobolt.train.splits import Split

N_WINDOWS, N_CH, N_TIMES = 120, 3, 3200


def windows_and_targets(seed: int = 0):
    """Windows whose alpha power follows a slow course that the targets follow too."""
    rng = np.random.default_rng(seed)
    t = np.arange(N_TIMES) / 200.0
    slow = np.convolve(rng.standard_normal(N_WINDOWS + 20), np.ones(8) / 8, "same")[10:-10]
    amp = np.exp(slow)
    x = rng.normal(0, 0.3, size=(N_WINDOWS, N_CH, N_TIMES))
    x += amp[:, None, None] * np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6, (N_WINDOWS, N_CH, 1)))
    y = np.stack([slow, -slow + 0.3 * rng.standard_normal(N_WINDOWS)], axis=1)
    return x.astype(np.float32), y.astype(np.float32)


class FakeTrainer:
    """Stands in for NeuroBOLT: predicts the truth plus its fold's number, remembers calls."""

    def __init__(self, y: np.ndarray) -> None:
        self.y, self.calls = y, []

    def __call__(self, split: Split, keep_epoch: int | None = None) -> SimpleNamespace:
        number = len(self.calls)
        self.calls.append((split, keep_epoch))
        history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, 0.4]})
        return SimpleNamespace(
            predictions=(self.y + 10.0 * number).astype(np.float32),
            best_epoch=[1, 3, 2, 3, 2][number % 5],
            history=history,
        )


def test_blocked_cv_predicts_every_window_with_the_fold_that_did_not_train_on_it():
    x, y = windows_and_targets()
    splits = make_run_splits("blocked-cv", N_WINDOWS, gap=8)
    trainer = FakeTrainer(y)
    result = evaluate_run(x, y, splits, train=trainer, roi_names=["a", "b"])
    assert len(trainer.calls) == len(splits) + 1
    for number, split in enumerate(splits):
        assert np.allclose(result.predictions["neurobolt"][split.test], y[split.test] + 10 * number)
        assert trainer.calls[number][1] is None
    final_split, keep = trainer.calls[-1]
    assert keep == 2  # median of the folds' best epochs 1, 3, 2, 3, 2
    assert final_split.train.size == N_WINDOWS and final_split.val.size == 0
    assert result.final.predictions[0, 0] == pytest.approx(y[0, 0] + 10 * len(splits))
    for name in ("baseline", "fir"):
        assert np.isfinite(result.predictions[name]).all()
    assert np.array_equal(np.sort(result.sets["test"]), np.arange(N_WINDOWS))
    assert result.split == "blocked-cv" and "blocked 5-fold" in result.description
    assert [f["best_epoch"] for f in result.folds] == [1, 3, 2, 3, 2]


def test_the_metrics_table_carries_statistics_for_every_model():
    x, y = windows_and_targets()
    splits = make_run_splits("blocked-cv", N_WINDOWS, gap=8)
    result = evaluate_run(x, y, splits, train=FakeTrainer(y), roi_names=["a", "b"])
    metrics = result.metrics
    assert set(metrics["split"]) == {"train", "test"}
    expected = {
        "roi", "split", "n", "n_eff", "pearson_r", "pearson_r_ci_low", "pearson_r_ci_high",
        "p_value", "q_value", "mse", "baseline_r", "baseline_r_ci_low", "baseline_r_ci_high",
        "baseline_p_value", "baseline_mse", "p_value_vs_baseline", "fir_r", "fir_r_ci_low",
        "fir_r_ci_high", "fir_p_value", "fir_mse", "p_value_vs_fir",
    }  # fmt: skip
    assert expected <= set(metrics.columns)
    test = metrics[metrics["split"] == "test"].set_index("roi")
    # the fake NeuroBOLT is the truth plus a constant per fold: r high but not 1
    assert (test["n"] == N_WINDOWS).all()
    assert (test["n_eff"] < N_WINDOWS).all()
    assert (test["pearson_r_ci_low"] <= test["pearson_r"]).all()
    assert (test["pearson_r"] <= test["pearson_r_ci_high"]).all()
    # the ridges learn the alpha-power coupling out of sample
    assert test.loc["a", "fir_r"] > 0.5 and test.loc["a", "baseline_r"] > 0.3


def test_paper_split_reports_train_val_test_of_one_model():
    x, y = windows_and_targets()
    splits = make_run_splits("paper", N_WINDOWS, gap=8)
    trainer = FakeTrainer(y)
    result = evaluate_run(x, y, splits, train=trainer, roi_names=["a", "b"])
    assert len(trainer.calls) == 1 and result.split == "paper"
    assert set(result.metrics["split"]) == {"train", "val", "test"}
    # the last tenth of 120 windows less the gap: 4 windows, far too few to evaluate
    test = result.metrics[result.metrics["split"] == "test"]
    assert (test["n"] == 4).all()
    assert test["pearson_r"].isna().all() and test["p_value"].isna().all()
    assert too_short(result.metrics) == ["a", "b"]


def test_unknown_split_is_a_config_error():
    from bids_neurobolt.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown split"):
        make_run_splits("random", 100, gap=8)
