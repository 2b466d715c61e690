"""A reconcile loop that fails every tick (the database is down) says so once, not each tick."""

from __future__ import annotations

import logging

import pytest

from modelhost.reconciler import FailureLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_same_failure_again_is_one_line_a_minute_and_the_recovery_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = FailureLog(logging.getLogger("test.reconciler"), clock)
    with caplog.at_level(logging.WARNING, logger="test.reconciler"):
        for second in range(0, 130, 2):  # a tick every two seconds for over two minutes
            clock.now = float(second)
            log.failed(ConnectionError("database is down"))
        log.worked()
        log.worked()
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "reconcile tick failed; trying again on the next one",
        "reconcile ticks still fail (31 in a row): ConnectionError: database is down",
        "reconcile ticks still fail (61 in a row): ConnectionError: database is down",
        "reconcile ticks work again after 65 failed",
    ]
    assert caplog.records[0].exc_info is not None  # the first one has its traceback
    assert all(record.exc_info is None for record in caplog.records[1:])


def test_a_different_failure_gets_its_own_traceback(caplog: pytest.LogCaptureFixture) -> None:
    log = FailureLog(logging.getLogger("test.reconciler"), Clock())
    with caplog.at_level(logging.WARNING, logger="test.reconciler"):
        log.failed(ConnectionError("database is down"))
        log.failed(ValueError("a bad row"))
    assert [record.exc_info is not None for record in caplog.records] == [True, True]
