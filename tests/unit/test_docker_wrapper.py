"""``bids-neurobolt-docker``: the docker command it builds and runs, with a fake ``docker``.

A fake ``docker`` executable on PATH records its arguments and answers ``docker version``;
a fake ``nvidia-smi`` plays a GPU host (or one without GPU). No Docker engine is needed.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import stat
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bids_neurobolt import __version__, docker
from bids_neurobolt.cli import cli
from bids_neurobolt.derivatives import writer
from bids_neurobolt.docker import DEFAULT_IMAGE, app_options, build_command, main

FAKE_DOCKER = """#!{python}
import json, os, sys
args = sys.argv[1:]
if args[:1] == ["version"]:
    if os.environ.get("FAKE_DOCKER_DOWN"):
        sys.stderr.write("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\\n")
        sys.exit(1)
    print("27.5.1")
    sys.exit(0)
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
sys.exit(int(os.environ.get("FAKE_DOCKER_EXIT", "0")))
"""

FAKE_NVIDIA_SMI = """#!/bin/sh
if [ -n "$FAKE_GPU" ]; then
    echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000-0000-000000000000)"
    exit 0
fi
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2
exit 9
"""


def _executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Fake docker and nvidia-smi first on PATH, no GPU device file, cwd in tmp_path."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    _executable(bin_dir / "docker", FAKE_DOCKER.format(python=sys.executable))
    _executable(bin_dir / "nvidia-smi", FAKE_NVIDIA_SMI)
    log = tmp_path / "docker-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    for name in ("FAKE_DOCKER_EXIT", "FAKE_DOCKER_DOWN", "FAKE_GPU"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(docker, "NVIDIA_DEVICE_FILES", ())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bids").mkdir()
    return log


def docker_calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def run_wrapper(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def volumes(argv: list[str]) -> dict[str, str]:
    """Map container path -> 'host[:ro]' for every -v of a docker argv."""
    out = {}
    for flag, value in itertools.pairwise(argv):
        if flag == "-v":
            host, container, *mode = value.split(":")
            out[container] = host + (":" + mode[0] if mode else "")
    return out


def app_part(argv: list[str]) -> list[str]:
    """The arguments after the image name: what bids-neurobolt receives."""
    return argv[argv.index(DEFAULT_IMAGE, argv.index("run")) + 1 :]


def test_participant_run_mounts_inputs_read_only_and_runs_as_the_user(fake, tmp_path):
    result = run_wrapper("bids", "out", "participant", "--participant-label", "01", "02")
    assert result.exit_code == 0, result.output
    (call,) = docker_calls(fake)
    assert call[:2] == ["run", "--rm"]
    mounts = volumes(call)
    assert mounts["/data"] == f"{tmp_path / 'bids'}:ro"
    assert mounts["/out"] == str(tmp_path / "out")  # writable
    assert (tmp_path / "out").is_dir()  # created on the host first, so it is the user's
    assert call[call.index("-u") + 1] == f"{os.getuid()}:{os.getgid()}"
    assert call[call.index("--network") + 1] == "none"
    assert f"BIDS_NEUROBOLT_CONTAINER=docker:{DEFAULT_IMAGE}" in call
    assert "--gpus" not in call  # no GPU asked, none on this host
    assert app_part(call) == [
        "/data",
        "/out",
        "participant",
        "--participant-label",
        "01",
        "--participant-label",
        "02",
    ]
    # The printed command is the one that ran.
    printed = next(line for line in result.output.splitlines() if line.startswith("RUNNING: "))
    assert shlex.split(printed.removeprefix("RUNNING: ")) == ["docker", *call]


def test_exit_status_of_the_container_is_passed_through(fake, monkeypatch):
    monkeypatch.setenv("FAKE_DOCKER_EXIT", "65")
    result = run_wrapper("bids", "out", "participant")
    assert result.exit_code == 65
    assert len(docker_calls(fake)) == 1


def test_dry_run_prints_without_running_or_creating(fake, tmp_path):
    result = run_wrapper("bids", "out", "participant", "--dry-run")
    assert result.exit_code == 0, result.output
    assert docker_calls(fake) == []
    assert not (tmp_path / "out").exists()
    argv = shlex.split(result.output.strip())
    assert argv[:3] == ["docker", "run", "--rm"]
    assert app_part(argv) == ["/data", "/out", "participant"]


@pytest.mark.parametrize(
    ("device", "gpus", "host_gpu", "expected"),
    [
        ("cuda", "auto", False, "all"),  # asked for: passed even when not detected
        ("auto", "auto", True, "all"),  # detected
        ("auto", "auto", False, None),
        ("cpu", "auto", True, None),  # the user wants the CPU
        ("cuda", "none", True, None),
        ("auto", "device=1", False, "device=1"),  # docker's own syntax passes through
    ],
)
def test_gpu_passed_when_asked_or_detected(fake, monkeypatch, device, gpus, host_gpu, expected):
    if host_gpu:
        monkeypatch.setenv("FAKE_GPU", "1")
    result = run_wrapper("bids", "out", "participant", "--device", device, "--gpus", gpus)
    assert result.exit_code == 0, result.output
    (call,) = docker_calls(fake)
    if expected is None:
        assert "--gpus" not in call
    else:
        assert call[call.index("--gpus") + 1] == expected
    assert app_part(call)[-2:] == ["--device", device]


def test_gpu_detected_from_the_driver_device_file(fake, monkeypatch, tmp_path):
    device_file = tmp_path / "nvidiactl"
    device_file.touch()
    monkeypatch.setattr(docker, "NVIDIA_DEVICE_FILES", (device_file,))
    assert docker.host_has_gpu()
    device_file.unlink()
    assert not docker.host_has_gpu()


def test_input_paths_are_mounted_read_only_outputs_writable(fake, tmp_path):
    (tmp_path / "derivs" / "fmriprep").mkdir(parents=True)
    (tmp_path / "filters").mkdir()
    (tmp_path / "filters" / "f.json").write_text("{}")
    atlas_dir = tmp_path / "atlas"
    atlas_dir.mkdir()
    (atlas_dir / "tpl-X_atlas-A_dseg.nii.gz").write_bytes(b"")
    (atlas_dir / "tpl-X_atlas-A_dseg.tsv").write_text("index\tname\n")
    (tmp_path / "out" / "models").mkdir(parents=True)
    (tmp_path / "out" / "models" / "m.safetensors").write_bytes(b"")
    result = run_wrapper(
        "bids",
        "out",
        "participant",
        "--fmriprep-dir",
        "derivs/fmriprep",
        "--bids-filter-file=filters/f.json",
        "--atlas",
        str(atlas_dir / "tpl-X_atlas-A_dseg.nii.gz"),
        "--rois",
        "paper",
        "--model",
        str(tmp_path / "out" / "models" / "m.safetensors"),
        "-w",
        "scratch",
        "--config-file",
        "filters/f.json",
    )
    assert result.exit_code == 0, result.output
    (call,) = docker_calls(fake)
    mounts = volumes(call)
    assert mounts["/inputs/fmriprep_dir"] == f"{tmp_path / 'derivs' / 'fmriprep'}:ro"
    # A file's folder is mounted, so sidecars beside it (the atlas TSV) stay visible.
    assert mounts["/inputs/bids_filter_file"] == f"{tmp_path / 'filters'}:ro"
    assert mounts["/inputs/atlas"] == f"{atlas_dir}:ro"
    assert mounts["/work"] == str(tmp_path / "scratch")
    assert (tmp_path / "scratch").is_dir()
    # Nothing else is mounted: the model lies in the output folder, the config file in
    # an already mounted folder, and 'paper' is no path.
    assert set(mounts) == {
        "/data",
        "/out",
        "/work",
        "/inputs/fmriprep_dir",
        "/inputs/bids_filter_file",
        "/inputs/atlas",
    }
    args = app_part(call)
    pairs = dict(zip(args[3::2], args[4::2], strict=True))
    assert pairs == {
        "--fmriprep-dir": "/inputs/fmriprep_dir",
        "--bids-filter-file": "/inputs/bids_filter_file/f.json",
        "--atlas": "/inputs/atlas/tpl-X_atlas-A_dseg.nii.gz",
        "--rois": "paper",
        "--model": "/out/models/m.safetensors",
        "-w": "/work",
        "--config-file": "/inputs/bids_filter_file/f.json",
    }


def test_translated_command_line_is_valid_for_the_app(fake, tmp_path):
    (tmp_path / "labels.txt").write_text("01\n")
    result = run_wrapper(
        "bids",
        "out",
        "participant",
        "--participant-label",
        "sub-01",
        "02",
        "-vv",
        "--sloppy",
        "--device",
        "cpu",
        "-wwork",
        "--session-label",
        "labels.txt",
        "--steps",
        "sync",
    )
    assert result.exit_code == 0, result.output
    (call,) = docker_calls(fake)
    ctx = cli.make_context("bids-neurobolt", app_part(call))
    assert ctx.params["bids_dir"] == Path("/data")
    assert ctx.params["output_dir"] == Path("/out")
    assert ctx.params["participant_label"] == ("sub-01", "02")
    assert ctx.params["session_label"] == ("/inputs/session_label/labels.txt",)
    assert ctx.params["verbose"] == 2
    assert ctx.params["sloppy"] is True
    assert ctx.params["work_dir"] == Path("/work")
    assert ctx.params["steps"] == "sync"


def test_version_and_options_without_positionals_pass_through(fake):
    result = run_wrapper("--version")
    assert result.exit_code == 0, result.output
    (call,) = docker_calls(fake)
    assert app_part(call) == ["--version"]
    assert volumes(call) == {}


@pytest.mark.parametrize(
    "args",
    [
        ("missing", "out", "participant"),
        ("bids", "out", "participant", "--fmriprep-dir", "missing"),
        ("bids", "out", "participant", "--pretrained", "missing.pth"),
    ],
)
def test_missing_input_is_refused_before_docker_runs(fake, tmp_path, args):
    result = run_wrapper(*args)
    assert result.exit_code == 66, result.output
    assert "does not exist" in result.output
    assert docker_calls(fake) == []
    assert not (tmp_path / "out").exists()


def test_pretrained_name_passes_through_and_a_file_is_mounted(fake, tmp_path):
    result = run_wrapper("bids", "out", "participant", "--pretrained", "labram-base")
    assert result.exit_code == 0, result.output
    (call,) = docker_calls(fake)
    assert app_part(call)[-2:] == ["--pretrained", "labram-base"]  # resolved in the container
    assert set(volumes(call)) == {"/data", "/out"}
    (tmp_path / "labram-base.pth").write_bytes(b"weights")
    result = run_wrapper("bids", "out", "participant", "--pretrained", "labram-base.pth")
    assert result.exit_code == 0, result.output
    call = docker_calls(fake)[-1]
    assert app_part(call)[-2:] == ["--pretrained", "/inputs/pretrained/labram-base.pth"]


def test_path_with_colon_is_refused(fake, tmp_path):
    (tmp_path / "a:b").mkdir()
    result = run_wrapper("a:b", "out", "participant")
    assert result.exit_code == 2
    assert "':'" in result.output
    assert docker_calls(fake) == []


def test_docker_daemon_down_exits_69_with_advice(fake, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_DOCKER_DOWN", "1")
    result = run_wrapper("bids", "out", "participant")
    assert result.exit_code == 69
    assert "Cannot connect to the Docker daemon" in result.output
    assert "Start the Docker daemon" in result.output
    assert docker_calls(fake) == []
    assert not (tmp_path / "out").exists()


def test_docker_missing_exits_69(fake, monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = run_wrapper("bids", "out", "participant")
    assert result.exit_code == 69
    assert "'docker' was not found on PATH" in result.output


def test_wrapper_options(fake):
    result = run_wrapper(
        "bids",
        "out",
        "group",
        "-i",
        "registry.example.org/nb:dev",
        "-u",
        "1234:5678",
        "--network",
        "bridge",
        "-e",
        "OMP_NUM_THREADS=4",
        "--read-only",
    )
    assert result.exit_code == 0, result.output
    (call,) = docker_calls(fake)
    assert call[call.index("-u") + 1] == "1234:5678"
    assert call[call.index("--network") + 1] == "bridge"
    assert "OMP_NUM_THREADS=4" in call
    assert "BIDS_NEUROBOLT_CONTAINER=docker:registry.example.org/nb:dev" in call
    assert call[call.index("--read-only") + 1 : call.index("--read-only") + 3] == [
        "--tmpfs",
        "/tmp:rw,exec,mode=1777",
    ]
    image_at = call.index("registry.example.org/nb:dev")
    assert call[image_at + 1 :] == ["/data", "/out", "group"]


def test_wrapper_options_do_not_shadow_app_options():
    ours = {opt for p in main.params if isinstance(p, click.Option) for opt in p.opts}
    ours -= {"-h", "--help"}
    shadowed = ours & set(app_options())
    assert not shadowed, f"wrapper options hide bids-neurobolt options: {sorted(shadowed)}"


def test_every_path_option_of_the_app_is_translated():
    """A new path option of the CLI is picked up from click, with no change to the wrapper."""
    table = app_options()
    path_params = {
        p.name for p in cli.params if isinstance(p, click.Option) and isinstance(p.type, click.Path)
    }
    assert path_params, "the CLI should have path options"
    assert {o.name for o in table.values() if o.is_path} == path_params
    assert not table["--sloppy"].takes_value
    assert not table["-v"].takes_value


def test_build_command_is_usable_as_a_library(tmp_path):
    (tmp_path / "bids").mkdir()
    command = build_command(
        ["bids", "out", "participant", "--device", "cuda"],
        cwd=tmp_path,
        has_gpu=False,
        user=None,
    )
    assert command.gpus == "all"
    assert command.create == [tmp_path / "out"]
    assert "-u" not in command.argv
    assert str(command).startswith("docker run --rm --gpus all --network none")


def test_sentinel_is_what_the_writer_records(monkeypatch, tmp_path):
    assert docker.CONTAINER_ENV == writer.CONTAINER_ENV
    monkeypatch.setenv(docker.CONTAINER_ENV, f"docker:{DEFAULT_IMAGE}")
    description = writer.dataset_description(tmp_path, {})
    assert description["GeneratedBy"][0]["Container"] == {"Type": "docker", "Tag": DEFAULT_IMAGE}
    assert DEFAULT_IMAGE.endswith(f":{__version__}")


def test_help_shows_the_app_options_too():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "--dry-run" in result.output
    assert "--participant-label" in result.output  # from bids-neurobolt's own help
