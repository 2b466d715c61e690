"""``/metrics`` in the Prometheus text format, made with ``prometheus-client``.

Nothing here is on the call path: :class:`Collector` reads, at scrape time, the counters the
gateway keeps anyway (:class:`modelhost.gateway.metrics.CallMetrics`, into which the main process
merges what each gateway process sends every second), the pools' calls in flight and queued, the
supervisor's instance events and the versions' builds from the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector as _Collector
from prometheus_client.registry import CollectorRegistry

from modelhost import __version__
from modelhost.backends.base import Instance, InstanceState
from modelhost.db.repo import Repo
from modelhost.gateway.batching import SIZE_BUCKETS, batch_counts
from modelhost.gateway.capture import CaptureQueue
from modelhost.gateway.metrics import BOUNDS_MS, CallMetrics
from modelhost.gateway.pool import VersionPool
from modelhost.gateway.requestlog import route_of
from modelhost.gateway.routes import RouteTable

#: indexes into BOUNDS_MS of the histograms' bucket edges: 0.2 ms, 0.4 ms, … about 105 s
EDGES = tuple(range(8, 88, 4))
#: every metric /metrics exposes, by name; the Grafana dashboard test checks its queries
#: against this list (histograms also expose _bucket, _sum and _count, counters _total)
NAMES = (
    "modelhost_requests_total",
    "modelhost_request_duration_seconds",
    "modelhost_model_duration_seconds",
    "modelhost_calls_in_flight",
    "modelhost_calls_queued",
    "modelhost_batch_size",
    "modelhost_instance_starts_total",
    "modelhost_instance_crashes_total",
    "modelhost_instance_restarts_total",
    "modelhost_instances_ready",
    "modelhost_builds_total",
    "modelhost_build_failures_total",
    "modelhost_build_duration_seconds",
    "modelhost_uptime_seconds",
    "modelhost_versions_running",
    "modelhost_info",
    "modelhost_async_predictions",
    "modelhost_async_oldest_seconds",
)


class InstanceEvents(Protocol):
    """The supervisor as /metrics reads it (:class:`modelhost.serving.supervisor.Supervisor`)."""

    #: (model id, version number, "start" | "crash" | "restart") -> how many since start-up
    events: dict[tuple[str, int, str], int]

    def instances(self) -> Iterable[Instance]: ...


@dataclass
class Sources:
    metrics: CallMetrics
    table: Callable[[], RouteTable]
    supervisor: InstanceEvents
    repo: Repo
    started: float
    #: the main process's capture queue, with the drops the gateway processes reported
    capture: CaptureQueue | None = None


def cumulative_buckets(counts: list[int]) -> list[tuple[str, float]]:
    """Cumulative Prometheus buckets (le in seconds) from the gateway's fine histogram."""
    found: list[tuple[str, float]] = []
    seen = 0
    previous = 0
    for edge in EDGES:
        seen += sum(counts[previous : edge + 1])
        previous = edge + 1
        found.append((repr(BOUNDS_MS[edge] / 1000), float(seen)))
    found.append(("+Inf", float(sum(counts))))
    return found


