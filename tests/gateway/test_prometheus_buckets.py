"""Prometheus buckets from the gateway's finer latency histogram."""

from __future__ import annotations

from modelhost.gateway.metrics import BOUNDS_MS, CallMetrics
from modelhost.operations.prometheus import EDGES, cumulative_buckets


def test_buckets_are_cumulative_in_seconds_and_end_with_every_call() -> None:
    metrics = CallMetrics(lambda: 1_800_000_000.0)
    for ms in (0.1, 0.3, 5.0, 5.0, 2_000.0, 1e9):
        metrics.record("m", "v", 1, 200, ms, "/models/m/latest/model", ms / 2)
    [totals] = metrics.path_totals()
    buckets = dict(cumulative_buckets(totals.latency))
    assert len(buckets) == len(EDGES) + 1
    assert buckets["+Inf"] == 6
    assert buckets[repr(0.2 / 1000)] == 1  # 0.1 ms, and an edge is exactly 0.2 ms
    assert buckets[repr(BOUNDS_MS[EDGES[-1]] / 1000)] == 5  # all but the 1e9 ms call
    counts = [count for _, count in cumulative_buckets(totals.latency)]
    assert counts == sorted(counts)
    assert totals.statuses == {200: 6}
    assert sum(totals.model_time) == 6


def test_counters_sent_by_a_gateway_process_add_to_the_main_process_s() -> None:
    main, child = CallMetrics(), CallMetrics()
    main.record("m", "v", 1, 200, 1.0, "/models/m/latest/model", 0.5)
    child.record("m", "v", 1, 200, 1.0, "/models/m/latest/model", 0.5)
    child.record("m", "v", 1, 503, 1.0, "/models/m/latest/model")
    main.merge_totals(child.export_totals())
    [totals] = main.path_totals()
    assert totals.statuses == {200: 2, 503: 1}
    assert sum(totals.latency) == 3
    assert sum(totals.model_time) == 2
    main.set_gauges(1, [["m", 1, 2, 3]])
    main.set_gauges(2, [["m", 1, 1, 0]])
    assert main.gauges() == {("m", 1): (3, 3)}
    main.set_gauges(1, [])
    assert main.gauges() == {("m", 1): (1, 0)}
