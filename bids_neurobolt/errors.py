"""Errors, warnings and exit codes of bids-neurobolt.

Every error a user can meet is a :class:`NeuroboltError`. Each subclass also
inherits the builtin exception that describes it best (``ValueError``,
``FileNotFoundError``...), so library callers can catch either, and carries the
exit code the command line returns for it. Exit codes follow the draft BIDS Apps
execution specification and ``sysexits.h``:

====  ==========================  ==================================================
code  name                        meaning
====  ==========================  ==================================================
0     ``OK``                      success
1     ``FAILURE``                 some runs failed (``--on-error continue``), or an
                                  unexpected internal error
2     ``USAGE``                   bad command line or configuration
16    ``VALIDATION``              the input dataset failed BIDS validation
17    ``UNKNOWN_LEVEL``           the analysis level is not ``participant``/``group``
18    ``NO_MATCH``                the selection (labels, filters) matched no data
65    ``DATAERR``                 an input file is readable but its content is wrong
                                  (markers vs volumes, corrupt header, bad values)
66    ``NOINPUT``                 a required input file or folder is missing
69    ``UNAVAILABLE``             an external program the run needs (Docker,
                                  ``fmriprep-docker`` with ``--run-fmriprep``) is
                                  missing or failed
70    ``SOFTWARE``                an internal error (a bug: please report it)
73    ``CANTCREAT``               an output cannot be created (permissions, location)
74    ``IOERR``                   reading or writing failed (disk full, I/O error)
====  ==========================  ==================================================
"""

from __future__ import annotations

import enum
from os import PathLike


class ExitCode(enum.IntEnum):
    """Exit codes of the ``bids-neurobolt`` command line."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    VALIDATION = 16
    UNKNOWN_LEVEL = 17
    NO_MATCH = 18
    DATAERR = 65
    NOINPUT = 66
    UNAVAILABLE = 69
    SOFTWARE = 70
    CANTCREAT = 73
    IOERR = 74
    HANGUP = 129  # 128 + SIGHUP
    INTERRUPTED = 130  # 128 + SIGINT
    TERMINATED = 143  # 128 + SIGTERM


class NeuroboltError(Exception):
    """Base class of the errors bids-neurobolt reports to users.

    Parameters
    ----------
    problem : str
        What is wrong, in one or two sentences.
    path : path-like | None
        The file or folder the problem is about, if any.
    fix : str | None
        What the user should do about it.
    """

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(
        self, problem: str, *, path: str | PathLike[str] | None = None, fix: str | None = None
    ) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """The one-paragraph message shown to users: file, problem, fix."""
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}:")
        parts.append(self.problem.rstrip())
        if self.fix:
            parts.append(self.fix.rstrip())
        return " ".join(parts)

    def __str__(self) -> str:
        return self.message


class ConfigError(NeuroboltError, ValueError):
    """The command line or configuration file asks for something invalid."""

    exit_code = ExitCode.USAGE


class StageNotAvailableError(ConfigError):
    """A processing stage was requested that this version does not provide."""


class BIDSValidationError(NeuroboltError, ValueError):
    """The input dataset failed BIDS validation."""

    exit_code = ExitCode.VALIDATION


class UnknownAnalysisLevelError(NeuroboltError, ValueError):
    """The analysis level is not one this app knows."""

    exit_code = ExitCode.UNKNOWN_LEVEL


class SelectionError(NeuroboltError, LookupError):
    """Participant/session/task labels or filters selected nothing."""

    exit_code = ExitCode.NO_MATCH


class DataError(NeuroboltError, ValueError):
    """An input file exists but its content cannot be used as is."""

    exit_code = ExitCode.DATAERR


class SyncError(DataError):
    """EEG volume markers do not agree with the BOLD run."""


class MissingInputError(NeuroboltError, FileNotFoundError):
    """A required input file or folder does not exist."""

    exit_code = ExitCode.NOINPUT


class ExternalToolError(NeuroboltError, RuntimeError):
    """An external program the run needs is missing or failed (e.g. ``fmriprep-docker``)."""

    exit_code = ExitCode.UNAVAILABLE


class OutputError(NeuroboltError, PermissionError):
    """An output file or folder cannot be created where asked."""

    exit_code = ExitCode.CANTCREAT


class IOFailure(NeuroboltError, OSError):
    """Reading or writing failed at the operating-system level (e.g. disk full)."""

    exit_code = ExitCode.IOERR


class RunsFailedError(NeuroboltError, RuntimeError):
    """Some runs failed while ``--on-error continue`` let the others finish."""

    exit_code = ExitCode.FAILURE


class NeuroboltWarning(UserWarning):
    """Warnings about the data or settings that do not stop a run."""


class Stopped(KeyboardInterrupt):
    """The job was asked to stop by a signal (SIGTERM from SLURM or Docker, SIGHUP).

    A subclass of :class:`KeyboardInterrupt`, so that it unwinds like Ctrl-C: no
    ``except Exception`` catches it, every ``finally`` runs (temporaries removed), and
    the command line exits with ``128 + signum`` (143 for SIGTERM, 129 for SIGHUP).
    """

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum
