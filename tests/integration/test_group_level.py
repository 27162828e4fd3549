"""End to end: the group level trains NeuroBOLT across subjects from OUTPUT_DIR alone.

Checks (tiny ``--sloppy`` model; accuracy is not judged, structure and bookkeeping are):

- 3 subjects give a 3-fold evaluation in which every subject is tested exactly once, on
  a model that never saw it (its subject is neither in the training nor the validation set);
- one metrics row per run and ROI, with NeuroBOLT and ridge-baseline r, and a summary
  per ROI equal to the mean of those rows;
- a group model that ``--model`` accepts; ``group.html`` with working relative links;
- a rerun is skipped; bad group inputs give clear errors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import atlas_args, run_cli, validator_errors

GROUP = "group/group_atlas-simulated_desc-neurobolt"


@pytest.fixture(scope="module")
def participant_out(group_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("group") / "out"
    result = run_cli(
        group_dataset, out, "participant", "-w", out.parent / "w", "--skip-bids-validation",
        "--steps", "sync,clean,targets,report", *atlas_args(group_dataset),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def group_out(participant_out: Path) -> Path:
    result = run_cli(
        "unused-bids-dir", participant_out, "group", "-w", participant_out.parent / "w", "--sloppy"
    )
    assert result.exit_code == 0, result.output
    return participant_out


def test_every_subject_is_tested_once_on_a_model_that_never_saw_it(group_out: Path) -> None:
    folds = json.loads((group_out / f"{GROUP}_folds.json").read_text())
    assert folds["Split"] == "3-fold across subjects"
    tested = [s for fold in folds["Folds"] for s in fold["test"]]
    assert sorted(tested) == ["01", "02", "03"]
    for fold in folds["Folds"]:
        assert not set(fold["test"]) & (set(fold["train"]) | set(fold["val"]))
        assert fold["train"] and fold["val"]

    metrics = pd.read_csv(group_out / f"{GROUP}_metrics.tsv", sep="\t", dtype={"subject": str})
    assert list(metrics.columns[:8]) == [
        "fold", "subject", "run", "roi", "split", "n", "n_eff", "pearson_r"
    ]  # fmt: skip
    statistics = {"pearson_r_ci_low", "pearson_r_ci_high", "p_value", "q_value", "baseline_r",
                  "baseline_p_value", "p_value_vs_baseline", "fir_r", "p_value_vs_fir"}  # fmt: skip
    assert statistics <= set(metrics.columns)
    assert len(metrics) == 3 * 7  # 3 runs x (6 ROIs + global signal)
    assert (metrics["split"] == "test").all()
    for _, row in metrics.iterrows():
        assert row["subject"] in folds["Folds"][row["fold"] - 1]["test"]
    # r is n/a exactly where the run alone holds fewer than 10 effective samples
    assert (metrics["pearson_r"].isna() == (metrics["n_eff"] < 10)).all()
    summary = pd.read_csv(group_out / f"{GROUP}_summary.tsv", sep="\t")
    evaluable = metrics.groupby("roi", sort=False)["pearson_r"].agg(lambda r: r.notna().all())
    expected = metrics.groupby("roi", sort=False)["pearson_r"].mean()[evaluable]
    np.testing.assert_allclose(
        summary.set_index("roi")["mean_r"][expected.index], expected, atol=1e-5
    )
    assert (summary["n_runs"] == 3).all() and (summary["n_subjects"] == 3).all()
    for column in ("mean_r_ci_low", "mean_r_ci_high", "mean_baseline_r", "mean_fir_r",
                   "p_value", "q_value", "p_value_vs_baseline", "q_value_vs_baseline"):  # fmt: skip
        assert summary[column].notna().all(), column
    # an exact sign-flip test over 3 subjects cannot go below 1/8
    assert (summary["p_value_vs_baseline"] >= 0.125).all()
    assert "smallest possible p-value is 0.125" in folds["Verdict"]
    history = pd.read_csv(group_out / f"{GROUP}_history.tsv", sep="\t", dtype={"fold": str})
    assert history["fold"].unique().tolist() == ["1", "2", "3", "all"]
    for number, fold in enumerate(folds["Folds"], start=1):
        epochs = history.loc[history["fold"] == str(number), "epoch"].tolist()
        assert epochs == fold["history"]["epoch"]
    for table in ("metrics", "summary", "history"):
        sidecar = json.loads((group_out / f"{GROUP}_{table}.json").read_text())
        columns = pd.read_csv(group_out / f"{GROUP}_{table}.tsv", sep="\t", nrows=0).columns
        assert all(sidecar[c]["Description"] for c in columns), table
        assert sidecar["Sources"] == [f"bids::{GROUP}_folds.json"]


def test_group_model_can_be_applied(group_out: Path, group_dataset: Path, tmp_path: Path) -> None:
    model = group_out / "models/group_atlas-simulated_desc-neurobolt_model.json"
    meta = json.loads(model.read_text())
    assert meta["training"]["subjects"] == ["01", "02", "03"]
    out = tmp_path / "applied"
    result = run_cli(
        group_dataset, out, "participant", "-w", tmp_path / "w", "--skip-bids-validation",
        "--participant-label", "02", "--model", model, *atlas_args(group_dataset),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert list((out / "sub-02" / "func").glob("*_desc-neurobolt_timeseries.tsv"))


def test_group_report_links_work_after_a_move(group_out: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(group_out, moved)
    html = (moved / "group.html").read_text()
    for marker in ("NeuroBOLT across subjects", "Artifact cleaning across runs", "sub-03.html"):
        assert marker in html
    for desc in ("forest", "brainmap", "rmatrix", "traces", "curves"):
        figure = f"group/figures/group_atlas-simulated_desc-{desc}_bold.svg"
        assert figure in html and (moved / figure).stat().st_size > 5_000, desc
    assert "smallest possible p-value" in html  # the verdict, in words
    caveats = html.split('class="caveats"')[1].split("</div>")[0]
    assert "Simulated data" in caveats and "--sloppy: a tiny NeuroBOLT" in caveats
    per_run = html.split("<h3>Per run</h3>")[1].split("</thead>")[0]
    assert per_run.count("<tr") == 1 and "<th></th>" not in per_run  # one header row, none empty
    assert html.count("_task-rest</td>") >= 3  # one cleaning row per run


def test_group_rerun_is_skipped(group_out: Path) -> None:
    folds = group_out / f"{GROUP}_folds.json"
    mtime = folds.stat().st_mtime_ns
    result = run_cli("unused", group_out, "group", "-w", group_out.parent / "w", "--sloppy")
    assert result.exit_code == 0, result.output
    assert "group level up to date" in result.output
    assert folds.stat().st_mtime_ns == mtime


def test_explicit_split_file(participant_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(participant_out, out, ignore=shutil.ignore_patterns("group", "models"))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["sub-01"], "val": ["02"], "test": ["03"]}))
    result = run_cli(
        "unused", out, "group", "-w", tmp_path / "w", "--sloppy", "--group-split", split
    )
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(out / f"{GROUP}_metrics.tsv", sep="\t", dtype={"subject": str})
    assert set(metrics["subject"]) == {"03"}


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("--folds", "2"), 2, "folds must be 0 (automatic) or >= 3"),
        (("--folds", "4"), 2, "--folds 4 is more than the 3 subjects"),
        (("--group-split", "{bad json"), 2, "cannot read the split file"),
        (("--group-split", '{"train": ["01"], "tset": ["02"]}'), 2, "keys train, val"),
    ],
)
def test_bad_group_options(participant_out: Path, tmp_path: Path, args, code, fragment) -> None:
    if args[0] == "--group-split":
        path = tmp_path / "split.json"
        path.write_text(args[1])
        args = (args[0], str(path))
    result = run_cli("unused", participant_out, "group", "-w", tmp_path / "w", "--sloppy", *args)
    assert result.exit_code == code, result.output
    assert fragment in result.output


def test_group_with_one_subject_says_what_is_missing(long_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        long_dataset, out, "participant", "-w", tmp_path / "w", "--skip-bids-validation",
        "--steps", "sync,clean,targets", *atlas_args(long_dataset),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run_cli("unused", out, "group", "-w", tmp_path / "w", "--sloppy")
    assert result.exit_code == 66, result.output
    assert "at least two participants; found 1 (01)" in result.output


@pytest.mark.validator
@pytest.mark.skipif(shutil.which("bids-validator-deno") is None, reason="validator absent")
def test_output_with_model_and_group_results_passes_the_bids_validator(group_out: Path) -> None:
    assert list(group_out.rglob("*_desc-clean_eeg.vhdr")) and (group_out / "group").is_dir()
    assert validator_errors(group_out) == []


def test_group_level_runs_data_parallel_under_torchrun(
    participant_out: Path, tmp_path: Path
) -> None:
    """Two CPU processes (gloo): the main one writes, once; results match the fold layout."""
    import os
    import subprocess
    import sys

    out = tmp_path / "out"
    shutil.copytree(participant_out, out, ignore=shutil.ignore_patterns("group", "models", "logs"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
         "--master-port", "29533", "-m", "bids_neurobolt", "unused", str(out), "group",
         "-w", str(tmp_path / "w"), "--sloppy", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=900, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert len(list((out / "logs").glob("bids-neurobolt-group-*.log"))) == 1
    log = next((out / "logs").glob("bids-neurobolt-group-*.log")).read_text()
    assert "data-parallel training: 2 processes (gloo backend, torchrun)" in log
    metrics = pd.read_csv(out / f"{GROUP}_metrics.tsv", sep="\t")
    assert len(metrics) == 3 * 7 and (out / "group.html").is_file()


def _last_value_missing(text: str) -> str:
    """The first target of the last volume (which has an EEG window) set to n/a."""
    lines = text.rstrip("\n").split("\n")
    lines[-1] = "\t".join(["n/a", *lines[-1].split("\t")[1:]])
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("corrupt", "fragment"),
    [
        (lambda text: "garbage\tno\n\x00\x01", "columns ['garbage', 'no'] are not numbers"),
        (lambda text: text.split("\n")[0] + "\n", "it has no rows"),
        (_last_value_missing, "n/a values at volumes that have EEG windows"),
    ],
)
def test_corrupt_targets_at_the_group_level_name_the_file(
    participant_out: Path, tmp_path: Path, corrupt, fragment
) -> None:
    out = tmp_path / "out"
    shutil.copytree(participant_out, out, ignore=shutil.ignore_patterns("group", "models"))
    (tsv,) = (out / "sub-02").rglob("*_desc-bold_timeseries.tsv")
    tsv.write_text(corrupt(tsv.read_text()))
    before = tsv.read_bytes()

    result = run_cli("unused", out, "group", "-w", tmp_path / "w", "--sloppy")

    assert result.exit_code == 65, result.output
    assert fragment in result.output and tsv.name in result.output
    assert "Traceback" not in result.output and tsv.read_bytes() == before
    assert not (out / "group").exists()


def test_a_corrupt_participant_metrics_table_is_named_in_the_group_report(
    group_out: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(group_out, out)
    (targets,) = (out / "sub-01").rglob("*_desc-bold_timeseries.tsv")
    bad = targets.with_name(targets.name.replace("desc-bold_timeseries", "desc-neurobolt_metrics"))
    bad.write_text("this is not\ta metrics table\n")
    (out / f"{GROUP}_folds.json").unlink()  # rerun the group level

    result = run_cli("unused", out, "group", "-w", tmp_path / "w", "--sloppy")

    assert result.exit_code == 0, result.output
    html = (out / "group.html").read_text()
    assert f"{bad.relative_to(out)}: no column pearson_r, roi, split" in html
