"""Install parity: install the package as the Dockerfile does, then run it as the image would.

The Dockerfile's own ``RUN`` lines (build the wheel; ``docker/install.sh``) run here in a
fresh virtual environment, with the image's paths mapped to temporary folders. The
installed command then prints its version and processes one participant of a small
simulated dataset with the image's environment (every cache variable), a read-only
HOME and a read-only input dataset: what ``docker run --read-only`` and Singularity meet.
No container engine is involved; see docs/installation.md for what this does not cover.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bids_neurobolt import __version__, workflow
from bids_neurobolt.config import STEPS
from bids_neurobolt.docker import CONTAINER_ENV, DEFAULT_IMAGE
from tests.unit.test_containers import dockerfile_instructions, parse_env

from .conftest import tree_digest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _dockerfile() -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str]]:
    """Instructions, ARG defaults and runtime ENV of the Dockerfile."""
    instructions = dockerfile_instructions((ROOT / "Dockerfile").read_text(encoding="utf-8"))
    args = {}
    env: dict[str, str] = {}
    for keyword, value in instructions:
        if keyword == "ARG" and "=" in value:
            name, default = value.split("=", 1)
            args[name] = default.strip('"')
        elif keyword == "ENV":
            env.update(parse_env(value))
    return instructions, args, env


def _in_host_paths(command: str, dist: Path) -> str:
    """Map the image's build paths in a RUN line to this machine's."""
    command = command.replace("/opt/bids-neurobolt/docker/", f"{ROOT}/docker/")
    command = command.replace("/tmp/dist", str(dist))
    return re.sub(r"(?<![\w/])/dist\b", str(dist), command)


def _read_only_runner(paths: list[Path]) -> list[str] | None:
    """A command prefix that runs its command with ``paths`` mounted read-only.

    Returns None when permission bits suffice (not root). Root ignores permission bits,
    so it needs a private mount namespace (``unshare --mount``) with read-only binds.
    """
    if os.geteuid() != 0:
        return None
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "--mount", "true"], check=False).returncode:
        pytest.skip("running as root without unshare: cannot make folders read-only")
    binds = " && ".join(
        f"mount --bind '{p}' '{p}' && mount -o remount,bind,ro '{p}'" for p in paths
    )
    return [unshare, "--mount", "sh", "-c", f'{binds} && exec "$@"', "sh"]


def test_install_like_the_image_then_run_offline_read_only(dataset_copy, tmp_path, make_readonly):
    instructions, args, image_env = _dockerfile()
    runs = [value for keyword, value in instructions if keyword == "RUN"]
    build_wheel = next(r for r in runs if "pip wheel" in r)
    install = next(r for r in runs if "docker/install.sh" in r)

    venv, dist = tmp_path / "venv", tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    base_env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    base_env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        VIRTUAL_ENV=str(venv),
        TORCH_VERSION=args["TORCH_VERSION"],
    )
    started = time.perf_counter()
    subprocess.run(
        ["sh", "-c", _in_host_paths(build_wheel, dist)], cwd=ROOT, env=base_env, check=True
    )
    subprocess.run(
        ["sh", "-c", _in_host_paths(install, dist)], cwd=tmp_path, env=base_env, check=True
    )
    install_s = time.perf_counter() - started
    python = str(venv / "bin" / "python")
    check = subprocess.run(
        [python, "-m", "pip", "check"], env=base_env, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, f"docker/requirements.txt is incomplete:\n{check.stdout}"
    where = subprocess.run(
        [python, "-c", "import bids_neurobolt; print(bids_neurobolt.__file__)"],
        cwd=tmp_path,
        env=base_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(where.strip()).is_relative_to(venv), "the test must run the installed copy"

    # The container's environment, its /tmp and /opt/bids-neurobolt mapped to folders here.
    fake_tmp, fake_opt, home = tmp_path / "tmp", tmp_path / "opt", tmp_path / "home"
    for folder in (fake_tmp, fake_opt, home):
        folder.mkdir()
    run_env = dict(base_env)
    for name, value in image_env.items():
        value = value.replace("${VERSION}", args["VERSION"])
        for image_path, here in (("/tmp/", fake_tmp), ("/opt/bids-neurobolt/", fake_opt)):
            if value.startswith(image_path):
                value = f"{here}/{value.removeprefix(image_path)}"
        run_env[name] = value
    run_env["HOME"] = str(home)
    assert run_env[CONTAINER_ENV] == f"docker:{DEFAULT_IMAGE}"

    version = subprocess.run(
        ["bids-neurobolt", "--version"], env=run_env, capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"bids-neurobolt {__version__}"

    # The simulated dataset ships its atlas: the targets stage needs nothing from the network.
    atlas = next((dataset_copy / "sourcedata" / "simulation").glob("*_dseg.nii.gz"))
    stages = getattr(workflow, "AVAILABLE_STEPS", STEPS)
    atlas_args = ["--atlas", str(atlas)] if "targets" in stages else []
    before = tree_digest(dataset_copy)
    prefix = _read_only_runner([home, dataset_copy])
    if prefix is None:
        make_readonly(home)
        make_readonly(dataset_copy)
        prefix = []
    probe = subprocess.run(
        [*prefix, "touch", str(home / "probe")], capture_output=True, check=False
    )
    assert probe.returncode != 0, "HOME should be read-only for this test"
    out = tmp_path / "out"
    started = time.perf_counter()
    result = subprocess.run(
        [
            *prefix,
            "bids-neurobolt",
            str(dataset_copy),
            str(out),
            "participant",
            "--participant-label",
            "01",
            *atlas_args,
            "--sloppy",
            "--device",
            "cpu",
        ],
        cwd=fake_tmp,  # the image's WORKDIR: the default work folder lands in /tmp/work
        env=run_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    run_s = time.perf_counter() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert tree_digest(dataset_copy) == before, "the input dataset was modified"
    assert not any(home.iterdir())
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Container"] == {"Type": "docker", "Tag": DEFAULT_IMAGE}
    assert any((out / "sub-01").rglob("sub-01_*"))
    assert not (out / "sub-02").exists()
    print(f"install parity: install {install_s:.0f} s, participant run {run_s:.1f} s")
