"""Fixtures for end-to-end tests: small simulated datasets and a command-line runner.

The simulated datasets are built once per test session (a few seconds each) and copied
into each test's temporary folder when a test needs to damage them.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from bids_neurobolt.cli import cli
from bids_neurobolt.simulate import simulate_dataset

#: Small but realistic: 1 kHz EEG, 2 s TR, 24 volumes, 16 EEG channels + ECG.
SMALL = {"n_subjects": 2, "duration": 48.0, "sfreq": 1000.0, "tr": 2.0, "n_channels": 16}


@dataclass(frozen=True)
class Result:
    """What a command-line run returned."""

    exit_code: int
    output: str


def run_cli(*args: object) -> Result:
    """Run ``bids-neurobolt`` in-process and return its exit code and output."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return Result(result.exit_code, result.output)


def tree_digest(root: Path) -> dict[str, tuple[str, int]]:
    """Checksum and permission bits of every file under ``root`` (symlinks not followed)."""
    digest = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = hashlib.sha256(path.read_bytes()).hexdigest()
            digest[str(path.relative_to(root))] = (data, path.stat().st_mode)
    return digest


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two subjects, one run each, EEG with volume and slice markers, paired BOLD."""
    root = tmp_path_factory.mktemp("sim") / "bids"
    simulate_dataset(root, seed=3, **SMALL)
    return root


@pytest.fixture(scope="session")
def sessions_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One subject with an EEG-fMRI session and an EEG-only session (no scanner, no markers)."""
    root = tmp_path_factory.mktemp("sim_sessions") / "bids"
    simulate_dataset(root, seed=4, eeg_only_sessions=True, **{**SMALL, "n_subjects": 1})
    return root


@pytest.fixture
def dataset_copy(small_dataset: Path, tmp_path: Path) -> Path:
    """A private copy of ``small_dataset`` that a test may damage."""
    target = tmp_path / "bids"
    shutil.copytree(small_dataset, target)
    return target


@pytest.fixture
def make_readonly() -> Callable[[Path], None]:
    """Make a tree read-only for the test, restoring write permission afterwards."""
    touched: list[Path] = []

    def _apply(root: Path) -> None:
        for path in [root, *root.rglob("*")]:
            mode = path.stat().st_mode
            path.chmod(mode & ~0o222)
            touched.append(path)

    yield _apply
    for path in touched:
        path.chmod(path.stat().st_mode | 0o200)


def atlas_args(bids_root: Path) -> tuple[str, str]:
    """``--atlas`` with the atlas the simulator planted its ROI signals in."""
    atlas = bids_root / "sourcedata/simulation/tpl-MNI152NLin2009cAsym_atlas-simulated_dseg.nii.gz"
    return ("--atlas", str(atlas))


#: Long enough for the intra-scan split (80/10/10 with 20 s gaps): 150 volumes of 2 s.
LONG = {"n_subjects": 1, "duration": 300.0, "sfreq": 1000.0, "tr": 2.0, "n_channels": 16}


@pytest.fixture(scope="session")
def long_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One subject, a 5-minute EEG-fMRI session and an EEG-only session."""
    root = tmp_path_factory.mktemp("sim_long") / "bids"
    simulate_dataset(root, seed=7, eeg_only_sessions=True, **LONG)
    return root


@pytest.fixture(scope="session")
def group_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three subjects of 80 s, 8 EEG channels: enough for a 3-fold inter-subject evaluation."""
    root = tmp_path_factory.mktemp("sim_group") / "bids"
    simulate_dataset(root, seed=11, **{**LONG, "n_subjects": 3, "n_channels": 8, "duration": 80.0})
    return root


def validator_errors(root: Path) -> list[dict]:
    """Errors ``bids-validator-deno`` reports for a dataset (the caller skips without it)."""
    import json
    import subprocess

    completed = subprocess.run(
        ["bids-validator-deno", "--format", "json", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(completed.stdout)
    return [i for i in report["issues"]["issues"] if i["severity"] == "error"]
