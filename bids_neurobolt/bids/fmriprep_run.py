"""Run fMRIPrep for a participant through ``fmriprep-docker`` (``--run-fmriprep``).

When a run's raw BOLD is not in MNI space and no fMRIPrep derivatives hold it, the
``targets`` stage can preprocess its participant with fMRIPrep instead of stopping with
the command to run. This module builds that command (the one
:func:`~bids_neurobolt.bids.fmriprep.fmriprep_command` prints, plus the options a
non-interactive run needs) and runs it:

* through the ``fmriprep-docker`` wrapper of the installed ``fmriprep-docker`` package
  (a dependency of bids-neurobolt), which mounts the dataset read-only at ``/data``, the
  output folder at ``/out``, the work folder at ``/scratch`` and the FreeSurfer license,
  and runs the ``nipreps/fmriprep`` image of its version with Docker;
* with ``--no-tty`` (no terminal is attached), as the calling user (``-u UID:GID``, so
  the outputs are not owned by root), and with fMRIPrep's work folder under the
  bids-neurobolt work folder, so an interrupted fMRIPrep resumes where it stopped;
* its output streamed, line by line, to the log and to a log file of its own under
  ``<OUTPUT_DIR>/logs/``.

A missing Docker or a failing fMRIPrep is an :class:`~bids_neurobolt.errors.ExternalToolError`
(exit code 69) that gives the command, its exit code and its log file; a missing
FreeSurfer license is a :class:`~bids_neurobolt.errors.MissingInputError` (66).
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from bids_neurobolt.bids.fmriprep import default_fmriprep_dir, fmriprep_command

__all__ = [
    "default_fmriprep_dir",
    "find_fs_license",
    "fmriprep_docker_executable",
    "run_fmriprep",
    "run_fmriprep_command",
]
from bids_neurobolt.errors import ExternalToolError, MissingInputError

logger = logging.getLogger(__name__)

#: Where to get a FreeSurfer license (free, fMRIPrep requires one).
LICENSE_URL = "https://surfer.nmr.mgh.harvard.edu/registration.html"


def find_fs_license(given: Path | None) -> Path:
    """Return the FreeSurfer license file fMRIPrep should use.

    Parameters
    ----------
    given : Path | None
        ``--fs-license-file`` (or ``$FS_LICENSE``, which the command line reads).

    Returns
    -------
    Path
        ``given``, else ``$FS_LICENSE``, else ``$FREESURFER_HOME/license.txt``; absolute.

    Raises
    ------
    MissingInputError
        If none of them is an existing file.
    """
    fix = (
        f"fMRIPrep needs a FreeSurfer license (free, from {LICENSE_URL}): pass "
        "--fs-license-file /path/to/license.txt or set FS_LICENSE."
    )
    candidates: list[Path] = []
    if given is not None:
        candidates.append(Path(given))
    elif os.environ.get("FS_LICENSE"):
        candidates.append(Path(os.environ["FS_LICENSE"]))
    elif os.environ.get("FREESURFER_HOME"):
        candidates.append(Path(os.environ["FREESURFER_HOME"]) / "license.txt")
    for candidate in candidates:
        path = candidate.expanduser()
        if path.is_file():
            return path.resolve()
        raise MissingInputError("the FreeSurfer license file does not exist.", path=path, fix=fix)
    raise MissingInputError(
        "--run-fmriprep needs a FreeSurfer license file, and none was given "
        "(--fs-license-file, $FS_LICENSE, $FREESURFER_HOME/license.txt).",
        fix=fix,
    )


def fmriprep_docker_executable() -> list[str]:
    """Return how to start the ``fmriprep-docker`` wrapper.

    The console script beside this Python (the same environment) is preferred, then one
    on ``PATH``, then ``python -m fmriprep_docker``.
    """
    beside = Path(sys.executable).with_name("fmriprep-docker")
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("fmriprep-docker")
    if found:
        return [found]
    return [sys.executable, "-m", "fmriprep_docker"]


def run_fmriprep_command(
    bids_dir: Path,
    fmriprep_dir: Path,
    participant: str,
    *,
    fs_license: Path,
    work_dir: Path,
) -> list[str]:
    """Return the full, non-interactive ``fmriprep-docker`` command for one participant.

    That is :func:`~bids_neurobolt.bids.fmriprep.fmriprep_command` with absolute paths,
    plus ``-w WORK --no-tty`` and, on POSIX, ``-u UID:GID``.
    """
    command = fmriprep_command(
        bids_dir.resolve(), fmriprep_dir.resolve(), participant, fs_license=str(fs_license)
    )
    command = [*fmriprep_docker_executable(), *command[1:]]
    command += ["-w", str(work_dir.resolve()), "--no-tty"]
    if hasattr(os, "getuid"):
        command += ["-u", f"{os.getuid()}:{os.getgid()}"]
    return command


def run_fmriprep(
    bids_dir: Path,
    fmriprep_dir: Path,
    participant: str,
    *,
    fs_license: Path,
    work_dir: Path,
    log_path: Path,
) -> None:
    """Run fMRIPrep for one participant with ``fmriprep-docker``, logging its output.

    Parameters
    ----------
    bids_dir : Path
        The raw dataset (mounted read-only).
    fmriprep_dir : Path
        fMRIPrep's output folder (created if needed).
    participant : str
        Subject label, without ``sub-``.
    fs_license : Path
        FreeSurfer license file (:func:`find_fs_license`).
    work_dir : Path
        fMRIPrep's work folder (kept, so a rerun resumes).
    log_path : Path
        File that receives the wrapper's and fMRIPrep's output.

    Raises
    ------
    ExternalToolError
        If Docker is not installed, or ``fmriprep-docker`` exits with a non-zero status
        (the message gives the command, the status and the log file).
    """
    command = run_fmriprep_command(
        bids_dir, fmriprep_dir, participant, fs_license=fs_license, work_dir=work_dir
    )
    printed = shlex.join(command)
    if shutil.which("docker") is None:
        raise ExternalToolError(
            "--run-fmriprep runs fMRIPrep with Docker, and no 'docker' command is on PATH "
            f"(inside a container, Docker is not available). The command was: {printed}",
            fix="Install Docker and start it (check with 'docker info'), or run fMRIPrep "
            "yourself and pass its output folder with --fmriprep-dir.",
        )
    for folder in (fmriprep_dir, work_dir, log_path.parent):
        folder.mkdir(parents=True, exist_ok=True)
    logger.info("sub-%s: running fMRIPrep (log: %s): %s", participant, log_path, printed)
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"$ {printed}\n")
        log.flush()
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
            )
        except OSError as exc:
            raise ExternalToolError(
                f"cannot start fmriprep-docker ({exc.strerror or exc}). The command was: {printed}",
                fix="Reinstall bids-neurobolt (fmriprep-docker is one of its dependencies).",
            ) from None
        with process:
            assert process.stdin is not None and process.stdout is not None
            # The wrapper asks "Continue anyway? [y/N]" when Docker has < 8 GB of memory;
            # --run-fmriprep was asked for, so answer yes (the warning stays in the log).
            try:
                process.stdin.write("y\n")
                process.stdin.close()
            except OSError:
                pass
            try:
                for line in process.stdout:
                    log.write(line)
                    log.flush()
                    logger.info("fmriprep: %s", line.rstrip())
            except BaseException:
                process.kill()
                raise
            status = process.wait()
        log.write(f"[fmriprep-docker exited with status {status}]\n")
    if status != 0:
        raise ExternalToolError(
            f"fMRIPrep failed for sub-{participant}: fmriprep-docker exited with status "
            f"{status}. The command was: {printed}",
            path=log_path,
            fix=f"Read its output in {log_path}, fix the cause and rerun (fMRIPrep resumes from "
            f"its work folder {work_dir}), or run fMRIPrep yourself and pass --fmriprep-dir.",
        )
    logger.info("sub-%s: fMRIPrep finished; outputs in %s", participant, fmriprep_dir)
