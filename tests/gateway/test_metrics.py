"""The gateway's in-memory call metrics, with a clock the tests move by hand."""

from __future__ import annotations

import pytest

from modelhost.gateway.metrics import BOUNDS_MS, KEPT_MINUTES, CallMetrics, percentile


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0  # a minute boundary: 30,000,000 minutes since the epoch

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_calls_are_counted_per_version_and_minute_with_errors_apart(clock: Clock) -> None:
    metrics = CallMetrics(clock)
    for status in (200, 200, 500, 404):
        metrics.record("m", "v1", 1, status, 2.0)
    metrics.record("m", "v2", 2, 200, 2.0)
    clock.now += 60
    metrics.record("m", "v1", 1, 504, 3.0)
    [v1, v2] = metrics.series("m")
    assert (v1.number, v2.number) == (1, 2)
    points = metrics.points(v1, minutes=3)
    assert [(p.requests, p.errors, p.client_errors) for p in points] == [
        (0, 0, 0),
        (4, 1, 1),
        (1, 1, 0),
    ]
    assert points[-1].minute == int(clock.now // 60)
    totals = metrics.totals(v1, minutes=2)
    assert (totals.requests, totals.errors, totals.client_errors) == (5, 2, 1)
    assert metrics.totals(v1, minutes=1).requests == 1
    assert metrics.series("other") == []


def test_percentiles_are_at_most_one_bucket_above_the_true_value(clock: Clock) -> None:
    metrics = CallMetrics(clock)
    for ms in range(1, 101):  # 1..100 ms: p50 = 50 ms, p99 = 99 ms
        metrics.record("m", "v", 1, 200, float(ms))
    [series] = metrics.series("m")
    [point] = metrics.points(series, minutes=1)
    assert point.p50_ms is not None
    assert point.p99_ms is not None
    assert 50 <= point.p50_ms <= 50 * 2 ** (1 / 4)
    assert 99 <= point.p99_ms <= 99 * 2 ** (1 / 4)


def test_a_minute_without_calls_has_no_percentiles_and_the_slowest_bucket_takes_anything(
    clock: Clock,
) -> None:
    assert percentile([0] * (len(BOUNDS_MS) + 1), 0, 0.5) is None
    metrics = CallMetrics(clock)
    metrics.record("m", "v", 1, 200, 1e12)
    [series] = metrics.series("m")
    assert metrics.totals(series, 1).p99_ms == BOUNDS_MS[-1]


def test_only_the_last_hour_is_kept(clock: Clock) -> None:
    metrics = CallMetrics(clock)
    metrics.record("m", "v", 1, 200, 1.0)
    clock.now += KEPT_MINUTES * 60
    metrics.record("m", "v", 1, 200, 1.0)
    [series] = metrics.series("m")
    assert len(series.minutes) == 1
    assert metrics.totals(series, KEPT_MINUTES).requests == 1


def test_forgotten_versions_disappear(clock: Clock) -> None:
    metrics = CallMetrics(clock)
    metrics.record("m", "v", 1, 200, 1.0)
    metrics.forget(["v"])
    assert metrics.series("m") == []
