"""Logging for the command line: console verbosity, a log file, stage timing.

One package logger (``bids_neurobolt``). The console shows one line per finished
stage by default; ``-v`` adds detail, ``-q`` keeps warnings and errors only, ``-qq``
errors only. The log file under ``logs/`` always records everything.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bids_neurobolt.errors import NeuroboltWarning

LOGGER_NAME = "bids_neurobolt"
_FORMAT = "%(asctime)s | %(levelname)-7s | %(message)s"
_DATEFMT = "%H:%M:%S"


def level_for(verbosity: int) -> int:
    """Map the net verbosity (``-v`` count minus ``-q`` count) to a logging level."""
    if verbosity >= 1:
        return logging.DEBUG
    if verbosity == 0:
        return logging.INFO
    if verbosity == -1:
        return logging.WARNING
    return logging.ERROR


class _OurWarnings(logging.Filter):
    """Let through the app's own warnings and, with -v, everybody's."""

    def __init__(self, show_all: bool) -> None:
        super().__init__()
        self.show_all = show_all

    def filter(self, record: logging.LogRecord) -> bool:
        return self.show_all or "NeuroboltWarning" in record.getMessage()


def setup_console(verbosity: int) -> None:
    """Send the package's log records (and its warnings) to stderr at the chosen level."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG)
    for handler in list(logger.handlers):
        if getattr(handler, "_neurobolt_console", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setLevel(level_for(verbosity))
    handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    handler._neurobolt_console = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.propagate = False

    logging.captureWarnings(True)
    py_warnings = logging.getLogger("py.warnings")
    for old in list(py_warnings.handlers):
        if getattr(old, "_neurobolt_console", False):
            py_warnings.removeHandler(old)
    warn_handler = logging.StreamHandler()
    warn_handler.setLevel(logging.WARNING if verbosity >= -1 else logging.ERROR)
    warn_handler.setFormatter(logging.Formatter("%(asctime)s | WARNING | %(message)s", _DATEFMT))
    warn_handler.addFilter(_OurWarnings(show_all=verbosity >= 1))
    warn_handler._neurobolt_console = True  # type: ignore[attr-defined]
    py_warnings.addHandler(warn_handler)
    py_warnings.propagate = False
    warnings.showwarning = _log_warning
    warnings.simplefilter("default")


@contextlib.contextmanager
def log_file(path: Path) -> Iterator[Path]:
    """Also write every record (DEBUG and up) to ``path`` while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(
        logging.Formatter("%(asctime)s | %(levelname)-7s | %(name)s | %(message)s")
    )
    targets = [logging.getLogger(LOGGER_NAME), logging.getLogger("py.warnings")]
    for target in targets:
        target.addHandler(handler)
    try:
        yield path
    finally:
        for target in targets:
            target.removeHandler(handler)
        handler.close()


def throttled(logger: logging.Logger, label: str, every: float = 10.0) -> Callable[[str], None]:
    """Return a progress callback: INFO at most every ``every`` seconds, DEBUG otherwise.

    Long steps report each unit of work (a channel block, a fold); the console shows a
    line every ``every`` seconds, so that nothing is silent for long and short steps do
    not flood it, and the log file keeps every line.
    """
    last = [time.perf_counter()]

    def report(message: str) -> None:
        now = time.perf_counter()
        level = logging.INFO if now - last[0] >= every else logging.DEBUG
        if level == logging.INFO:
            last[0] = now
        logger.log(level, "%s: %s", label, message)

    return report


@contextlib.contextmanager
def timed(logger: logging.Logger, what: str) -> Iterator[None]:
    """Log ``what`` with its elapsed time when the block finishes."""
    start = time.perf_counter()
    yield
    logger.info("%s (%.1f s)", what, time.perf_counter() - start)


@contextlib.contextmanager
def capture_warnings() -> Iterator[list[str]]:
    """Collect the text of every warning and error logged while the block runs.

    Python warnings (``warnings.warn``, e.g. :class:`~bids_neurobolt.errors.NeuroboltWarning`
    or MNE's) are routed through logging for the duration, so both kinds land in the list
    that the report shows for the run.
    """
    caught: list[str] = []

    class _Collector(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record.getMessage().strip())

    handler = _Collector(level=logging.WARNING)
    targets = [logging.getLogger(LOGGER_NAME), logging.getLogger("py.warnings")]
    for target in targets:
        target.addHandler(handler)
    try:
        with warnings.catch_warnings():
            # Every run records its own warnings: without "always", a warning already shown
            # for an earlier run of this process (same text, same line) would be swallowed.
            warnings.simplefilter("always", NeuroboltWarning)
            warnings.showwarning = _log_warning
            yield caught
    finally:
        for target in targets:
            target.removeHandler(handler)


def _log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Route a Python warning to the ``py.warnings`` logger (as logging.captureWarnings does).

    The app's own warnings are already sentences with their advice: they are logged as
    ``NeuroboltWarning: <message>``, without the source file and line that
    :func:`warnings.formatwarning` adds (those stay for other libraries' warnings).
    """
    if issubclass(category, NeuroboltWarning):
        text = f"{category.__name__}: {message}"
    else:
        text = warnings.formatwarning(message, category, filename, lineno, line).strip()
    logging.getLogger("py.warnings").warning("%s", text)