class Collector(_Collector):
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        sources = self.sources
        models = {model.id: model.name for model in sources.repo.list_models()}
        yield from self._calls(models)
        yield from self._load(models)
        yield from self._batches(models)
        yield from self._instances(models)
        yield from self._builds(models)
        yield from self._async(models)
        uptime = GaugeMetricFamily("modelhost_uptime_seconds", "Seconds since the server started.")
        uptime.add_metric([], time.time() - sources.started)
        yield uptime
        info = GaugeMetricFamily(
            "modelhost_info", "The modelhost version this server runs.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        yield self._capture(models)

    def _capture(self, models: dict[str, str]) -> Metric:
        dropped = CounterMetricFamily(
            "modelhost_capture_dropped",
            "Calls prediction capture did not record: its queue was full or the call too large.",
            labels=["model"],
        )
        queue = self.sources.capture
        counts = dict(queue.dropped) if queue else {}
        for route in self.sources.table().by_key.values():
            if route.capture:  # 0 for a model capturing without a drop
                counts.setdefault(route.model_id, 0)
        for model_id, count in sorted(counts.items()):
            dropped.add_metric([models.get(model_id, model_id)], count)
        return dropped

    def _calls(self, models: dict[str, str]) -> Iterator[Metric]:
        labels = ["model", "version", "route"]
        requests = CounterMetricFamily(
            "modelhost_requests",
            "Calls answered, by model, version, route and status code.",
            labels=[*labels, "code"],
        )
        latency = HistogramMetricFamily(
            "modelhost_request_duration_seconds",
            "Time from the request to the answer, as the gateway measured it.",
            labels=labels,
        )
        model_time = HistogramMetricFamily(
            "modelhost_model_duration_seconds",
            "Time the function took, of the calls that answered 200.",
            labels=labels,
        )
        # One series per version and route: /models/<id>/latest and /models/<name>/latest add up.
        merged: dict[tuple[str, str, str], dict[str, Any]] = {}
        for totals in self.sources.metrics.path_totals():
            name = models.get(totals.model_id)
            if name is None:
                continue
            key = (name, str(totals.number), route_of(totals.path))
            entry = merged.setdefault(
                key,
                {
                    "statuses": {},
                    "latency": [0] * len(totals.latency),
                    "latency_sum": 0.0,
                    "model_time": [0] * len(totals.model_time),
                    "model_time_sum": 0.0,
                },
            )
            for status, count in list(totals.statuses.items()):  # the loop may add one
                entry["statuses"][status] = entry["statuses"].get(status, 0) + count
            entry["latency"] = [
                a + b for a, b in zip(entry["latency"], totals.latency, strict=True)
            ]
            entry["model_time"] = [
                a + b for a, b in zip(entry["model_time"], totals.model_time, strict=True)
            ]
            entry["latency_sum"] += totals.latency_sum
            entry["model_time_sum"] += totals.model_time_sum
        for key, entry in sorted(merged.items()):
            for status, count in sorted(entry["statuses"].items()):
                requests.add_metric([*key, str(status)], count)
            latency.add_metric(
                list(key), cumulative_buckets(entry["latency"]), entry["latency_sum"] / 1000
            )
            model_time.add_metric(
                list(key), cumulative_buckets(entry["model_time"]), entry["model_time_sum"] / 1000
            )
        yield requests
        yield latency
        yield model_time

    def _load(self, models: dict[str, str]) -> Iterator[Metric]:
        in_flight = GaugeMetricFamily(
            "modelhost_calls_in_flight",
            "Calls being answered by a version's instances now, in every gateway process.",
            labels=["model", "version"],
        )
        queued = GaugeMetricFamily(
            "modelhost_calls_queued",
            "Calls waiting for a free instance of a version now (the admission queue's depth).",
            labels=["model", "version"],
        )
        load: dict[tuple[str, int], list[int]] = {}
        for model_id, number, pool in self._pools():
            counts = load.setdefault((model_id, number), [0, 0])
            counts[0] += pool.busy
            counts[1] += pool.queued
        for (model_id, number), (busy, waiting) in self.sources.metrics.gauges().items():
            counts = load.setdefault((model_id, number), [0, 0])
            counts[0] += busy
            counts[1] += waiting
        for (model_id, number), (busy, waiting) in sorted(load.items()):
            name = models.get(model_id)
            if name is not None:
                in_flight.add_metric([name, str(number)], busy)
                queued.add_metric([name, str(number)], waiting)
        yield in_flight
        yield queued

    def _pools(self) -> Iterator[tuple[str, int, VersionPool]]:
        """Each running version's pool in this process, once (a route is listed by id and name)."""
        seen: set[str] = set()
        for route in self.sources.table().by_key.values():
            if route.model_id not in seen:
                seen.add(route.model_id)
                for number, pool in route.pools.items():
                    yield route.model_id, number, pool

    def _batches(self, models: dict[str, str]) -> Iterator[Metric]:
        sizes = HistogramMetricFamily(
            "modelhost_batch_size",
            "Calls per batch sent to the instances of a batching version (batch_max_size), "
            "since each pool was made.",
            labels=["model", "version"],
        )
        found: dict[tuple[str, int], list[int]] = {}
        for model_id, number, pool in self._pools():
            counts = batch_counts(pool)
            if counts is not None:
                found[model_id, number] = counts
        for key, counts in self.sources.metrics.batches().items():
            before = found.get(key)
            found[key] = (
                counts
                if before is None or len(before) != len(counts)
                else [a + b for a, b in zip(before, counts, strict=True)]
            )
        for (model_id, number), counts in sorted(found.items()):
            name = models.get(model_id)
            if name is None or len(counts) != len(SIZE_BUCKETS) + 2:
                continue
            buckets: list[tuple[str, float]] = []
            seen_batches = 0
            for bound, count in zip(SIZE_BUCKETS, counts, strict=False):
                seen_batches += count
                buckets.append((repr(float(bound)), float(seen_batches)))
            buckets.append(("+Inf", float(counts[-2])))
            sizes.add_metric([name, str(number)], buckets, float(counts[-1]))
        yield sizes

    def _instances(self, models: dict[str, str]) -> Iterator[Metric]:
        labels = ["model", "version"]
        families = {
            "start": CounterMetricFamily(
                "modelhost_instance_starts",
                "Instances started since the server started.",
                labels=labels,
            ),
            "crash": CounterMetricFamily(
                "modelhost_instance_crashes",
                "Instances that exited without being asked to (a crash, a timeout, memory).",
                labels=labels,
            ),
            "restart": CounterMetricFamily(
                "modelhost_instance_restarts",
                "Instances started to replace one that crashed.",
                labels=labels,
            ),
        }
        # A copy: this runs in a worker thread while the event loop counts.
        events = dict(self.sources.supervisor.events)
        # Every version that started an instance has all three (0 crashes is a value too).
        for model_id, number in sorted({(m, n) for m, n, _ in events}):
            name = models.get(model_id)
            if name is not None:
                for kind, family in families.items():
                    family.add_metric([name, str(number)], events.get((model_id, number, kind), 0))
        yield from families.values()
        ready = GaugeMetricFamily(
            "modelhost_instances_ready", "Instances ready to take calls.", labels=labels
        )
        running: dict[tuple[str, int], int] = {}
        for instance in self.sources.supervisor.instances():
            if instance.state is InstanceState.READY:
                key = (instance.spec.model_id, instance.spec.version_number)
                running[key] = running.get(key, 0) + 1
        for (model_id, number), count in sorted(running.items()):
            name = models.get(model_id)
            if name is not None:
                ready.add_metric([name, str(number)], count)
        yield ready
        versions = GaugeMetricFamily(
            "modelhost_versions_running", "Versions with at least one ready instance."
        )
        versions.add_metric([], len(running))
        yield versions

    def _builds(self, models: dict[str, str]) -> Iterator[Metric]:
        builds = CounterMetricFamily(
            "modelhost_builds",
            "Versions built, by model and outcome (ready, failed).",
            labels=["model", "outcome"],
        )
        failures = CounterMetricFamily(
            "modelhost_build_failures", "Versions whose build failed.", labels=["model"]
        )
        durations = GaugeMetricFamily(
            "modelhost_build_duration_seconds",
            "How long each version's build took, from publish to ready or failed.",
            labels=["model", "version", "outcome"],
        )
        outcomes: dict[tuple[str, str], int] = {}
        failed: dict[str, int] = {}
        for version in self.sources.repo.list_all_versions():
            name = models.get(version.model_id)
            if name is None or version.finished_at is None:
                continue
            outcome = "failed" if version.status == "failed" else "ready"
            outcomes[name, outcome] = outcomes.get((name, outcome), 0) + 1
            if outcome == "failed":
                failed[name] = failed.get(name, 0) + 1
            seconds = (version.finished_at - version.created_at).total_seconds()
            durations.add_metric([name, str(version.number), outcome], max(seconds, 0.0))
        for (name, outcome), count in sorted(outcomes.items()):
            builds.add_metric([name, outcome], count)
        for name in sorted({name for name, _ in outcomes}):
            failures.add_metric([name], failed.get(name, 0))
        yield builds
        yield failures
        yield durations

    def _async(self, models: dict[str, str]) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "modelhost_async_predictions",
            "Asynchronous predictions waiting (queued) or running now, by model.",
            labels=["model", "status"],
        )
        oldest = GaugeMetricFamily(
            "modelhost_async_oldest_seconds",
            "Age of the oldest asynchronous prediction queued (or running) now, by model; 0 "
            "when there is none.",
            labels=["model", "status"],
        )
        now = time.time()
        found = {(m, s): (n, c) for m, s, n, c in self.sources.repo.queue_depths()}
        # every model has both, 0 when nothing waits or runs, so a series never vanishes
        for model_id, name in sorted(models.items(), key=lambda item: item[1]):
            for status in ("queued", "running"):
                count, created = found.get((model_id, status), (0, None))
                depth.add_metric([name, status], count)
                age = 0.0 if created is None else max(now - created.timestamp(), 0.0)
                oldest.add_metric([name, status], age)
        yield depth
        yield oldest


def exposition(sources: Sources) -> Callable[[], bytes]:
    """What ``/metrics`` answers: a function that renders the text format now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(sources))
    return lambda: generate_latest(registry)
