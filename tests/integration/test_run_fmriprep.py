"""``--run-fmriprep``: raw BOLD not in MNI space is preprocessed with fmriprep-docker.

This machine has no container engine, so a fake ``docker`` on ``PATH`` stands in for it:
it answers the wrapper's checks (``docker version``, ``docker images``, the memory probe),
records every command line, and for fMRIPrep's ``docker run`` copies the participant's
simulated fMRIPrep derivatives (:func:`bids_neurobolt.simulate.fmriprep.simulate_fmriprep`)
into the folder mounted at ``/out``, as fMRIPrep would write them. The real
``fmriprep-docker`` wrapper runs between bids-neurobolt and the fake engine.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import nibabel as nib
import pytest

from bids_neurobolt.bids.fmriprep import FMRIPREP_OUTPUT_SPACE
from bids_neurobolt.errors import ExitCode
from bids_neurobolt.simulate.fmriprep import simulate_fmriprep

from .conftest import atlas_args, run_cli

FAKE_DOCKER = """#!{python}
import json, os, shutil, sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(args) + "\\n")
if args[:1] == ["version"]:
    print("24.0.7" if "--format" in args else "Client and Server: Docker Engine 24.0.7")
    sys.exit(0)
if args[:1] == ["images"]:
    print("0123456789ab")
    sys.exit(0)
if args[:1] == ["run"] and "--entrypoint=free" in args:
    print("              total        used        free")
    print("Mem:          64000        1000       63000")
    sys.exit(0)
if args[:1] == ["run"]:
    print("fake fMRIPrep: starting", flush=True)
    status = int(os.environ.get("FAKE_DOCKER_EXIT", "0"))
    if status:
        print("fake fMRIPrep: crashed", file=sys.stderr)
        sys.exit(status)
    mounts = {{}}
    for flag, value in zip(args, args[1:]):
        if flag == "-v":
            host, container = value.split(":")[:2]
            mounts[container] = host
    label = args[args.index("--participant-label") + 1]
    source = Path(os.environ["FAKE_DOCKER_SOURCE"])
    out = Path(mounts["/out"])
    shutil.copy(source / "dataset_description.json", out / "dataset_description.json")
    shutil.copytree(source / f"sub-{{label}}", out / f"sub-{{label}}", dirs_exist_ok=True)
    print(f"fake fMRIPrep: sub-{{label}} done", flush=True)
    sys.exit(0)
