"""Call metrics, kept in memory by the gateway: per version and per minute, the number of calls,
server errors (5xx), client errors (4xx), the latency's sum, maximum and histogram, for the last
hour; and since the process started, per version and invocation path, calls by status code and
histograms of latency and model time (what ``/metrics`` shows Prometheus, see
:mod:`modelhost.operations.prometheus`).

Recording a call is a few dictionary and list operations, no lock (one event loop) and no
allocation except when a minute starts. Percentiles come from the histogram: buckets grow by
2^(1/4) (about 19%), so a reported p50 or p99 is the upper edge of the bucket it falls in and
at most that much above the true value.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

#: Upper edges of the latency buckets in milliseconds: 0.05 ms up to about 2 hours; the last
#: bucket takes anything slower.
BOUNDS_MS: tuple[float, ...] = tuple(0.05 * 2 ** (i / 4) for i in range(98))
KEPT_MINUTES = 60


class MinuteStats:
    __slots__ = (
        "buckets",
        "client_errors",
        "errors",
        "latency_max",
        "latency_sum",
        "minute",
        "requests",
    )

    def __init__(self, minute: int) -> None:
        self.minute = minute
        self.requests = 0
        self.errors = 0
        self.client_errors = 0
        self.latency_sum = 0.0
        self.latency_max = 0.0
        self.buckets = [0] * (len(BOUNDS_MS) + 1)


class PathTotals:
    """Everything one version answered on one invocation path since the process started: the
    counters Prometheus reads (they only grow)."""

    __slots__ = (
        "latency",
        "latency_sum",
        "model_id",
        "model_time",
        "model_time_sum",
        "number",
        "path",
        "statuses",
        "version_id",
    )

    def __init__(self, model_id: str, version_id: str, number: int, path: str) -> None:
        self.model_id = model_id
        self.version_id = version_id
        self.number = number
        self.path = path
        #: status code -> calls
        self.statuses: dict[int, int] = {}
        #: calls per latency bucket (the edges are BOUNDS_MS), and their sum in ms
        self.latency = [0] * (len(BOUNDS_MS) + 1)
        self.latency_sum = 0.0
        #: the same for the time the function took, of the calls that answered 200
        self.model_time = [0] * (len(BOUNDS_MS) + 1)
        self.model_time_sum = 0.0


class VersionSeries:
    """The last hour of one version, oldest minute first."""

    __slots__ = ("minutes", "model_id", "number", "version_id")

    def __init__(self, model_id: str, version_id: str, number: int) -> None:
        self.model_id = model_id
        self.version_id = version_id
        self.number = number
        self.minutes: deque[MinuteStats] = deque()


def percentile(buckets: list[int], total: int, fraction: float) -> float | None:
    """The upper edge (ms) of the bucket holding the ``fraction`` quantile; None with no calls."""
    if total == 0:
        return None
    rank = max(1, math.ceil(total * fraction))
    seen = 0
    for index, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            return BOUNDS_MS[min(index, len(BOUNDS_MS) - 1)]
    return BOUNDS_MS[-1]


@dataclass(frozen=True)
class Point:
    minute: int  # minutes since the epoch, UTC
    requests: int
    errors: int
    client_errors: int
    p50_ms: float | None
    p99_ms: float | None


class CallMetrics:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._series: dict[str, VersionSeries] = {}
        self._totals: dict[tuple[str, str], PathTotals] = {}
        #: gateway process -> (model id, version number) -> (calls in flight, calls queued)
        self._gauges: dict[int, dict[tuple[str, int], tuple[int, int]]] = {}
        #: gateway process -> (model id, version number) -> its batching pool's batch counts
        #: (:func:`modelhost.gateway.batching.batch_counts`)
        self._batches: dict[int, dict[tuple[str, int], list[int]]] = {}

    def record(
        self,
        model_id: str,
        version_id: str,
        number: int,
        status: int,
        elapsed_ms: float,
        path: str = "",
        model_time_ms: float | None = None,
    ) -> None:
        series = self._series.get(version_id)
        if series is None:
            series = self._series[version_id] = VersionSeries(model_id, version_id, number)
        minute = int(self._clock() // 60)
        minutes = series.minutes
        if not minutes or minutes[-1].minute != minute:
            minutes.append(MinuteStats(minute))
            while minutes[0].minute <= minute - KEPT_MINUTES:
                minutes.popleft()
        stats = minutes[-1]
        stats.requests += 1
        if status >= 500:
            stats.errors += 1
        elif status >= 400:
            stats.client_errors += 1
        stats.latency_sum += elapsed_ms
        if elapsed_ms > stats.latency_max:
            stats.latency_max = elapsed_ms
        index = bisect.bisect_left(BOUNDS_MS, elapsed_ms)
        stats.buckets[index] += 1
        totals = self._totals.get((version_id, path))
        if totals is None:
            totals = self._totals[version_id, path] = PathTotals(model_id, version_id, number, path)
        statuses = totals.statuses
        statuses[status] = statuses.get(status, 0) + 1
        totals.latency[index] += 1
        totals.latency_sum += elapsed_ms
        if model_time_ms is not None:
            totals.model_time[bisect.bisect_left(BOUNDS_MS, model_time_ms)] += 1
            totals.model_time_sum += model_time_ms

    def export(self) -> list[list[Any]]:
        """Every minute recorded, as rows a gateway process sends to the main one."""
        return [
            [
                series.model_id,
                series.version_id,
                series.number,
                stats.minute,
                stats.requests,
                stats.errors,
                stats.client_errors,
                stats.buckets,
                stats.latency_sum,
                stats.latency_max,
            ]
            for series in self._series.values()
            for stats in series.minutes
        ]

    def export_totals(self) -> list[list[Any]]:
        """The counters since the process started, as rows a gateway process sends."""
        return [
            [
                totals.model_id,
                totals.version_id,
                totals.number,
                totals.path,
                list(totals.statuses.items()),
                totals.latency,
                totals.latency_sum,
                totals.model_time,
                totals.model_time_sum,
            ]
            for totals in self._totals.values()
        ]

    def merge_totals(self, rows: Iterable[list[Any]]) -> None:
        """Add rows from :meth:`export_totals` (another process's calls) to these counters."""
        size = len(BOUNDS_MS) + 1
        for model_id, version_id, number, path, statuses, latency, lsum, mtime, msum in rows:
            if len(latency) != size or len(mtime) != size:
                continue
            totals = self._totals.get((version_id, path))
            if totals is None:
                totals = self._totals[version_id, path] = PathTotals(
                    model_id, version_id, number, path
                )
            for status, count in statuses:
                totals.statuses[status] = totals.statuses.get(status, 0) + count
            totals.latency = [a + b for a, b in zip(totals.latency, latency, strict=True)]
            totals.model_time = [a + b for a, b in zip(totals.model_time, mtime, strict=True)]
            totals.latency_sum += lsum
            totals.model_time_sum += msum

    def set_gauges(self, process: int, rows: Iterable[list[Any]]) -> None:
        """What a gateway process said last about its calls in flight and queued."""
        self._gauges[process] = {(row[0], row[1]): (row[2], row[3]) for row in rows}

    def gauges(self) -> dict[tuple[str, int], tuple[int, int]]:
        """The gateway processes' calls in flight and queued, per model id and version."""
        summed: dict[tuple[str, int], tuple[int, int]] = {}
        for gauges in list(self._gauges.values()):
            for key, (busy, queued) in gauges.items():
                before = summed.get(key, (0, 0))
                summed[key] = (before[0] + busy, before[1] + queued)
        return summed

    def set_batches(self, process: int, rows: Iterable[list[Any]]) -> None:
        """What a gateway process said last about the batches its pools sent."""
        self._batches[process] = {(row[0], row[1]): list(row[2:]) for row in rows}

    def batches(self) -> dict[tuple[str, int], list[int]]:
        """The gateway processes' batch counts, summed per model id and version."""
        summed: dict[tuple[str, int], list[int]] = {}
        for batches in list(self._batches.values()):
            for key, counts in batches.items():
                before = summed.get(key)
                summed[key] = (
                    counts
                    if before is None or len(before) != len(counts)
                    else [a + b for a, b in zip(before, counts, strict=True)]
                )
        return summed

    def path_totals(self) -> list[PathTotals]:
        """The counters of every version and path since the process started."""
        return list(self._totals.values())

    def merge(self, rows: Iterable[list[Any]]) -> None:
        """Add rows from :meth:`export` (another process's calls) to these metrics."""
        current = self.now_minute()
        for row in rows:
            model_id, version_id, number, minute, requests, errs, client_errs, buckets = row[:8]
            latency_sum, latency_max = row[8:10] if len(row) >= 10 else (0.0, 0.0)
            if minute <= current - KEPT_MINUTES or len(buckets) != len(BOUNDS_MS) + 1:
                continue
            series = self._series.get(version_id)
            if series is None:
                series = self._series[version_id] = VersionSeries(model_id, version_id, number)
            stats = next((m for m in series.minutes if m.minute == minute), None)
            if stats is None:
                stats = MinuteStats(minute)
                series.minutes.append(stats)
                series.minutes = deque(sorted(series.minutes, key=lambda m: m.minute))
            stats.requests += requests
            stats.errors += errs
            stats.client_errors += client_errs
            stats.latency_sum += latency_sum
            stats.latency_max = max(stats.latency_max, latency_max)
            stats.buckets = [a + b for a, b in zip(stats.buckets, buckets, strict=True)]

    def count(self, version_id: str) -> tuple[int, int]:
        """All calls of one version still kept (the last hour), and how many failed (5xx)."""
        series = self._series.get(version_id)
        if series is None:
            return 0, 0
        return (
            sum(stats.requests for stats in series.minutes),
            sum(stats.errors for stats in series.minutes),
        )

    def forget(self, version_ids: Iterable[str]) -> None:
        """Drop versions that no longer exist (a deleted model)."""
        gone = set(version_ids)
        for version_id in gone:
            self._series.pop(version_id, None)
        for key in [key for key in self._totals if key[0] in gone]:
            del self._totals[key]

    def now_minute(self) -> int:
        return int(self._clock() // 60)

    def all_series(self) -> list[VersionSeries]:
        """Every version's last hour."""
        return list(self._series.values())

    def series(self, model_id: str) -> list[VersionSeries]:
        return sorted(
            (s for s in self._series.values() if s.model_id == model_id), key=lambda s: s.number
        )

    def points(self, series: VersionSeries, minutes: int) -> list[Point]:
        """One point per minute for the last ``minutes`` minutes (the current one included),
        oldest first; minutes without calls are zeros."""
        now = self.now_minute()
        by_minute = {stats.minute: stats for stats in series.minutes}
        points = []
        for minute in range(now - minutes + 1, now + 1):
            stats = by_minute.get(minute)
            if stats is None:
                points.append(Point(minute, 0, 0, 0, None, None))
                continue
            points.append(
                Point(
                    minute,
                    stats.requests,
                    stats.errors,
                    stats.client_errors,
                    percentile(stats.buckets, stats.requests, 0.5),
                    percentile(stats.buckets, stats.requests, 0.99),
                )
            )
        return points

    def totals(self, series: VersionSeries, minutes: int) -> Point:
        """The last ``minutes`` minutes of one version as one point (its minute: the latest)."""
        now = self.now_minute()
        buckets = [0] * (len(BOUNDS_MS) + 1)
        requests = errors = client_errors = 0
        for stats in series.minutes:
            if stats.minute <= now - minutes:
                continue
            requests += stats.requests
            errors += stats.errors
            client_errors += stats.client_errors
            for index, count in enumerate(stats.buckets):
                if count:
                    buckets[index] += count
        return Point(
            now,
            requests,
            errors,
            client_errors,
            percentile(buckets, requests, 0.5),
            percentile(buckets, requests, 0.99),
        )
