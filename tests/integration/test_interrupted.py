"""A run killed at any point leaves nothing a rerun would trust; the rerun completes it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bids_neurobolt.derivatives import writer

from .conftest import atlas_args


def _command(bids: Path, out: Path, work: Path) -> list[str]:
    return [sys.executable, "-m", "bids_neurobolt", str(bids), str(out), "participant",
            "-w", str(work), "--skip-bids-validation", "-q", *atlas_args(bids)]  # fmt: skip


def _trusted_outputs_are_whole(out: Path) -> None:
    """Every sync sidecar (written last) has its complete table beside it."""
    for sidecar in out.rglob("*_desc-sync_events.json"):
        table = pd.read_csv(sidecar.with_suffix(".tsv"), sep="\t")
        assert (table.trial_type == "volume").sum() == 24, sidecar


@pytest.mark.parametrize("delay", [1.0, 2.0, 3.0, 4.0])
def test_kill_then_rerun(small_dataset: Path, tmp_path: Path, delay: float) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    job = subprocess.Popen(_command(small_dataset, out, work))
    time.sleep(delay)
    job.send_signal(signal.SIGKILL)
    job.wait()
    if out.exists():
        _trusted_outputs_are_whole(out)

    rerun = subprocess.run(_command(small_dataset, out, work), capture_output=True, text=True)

    assert rerun.returncode == 0, rerun.stderr
    _trusted_outputs_are_whole(out)
    assert len(list(out.rglob("*_desc-sync_events.json"))) == 2
    assert not list(out.rglob("*.tmp")), "temporaries of the killed job were not cleaned"
    assert (out / "sub-01.html").is_file() and (out / "sub-02.html").is_file()


def test_only_temporaries_of_dead_local_processes_are_removed(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid, host = int(finished.stdout), writer._HOST
    dead = tmp_path / "sub-01" / f".x_events.tsv.{host}-{dead_pid}-0123abcd.tmp"
    mine = tmp_path / f".y_events.tsv.{host}-{__import__('os').getpid()}-0123abcd.tmp"
    other_host = tmp_path / f".z_events.tsv.othernode-{dead_pid}-0123abcd.tmp"
    unrelated = tmp_path / ".notes.tmp"
    for path in (dead, mine, other_host, unrelated):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("partial")

    removed = writer.remove_stale_temporaries(tmp_path)

    assert removed == [dead]
    assert not dead.exists()
    assert mine.exists() and other_host.exists() and unrelated.exists()
