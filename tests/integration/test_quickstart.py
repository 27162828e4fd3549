"""The quick-start commands of docs/installation.md run as written on a fresh install."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

INSTALLATION = Path(__file__).resolve().parents[2] / "docs" / "installation.md"
NEEDS_MORE = ("docker", "singularity", "apptainer", "--gpus", "--device cuda")


def quickstart_block() -> str:
    """The ``bash`` block that follows "Try it" in docs/installation.md."""
    text = INSTALLATION.read_text(encoding="utf-8")
    block = re.search(r"Try it.*?```bash\n(.*?)```", text, flags=re.DOTALL)
    assert block is not None, f"{INSTALLATION}: no bash block after 'Try it'"
    return block.group(1)


def test_quickstart_block_needs_neither_docker_nor_a_gpu() -> None:
    assert not any(word in quickstart_block() for word in NEEDS_MORE)


def test_installation_quickstart_runs_as_written(tmp_path: Path) -> None:
    if not (Path(sys.executable).parent / "bids-neurobolt").exists():
        pytest.skip("the package's commands are not installed next to this interpreter")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", quickstart_block()],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "demo" / "out"
    assert (out / "sub-01.html").is_file() and (out / "sub-02.html").is_file()
    assert list(out.glob("sub-01/**/*_desc-neurobolt_metrics.tsv"))
    assert "0 failed" in done.stderr
