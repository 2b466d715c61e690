"""The call history: what the gateway counted is written to the database once, adds to what an
earlier run of the server wrote, and reads back as points of 1, 15 or 120 minutes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelhost.db.engine import make_engine, migrate
from modelhost.db.repo import Repo
from modelhost.gateway.metrics import CallMetrics
from modelhost.operations.metrics import CallHistory, step_for

NOW = 1_800_000_000.0  # a minute boundary


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    engine = make_engine(f"sqlite:///{tmp_path / 'modelhost.db'}")
    migrate(engine)
    yield Repo(engine)
    engine.dispose()


def _totals(history: CallHistory) -> tuple[int, int, int]:
    rows = history.read("m", since=0)
    return (
        sum(r.requests for r in rows),
        sum(r.errors for r in rows),
        sum(r.client_errors for r in rows),
    )


def test_flushed_calls_are_written_once_and_new_ones_add_up(repo: Repo) -> None:
    clock = Clock()
    metrics = CallMetrics(clock)
    history = CallHistory(repo, metrics, clock)
    for status in (200, 200, 500, 404):
        metrics.record("m", "v1", 1, status, 2.0)
    assert _totals(history) == (4, 1, 1)  # pending, not written yet
    asyncio.run(history.flush())
    assert [r.requests for r in repo.list_call_minutes("m", 0)] == [4]
    assert _totals(history) == (4, 1, 1)  # written, and not counted twice
    metrics.record("m", "v1", 1, 200, 9.0)
    clock.now += 60
    metrics.record("m", "v1", 1, 200, 1.0)
    asyncio.run(history.flush())
    asyncio.run(history.flush())  # nothing new: nothing written
    stored = repo.list_call_minutes("m", 0)
    assert [(r.minute, r.requests) for r in stored] == [(30_000_000, 5), (30_000_001, 1)]
    assert stored[0].latency_sum_ms == 17.0
    assert stored[0].latency_max_ms == 9.0
    assert sum((stored[0].buckets or {}).values()) == 5


def test_a_restarted_server_adds_to_the_minutes_the_last_one_wrote(repo: Repo) -> None:
    clock = Clock()
    before = CallMetrics(clock)
    before.record("m", "v1", 1, 200, 2.0)
    asyncio.run(CallHistory(repo, before, clock).flush())
    after = CallMetrics(clock)  # a new process: counts from zero, the same minute
    history = CallHistory(repo, after, clock)
    after.record("m", "v1", 1, 500, 3.0)
    assert _totals(history) == (2, 1, 0)
    asyncio.run(history.flush())
    assert [r.requests for r in repo.list_call_minutes("m", 0)] == [2]


def test_pruning_keeps_the_retention_in_days(repo: Repo) -> None:
    clock = Clock()
    metrics = CallMetrics(clock)
    history = CallHistory(repo, metrics, clock)
    metrics.record("m", "v1", 1, 200, 2.0)
    asyncio.run(history.flush())
    clock.now += 2 * 24 * 3600
    assert history.prune(retention_days=3) == 0
    assert history.prune(retention_days=1) == 1
    assert repo.list_call_minutes("m", 0) == []


@pytest.mark.parametrize(
    ("minutes", "step"), [(1, 1), (60, 1), (120, 1), (121, 2), (1440, 15), (10080, 120)]
)
def test_points_are_at_most_about_120_whatever_the_span(minutes: int, step: int) -> None:
    assert step_for(minutes) == step
