"""Several participant-level jobs writing into one output folder at once (a SLURM array)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from .conftest import atlas_args, tree_digest


def test_parallel_jobs_share_one_output_folder(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = tree_digest(small_dataset)
    labels = ["01", "02", "01", "02"]  # two jobs per subject: overlapping writes too
    jobs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bids_neurobolt",
                str(small_dataset),
                str(out),
                "participant",
                "--participant-label",
                label,
                "-w",
                str(tmp_path / "work"),  # shared on purpose: each job indexes in its own folder
                "--skip-bids-validation",
                *atlas_args(small_dataset),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for label in labels
    ]
    outputs = [job.communicate(timeout=300)[0] for job in jobs]

    assert [job.returncode for job in jobs] == [0] * len(jobs), outputs
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    descriptions = pd.read_csv(out / "descriptions.tsv", sep="\t")
    assert descriptions["desc_id"].tolist() == [
        "desc-bold",
        "desc-clean",
        "desc-neurobolt",
        "desc-neuroboltpsc",
        "desc-sync",
    ]
    for subject in ("01", "02"):
        table = next((out / f"sub-{subject}" / "eeg").glob("*_desc-sync_events.tsv"))
        assert (pd.read_csv(table, sep="\t").trial_type == "volume").sum() == 24
    assert len(list((out / "logs").glob("bids-neurobolt-*.log"))) == len(jobs)
    assert len(list((out / "logs").glob("config-*.toml"))) == len(jobs)
    assert not list(out.rglob("*.tmp"))
    assert not list((tmp_path / "work").iterdir()), "per-job index folders left behind"
    assert tree_digest(small_dataset) == before
