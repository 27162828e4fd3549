"""Progress lines: long steps speak at INFO at most every few seconds, every line at DEBUG."""

from __future__ import annotations

import logging

import pytest

from bids_neurobolt import log


def test_throttled_progress_shows_a_line_every_interval_and_keeps_the_rest_at_debug(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([0.0, 3.0, 10.5, 12.0, 21.0])  # creation, then one per message
    monkeypatch.setattr(log.time, "perf_counter", lambda: next(clock))
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("test_throttled_progress")  # outside the app's own tree
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    report = log.throttled(logger, "sub-01_task-rest", every=10.0)
    try:
        for block in ("a", "b", "c", "d"):
            report(block)
    finally:
        logger.removeHandler(handler)
    levels = [(r.levelno, r.getMessage()) for r in records]
    assert levels == [
        (logging.DEBUG, "sub-01_task-rest: a"),
        (logging.INFO, "sub-01_task-rest: b"),
        (logging.DEBUG, "sub-01_task-rest: c"),
        (logging.INFO, "sub-01_task-rest: d"),
    ]