print("fake docker: unexpected command", args, file=sys.stderr)
sys.exit(125)
"""


@pytest.fixture(scope="session")
def fmriprep_outputs(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What fMRIPrep would write for every subject of ``small_dataset``."""
    out = tmp_path_factory.mktemp("fake_fmriprep") / "fmriprep"
    simulate_fmriprep(small_dataset, out, seed=5)
    return out


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmriprep_outputs: Path):
    """Put a fake ``docker`` first on PATH; return the file its command lines go to."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable), encoding="utf-8")
    docker.chmod(0o755)
    calls = tmp_path / "docker_calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(calls))
    monkeypatch.setenv("FAKE_DOCKER_SOURCE", str(fmriprep_outputs))
    monkeypatch.delenv("FAKE_DOCKER_EXIT", raising=False)
    return calls


@pytest.fixture
def license_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "license.txt"
    path.write_text("fake FreeSurfer license\n", encoding="utf-8")
    monkeypatch.delenv("FS_LICENSE", raising=False)
    monkeypatch.delenv("FREESURFER_HOME", raising=False)
    return path


def _scanner_space(root: Path) -> list[Path]:
    """Mark every raw BOLD run as scanner space (sform/qform code 1)."""
    bolds = sorted(root.glob("sub-*/**/func/*_bold.nii.gz"))
    for path in bolds:
        image = nib.load(path)
        image.set_sform(image.affine, code=1)
        image.set_qform(image.affine, code=1)
        nib.save(image, path)
    return bolds


def _run(root: Path, tmp_path: Path, *extra: object):
    return run_cli(
        root,
        tmp_path / "out",
        "participant",
        "-w",
        tmp_path / "w",
        "--skip-bids-validation",
        "--steps",
        "sync,targets",
        *atlas_args(root),
        *extra,
    )


def _docker_runs(calls: Path) -> list[list[str]]:
    lines = calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []
    runs = [json.loads(line) for line in lines]
    return [c for c in runs if c[:1] == ["run"] and "--entrypoint=free" not in c]


def _mounts(argv: list[str]) -> dict[str, str]:
    """Container path -> ``host[:options]`` of each ``-v`` of a docker command."""
    out = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "-v":
            host, container, *options = value.split(":")
            out[container] = ":".join([host, *options])
    return out


def test_run_fmriprep_runs_fmriprep_docker_once_per_participant(
    dataset_copy: Path, tmp_path: Path, fake_docker: Path, license_file: Path
) -> None:
    _scanner_space(dataset_copy)
    result = _run(dataset_copy, tmp_path, "--run-fmriprep", "--fs-license-file", license_file)
    assert result.exit_code == 0, result.output

    runs = _docker_runs(fake_docker)
    assert len(runs) == 2, runs  # one per participant
    fmriprep_dir = (tmp_path / "out" / "sourcedata" / "fmriprep").resolve()
    for argv, label in zip(runs, ("01", "02"), strict=True):
        mounts = _mounts(argv)
        assert mounts["/data"] == f"{dataset_copy.resolve()}:ro"  # the dataset, read-only
        assert mounts["/out"] == str(fmriprep_dir)
        assert mounts["/opt/freesurfer/license.txt"] == f"{license_file.resolve()}:ro"
        assert "/scratch" in mounts
        assert argv[argv.index("--participant-label") + 1] == label
        spaces = argv[argv.index("--output-spaces") + 1]
        assert spaces == FMRIPREP_OUTPUT_SPACE and spaces.startswith("MNI152NLin2009cAsym")
        assert "-it" not in argv  # no terminal: --no-tty
        image = next(a for a in argv if a.startswith("nipreps/fmriprep:"))
        assert argv[argv.index(image) + 1 : argv.index(image) + 4] == [
            "/data",
            "/out",
            "participant",
        ]

    # the targets come from fMRIPrep's outputs
    sidecars = sorted((tmp_path / "out").glob("sub-*/func/*_timeseries.json"))
    assert len(sidecars) == 2
    for sidecar in sidecars:
        sources = " ".join(json.loads(sidecar.read_text(encoding="utf-8"))["Sources"])
        assert "desc-preproc_bold.nii.gz" in sources
        assert "desc-confounds_timeseries.tsv" in sources
    assert (fmriprep_dir / "sub-01" / "func").is_dir()

    logs = sorted((tmp_path / "out" / "logs").glob("fmriprep-docker-sub-*.log"))
    assert [p.name.split("-")[3] for p in logs] == ["01", "02"]
    text = logs[0].read_text(encoding="utf-8")
    assert "fmriprep-docker" in text and "fake fMRIPrep: sub-01 done" in text
    assert "fake fMRIPrep: sub-01 done" in result.output  # streamed to the console too

    # a rerun finds the derivatives and does not run fMRIPrep again
    fake_docker.unlink()
    for path in (tmp_path / "out").glob("sub-*/func/*_timeseries.*"):
        path.unlink()
    again = _run(dataset_copy, tmp_path, "--run-fmriprep", "--fs-license-file", license_file)
    assert again.exit_code == 0, again.output
    assert _docker_runs(fake_docker) == []
    assert len(list((tmp_path / "out").glob("sub-*/func/*_timeseries.tsv"))) == 2


def test_run_fmriprep_writes_into_fmriprep_dir_and_reads_fs_license_env(
    dataset_copy: Path,
    tmp_path: Path,
    fake_docker: Path,
    license_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _scanner_space(dataset_copy)
    monkeypatch.setenv("FS_LICENSE", str(license_file))
    target = tmp_path / "derivatives" / "fmriprep"
    result = _run(
        dataset_copy,
        tmp_path,
        "--run-fmriprep",
        "--fmriprep-dir",
        target,
        "--participant-label",
        "02",
    )
    assert result.exit_code == 0, result.output
    (argv,) = _docker_runs(fake_docker)
    assert _mounts(argv)["/out"] == str(target.resolve())
    assert _mounts(argv)["/opt/freesurfer/license.txt"] == f"{license_file.resolve()}:ro"
    assert argv[argv.index("--participant-label") + 1] == "02"
    assert (target / "sub-02").is_dir() and not (target / "sub-01").exists()


def test_failing_fmriprep_docker_gives_command_status_and_log(
    dataset_copy: Path,
    tmp_path: Path,
    fake_docker: Path,
    license_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _scanner_space(dataset_copy)
    monkeypatch.setenv("FAKE_DOCKER_EXIT", "1")
    result = _run(
        dataset_copy,
        tmp_path,
        "--run-fmriprep",
        "--fs-license-file",
        license_file,
        "--participant-label",
        "01",
    )
    assert result.exit_code == ExitCode.UNAVAILABLE == 69, result.output
    assert "Traceback" not in result.output
    message = result.output[result.output.find("error:") :]
    (log,) = (tmp_path / "out" / "logs").glob("fmriprep-docker-sub-01-*.log")
    for fragment in (
        "fMRIPrep failed for sub-01",
        "exited with status 1",
        "fmriprep-docker",
        "--participant-label 01",
        str(log),
    ):
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "fake fMRIPrep: crashed" in log.read_text(encoding="utf-8")
    assert not list((tmp_path / "out").glob("sub-*/func/*_timeseries.tsv"))


def test_run_fmriprep_without_license_names_the_fix(
    dataset_copy: Path, tmp_path: Path, fake_docker: Path, license_file: Path
) -> None:
    _scanner_space(dataset_copy)
    result = _run(dataset_copy, tmp_path, "--run-fmriprep", "--participant-label", "01")
    assert result.exit_code == ExitCode.NOINPUT, result.output
    message = result.output[result.output.find("error:") :]
    assert "FreeSurfer license" in message and "--fs-license-file" in message
    assert "FS_LICENSE" in message
    assert _docker_runs(fake_docker) == []


def test_run_fmriprep_with_targets_dir_is_a_usage_error(
    dataset_copy: Path, tmp_path: Path, fake_docker: Path, license_file: Path
) -> None:
    tables = tmp_path / "tables"
    tables.mkdir()
    result = _run(dataset_copy, tmp_path, "--run-fmriprep", "--targets-dir", tables)
    assert result.exit_code == ExitCode.USAGE, result.output
    message = result.output[result.output.find("error:") :]
    assert "--run-fmriprep and --targets-dir contradict" in message and "Drop" in message
    assert _docker_runs(fake_docker) == []
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_run_fmriprep_without_docker_is_a_clear_error(
    dataset_copy: Path,
    tmp_path: Path,
    license_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _scanner_space(dataset_copy)
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = _run(
        dataset_copy,
        tmp_path,
        "--run-fmriprep",
        "--fs-license-file",
        license_file,
        "--participant-label",
        "01",
    )
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output
    message = result.output[result.output.find("error:") :]
    assert "no 'docker' command" in message and "--fmriprep-dir" in message


def test_without_run_fmriprep_the_error_prints_the_command(
    dataset_copy: Path, tmp_path: Path, fake_docker: Path
) -> None:
    _scanner_space(dataset_copy)
    result = _run(dataset_copy, tmp_path, "--participant-label", "01")
    assert result.exit_code == ExitCode.NOINPUT, result.output
    message = result.output[result.output.find("error:") :]
    out = tmp_path / "out"
    for fragment in (
        "not in MNI space",
        f"fmriprep-docker {dataset_copy.resolve()}",
        "--participant-label 01",
        f"--output-spaces {FMRIPREP_OUTPUT_SPACE}",
        f"--fmriprep-dir {out.resolve() / 'sourcedata' / 'fmriprep'}",
        "--run-fmriprep",
    ):
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert _docker_runs(fake_docker) == []


def test_run_fmriprep_leaves_raw_mni_bold_alone(
    dataset_copy: Path, tmp_path: Path, fake_docker: Path
) -> None:
    result = _run(dataset_copy, tmp_path, "--run-fmriprep", "--participant-label", "01")
    assert result.exit_code == 0, result.output
    assert _docker_runs(fake_docker) == []
    assert not (tmp_path / "out" / "sourcedata" / "fmriprep").exists()


def _second_task(root: Path) -> None:
    """Give sub-01 a second EEG-fMRI run (task 'other'), a copy of its 'rest' run."""
    for path in sorted((root / "sub-01").glob("*/sub-01_task-rest_*")):
        target = path.with_name(path.name.replace("task-rest", "task-other"))
        if path.suffix in (".vhdr", ".vmrk", ".json"):
            text = path.read_text(encoding="utf-8").replace("task-rest", "task-other")
            target.write_text(text.replace('"TaskName": "rest"', '"TaskName": "other"'))
        else:
            target.write_bytes(path.read_bytes())


def test_failed_fmriprep_is_not_rerun_for_the_next_run_of_the_participant(
    dataset_copy: Path,
    tmp_path: Path,
    fake_docker: Path,
    license_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _second_task(dataset_copy)
    _scanner_space(dataset_copy)
    monkeypatch.setenv("FAKE_DOCKER_EXIT", "3")
    result = _run(
        dataset_copy,
        tmp_path,
        "--run-fmriprep",
        "--fs-license-file",
        license_file,
        "--participant-label",
        "01",
        "--on-error",
        "continue",
    )
    assert result.exit_code == ExitCode.FAILURE, result.output
    assert len(_docker_runs(fake_docker)) == 1  # two runs, one participant: one fMRIPrep
    assert result.output.count("exited with status 3") >= 2, result.output
