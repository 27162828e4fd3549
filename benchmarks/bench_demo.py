"""Wall time of the README's main command on a fresh clone, run twice in a row.

The README promises a first run of at most 8 minutes on 2 quiet cores, a second run that is
safe (it re-simulates the same dataset and skips every stage whose outputs are up to date),
and no silent stretch over 30 s. This script checks all three as a new user would meet them:

1. ``git clone`` of the repository's committed HEAD into a temporary folder;
2. a virtual environment that sees this interpreter's packages (torch, mne, ... are not
   downloaded again) with the clone installed into it (``pip install --no-deps -e``), so that
   the commands run the clone's code;
3. the command of README.md's "Run the main job" section, read from the clone's README and run
   as written with ``bash`` in the clone, twice; every output line is time-stamped as it
   arrives.

Printed: per run, the wall time against the budget (ratio), and the longest time without a line
of output against the 30 s limit. Run it on an otherwise idle machine.

Usage::

    python benchmarks/bench_demo.py [--runs 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_SECONDS = 480.0
SILENCE_SECONDS = 30.0
SECTION = "## Run the main job"


def readme_command(readme: Path) -> str:
    """Return the first ``bash`` block of README.md's "Run the main job" section."""
    text = readme.read_text(encoding="utf-8")
    start = text.index(SECTION)
    block = re.search(r"```bash\n(.*?)```", text[start:], flags=re.DOTALL)
    if block is None:
        raise SystemExit(f"{readme}: no bash block under {SECTION!r}.")
    return block.group(1).strip()


def install_clone(source: Path, folder: Path) -> tuple[Path, Path]:
    """Clone ``source`` into ``folder`` and install it into a venv; return (clone, venv bin)."""
    clone = folder / "clone"
    subprocess.run(["git", "clone", "--quiet", str(source), str(clone)], check=True)
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    bin_dir = venv / "bin"
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "-e", str(clone)],
        check=True,
    )  # fmt: skip
    return clone, bin_dir


def timed_run(command: str, cwd: Path, bin_dir: Path) -> tuple[float, float, int]:
    """Run ``command`` with bash; return (wall seconds, longest silence, exit status)."""
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    start = last = time.monotonic()
    longest = 0.0
    with subprocess.Popen(
        ["bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, bufsize=1,
    ) as process:  # fmt: skip
        assert process.stdout is not None
        for line in process.stdout:
            now = time.monotonic()
            longest = max(longest, now - last)
            last = now
            sys.stdout.write(f"  | {line}")
    end = time.monotonic()
    return end - start, max(longest, end - last), process.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    opts = parser.parse_args()
    source = Path(__file__).resolve().parents[1]
    folder = opts.keep or Path(tempfile.mkdtemp(prefix="bench-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        clone, bin_dir = install_clone(source, folder)
        command = readme_command(clone / "README.md")
        head = subprocess.run(
            ["git", "-C", str(clone), "log", "-1", "--format=%h"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        print(f"README main command at {head}, {os.cpu_count()} CPU(s):\n  {command}\n")
        results = []
        for run in range(1, opts.runs + 1):
            print(f"run {run}:")
            results.append(timed_run(command, clone, bin_dir))
        print(f"\n{'run':>3}  {'wall (s)':>9}  {'/ budget':>8}  {'silence (s)':>11}  "
              f"{'/ limit':>7}  exit")  # fmt: skip
        for run, (wall, silence, status) in enumerate(results, start=1):
            print(f"{run:>3}  {wall:9.1f}  {wall / BUDGET_SECONDS:8.2f}  {silence:11.1f}  "
                  f"{silence / SILENCE_SECONDS:7.2f}  {status}")  # fmt: skip
        print(f"budget {BUDGET_SECONDS:.0f} s a run; silence allowed {SILENCE_SECONDS:.0f} s")
        if any(status != 0 for *_, status in results):
            raise SystemExit(1)
    finally:
        if opts.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
