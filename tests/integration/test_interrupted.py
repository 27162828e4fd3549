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
    assert not [p for p in work.iterdir() if p.name[:1].isdigit()], "work folder not swept"
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


def _wait_for(job: subprocess.Popen, text: str, timeout: float = 120.0) -> str:
    """Read the job's stderr until a line holds ``text``; return what was read."""
    seen, end = [], time.monotonic() + timeout
    assert job.stderr is not None
    while time.monotonic() < end:
        line = job.stderr.readline()
        if not line:
            break
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} never printed:\n{''.join(seen)}")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_stop_cleanly(
    small_dataset: Path, tmp_path: Path, signum: int, code: int
) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    command = [c for c in _command(small_dataset, out, work) if c != "-q"]
    job = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    _wait_for(job, "EEG recording(s) selected")
    job.send_signal(signum)
    rest = job.communicate(timeout=120)[1]

    assert job.returncode == code, rest
    name = signal.Signals(signum).name
    assert f"bids-neurobolt: stopped by {name}; finished outputs are kept" in rest
    assert "Traceback" not in rest
    assert not list(out.rglob("*.tmp"))
    assert [p.name for p in work.iterdir()] in ([], ["group"])  # this run's folder removed


def test_work_folders_of_killed_runs_are_swept_at_the_next_start(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(finished.stdout)
    folders = {
        "dead": ("20261201-000000-0123abcd", writer._HOST, dead_pid),
        "alive": ("20261201-000000-89abcdef", writer._HOST, __import__("os").getpid()),
        "elsewhere": ("20261201-000000-00000000", "othernode", dead_pid),
    }
    for name, host, pid in folders.values():
        (tmp_path / name / "bids_db").mkdir(parents=True)
        (tmp_path / name / writer.OWNER_FILE).write_text(f'{{"host": "{host}", "pid": {pid}}}')
    (tmp_path / "group").mkdir()  # the group window cache is not a run folder
    (tmp_path / "20261201-000000-ffffffff").mkdir()  # no owner file: left alone

    removed = writer.remove_abandoned_folders(tmp_path)

    assert removed == [tmp_path / folders["dead"][0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["group", "20261201-000000-ffffffff", folders["alive"][0], folders["elsewhere"][0]]
    )
