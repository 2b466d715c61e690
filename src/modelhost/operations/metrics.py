"""Call metrics of a model, per version, as the API, CLI and UI show them: read from the
per-minute aggregates in the database (so they survive a restart) plus what the gateway counted
since the last write (:class:`CallHistory`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from modelhost import errors
from modelhost.db.repo import CallMinute, Model, Repo
from modelhost.gateway.metrics import BOUNDS_MS, CallMetrics, percentile
from modelhost.operations import Services, iso

#: the longest span the API, CLI and UI show: seven days
MAX_MINUTES = 7 * 24 * 60
#: the spans the UI's chooser offers, by name
RANGES = {"1h": 60, "24h": 24 * 60, "7d": MAX_MINUTES}
#: minutes per point: at most about 120 points whatever the span
_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 240)
#: how often the main process writes what the gateway counted to the database
FLUSH_SECONDS = 10.0


def step_for(minutes: int) -> int:
    """Minutes per chart point for a span: 1 for an hour, 15 for a day, 120 for a week."""
    wanted = math.ceil(minutes / 120)
    return next((step for step in _STEPS if step >= wanted), _STEPS[-1])


class CallHistory:
    """The gateway's per-minute counts, written to the database as they grow.

    :meth:`flush` runs on the event loop (where the gateway counts), each ``FLUSH_SECONDS``
    and at shutdown; it writes only what was added since the last write, so calls counted by
    an earlier run of the server, or the rest of a minute, add up. :meth:`read` may run in any
    thread: under the lock, the stored minutes plus what is not written yet.
    """

    def __init__(
        self, repo: Repo, metrics: CallMetrics, clock: Callable[[], float] = time.time
    ) -> None:
        self.repo = repo
        self.metrics = metrics
        self.clock = clock
        #: (version id, minute) -> what of it is in the database
        self._written: dict[tuple[str, int], CallMinute] = {}
        self._lock = threading.Lock()

    def pending(self, model_id: str | None = None) -> list[CallMinute]:
        """What the gateway counted and the database does not have yet."""
        found = []
        for series in self.metrics.all_series():
            if model_id is not None and series.model_id != model_id:
                continue
            for stats in list(series.minutes):
                written = self._written.get((series.version_id, stats.minute))
                if written is not None and written.requests == stats.requests:
                    continue
                before = written.buckets if written is not None and written.buckets else {}
                buckets = {
                    index: count - before.get(index, 0)
                    for index, count in enumerate(stats.buckets)
                    if count - before.get(index, 0)
                }
                found.append(
                    CallMinute(
                        model_id=series.model_id,
                        version_id=series.version_id,
                        version_number=series.number,
                        minute=stats.minute,
                        requests=stats.requests - (written.requests if written else 0),
                        errors=stats.errors - (written.errors if written else 0),
                        client_errors=stats.client_errors
                        - (written.client_errors if written else 0),
                        latency_sum_ms=stats.latency_sum
                        - (written.latency_sum_ms if written else 0.0),
                        latency_max_ms=stats.latency_max,
                        buckets=buckets,
                    )
                )
        return found

    async def flush(self) -> None:
        deltas = self.pending()  # here, on the loop, where the counts change
        if deltas:
            await asyncio.to_thread(self._write, deltas)

    def _write(self, deltas: list[CallMinute]) -> None:
        with self._lock:
            self.repo.add_call_minutes(deltas)
            kept = {
                (s.version_id, m.minute) for s in self.metrics.all_series() for m in list(s.minutes)
            }
            written = {key: value for key, value in self._written.items() if key in kept}
            for delta in deltas:
                key = (delta.version_id, delta.minute)
                before = written.get(key)
                if before is None:
                    written[key] = delta
                    continue
                buckets = dict(before.buckets or {})
                for index, count in (delta.buckets or {}).items():
                    buckets[index] = buckets.get(index, 0) + count
                written[key] = CallMinute(
                    model_id=delta.model_id,
                    version_id=delta.version_id,
                    version_number=delta.version_number,
                    minute=delta.minute,
                    requests=before.requests + delta.requests,
                    errors=before.errors + delta.errors,
                    client_errors=before.client_errors + delta.client_errors,
                    latency_sum_ms=before.latency_sum_ms + delta.latency_sum_ms,
                    latency_max_ms=max(before.latency_max_ms, delta.latency_max_ms),
                    buckets=buckets,
                )
            self._written = written

    def read(self, model_id: str, since: int) -> list[CallMinute]:
        """A model's minutes from ``since`` on, stored and pending, several rows per minute
        possible (they add up)."""
        with self._lock:
            stored = self.repo.list_call_minutes(model_id, since)
            return stored + [m for m in self.pending(model_id) if m.minute >= since]

    def prune(self, retention_days: int) -> int:
        """Delete the minutes older than ``retention_days``."""
        before = int(self.clock() // 60) - retention_days * 24 * 60
        return self.repo.prune_call_minutes(before)

    def now_minute(self) -> int:
        return int(self.clock() // 60)


def _minute_iso(minute: int) -> str | None:
    return iso(dt.datetime.fromtimestamp(minute * 60, dt.timezone.utc))


class _Sum:
    __slots__ = ("buckets", "client_errors", "errors", "latency_max", "latency_sum", "requests")

    def __init__(self) -> None:
        self.requests = self.errors = self.client_errors = 0
        self.latency_sum = self.latency_max = 0.0
        self.buckets = [0] * (len(BOUNDS_MS) + 1)

    def add(self, minute: CallMinute) -> None:
        self.requests += minute.requests
        self.errors += minute.errors
        self.client_errors += minute.client_errors
        self.latency_sum += minute.latency_sum_ms
        self.latency_max = max(self.latency_max, minute.latency_max_ms)
        for index, count in (minute.buckets or {}).items():
            if 0 <= index < len(self.buckets):
                self.buckets[index] += count

    def view(self) -> dict[str, Any]:
        requests = self.requests
        return {
            "requests": requests,
            "errors": self.errors,
            "client_errors": self.client_errors,
            "error_rate": round(self.errors / requests, 4) if requests else 0.0,
            "p50_ms": percentile(self.buckets, requests, 0.5),
            "p99_ms": percentile(self.buckets, requests, 0.99),
            "mean_ms": round(self.latency_sum / requests, 3) if requests else None,
            "max_ms": round(self.latency_max, 3) if requests else None,
        }


def model_metrics(services: Services, model: Model, minutes: int = 60) -> dict[str, Any]:
    """Per version: totals over the last ``minutes`` minutes, and points of ``step_minutes``
    each (one per minute up to two hours, 15 for a day, 120 for a week)."""
    if not 1 <= minutes <= MAX_MINUTES:
        raise errors.BadRequest(
            f"minutes must be between 1 and {MAX_MINUTES} (7 days); got {minutes}."
        )
    history = services.history
    now = history.now_minute()
    step = step_for(minutes)
    first = now - minutes + 1
    count = math.ceil(minutes / step)
    start = now + 1 - count * step  # the points end with the current minute
    rows = history.read(model.id, start)
    by_version: dict[str, tuple[int, _Sum, list[_Sum]]] = {}
    for row in rows:
        entry = by_version.get(row.version_id)
        if entry is None:
            entry = by_version[row.version_id] = (
                row.version_number,
                _Sum(),
                [_Sum() for _ in range(count)],
            )
        if row.minute >= first:
            entry[1].add(row)
        entry[2][min((row.minute - start) // step, count - 1)].add(row)
    versions = []
    for version_id, (number, total, points) in sorted(by_version.items(), key=lambda e: e[1][0]):
        if not total.requests:
            continue
        totals = total.view()
        totals["requests_per_minute"] = round(total.requests / minutes, 2)
        versions.append(
            {
                "version_number": number,
                "version_id": version_id,
                "totals": totals,
                "points": [
                    {"minute": _minute_iso(start + i * step), **point.view()}
                    for i, point in enumerate(points)
                ],
            }
        )
    return {
        "model": model.name,
        "model_id": model.id,
        "minutes": minutes,
        "step_minutes": step,
        "until": _minute_iso(now + 1),
        "versions": versions,
    }
