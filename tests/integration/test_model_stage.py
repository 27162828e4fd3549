"""End to end: the ``model`` stage trains NeuroBOLT on a run and applies a saved model.

The tiny model of ``--sloppy`` (two epochs) cannot be judged by its accuracy; these tests
check what must hold whatever the accuracy:

- one prediction per BOLD volume, ``n/a`` exactly for the volumes without 16 s of EEG;
- the ridge baselines, trained on the same windows and folds, follow the simulated
  EEG-driven ROI signals out of sample (median r >= 0.2 over ROIs): the windows are
  aligned with their volumes (a misalignment of a few TRs destroys this);
- every metrics row carries its statistics; a test part of the paper's split too short
  to evaluate is reported as n/a;
- a saved model applied to the same run reproduces the training stage's predictions
  (max abs difference 1e-4), and applies to an EEG-only recording on a TR grid;
- reruns skip, a changed seed retrains; bad model inputs give clear errors.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from .conftest import atlas_args, run_cli, validator_errors

SESSION = "sub-01/ses-eegfmri/func/sub-01_ses-eegfmri_task-rest_space-MNI152NLin2009cAsym"


def _table(out: Path, desc: str, suffix: str = "timeseries", folder: str = SESSION) -> Path:
    return out / f"{folder}_atlas-simulated_desc-{desc}_{suffix}.tsv"


MODEL = "models/sub-01_ses-eegfmri_task-rest_atlas-simulated_desc-neurobolt_model"


@pytest.fixture(scope="module")
def trained(long_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "out"
    result = run_cli(
        long_dataset, out, "participant", "-w", out.parent / "w", "--sloppy",
        "--skip-bids-validation", *atlas_args(long_dataset),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "model 1 done, 0 up to date, 1 not applicable" in result.output
    return out


@pytest.fixture(scope="module")
def trained_paper(trained: Path, long_dataset: Path, tmp_path_factory) -> Path:
    """The same run trained with ``--split paper``: one model, whose own predictions are written."""
    out = tmp_path_factory.mktemp("paper") / "out"
    shutil.copytree(trained, out, ignore=shutil.ignore_patterns("models"))
    result = run_cli(
        long_dataset, out, "participant", "-w", out.parent / "w", "--sloppy",
        "--skip-bids-validation", "--steps", "model", "--split", "paper",
        *atlas_args(long_dataset),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "model 1 done" in result.output
    return out


def test_training_writes_predictions_metrics_and_a_model(trained: Path) -> None:
    targets = pd.read_csv(_table(trained, "bold"), sep="\t")
    predicted = pd.read_csv(_table(trained, "neurobolt"), sep="\t", na_values="n/a")
    assert list(predicted.columns) == list(targets.columns)
    assert len(predicted) == len(targets) == 150
    missing = predicted.isna().all(axis=1).to_numpy()
    sidecar = json.loads(_table(trained, "neurobolt").with_suffix(".json").read_text())
    first_window = np.flatnonzero(~missing)[0]
    assert not missing[first_window:].any() and missing[:first_window].all()
    assert 0 < first_window <= 9  # 16 s of EEG before the marker: about 8 volumes of 2 s
    assert sidecar["SamplingFrequency"] == pytest.approx(0.5)
    assert sidecar["ScienceHash"] and sidecar["RandomSeed"] == 0
    assert sidecar["Sources"][0].startswith("bids::sub-01/ses-eegfmri/eeg/")
    # blocked cross-validation: every volume with a window is predicted out of sample
    assert sidecar["Split"] == {"train": [first_window, 149], "test": [first_window, 149]}
    assert "blocked 5-fold" in sidecar["Evaluation"] and "out of sample" in sidecar["Predictions"]
    assert sidecar["PretrainedWeights"] is None

    # The same predictions in percent signal change: the targets' scaling inverted.
    psc = pd.read_csv(_table(trained, "neuroboltpsc"), sep="\t", na_values="n/a")
    scaling = json.loads(_table(trained, "bold").with_suffix(".json").read_text())
    scaling = scaling["Parameters"]["Scaling"]
    for name in ("Cuneus", "global signal"):
        expected = (
            100 * (predicted[name] * scaling["Scale"][name] + scaling["Center"][name])
            * scaling["BoldStd"][name] / scaling["BoldMean"][name]
        )  # fmt: skip
        np.testing.assert_allclose(psc[name], expected, rtol=1e-4, atol=1e-6)
    assert psc.iloc[first_window:].abs().max().max() < 20  # a few % of the mean BOLD

    metrics = pd.read_csv(_table(trained, "neurobolt", "metrics"), sep="\t", na_values="n/a")
    assert list(metrics.columns[:9]) == [
        "roi", "split", "n", "n_eff", "pearson_r", "pearson_r_ci_low", "pearson_r_ci_high",
        "p_value", "q_value",
    ]  # fmt: skip
    for column in ("mse", "baseline_r", "baseline_p_value", "p_value_vs_baseline", "fir_r",
                   "fir_r_ci_low", "fir_p_value", "p_value_vs_fir"):  # fmt: skip
        assert column in metrics.columns, column
    assert set(metrics["split"]) == {"train", "test"}
    assert len(metrics) == 2 * targets.shape[1]
    test_rows = metrics[metrics["split"] == "test"]
    assert (test_rows["n"] == 150 - first_window).all()
    assert (test_rows["n_eff"] >= 10).all() and (test_rows["n_eff"] < test_rows["n"]).all()
    # out of sample on every window of a 5-minute run (about 70 training windows per
    # fold), the ridges follow the EEG-driven ROI signals (0.23-0.29 median r here; a
    # misalignment of windows and volumes by a few TRs gives about 0)
    assert test_rows[["baseline_r", "fir_r"]].mean(axis=1).median() >= 0.2, test_rows
    assert np.isfinite(test_rows[["pearson_r", "pearson_r_ci_low", "p_value"]]).all().all()
    assert (test_rows["pearson_r_ci_low"] <= test_rows["pearson_r"]).all()
    # the ridges' in-sample fit stays plausible (the old penalty reached r 0.999999)
    assert metrics.loc[metrics["split"] == "train", "baseline_r"].max() < 0.99

    model = json.loads(
        (trained / "models/sub-01_ses-eegfmri_task-rest_atlas-simulated_desc-neurobolt_model.json")
        .read_text()
    )  # fmt: skip
    assert len(model["ch_names"]) == 16 and model["roi_names"] == list(targets.columns)
    assert model["atlas"] == "simulated" and model["target_scaling"]["Method"] == "absmax"
    assert model["training"]["repetition_time"] == 2.0
    assert model["config_hash"] == sidecar["ScienceHash"]
    history = pd.read_csv(
        trained / "models/sub-01_ses-eegfmri_task-rest_atlas-simulated_desc-neurobolt_history.tsv",
        sep="\t",
    )
    assert list(history.columns) == [
        "epoch", "lr", "train_loss", "val_loss", "val_pearson_r", "seconds", "windows_per_second"
    ]  # fmt: skip
    assert history["epoch"].tolist() == model["training"]["history"]["epoch"]
    np.testing.assert_allclose(
        history["val_loss"], model["training"]["history"]["val_loss"], rtol=1e-5
    )
    folds = model["training"]["folds"]
    assert len(folds) == 5 and model["training"]["split_kind"] == "blocked-cv"
    assert model["training"]["best_epoch"] == int(np.median([f["best_epoch"] for f in folds]))
    assert model["training"]["labram_weights"] is None
    assert model["training"]["train_config"]["layer_decay"] == 1.0  # from scratch: no decay
    for table in (
        _table(trained, "neurobolt", "metrics"),
        trained / "models/sub-01_ses-eegfmri_task-rest_atlas-simulated_desc-neurobolt_history.tsv",
    ):
        sidecar = json.loads(table.with_suffix(".json").read_text())
        columns = pd.read_csv(table, sep="\t", nrows=0).columns
        assert all(sidecar[c]["Description"] for c in columns), table
        assert sidecar["ScienceHash"] == model["config_hash"] and sidecar["Sources"]


def test_report_shows_the_model(trained: Path) -> None:
    html = (trained / "sub-01.html").read_text()
    for desc in ("training", "prediction", "roir"):
        assert f"desc-{desc}_bold.svg" in html
    assert "baseline_r" in html and "LaBraM" in html


def test_paper_split_reports_train_val_test_and_marks_a_short_test_part(
    trained_paper: Path,
) -> None:
    sidecar = json.loads(_table(trained_paper, "neurobolt").with_suffix(".json").read_text())
    train, val, test = (sidecar["Split"][k] for k in ("train", "val", "test"))
    assert train[1] + 10 < val[0] and val[1] + 10 < test[0]
    metrics = pd.read_csv(_table(trained_paper, "neurobolt", "metrics"), sep="\t",
                          na_values="n/a")  # fmt: skip
    assert set(metrics["split"]) == {"train", "val", "test"}
    test_rows = metrics[metrics["split"] == "test"]
    # 150 volumes leave a handful of test windows: too few effective samples to evaluate
    assert (test_rows["n"] < 10).all()
    assert test_rows["pearson_r"].isna().all() and test_rows["p_value"].isna().all()
    warned = json.loads((trained_paper / "logs/warnings/sub-01_ses-eegfmri_task-rest.json")
                        .read_text())  # fmt: skip
    assert any("fewer than 10 effective samples" in w for w in warned), warned


def test_applying_the_saved_model_reproduces_its_predictions(
    trained_paper: Path, long_dataset: Path, tmp_path: Path
) -> None:
    trained = trained_paper
    model = trained / MODEL
    out = tmp_path / "applied"
    result = run_cli(
        long_dataset, out, "participant", "-w", tmp_path / "w", "--skip-bids-validation",
        "--model", f"{model}.json", "--tr", "2.5", *atlas_args(long_dataset),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "model 2 done" in result.output
    trained_pred = pd.read_csv(_table(trained, "neurobolt"), sep="\t", na_values="n/a")
    applied = pd.read_csv(_table(out, "neurobolt"), sep="\t", na_values="n/a")
    np.testing.assert_allclose(applied.to_numpy(), trained_pred.to_numpy(), atol=1e-4)
    metrics = pd.read_csv(_table(out, "neurobolt", "metrics"), sep="\t")
    assert set(metrics["split"]) == {"all"}

    # The EEG-only session has no markers: predictions on the --tr grid from the start.
    eeg_only = "sub-01/ses-eegonly/func/sub-01_ses-eegonly_task-rest_space-MNI152NLin2009cAsym"
    grid = pd.read_csv(_table(out, "neurobolt", folder=eeg_only), sep="\t", na_values="n/a")
    quality = next((out / "sub-01/ses-eegonly/eeg").glob("*_desc-clean_quality.json"))
    duration = json.loads(quality.read_text())["duration_s"]
    assert len(grid) == int(duration // 2.5) + 1  # one row per 2.5 s step from t = 0
    assert list(grid.columns) == list(trained_pred.columns)
    assert grid.iloc[:7].isna().all().all() and grid.iloc[7:].notna().all().all()  # 16 s
    sidecar = json.loads(_table(out, "neurobolt", folder=eeg_only).with_suffix(".json").read_text())
    assert sidecar["PredictionGrid"] == "every 2.5 s (no markers)"
    assert sidecar["SamplingFrequency"] == pytest.approx(0.4)


def test_bf16_prediction_on_the_cpu_matches_float32(
    trained_paper: Path, long_dataset: Path, tmp_path: Path
) -> None:
    """``--precision bf16`` (1.6-2.3x faster on CPUs with AVX-512 BF16 or AMX) changes little."""
    trained = trained_paper
    model = trained / MODEL
    out = tmp_path / "bf16"
    shutil.copytree(trained, out, ignore=shutil.ignore_patterns("models"))
    _table(out, "neurobolt").with_suffix(".json").unlink()
    result = run_cli(
        long_dataset, out, "participant", "-w", tmp_path / "w", "--skip-bids-validation",
        "--steps", "model", "--model", f"{model}.json", "--precision", "bf16",
        *atlas_args(long_dataset),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    fp32 = pd.read_csv(_table(trained, "neurobolt"), sep="\t", na_values="n/a").dropna()
    bf16 = pd.read_csv(_table(out, "neurobolt"), sep="\t", na_values="n/a").dropna()
    for name in fp32.columns:
        assert np.corrcoef(fp32[name], bf16[name])[0, 1] >= 0.99, name
        assert np.abs(fp32[name] - bf16[name]).max() <= 0.1 * fp32[name].std() + 1e-3, name


def test_per_roi_trains_one_model_per_roi_and_the_saved_model_applies(
    trained: Path, long_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "per-roi"
    shutil.copytree(trained, out, ignore=shutil.ignore_patterns("models"))
    result = run_cli(
        long_dataset, out, "participant", "-w", tmp_path / "w", "--sloppy",
        "--skip-bids-validation", "--steps", "model", "--split", "paper", "--per-roi",
        *atlas_args(long_dataset),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "model 1 done" in result.output  # the per-ROI setting is part of the science hash
    roi_names = list(pd.read_csv(_table(out, "bold"), sep="\t").columns)
    meta = json.loads((out / f"{MODEL}.json").read_text())
    assert meta["model_config"]["per_roi"] is True and meta["roi_names"] == roi_names
    predicted = pd.read_csv(_table(out, "neurobolt"), sep="\t", na_values="n/a").dropna()
    assert len(predicted) > 100 and predicted.std().gt(0).all()
    applied = tmp_path / "applied"
    shutil.copytree(out, applied, ignore=shutil.ignore_patterns("models"))
    _table(applied, "neurobolt").with_suffix(".json").unlink()
    result = run_cli(
        long_dataset, applied, "participant", "-w", tmp_path / "w2", "--skip-bids-validation",
        "--steps", "model", "--model", out / f"{MODEL}.json", *atlas_args(long_dataset),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    again = pd.read_csv(_table(applied, "neurobolt"), sep="\t", na_values="n/a").dropna()
    np.testing.assert_allclose(again.to_numpy(), predicted.to_numpy(), atol=1e-4)


def test_training_is_deterministic_on_cpu(
    trained: Path, long_dataset: Path, tmp_path: Path
) -> None:
    """The same seed retrains to byte-identical predictions and metrics."""
    out = tmp_path / "again"
    shutil.copytree(trained, out)
    sidecar = _table(out, "neurobolt").with_suffix(".json")
    sidecar.unlink()  # no longer up to date: the model stage trains again
    result = run_cli(
        long_dataset, out, "participant", "-w", tmp_path / "w", "--sloppy",
        "--skip-bids-validation", "--steps", "model", *atlas_args(long_dataset),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "model 1 done" in result.output
    for desc, suffix in (("neurobolt", "timeseries"), ("neurobolt", "metrics")):
        again = _table(out, desc, suffix).read_bytes()
        assert again == _table(trained, desc, suffix).read_bytes(), (desc, suffix)


def test_rerun_skips_and_a_new_seed_retrains(trained: Path, long_dataset: Path) -> None:
    args = (
        long_dataset, trained, "participant", "-w", trained.parent / "w", "--sloppy",
        "--skip-bids-validation", *atlas_args(long_dataset),
    )  # fmt: skip
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "model 0 done, 1 up to date" in result.output
    result = run_cli(*args, "--random-seed", "3", "--steps", "model")
    assert result.exit_code == 0, result.output
    assert "model 1 done, 0 up to date" in result.output
    sidecar = json.loads(_table(trained, "neurobolt").with_suffix(".json").read_text())
    assert sidecar["RandomSeed"] == 3


def test_pickled_pretrained_weights_are_refused(long_dataset: Path, tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "labram-base.pth"
    torch.save({"model": {"student.cls_token": torch.zeros(1, 1, 200)}, "x": Payload()}, path)
    result = run_cli(
        long_dataset, tmp_path / "out", "participant", "-w", tmp_path / "w", "--sloppy",
        "--pretrained", path, *atlas_args(long_dataset),
    )  # fmt: skip
    assert result.exit_code == 65, result.output
    assert "labram-base.pth" in result.output and "this must never run" not in result.output
    assert not (tmp_path / "out" / "sub-01").exists()
    assert pickle  # pickle payloads are built through torch.save above


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("--model", "missing.json"), 66, "missing.json"),
        (("--model", "m.json", "--steps", "sync"), 2, "--model feeds the 'model' stage"),
    ],
)
def test_bad_model_options(long_dataset: Path, tmp_path: Path, args, code, fragment) -> None:
    args = tuple(str(tmp_path / a) if a.endswith(".json") else a for a in args)
    result = run_cli(
        long_dataset, tmp_path / "out", "participant", "-w", tmp_path / "w", *args,
        *atlas_args(long_dataset),
    )  # fmt: skip
    assert result.exit_code == code, result.output
    assert fragment in result.output


def test_too_short_a_run_is_not_trained_and_says_why(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        small_dataset, out, "participant", "-w", tmp_path / "w", "--sloppy",
        "--skip-bids-validation", "--participant-label", "01", *atlas_args(small_dataset),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "model 0 done, 0 up to date, 1 not applicable" in result.output
    warned = json.loads((out / "logs/warnings/sub-01_task-rest.json").read_text())
    assert any("too few for 5-fold blocked cross-validation" in w for w in warned), warned
    assert "group level" in " ".join(warned)  # the fix: train across subjects
    # printed once, as a sentence: no source file, no source line
    (line,) = [x for x in result.output.splitlines() if "too few for 5-fold" in x]
    assert "NeuroboltWarning: sub-01_task-rest: NeuroBOLT not trained" in line
    assert "model.py" not in result.output and "warnings.warn(" not in result.output
    assert not list(out.rglob("*desc-neurobolt*")) and not (out / "models").exists()


@pytest.mark.validator
@pytest.mark.skipif(shutil.which("bids-validator-deno") is None, reason="validator absent")
def test_output_with_trained_models_passes_the_bids_validator(trained: Path) -> None:
    assert list(trained.rglob("*_desc-neurobolt_timeseries.tsv"))
    assert validator_errors(trained) == []
